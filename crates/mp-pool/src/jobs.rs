//! The table of a pool's jobs, by id.
//!
//! Job ids are consecutive and results mostly arrive, and are taken, in the order the calls
//! were made: a caller that submits 50,000 `apply_async` calls and then takes their results
//! walks the table from one end to the other twice. A hash table scatters consecutive ids over
//! its whole memory, so each of those steps is a cache (and TLB) miss once the table outgrows
//! the cache. Here the jobs from the oldest one still held on are kept in a ring, by id, so
//! consecutive ids are neighbours in memory.
//!
//! A job held for long while many later ones come and go (a result never taken) would keep the
//! ring from shrinking: once the ring is more than twice the jobs it holds (plus some slack),
//! its oldest jobs move to a hash table on the side. Each job moves at most once, so the
//! ring's memory stays within a constant factor of the live jobs and every operation stays
//! O(1) amortized.

use std::collections::{HashMap, VecDeque};

use mp_process::fdpass::IdHasher;

/// Slots the ring may hold beyond twice its live jobs before its oldest jobs move aside.
const SLACK: usize = 64;

/// Slots of ring the table keeps however few jobs it holds.
const KEPT: usize = 1024;

/// A pool's jobs (`J`: `state::Job`), by id (see the module's documentation).
pub(crate) struct JobTable<J> {
    /// The jobs from id `base` on, at `id - base`; `None` where a job was removed.
    ring: VecDeque<Option<J>>,
    /// The id of `ring`'s first slot.
    base: u64,
    /// How many slots of `ring` hold a job.
    live: usize,
    /// Jobs moved out of the ring's way, and jobs whose id did not fit the ring.
    aside: HashMap<u64, J, std::hash::BuildHasherDefault<IdHasher>>,
}

impl<J> Default for JobTable<J> {
    fn default() -> Self {
        JobTable { ring: VecDeque::new(), base: 0, live: 0, aside: HashMap::default() }
    }
}

impl<J> JobTable<J> {
    /// Where job `id` would be in the ring, if within it.
    fn slot(&self, id: u64) -> Option<usize> {
        let offset = usize::try_from(id.checked_sub(self.base)?).ok()?;
        (offset < self.ring.len()).then_some(offset)
    }

    /// Adds job `id` (ids are expected to come in increasing order; any other goes aside).
    /// A job already held under `id` is replaced.
    pub fn insert(&mut self, id: u64, job: J) {
        if self.ring.is_empty() {
            self.base = id;
        }
        if self.base.checked_add(self.ring.len() as u64) == Some(id) {
            // An id is held in one place only.
            if !self.aside.is_empty() {
                self.aside.remove(&id);
            }
            self.ring.push_back(Some(job));
            self.live += 1;
            return;
        }
        match self.slot(id).and_then(|i| self.ring.get_mut(i)) {
            Some(slot) => {
                if slot.is_none() {
                    self.live += 1;
                }
                *slot = Some(job);
            }
            None => {
                self.aside.insert(id, job);
            }
        }
    }

    /// Job `id`, if held.
    pub fn get(&self, id: &u64) -> Option<&J> {
        match self.slot(*id) {
            Some(i) => self.ring.get(i).and_then(Option::as_ref),
            None => self.aside.get(id),
        }
    }

    /// Job `id`, if held, to change.
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut J> {
        match self.slot(*id) {
            Some(i) => self.ring.get_mut(i).and_then(Option::as_mut),
            None => self.aside.get_mut(id),
        }
    }

    /// Removes job `id` and returns it, if held.
    pub fn remove(&mut self, id: &u64) -> Option<J> {
        let Some(i) = self.slot(*id) else {
            let job = self.aside.remove(id);
            if self.aside.capacity() > KEPT && self.aside.len() < self.aside.capacity() / 4 {
                self.aside.shrink_to(self.aside.capacity() / 2);
            }
            return job;
        };
        let job = self.ring.get_mut(i).and_then(Option::take)?;
        self.live -= 1;
        self.trim();
        Some(job)
    }

    /// Drops the ring's empty front slots, and moves its oldest jobs aside while it is more
    /// than twice its live jobs (plus [`SLACK`]). Memory a burst of calls left behind is given
    /// back as the burst drains (halved while under a quarter used).
    fn trim(&mut self) {
        loop {
            match self.ring.front() {
                Some(None) => {}
                Some(Some(_)) if self.ring.len() > 2 * self.live + SLACK => {}
                _ => break,
            }
            let id = self.base;
            self.base += 1;
            if let Some(Some(job)) = self.ring.pop_front() {
                self.live -= 1;
                self.aside.insert(id, job);
            }
        }
        let cap = self.ring.capacity();
        if cap > KEPT && self.ring.len() < cap / 4 {
            self.ring.shrink_to(cap / 2);
        }
    }

    /// Every job with its id, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &J)> {
        let base = self.base;
        let ring = self
            .ring
            .iter()
            .zip(0u64..)
            .filter_map(move |(slot, i)| slot.as_ref().map(|j| (base + i, j)));
        ring.chain(self.aside.iter().map(|(id, j)| (*id, j)))
    }

    /// Every job, to change, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut J> {
        self.ring.iter_mut().filter_map(Option::as_mut).chain(self.aside.values_mut())
    }

    /// How many jobs are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live + self.aside.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &JobTable<u64>, id: u64) -> Option<u64> {
        t.get(&id).copied()
    }

    #[test]
    fn jobs_taken_in_order_leave_an_empty_ring() {
        let mut t = JobTable::<u64>::default();
        for id in 0..1000 {
            t.insert(id, id);
        }
        assert_eq!(t.len(), 1000);
        for id in 0..1000 {
            assert_eq!(tag(&t, id), Some(id));
            assert_eq!(t.remove(&id), Some(id));
            assert!(t.get(&id).is_none());
        }
        assert_eq!(t.len(), 0);
        assert!(t.ring.is_empty() && t.aside.is_empty());
        // A new run starts where the ids are.
        t.insert(5000, 7);
        assert_eq!(tag(&t, 5000), Some(7));
        assert_eq!(t.ring.len(), 1);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let mut t = JobTable::<u64>::default();
        for id in 0..100_000 {
            t.insert(id, id);
        }
        assert!(t.ring.capacity() >= 100_000);
        for id in 0..100_000 {
            t.remove(&id);
        }
        assert!(t.ring.capacity() <= 4 * KEPT, "kept {} slots", t.ring.capacity());
        // Jobs moved aside and then taken leave the side table small too.
        t.insert(0, 0);
        for id in 1..100_000 {
            t.insert(id, id);
            if id % 4 != 0 {
                t.remove(&id);
            }
        }
        // One job in four is held: most of them went aside.
        assert!(t.aside.len() > 10_000, "{} aside", t.aside.len());
        for id in (0..100_000).step_by(4) {
            assert_eq!(tag(&t, id), Some(id));
        }
        for id in 0..100_000 {
            t.remove(&id);
        }
        assert_eq!(t.len(), 0);
        assert!(t.aside.capacity() <= 4 * KEPT, "kept {} entries", t.aside.capacity());
        assert!(t.ring.capacity() <= 4 * KEPT, "kept {} slots", t.ring.capacity());
    }

    #[test]
    fn jobs_taken_out_of_order_are_all_found() {
        let mut t = JobTable::<u64>::default();
        for id in 0..300 {
            t.insert(id, id);
        }
        // Odd ids first, then even ones backwards.
        for id in (1..300).step_by(2) {
            assert_eq!(t.remove(&id), Some(id));
            assert!(t.remove(&id).is_none(), "removed twice");
        }
        for id in (0..300).step_by(2) {
            assert_eq!(tag(&t, id), Some(id));
            assert!(t.get(&(id + 1)).is_none());
        }
        for id in (0..150u64).rev().map(|i| 2 * i) {
            assert_eq!(t.remove(&id), Some(id));
        }
        assert_eq!(t.len(), 0);
        assert!(t.ring.is_empty());
    }

    #[test]
    fn a_job_held_for_long_moves_aside_and_the_ring_stays_small() {
        let mut t = JobTable::<u64>::default();
        t.insert(0, 0);
        for id in 1..100_000 {
            t.insert(id, id);
            assert_eq!(t.remove(&id), Some(id));
            assert!(t.ring.len() <= 2 * t.live + SLACK + 1, "the ring grew to {}", t.ring.len());
        }
        assert_eq!(t.len(), 1);
        assert_eq!(tag(&t, 0), Some(0));
        assert!(t.aside.contains_key(&0));
        if let Some(j) = t.get_mut(&0) {
            *j = 42;
        }
        assert_eq!(t.iter().map(|(id, j)| (id, *j)).collect::<Vec<_>>(), [(0, 42)]);
        assert_eq!(t.remove(&0), Some(42));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_ring_restarts_at_the_next_id_while_a_job_is_aside() {
        let mut t = JobTable::<u64>::default();
        t.insert(0, 0);
        for id in 1..1000 {
            t.insert(id, id);
            t.remove(&id);
        }
        assert!(t.aside.contains_key(&0) && t.ring.is_empty());
        // Later jobs go to the ring again, not aside.
        for id in 1000..1010 {
            t.insert(id, id);
        }
        assert_eq!(t.ring.len(), 10);
        assert_eq!(t.aside.len(), 1);
        assert_eq!(tag(&t, 1005), Some(1005));
        assert_eq!(tag(&t, 0), Some(0));
    }

    #[test]
    fn ids_out_of_sequence_go_aside() {
        let mut t = JobTable::<u64>::default();
        t.insert(10, 10);
        t.insert(11, 11);
        // Below the ring, and past its end with a gap.
        t.insert(3, 3);
        t.insert(20, 20);
        // Replacing one held in the ring.
        t.insert(11, 111);
        assert_eq!(t.len(), 4);
        let mut all: Vec<(u64, u64)> = t.iter().map(|(id, j)| (id, *j)).collect();
        all.sort_unstable();
        assert_eq!(all, [(3, 3), (10, 10), (11, 111), (20, 20)]);
        for j in t.values_mut() {
            *j += 1;
        }
        for (id, want) in [(3, 4), (10, 11), (11, 112), (20, 21)] {
            assert_eq!(t.remove(&id), Some(want));
        }
        assert_eq!(t.len(), 0);
        assert!(t.get(&u64::MAX).is_none() && t.remove(&u64::MAX).is_none());
    }
}
