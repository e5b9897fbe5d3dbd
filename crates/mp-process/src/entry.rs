//! The entry hook: the `.init_array` constructor that diverts a fresh exec of the binary
//! before `main` when its environment carries one of mp's markers (a spawned child, the
//! forkserver, the resource tracker), and the check that it ran.

use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::boot::{BOOT_ENV, FORKSERVER_ENV};
use crate::{bootstrap, forkserver, os, tracker};

/// Set by the entry hook when it runs.
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// The constructor the dynamic loader runs before `main` in every process of a binary that
/// links `mp-process`: it diverts bootstrapped children before `main` is reached.
extern "C" fn entry_hook(_argc: c_int, _argv: *const *const c_char, _envp: *const *const c_char) {
    HOOK_RAN.store(true, Ordering::Relaxed);
    on_entry();
}

// SAFETY: an `.init_array` entry must be a pointer to an `extern "C"` function taking
// `(argc, argv, envp)`, which `entry_hook` is; the loader calls it once, before `main`, on the
// main thread.
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static ENTRY_HOOK: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = entry_hook;

/// Whether the entry hook ran in this process. Reading `ENTRY_HOOK` here makes every caller
/// (process start, `init`) pull the object that holds the hook into the link.
pub(crate) fn hook_ran() -> bool {
    std::hint::black_box(&ENTRY_HOOK);
    HOOK_RAN.load(Ordering::Relaxed)
}

/// Pretends the hook did or did not run, to test the error paths that depend on it.
#[cfg(test)]
pub(crate) fn set_hook_ran_for_test(ran: bool) {
    HOOK_RAN.store(ran, Ordering::Relaxed);
}

/// Removes the marker `name` from the environment, in the entry hook.
fn remove_marker(name: &str) {
    // SAFETY: `remove_env_in_hook` needs a process with a single thread. Only `on_entry` calls
    // this, and only the entry hook calls `on_entry`: the loader runs it before `main`, when
    // no thread but the main one exists.
    #[allow(unsafe_code)]
    unsafe {
        os::process::remove_env_in_hook(name)
    };
}

/// What a marked process serves: the marker's name and the function that serves it.
type Marker = (&'static str, fn() -> i32);

/// Called by the entry hook before `main`: a marked process becomes a child or the
/// forkserver and never returns; any other process goes on to `main`.
fn on_entry() {
    let markers: [Marker; 3] = [
        (BOOT_ENV, bootstrap::run_spawned),
        (tracker::TRACKER_ENV, tracker::serve),
        (FORKSERVER_ENV, forkserver::serve),
    ];
    for (name, serve) in markers {
        if let Some(v) = std::env::var_os(name) {
            remove_marker(name);
            let code = match v.to_str().and_then(|s| s.parse::<i32>().ok()) {
                Some(fd) if fd == os::process::BOOT_FD => serve(),
                _ => bootstrap::fail(&format!("bad {name} value {v:?}")),
            };
            os::process::exit_now(code);
        }
    }
}
