//! The only `unsafe` code of `mp-pool`: turning a task's code offset back into a function,
//! and producing the value of a zero-sized task type in a worker.
//!
//! # Safety
//! A task crosses into a worker as the text offset of a monomorphised `fn()` trampoline
//! (`mp_process::code`), never as a value. Offsets are only made by [`entry_of`] in the
//! process that owns the pool and only read back from the pool's private socketpairs, which
//! only that process and its own workers hold; every worker runs the same executable (checked
//! by `mp-process` for spawned and forkserver children, inherited under fork).
#![allow(unsafe_code)]

/// The offset of `f` in the executable's text, `None` if it lies outside (a shared library).
pub(crate) fn entry_of(f: fn()) -> Option<u64> {
    mp_process::code::fn_offset(f)
}

/// The trampoline at `offset`, as [`entry_of`] made it in the pool's owner.
pub(crate) fn entry_at(offset: u64) -> Option<fn()> {
    // SAFETY: `offset` came over a pool socketpair that only the pool's owner and its workers
    // hold (see the module doc), and the owner made it with `entry_of` (`fn_offset`) from a
    // `fn()` trampoline of this same executable; `fn_at` checks it lies inside the text.
    unsafe { mp_process::code::fn_at(offset) }
}

/// A value of the zero-sized task type `F`, in a worker that never received one.
pub(crate) fn conjure<F: Copy + 'static>() -> F {
    const { assert!(std::mem::size_of::<F>() == 0) };
    // SAFETY: `F` is zero-sized (checked at compile time), so it has no bytes that could be
    // invalid. It is inhabited and may be duplicated: it is only ever a `fn` item or closure
    // type (`Task` bound, `Copy`), whose trampoline offset was made from a value of it that
    // the pool's owner held (`task::entry_for` takes that value).
    unsafe { std::mem::zeroed() }
}
