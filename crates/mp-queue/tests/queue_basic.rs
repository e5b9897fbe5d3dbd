//! Queues between processes: limits, timeouts, order, `JoinableQueue`, many producers and
//! consumers, large messages, bad items, `close`, queues inside messages, and `wait`. Every
//! test uses real children started under the suite's start method.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_queue::{Connection, Error, JoinableQueue, PutError, Queue, SimpleQueue};
use serde::{Deserialize, Serialize};

#[test]
fn maxsize_six_is_full_after_six_puts() {
    let q = Queue::with_maxsize(6).unwrap();
    for i in 0..6u32 {
        assert!(!q.full());
        q.put_nowait(i).unwrap();
    }
    assert!(q.full());
    assert_eq!(q.qsize(), 6);
    match q.put_nowait(99) {
        Err(PutError::Full(v)) => assert_eq!(v, 99, "the value comes back"),
        other => panic!("expected Full, got {other:?}"),
    }
    let start = Instant::now();
    assert!(q.put_timeout(100, Duration::from_millis(50)).unwrap_err().is_full());
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.get().unwrap(), 0);
    assert!(!q.full());
    q.put_nowait(6).unwrap();
    let rest: Vec<u32> = (0..6).map(|_| q.get_nowait().unwrap()).collect();
    assert_eq!(rest, [1, 2, 3, 4, 5, 6]);
    assert!(q.empty());
}

#[test]
fn get_timeout_on_an_empty_queue_waits_then_gives_empty() {
    let q: Queue<u8> = Queue::new().unwrap();
    let start = Instant::now();
    assert!(matches!(q.get_timeout(Duration::from_millis(200)), Err(Error::Empty)));
    assert!(start.elapsed() >= Duration::from_millis(200), "returned after {:?}", start.elapsed());
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

fn put_range(q: Queue<u32>, from: u32, to: u32) {
    for i in from..to {
        q.put(i).unwrap();
    }
}

#[test]
fn items_put_before_and_by_a_child_arrive_in_order() {
    let q = Queue::new().unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let mut p = Process::new(put_range, (q.clone(), 10, 20));
    p.start().unwrap();
    let got: Vec<u32> = (0..20).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert_eq!(p.join().unwrap(), 0);
}

fn joinable_worker(q: JoinableQueue<u32>, results: Queue<u64>) {
    loop {
        let item = q.get().unwrap();
        if item == u32::MAX {
            q.task_done().unwrap();
            return;
        }
        results.put(u64::from(item) * 2).unwrap();
        q.task_done().unwrap();
    }
}

#[test]
fn joinable_queue_join_returns_once_four_workers_are_done() {
    let q = JoinableQueue::new().unwrap();
    let results = Queue::new().unwrap();
    let workers: Vec<Process> =
        (0..4).map(|_| Process::new(joinable_worker, (q.clone(), results.clone()))).collect();
    let mut workers = workers;
    for w in &mut workers {
        w.start().unwrap();
    }
    for i in 0..200u32 {
        q.put(i).unwrap();
    }
    q.join().unwrap();
    // Every item was processed before `join` returned.
    assert_eq!(q.unfinished_tasks(), 0);
    assert_eq!(results.qsize(), 200);
    let mut sum = 0u64;
    while let Ok(v) = results.get_nowait() {
        sum += v;
    }
    assert_eq!(sum, 2 * (0..200u64).sum::<u64>());
    for _ in 0..4 {
        q.put(u32::MAX).unwrap();
    }
    q.join().unwrap();
    for w in &workers {
        assert_eq!(w.join().unwrap(), 0);
    }
    assert!(matches!(q.task_done(), Err(Error::TooManyTaskDone)));
    assert!(q.join_timeout(Duration::ZERO).unwrap());
}

#[test]
fn join_timeout_waits_for_unfinished_tasks() {
    let q = JoinableQueue::new().unwrap();
    q.put("job".to_owned()).unwrap();
    let start = Instant::now();
    assert!(!q.join_timeout(Duration::from_millis(50)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.get().unwrap(), "job");
    assert_eq!(q.unfinished_tasks(), 1, "taking an item does not finish it");
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::ZERO).unwrap());
}

/// How many messages the stress test moves, in total.
const STRESS_TOTAL: u64 = 1_000_000;

fn stress_producer(q: Queue<(u8, u32)>, id: u8, n: u32) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

/// Takes items until it gets a stop marker, checking that each producer's items come in
/// increasing order, and reports (count, sum of values, sum of squares).
fn stress_consumer(q: Queue<(u8, u32)>, report: Queue<(u64, u64, u128)>) {
    let mut last: HashMap<u8, u32> = HashMap::new();
    let (mut count, mut sum, mut squares) = (0u64, 0u64, 0u128);
    loop {
        let (id, i) = q.get().unwrap();
        if id == u8::MAX {
            break;
        }
        if let Some(prev) = last.insert(id, i) {
            assert!(i > prev, "producer {id}: {i} after {prev}");
        }
        let v = u64::from(id) * 1_000_000 + u64::from(i);
        count += 1;
        sum += v;
        squares += u128::from(v) * u128::from(v);
    }
    report.put((count, sum, squares)).unwrap();
}

#[test]
fn a_million_messages_through_four_producers_and_four_consumers_arrive_once() {
    let q = Queue::new().unwrap();
    let report = Queue::new().unwrap();
    let per_producer = (STRESS_TOTAL / 4) as u32;
    let mut producers: Vec<Process> =
        (0..4u8).map(|id| Process::new(stress_producer, (q.clone(), id, per_producer))).collect();
    let mut consumers: Vec<Process> =
        (0..4).map(|_| Process::new(stress_consumer, (q.clone(), report.clone()))).collect();
    for p in producers.iter_mut().chain(consumers.iter_mut()) {
        p.start().unwrap();
    }
    for p in &producers {
        assert_eq!(p.join().unwrap(), 0);
    }
    for _ in 0..4 {
        q.put((u8::MAX, 0)).unwrap();
    }
    let (mut count, mut sum, mut squares) = (0u64, 0u64, 0u128);
    for _ in 0..4 {
        let (c, s, sq) = report.get().unwrap();
        count += c;
        sum += s;
        squares += sq;
    }
    for p in &consumers {
        assert_eq!(p.join().unwrap(), 0);
    }
    let (mut want_sum, mut want_squares) = (0u64, 0u128);
    for id in 0..4u64 {
        for i in 0..u64::from(per_producer) {
            let v = id * 1_000_000 + i;
            want_sum += v;
            want_squares += u128::from(v) * u128::from(v);
        }
    }
    assert_eq!(count, STRESS_TOTAL);
    assert_eq!(sum, want_sum);
    assert_eq!(squares, want_squares);
    assert!(q.empty());
}

/// Bytes that serialise as one byte string (not one element at a time).
#[derive(Debug, PartialEq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

fn reverse_blobs(inbox: Queue<Blob>, outbox: Queue<Blob>, n: u32) {
    for _ in 0..n {
        let mut b = inbox.get().unwrap();
        b.0.reverse();
        outbox.put(b).unwrap();
    }
}

#[test]
fn sixteen_mib_messages_round_trip() {
    let inbox = Queue::new().unwrap();
    let outbox = Queue::new().unwrap();
    let mut p = Process::new(reverse_blobs, (inbox.clone(), outbox.clone(), 3));
    p.start().unwrap();
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    // Larger than the ring (out of band), then one that fits, then the large one again.
    inbox.put(Blob(big.clone())).unwrap();
    inbox.put(Blob(vec![1, 2, 3])).unwrap();
    inbox.put(Blob(big.clone())).unwrap();
    let mut reversed = big.clone();
    reversed.reverse();
    assert_eq!(outbox.get().unwrap(), Blob(reversed.clone()));
    assert_eq!(outbox.get().unwrap(), Blob(vec![3, 2, 1]));
    assert_eq!(outbox.get().unwrap(), Blob(reversed));
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn a_small_ring_carries_messages_larger_than_itself_in_order() {
    let q: Queue<Vec<u32>> = Queue::builder().capacity(4096).build().unwrap();
    let mut p = Process::new(
        |q: Queue<Vec<u32>>| {
            for n in [1usize, 3000, 10, 5000, 0] {
                q.put(vec![n as u32; n]).unwrap();
            }
        },
        (q.clone(),),
    );
    p.start().unwrap();
    for n in [1usize, 3000, 10, 5000, 0] {
        assert_eq!(q.get().unwrap(), vec![n as u32; n]);
    }
    assert_eq!(p.join().unwrap(), 0);
}

/// A value whose serialisation fails.
struct Unserialisable;

impl Serialize for Unserialisable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to be serialised"))
    }
}

impl<'de> Deserialize<'de> for Unserialisable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserialisable)
    }
}

#[derive(Serialize, Deserialize)]
enum Item {
    Good(u32),
    Bad(Unserialisable),
}

#[test]
fn bad_items_fail_alone_and_later_items_go_through() {
    let q: Queue<Item> = Queue::new().unwrap();
    q.put(Item::Good(1)).unwrap();
    match q.put(Item::Bad(Unserialisable)) {
        Err(PutError::Failed { value: Item::Bad(_), error: Error::Wire(_) }) => {}
        other => {
            panic!("expected a serialisation failure, got {:?}", other.map_err(|e| e.to_string()))
        }
    }
    q.put(Item::Good(2)).unwrap();
    assert!(matches!(q.get().unwrap(), Item::Good(1)));
    assert!(matches!(q.get().unwrap(), Item::Good(2)));

    let small: Queue<Vec<u8>> = Queue::builder().max_message_size(100).build().unwrap();
    let err = small.put(vec![7; 200]).unwrap_err();
    assert!(matches!(&err, PutError::Failed { error: Error::Wire(_), .. }), "{err}");
    assert_eq!(err.into_inner().len(), 200, "the value comes back");
    small.put(vec![1; 10]).unwrap();
    assert_eq!(small.get().unwrap(), vec![1; 10]);
    assert!(small.empty());
}

#[test]
fn an_item_that_does_not_serialise_says_why() {
    // postcard's error keeps no message; the queue's and the pipe's errors do.
    let why = "this value refuses to be serialised";
    let q: Queue<Item> = Queue::new().unwrap();
    let err = q.put(Item::Bad(Unserialisable)).unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
    assert!(matches!(err.into_inner(), Item::Bad(_)), "the value comes back");
    let simple: SimpleQueue<Item> = SimpleQueue::new().unwrap();
    let err = simple.put(Item::Bad(Unserialisable)).unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
    let (a, b) = mp_queue::pipe(true).unwrap();
    let err = a.send(&Item::Bad(Unserialisable)).unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
    a.send(&Item::Good(5)).unwrap();
    assert!(matches!(b.recv::<Item>().unwrap(), Item::Good(5)), "the pipe goes on");
}

#[test]
fn a_queue_received_as_another_type_is_refused_and_says_what_arrived() {
    // Issue 10: a `Queue<u64>` received as a `Queue<String>` was accepted and failed only at
    // `get`.
    let numbers: Queue<u64> = Queue::new().unwrap();
    let (a, b) = mp_queue::pipe(true).unwrap();
    a.send(&numbers).unwrap();
    match b.recv::<Queue<String>>() {
        Err(Error::Wire(mp_process::wire::WireError::Refused(why))) => assert_eq!(
            why,
            "a mp_queue::Queue<u64> was received where a \
             mp_queue::Queue<alloc::string::String> was expected"
        ),
        other => panic!("{other:?}"),
    }
    a.send(&numbers).unwrap();
    assert!(matches!(b.recv::<SimpleQueue<u64>>(), Err(Error::Wire(_))));
    // The connection goes on, and the right type is accepted.
    a.send(&numbers).unwrap();
    let back: Queue<u64> = b.recv().unwrap();
    back.put(7).unwrap();
    assert_eq!(numbers.get().unwrap(), 7);
    // A handle accepted once as `Queue<u64>` is checked again on every receive: as another
    // type it is still refused, as the same type still taken.
    a.send(&numbers).unwrap();
    assert!(matches!(
        b.recv::<Queue<String>>(),
        Err(Error::Wire(mp_process::wire::WireError::Refused(_)))
    ));
    a.send(&numbers).unwrap();
    assert!(matches!(b.recv::<Queue<i64>>(), Err(Error::Wire(_))));
    a.send(&numbers).unwrap();
    let again: Queue<u64> = b.recv().unwrap();
    again.put(8).unwrap();
    assert_eq!(numbers.get().unwrap(), 8);
}

/// A number that refuses to be decoded when it is odd.
#[derive(Debug, PartialEq, Serialize)]
struct Even(u32);

impl<'de> Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 1 {
            return Err(serde::de::Error::custom("odd"));
        }
        Ok(Even(n))
    }
}

#[test]
fn a_message_that_does_not_decode_is_an_error_that_consumes_it() {
    let q: Queue<Even> = Queue::new().unwrap();
    q.put(Even(3)).unwrap();
    q.put(Even(4)).unwrap();
    assert!(matches!(q.get(), Err(Error::Wire(_))));
    assert_eq!(q.get().unwrap(), Even(4), "the queue goes on after the bad message");
}

#[test]
fn close_closes_the_queue_for_this_process_only() {
    // Python: "no more data will be put on this queue by the current process". A copy
    // received in the same process shares the process's one ring, and is closed with it.
    let q: Queue<u8> = Queue::new().unwrap();
    q.put(1).unwrap();
    let (a, b) = mp_queue::pipe(true).unwrap();
    a.send(&q).unwrap();
    let same: Queue<u8> = b.recv().unwrap();
    q.close();
    assert!(q.is_closed() && same.is_closed());
    assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    assert!(matches!(same.get(), Err(Error::Closed)));
    // Another process's handles stay open: a child takes the item.
    let mut p = Process::new(take_one, (q.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    let s: SimpleQueue<u8> = SimpleQueue::new().unwrap();
    s.close();
    assert!(matches!(s.put(1), Err(PutError::Closed(1))));
}

/// Exits 0 if it takes 1 from the queue.
fn take_one(q: Queue<u8>) {
    let got = q.get();
    std::process::exit(if matches!(got, Ok(1)) { 0 } else { 1 });
}

fn simple_echo(inbox: SimpleQueue<String>, outbox: SimpleQueue<String>) {
    loop {
        let s = inbox.get().unwrap();
        if s.is_empty() {
            return;
        }
        outbox.put(s.to_uppercase()).unwrap();
    }
}

#[test]
fn simple_queues_between_processes() {
    let inbox = SimpleQueue::new().unwrap();
    let outbox = SimpleQueue::new().unwrap();
    let mut p = Process::new(simple_echo, (inbox.clone(), outbox.clone()));
    p.start().unwrap();
    assert!(outbox.empty());
    for word in ["alpha", "beta", "gamma"] {
        inbox.put(word.into()).unwrap();
    }
    inbox.put(String::new()).unwrap();
    assert_eq!(p.join().unwrap(), 0);
    let got: Vec<String> = (0..3).map(|_| outbox.get().unwrap()).collect();
    assert_eq!(got, ["ALPHA", "BETA", "GAMMA"]);
    assert!(outbox.empty());
}

/// Receives a queue inside a message on `control`, then serves it: echoes each number put on
/// `requests` (a queue that arrived inside a queue message) to the received queue.
fn adopt_queues(control: Connection) {
    let replies: Queue<u64> = control.recv().unwrap();
    let requests: Queue<Queue<u64>> = control.recv().unwrap();
    let inner = requests.get().unwrap();
    for _ in 0..3 {
        let n = inner.get().unwrap();
        replies.put(n * 10).unwrap();
    }
}

#[test]
fn queues_travel_inside_messages_to_a_running_child() {
    let (control, child_control) = mp_queue::pipe(true).unwrap();
    let mut p = Process::new(adopt_queues, (child_control,));
    p.start().unwrap();
    let replies: Queue<u64> = Queue::new().unwrap();
    let requests: Queue<Queue<u64>> = Queue::new().unwrap();
    control.send(&replies).unwrap();
    control.send(&requests).unwrap();
    // A queue inside a queue message: its descriptors go over the side channel.
    let inner: Queue<u64> = Queue::new().unwrap();
    requests.put(inner.clone()).unwrap();
    for n in [1, 2, 3] {
        inner.put(n).unwrap();
    }
    let got: Vec<u64> = (0..3).map(|_| replies.get().unwrap()).collect();
    assert_eq!(got, [10, 20, 30]);
    assert_eq!(p.join().unwrap(), 0);
}

/// Sends a line through each pipe descriptor it gets from the queue.
fn write_to_fds(q: Queue<(u32, PassFd)>, n: u32) {
    for _ in 0..n {
        let (i, fd) = q.get().unwrap();
        let file = std::fs::File::from(fd.into_inner());
        use std::io::Write;
        writeln!(&file, "message {i}").unwrap();
    }
}

#[test]
fn descriptors_travel_in_queue_messages_in_order() {
    let q = Queue::new().unwrap();
    let mut p = Process::new(write_to_fds, (q.clone(), 20));
    p.start().unwrap();
    let mut readers = Vec::new();
    for i in 0..20u32 {
        let (r, w) = rustix::pipe::pipe().unwrap();
        q.put((i, PassFd(w))).unwrap();
        readers.push(r);
    }
    assert_eq!(p.join().unwrap(), 0);
    for (i, r) in readers.into_iter().enumerate() {
        let text = std::io::read_to_string(std::fs::File::from(r)).unwrap();
        assert_eq!(text, format!("message {i}\n"));
    }
}

fn put_one_after_go(q: Queue<String>, go: Connection) {
    let _: u8 = go.recv().unwrap();
    q.put("ready".into()).unwrap();
}

#[test]
fn wait_returns_a_queue_once_it_holds_an_item() {
    let q = Queue::new().unwrap();
    let (go, child_go) = mp_queue::pipe(true).unwrap();
    let mut p = Process::new(put_one_after_go, (q.clone(), child_go));
    p.start().unwrap();
    assert!(mp_queue::wait_timeout([&q], Duration::from_millis(20)).unwrap().is_empty());
    go.send(&1u8).unwrap();
    assert_eq!(mp_queue::wait([&q]).unwrap().len(), 1);
    assert_eq!(q.get_nowait().unwrap(), "ready");
    assert!(mp_queue::wait_timeout([&q], Duration::ZERO).unwrap().is_empty(), "drained once empty");
    assert_eq!(p.join().unwrap(), 0);
    // Items put before anyone polled ring the doorbell when the first poller registers.
    let early: Queue<u8> = Queue::new().unwrap();
    early.put(1).unwrap();
    assert_eq!(mp_queue::wait_timeout([&early], Duration::ZERO).unwrap().len(), 1);
}

#[test]
fn blocked_producers_resume_when_a_consumer_makes_room() {
    let q = Queue::with_maxsize(2).unwrap();
    let mut p = Process::new(put_range, (q.clone(), 0, 50));
    p.start().unwrap();
    let got: Vec<u32> = (0..50).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn received_queue_of_the_wrong_kind_is_refused() {
    let simple: SimpleQueue<u8> = SimpleQueue::new().unwrap();
    let (a, b) = mp_queue::pipe(true).unwrap();
    a.send(&simple).unwrap();
    assert!(matches!(b.recv::<Queue<u8>>(), Err(Error::Wire(_))));
    let plain: Queue<u8> = Queue::new().unwrap();
    a.send(&plain).unwrap();
    assert!(matches!(b.recv::<JoinableQueue<u8>>(), Err(Error::Wire(_))));
    let joinable: JoinableQueue<u8> = JoinableQueue::new().unwrap();
    a.send(&joinable).unwrap();
    let as_plain: Queue<u8> = b.recv().unwrap();
    joinable.put(5).unwrap();
    assert_eq!(as_plain.get().unwrap(), 5, "a JoinableQueue is a Queue");
}

#[test]
fn invalid_options_are_errors() {
    for capacity in [0, 1000, 3 << 20, 2 << 30] {
        let r = Queue::<u8>::builder().capacity(capacity).build();
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "capacity {capacity}");
    }
    let r = Queue::<u8>::builder().max_message_size(0).build();
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
}

/// The child of `with_spinning_off_every_sleeper_is_woken`: with spinning off, echoes
/// `rounds` numbers from `ping` on `pong`, then puts `burst` numbered 200-byte messages on
/// `pong`, whose ring is too small for more than a few of them.
fn echo_then_burst(
    ping: Queue<u32>,
    pong: Queue<Vec<u8>>,
    rounds: u32,
    burst: u32,
) -> Result<(), Error> {
    mp_sync::set_spin_limit(0);
    for _ in 0..rounds {
        let n = ping.get()?;
        pong.put(n.to_le_bytes().to_vec())?;
    }
    for i in 0..burst {
        let mut message = vec![0u8; 200];
        message[..4].copy_from_slice(&i.to_le_bytes());
        pong.put(message)?;
    }
    Ok(())
}

#[test]
fn with_spinning_off_every_sleeper_is_woken() {
    // Neither side spins, so every `get` on an empty queue and every `put` into a full ring
    // sleeps: first in round trips (both sides sleep in turn), then in a burst through a
    // 4 KiB ring (the producer sleeps for room, the consumer for data). A put or get that
    // missed the other side asleep would leave it asleep for ever (the gets and puts here
    // have no timeout), and the suite's time limit would end the test.
    mp_sync::set_spin_limit(0);
    let ping: Queue<u32> = Queue::new().unwrap();
    let pong: Queue<Vec<u8>> = Queue::builder().capacity(4096).build().unwrap();
    let (rounds, burst) = (3_000u32, 3_000u32);
    let mut p = Process::new(echo_then_burst, (ping.clone(), pong.clone(), rounds, burst));
    p.start().unwrap();
    for n in 0..rounds {
        ping.put(n).unwrap();
        assert_eq!(pong.get().unwrap(), n.to_le_bytes());
    }
    for i in 0..burst {
        let message = pong.get().unwrap();
        assert_eq!((message.len(), &message[..4]), (200, &i.to_le_bytes()[..]));
    }
    assert_eq!(p.join().unwrap(), 0);
    mp_sync::set_spin_limit(mp_sync::DEFAULT_SPIN_LIMIT);
}

/// The child of `put_ref_puts_a_copy_and_keeps_the_item`: takes two blocks and a number,
/// and answers with their byte sums and the number.
fn sum_blocks(
    q: Queue<Vec<u8>>,
    joinable: JoinableQueue<u64>,
    out: Queue<u64>,
) -> Result<(), Error> {
    for _ in 0..2 {
        let block = q.get()?;
        out.put(block.iter().map(|&b| u64::from(b)).sum::<u64>())?;
    }
    out.put(joinable.get()?)?;
    joinable.task_done()?;
    Ok(())
}

#[test]
fn put_ref_puts_a_copy_and_keeps_the_item() {
    const LARGE: usize = (1 << 21) - 16;
    let q: Queue<Vec<u8>> = Queue::builder().max_message_size(1 << 21).build().unwrap();
    let joinable: JoinableQueue<u64> = JoinableQueue::new().unwrap();
    let out: Queue<u64> = Queue::new().unwrap();
    let mut p = Process::new(sum_blocks, (q.clone(), joinable.clone(), out.clone()));
    p.start().unwrap();
    // A block larger than half the ring goes out of band; the caller keeps both. A joinable
    // queue counts what `put_ref` puts as an unfinished task, as any put. Everything is
    // taken and the child joined before anything is checked, so a failure leaves no child.
    let (small, large) = (vec![3u8; 1000], vec![1u8; LARGE]);
    let puts = [q.put_ref(&small), q.put_ref(&large), joinable.put_ref(&7)];
    let answers: Vec<_> = (0..3).map(|_| out.get_timeout(Duration::from_secs(30))).collect();
    let all_came = answers.iter().all(Result::is_ok);
    if !all_came {
        let _ = p.kill();
    }
    let code = p.join();
    assert!(puts.iter().all(Result::is_ok), "{puts:?}");
    // The child took the number and said so before its last answer.
    assert!(all_came, "{answers:?}");
    assert!(joinable.join_timeout(Duration::ZERO).unwrap());
    let answers: Vec<u64> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers, [3000, LARGE as u64, 7]);
    assert_eq!(code.unwrap(), 0);
    assert_eq!((small.len(), large.len()), (1000, LARGE));

    // Too large: an error, and the queue is unchanged and goes on.
    let too_large = vec![0u8; (1 << 21) + 1];
    assert!(matches!(q.put_ref(&too_large), Err(Error::Wire(_))));
    assert!(q.empty());
    q.put_ref(&small).unwrap();
    assert_eq!(q.get().unwrap(), small);

    // A simple queue has it too; after `close`, `Closed`.
    let simple: SimpleQueue<String> = SimpleQueue::new().unwrap();
    let text = "kept".to_string();
    simple.put_ref(&text).unwrap();
    assert_eq!((simple.get().unwrap(), text.as_str()), ("kept".to_string(), "kept"));
    simple.close();
    assert!(matches!(simple.put_ref(&text), Err(Error::Closed)));
    q.close();
    assert!(matches!(q.put_ref(&small), Err(Error::Closed)));
}
