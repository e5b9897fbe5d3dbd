//! The floors: what the kernel and libc cost for the same work, with no `mp` logic.
//!
//! They run in the same binary as the mp side, in a fresh process of the same kind, so that
//! both are measured at the same resident size.

use std::ffi::{CString, OsString, c_char};
use std::io;
use std::os::unix::ffi::OsStringExt as _;
use std::ptr;

use anyhow::{Context, Result, ensure};

/// Waits for the child `pid` and checks that it exited with status 0.
fn wait_ok(pid: libc::pid_t) -> Result<()> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live, writable local; waitpid writes only there.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if got == -1 && error.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(error).context("waitpid");
    }
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child ended with wait status {status:#x}"
    );
    Ok(())
}

/// Forks a child that calls `_exit(0)` at once, and waits for it.
pub fn fork_exit_wait() -> Result<()> {
    // SAFETY: the child runs only `_exit`, which is async-signal-safe, so forking is sound even
    // if other threads hold locks; the parent only waits.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()).context("fork"),
        0 => {
            // SAFETY: `_exit` ends the child at once, running none of the parent's destructors
            // or atexit handlers, which the child must not run.
            unsafe { libc::_exit(0) }
        }
        pid => wait_ok(pid),
    }
}

/// Starts this binary again as `<argv0> exit-now` with `posix_spawn` and waits for it.
pub struct ExecSelf {
    argv0: CString,
    env: Vec<CString>,
}

impl ExecSelf {
    /// Prepares argv and the environment, so that the timed part only spawns and waits.
    pub fn new() -> Result<ExecSelf> {
        let argv0 = std::env::args_os().next().unwrap_or_else(|| OsString::from("mp-bench"));
        let argv0 = CString::new(argv0.into_vec()).context("argv[0] holds a NUL byte")?;
        let env = std::env::vars_os()
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                CString::new(entry)
            })
            .collect::<Result<Vec<_>, _>>()
            .context("an environment variable holds a NUL byte")?;
        Ok(ExecSelf { argv0, env })
    }

    /// Spawns `/proc/self/exe exit-now` and waits for it to exit.
    pub fn run_once(&self) -> Result<()> {
        let argv: [*mut c_char; 3] =
            [self.argv0.as_ptr().cast_mut(), c"exit-now".as_ptr().cast_mut(), ptr::null_mut()];
        let mut envp: Vec<*mut c_char> = self.env.iter().map(|e| e.as_ptr().cast_mut()).collect();
        envp.push(ptr::null_mut());
        let mut pid: libc::pid_t = 0;
        // SAFETY: the path, every argv entry and every envp entry are NUL-terminated strings that
        // outlive the call, both arrays end with a null pointer, posix_spawn does not write
        // through them despite the `*mut` in its signature, and null file actions and attributes
        // ask for the defaults.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                c"/proc/self/exe".as_ptr(),
                ptr::null(),
                ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc)).context("posix_spawn of /proc/self/exe");
        }
        wait_ok(pid)
    }
}
