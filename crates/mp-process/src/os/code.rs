//! Code crossing into other processes of the same executable: a function travels as its
//! offset into the executable's text, never as a pointer.
//!
//! [`Entry`] is the checked form every crate of mp uses: an offset plus a tag that signs it
//! with a key only the processes of this tree hold, so that an entry that arrives in bytes is
//! known to have been made by [`Entry::of`] or [`Entry::from_fn`] before it is called, and
//! calling it is safe. There is no other way to send code.
#![allow(unsafe_code)]

use std::any::TypeId;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::OnceLock;

unsafe extern "C" {
    /// Start of the executable's first segment, defined by every GNU-compatible linker.
    static __executable_start: u8;
    /// End of the executable's text, defined by every GNU-compatible linker.
    static etext: u8;
}

/// The half-open address range of the main executable's text.
pub(crate) fn text_range() -> (usize, usize) {
    // Only the addresses of the two linker-defined symbols are taken; they are never read.
    (std::ptr::addr_of!(__executable_start) as usize, std::ptr::addr_of!(etext) as usize)
}

/// The offset of the address `addr` from the start of the executable, if it lies in its text.
fn offset_in_text(addr: usize) -> Option<u64> {
    let (start, end) = text_range();
    (start..end).contains(&addr).then(|| (addr - start) as u64)
}

/// The address `offset` bytes into the executable, if it lies inside its text.
fn text_addr(offset: u64) -> Option<usize> {
    let (start, end) = text_range();
    let addr = start.checked_add(usize::try_from(offset).ok()?)?;
    (addr < end).then_some(addr)
}

/// The key of this process tree: made at random by the first process that needs it, inherited
/// by forked children, and handed to spawned children in their bootstrap message.
static KEY: OnceLock<[u64; 2]> = OnceLock::new();

/// The key entries of this process tree are signed with: made at random by the first process
/// of the tree that needs it, inherited by every child under every start method.
///
/// For an engine that starts workers of this executable outside `mp-process` (the ranks of an
/// MPI job, `mp-mpi`): it hands the key to them over a channel it trusts as `mp-process`
/// trusts a spawned child's bootstrap pipe, and they [`adopt_tree_key`] it. Whoever holds the
/// key can make this tree's processes call any function of the executable's text: never send
/// it where an untrusted process can read it.
pub fn tree_key() -> [u64; 2] {
    *KEY.get_or_init(|| {
        let random = std::collections::hash_map::RandomState::new();
        let salt = (std::process::id(), std::time::SystemTime::now());
        [random.hash_one(salt), random.hash_one((salt, 1u8))]
    })
}

/// Adopts the key of the tree this process was started into (a spawned or forkserver child,
/// a worker of an engine), before it reads any entry. False if this process already has
/// another key.
pub fn adopt_tree_key(key: [u64; 2]) -> bool {
    *KEY.get_or_init(|| key) == key
}

/// SipHash-2-4 (Aumasson and Bernstein), the keyed hash that signs entries.
struct SipHasher {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    length: usize,
}

impl SipHasher {
    fn new(key: [u64; 2]) -> SipHasher {
        let [k0, k1] = key;
        SipHasher {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.v;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    fn block(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }
}

impl Hasher for SipHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            if self.ntail == 8 {
                let m = std::mem::take(&mut self.tail);
                self.ntail = 0;
                self.block(m);
            }
        }
        self.length = self.length.wrapping_add(bytes.len());
    }

    fn finish(&self) -> u64 {
        let mut s = SipHasher { v: self.v, tail: 0, ntail: 0, length: 0 };
        s.block(self.tail | ((self.length as u64 & 0xff) << 56));
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            s.round();
        }
        let [v0, v1, v2, v3] = s.v;
        v0 ^ v1 ^ v2 ^ v3
    }
}

/// A fingerprint of this process's executable file (a keyed hash of its bytes, the same in
/// every process that runs the same file), computed once. Entries cross only between
/// processes of the same executable: an engine whose workers are started from a path (on
/// other hosts, say) compares fingerprints before it trusts their code to be the same.
pub fn executable_fingerprint() -> std::io::Result<u64> {
    static PRINT: OnceLock<Result<u64, std::io::ErrorKind>> = OnceLock::new();
    let print = PRINT.get_or_init(|| {
        use std::io::Read;
        let mut file = std::fs::File::open("/proc/self/exe").map_err(|e| e.kind())?;
        let mut h = SipHasher::new([0x6d70_2d65_7865_6375, 0x7461_626c_6520_7072]);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.kind()),
            };
            let bytes = buf.get(..n).unwrap_or(&[]);
            let words = bytes.chunks_exact(8);
            let tail = words.remainder();
            if h.ntail == 0 {
                for w in words {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    h.block(u64::from_le_bytes(b));
                }
                h.length = h.length.wrapping_add(n - tail.len());
                h.write(tail);
            } else {
                h.write(bytes);
            }
        }
        Ok(h.finish())
    });
    print.map_err(std::io::Error::from)
}

/// The tag of an entry at `offset` taking a `&mut C`, under `key`.
fn tag_of(key: [u64; 2], offset: u64, context: TypeId) -> u64 {
    let mut h = SipHasher::new(key);
    h.write(&offset.to_le_bytes());
    context.hash(&mut h);
    h.finish()
}

/// The code of a zero-sized value (a `fn` item, a closure that captures nothing, or a
/// zero-sized wrapper of one) that runs with a context `C`. An [`Entry`] made from a value of
/// such a type re-makes the value in the process that calls it.
pub trait Body<C: ?Sized>: Copy + Send + Sync {
    /// Runs with the context.
    fn run(self, context: &mut C);
}

/// A zero-sized callable `F` (a `fn` item or a closure that captures nothing) with the type of
/// the arguments it will be called with: the usual shape of a [`Body`], implemented by the
/// crate that knows the context (a process target and its arguments, a pool task and its).
pub struct Callable<F, Args>(pub F, PhantomData<fn(Args)>);

impl<F, Args> Callable<F, Args> {
    /// Pairs `f` with its argument type.
    pub fn new(f: F) -> Self {
        Callable(f, PhantomData)
    }
}

impl<F: Copy, Args> Clone for Callable<F, Args> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, Args> Copy for Callable<F, Args> {}

/// A function of this executable that another process of the same tree can call, with a
/// context of type `C`: a text offset and a tag signing it.
///
/// An entry is made from a value ([`Entry::of`]) or a `fn(&mut C)` ([`Entry::from_fn`]),
/// travels as two `u64`s ([`Entry::to_parts`], or serde), and is checked when it is read
/// back ([`Entry::from_parts`]): the tag must be the one this tree's key gives for that offset
/// and context type. Only entries that pass can be called, so [`Entry::call`] is safe.
///
/// Making an entry from a zero-sized type takes a value of it ([`Entry::of`]), so a type that
/// has none (an empty enum) never becomes an entry at run time, and the value the entry
/// re-makes in the other process is one that existed.
pub struct Entry<C: ?Sized + 'static> {
    offset: u64,
    tag: u64,
    context: PhantomData<fn(&mut C)>,
}

impl<C: ?Sized + 'static> Clone for Entry<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: ?Sized + 'static> Copy for Entry<C> {}

impl<C: ?Sized + 'static> PartialEq for Entry<C> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
    }
}

impl<C: ?Sized + 'static> Eq for Entry<C> {}

impl<C: ?Sized + 'static> fmt::Debug for Entry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry<{}>({:#x})", std::any::type_name::<C>(), self.offset)
    }
}

/// The code that re-makes a value of the zero-sized `B` and runs it.
fn trampoline<B: Body<C>, C: ?Sized + 'static>(context: &mut C) {
    // Checked when `Entry::of::<B>` was instantiated, the only place that names this function.
    const { assert!(std::mem::size_of::<B>() == 0) };
    // SAFETY: `B` is zero-sized (the assertion above), so no bytes of it can be invalid, and
    // it is inhabited: this function is only reachable through an entry `Entry::of::<B>` made
    // from a value of `B` in this tree, whose tag `Entry::from_parts` checked. `B: Copy`, so
    // one more value of it duplicates nothing that may not be duplicated.
    let body: B = unsafe { std::mem::zeroed() };
    body.run(context);
}

impl<C: ?Sized + 'static> Entry<C> {
    /// The entry that runs `body` (a zero-sized value: a `fn` item or a closure that captures
    /// nothing, or a zero-sized wrapper of one). `None` if its code lies outside the
    /// executable's text (it cannot: generic code is instantiated in the executable).
    ///
    /// A type with a size is refused when the program is compiled:
    ///
    /// ```compile_fail
    /// # use mp_process::code::{Body, Entry};
    /// #[derive(Clone, Copy)]
    /// struct Big(u8);
    /// impl Body<()> for Big { fn run(self, _: &mut ()) {} }
    /// let _ = Entry::of(Big(1));
    /// ```
    pub fn of<B: Body<C>>(body: B) -> Option<Entry<C>> {
        const { assert!(std::mem::size_of::<B>() == 0, "an entry's body must be zero-sized") };
        let _ = body;
        Self::from_fn(trampoline::<B, C>)
    }

    /// The entry that calls `f`; `None` if `f` lies outside the executable's text (a function
    /// of a shared library).
    pub fn from_fn(f: fn(&mut C)) -> Option<Entry<C>> {
        let offset = offset_in_text(f as usize)?;
        Some(Entry {
            offset,
            tag: tag_of(tree_key(), offset, TypeId::of::<C>()),
            context: PhantomData,
        })
    }

    /// The entry as two numbers: its offset and its tag.
    pub fn to_parts(self) -> (u64, u64) {
        (self.offset, self.tag)
    }

    /// The entry an [`Entry::to_parts`] of this tree made; `None` if the tag does not sign the
    /// offset for a context of type `C` (forged, corrupt, from another tree, or made for
    /// another context type), or if the offset lies outside the text.
    pub fn from_parts(offset: u64, tag: u64) -> Option<Entry<C>> {
        text_addr(offset)?;
        (tag_of(tree_key(), offset, TypeId::of::<C>()) == tag).then_some(Entry {
            offset,
            tag,
            context: PhantomData,
        })
    }

    /// Calls the entry with `context`.
    pub fn call(self, context: &mut C) {
        let Some(addr) = text_addr(self.offset) else { return };
        // SAFETY: an `Entry<C>` exists only if `from_fn` made it from a `fn(&mut C)` of this
        // executable, or `from_parts` found its tag to be the one this tree's key gives for
        // this offset and `C`, which only `from_fn` in a process of this tree (same executable,
        // checked at every start) computes; so `addr` is the address of a `fn(&mut C)`.
        let f = unsafe { std::mem::transmute::<usize, fn(&mut C)>(addr) };
        f(context);
    }
}

impl<C: ?Sized + 'static> serde::Serialize for Entry<C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_parts().serialize(s)
    }
}

impl<'de, C: ?Sized + 'static> serde::Deserialize<'de> for Entry<C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (offset, tag) = <(u64, u64)>::deserialize(d)?;
        Entry::from_parts(offset, tag).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "an entry ({offset:#x}) that this process tree did not make for {}",
                std::any::type_name::<C>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The paper's appendix: key 00..0f, message 00..0e.
        let key = [
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        ];
        let mut h = SipHasher::new(key);
        h.write(&(0u8..15).collect::<Vec<_>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    fn bump(n: &mut u32) {
        *n += 1;
    }

    #[derive(Clone, Copy)]
    struct Twice;
    impl Body<u32> for Twice {
        fn run(self, n: &mut u32) {
            *n *= 2;
        }
    }

    #[test]
    fn entries_round_trip_and_forgeries_are_refused() {
        let e = Entry::from_fn(bump).unwrap();
        let (offset, tag) = e.to_parts();
        let back = Entry::<u32>::from_parts(offset, tag).unwrap();
        let mut n = 1;
        back.call(&mut n);
        assert_eq!(n, 2);
        Entry::of(Twice).unwrap().call(&mut n);
        assert_eq!(n, 4);
        // Another offset, another tag, another context type: refused.
        assert!(Entry::<u32>::from_parts(offset + 1, tag).is_none());
        assert!(Entry::<u32>::from_parts(offset, tag ^ 1).is_none());
        assert!(Entry::<u64>::from_parts(offset, tag).is_none());
        assert!(Entry::<u32>::from_parts(u64::MAX, tag).is_none());
        let (start, end) = text_range();
        assert!(Entry::<u32>::from_parts((end - start) as u64, tag).is_none());
        // Through serde.
        let bytes = postcard::to_allocvec(&e).unwrap();
        let again: Entry<u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(again, e);
        let forged = postcard::to_allocvec(&(offset, tag.wrapping_add(1))).unwrap();
        let err = postcard::from_bytes::<Entry<u32>>(&forged).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
    }

    #[test]
    fn a_process_adopts_one_tree_key() {
        assert!(adopt_tree_key(tree_key()));
        assert!(!adopt_tree_key([tree_key()[0] ^ 1, 0]));
    }
}
