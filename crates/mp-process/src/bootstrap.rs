//! The child side of a start: reading and checking the bootstrap message, becoming the child
//! it describes, and the run-then-`_exit` of every child; starting helper processes (the
//! forkserver, the tracker) from a fresh exec.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::process::Signal;

use crate::boot::{
    BOOT_ENV, BOOTSTRAP_FAILURE, Boot, ChildRun, FORKSERVER_ENV, MAGIC, exe_identity,
};
use crate::os::code::Entry;
use crate::parent::ParentProcess;
use crate::relay::Client;
use crate::state::{Me, global};
use crate::{Error, Result, fdpass, os, wire};

/// Whether this process carries a bootstrap marker its entry hook did not consume.
pub(crate) fn marker_present() -> bool {
    std::env::var_os(BOOT_ENV).is_some() || std::env::var_os(FORKSERVER_ENV).is_some()
}

/// Starts a helper process (the forkserver or the tracker): a fresh exec of this executable
/// whose entry hook sees `env` and serves one end of a new `kind` socketpair, placed at
/// descriptor 3. Returns this process's end and the helper's pid. `what` names the helper
/// in errors.
pub(crate) fn spawn_helper(
    env: &str,
    kind: rustix::net::SocketType,
    what: &'static str,
) -> Result<(OwnedFd, rustix::process::Pid)> {
    let (mine, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        kind,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socketpair", e))?;
    let pid = os::process::spawn_self(theirs.as_fd(), &format!("{env}={}", os::process::BOOT_FD))
        .map_err(|e| Error::io(what, e))?;
    Ok((mine, pid))
}

/// The start of a helper process (the forkserver or the tracker): it survives a Ctrl-C to
/// its process group and a peer that went away, and takes its socket from descriptor 3.
/// On failure, the exit code to leave with.
pub(crate) fn helper_socket() -> std::result::Result<OwnedFd, i32> {
    os::process::ignore_sigpipe();
    os::process::ignore_sigint(true);
    take_boot_socket().map_err(|e| fail(&e))
}

/// Reports a bootstrap failure and returns its exit code.
pub(crate) fn fail(why: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "mp: child bootstrap failed: {why}");
    BOOTSTRAP_FAILURE
}

/// Takes the inherited bootstrap socket, checking that it is one.
pub(crate) fn take_boot_socket() -> std::result::Result<OwnedFd, String> {
    let fd = os::process::take_boot_fd().ok_or("descriptor 3 is not open")?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("fstat of the bootstrap fd: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err("descriptor 3 is not a socket".into());
    }
    Ok(fd)
}

/// A spawned child: read the bootstrap from the inherited socket and run the target.
pub(crate) fn run_spawned() -> i32 {
    let sock = match take_boot_socket() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let (bytes, fds) = match fdpass::recv_frame(sock.as_fd(), wire::DEFAULT_MAX_FRAME) {
        Ok(Some(frame)) => frame,
        Ok(None) => return fail("the parent closed the bootstrap socket"),
        Err(e) => return fail(&e.to_string()),
    };
    drop(sock);
    let boot: Boot = match wire::decode(&bytes) {
        Ok(b) => b,
        Err(e) => return fail(&format!("malformed bootstrap message: {e}")),
    };
    os::process::ignore_sigpipe();
    let real_parent = boot.ident.parent_pid;
    run_boot(boot, fds, real_parent, None)
}

/// Checks a bootstrap message and runs its target: shared by spawned and forkserver
/// children. `real_parent` is the pid of the process that forked or spawned us.
pub(crate) fn run_boot(
    boot: Boot,
    fds: Vec<OwnedFd>,
    real_parent: i32,
    forkserver: Option<Arc<Client>>,
) -> i32 {
    if boot.magic != MAGIC {
        return fail("bad magic number");
    }
    match exe_identity() {
        Ok(id) if id == boot.exe => {}
        Ok(_) => return fail("the child does not run the parent's executable (inode differs)"),
        Err(e) => return fail(&e.to_string()),
    }
    if !os::code::adopt_tree_key(boot.key) {
        return fail("the parent's process tree is not this process's");
    }
    let Some(entry) = Entry::<ChildRun>::from_parts(boot.entry.0, boot.entry.1) else {
        return fail("the entry is not one this process tree made");
    };
    let mut fds = fds.into_iter();
    let parent_pidfd = fds.next().map(Arc::new);
    let tracker = if boot.tracker { fds.next().map(Arc::new) } else { None };
    let ident = boot.ident;
    {
        let mut g = global();
        g.method = Some(ident.method);
        g.parent = Some(ParentProcess::new(ident.parent_pid, ident.parent_name, parent_pidfd));
        g.authkey = Some(crate::authkey::AuthKey::new(ident.authkey.0));
        g.me = Me {
            name: Some(ident.name),
            identity: ident.identity,
            daemon: ident.daemon,
            counter: 0,
        };
        g.forkserver = forkserver;
        g.tracker = tracker;
    }
    crate::logging::adopt(boot.log);
    if ident.daemon {
        die_with_parent(real_parent);
    }
    let mut run = ChildRun { payload: boot.payload, fds: fds.collect(), code: BOOTSTRAP_FAILURE };
    run_child(move || {
        entry.call(&mut run);
        run.code
    })
}

/// `/dev/null`, opened once per process (close-on-exec) for the stdin of the children it
/// forks, so that a forked child makes no path lookup, `open` or `close` for it.
static DEV_NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// This process's `/dev/null` for its forked children's stdin (see [`stdin_from`]), opened
/// the first time; `None` if it cannot be opened (out of descriptors, say), and then tried
/// again next time.
pub(crate) fn dev_null() -> Option<BorrowedFd<'static>> {
    if DEV_NULL.get().is_none() {
        let null =
            rustix::fs::open(c"/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
        // A thread that set it first wins; this one's descriptor is closed.
        let _ = DEV_NULL.set(null);
    }
    DEV_NULL.get().map(AsFd::as_fd)
}

/// In a forked child: `null` (the parent's [`dev_null`]) becomes stdin, as Python does for
/// its children.
pub(crate) fn stdin_from(null: Option<BorrowedFd<'_>>) {
    if let Some(null) = null {
        let _ = rustix::stdio::dup2_stdin(null);
    }
}

/// Asks for SIGKILL when the parent dies, then checks the parent did not die first.
pub(crate) fn die_with_parent(parent: i32) {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if ppid != Some(parent) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
        os::process::exit_now(BOOTSTRAP_FAILURE);
    }
}

/// Runs a child's target: panics print the message and a backtrace and give exit code 1;
/// then, as Python's child bootstrap does, daemonic children are terminated and the others
/// joined, and stdio is flushed. Returns the exit code for `_exit`.
pub(crate) fn run_child(target: impl FnOnce() -> i32) -> i32 {
    // The hook captures nothing, so installing it allocates nothing (in a forked child every
    // heap page written is a copy); it asks for the process's name when a panic comes, and
    // does without if mp's own lock is held (by the panicking thread, say).
    std::panic::set_hook(Box::new(|info| {
        let bt = std::backtrace::Backtrace::force_capture();
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        let label = match crate::state::GLOBAL.try_lock() {
            Ok(g) => g.name(),
            Err(std::sync::TryLockError::Poisoned(g)) => g.into_inner().name(),
            Err(std::sync::TryLockError::WouldBlock) => "?".to_owned(),
        };
        let _ = writeln!(
            std::io::stderr(),
            "Process {label} (pid {pid}): {info}\nstack backtrace:\n{bt}"
        );
    }));
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(target)).unwrap_or(1);
    crate::current::exit_function();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::ChildIdentity;
    use crate::child::{Child, Via};
    use crate::method::StartMethod;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    fn ident() -> ChildIdentity {
        ChildIdentity {
            name: "Process-forged".into(),
            identity: vec![1],
            daemon: false,
            parent_pid: rustix::process::getpid().as_raw_nonzero().get(),
            parent_name: "MainProcess".into(),
            method: StartMethod::Spawn,
            authkey: crate::authkey::InheritedKey(vec![7; 32]),
        }
    }

    /// Spawns a bootstrapped child and feeds it `write` on its bootstrap socket; returns
    /// its exit code.
    fn spawn_with(write: impl FnOnce(BorrowedFd<'_>)) -> i32 {
        let (mine, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let marker = format!("{BOOT_ENV}={}", os::process::BOOT_FD);
        let pid = os::process::spawn_self(theirs.as_fd(), &marker).unwrap();
        drop(theirs);
        let child = Child::new(pid, None, "raw".into(), false, Via::Direct);
        write(mine.as_fd());
        drop(mine);
        child.wait(None).unwrap().unwrap()
    }

    use std::os::fd::BorrowedFd;

    fn send_boot(sock: BorrowedFd<'_>, boot: &Boot) {
        let bytes = wire::encode(boot).unwrap();
        let me = crate::child::open_pidfd(rustix::process::getpid()).unwrap();
        fdpass::send_frame(sock, &bytes, &[me.as_fd()], wire::DEFAULT_MAX_FRAME).unwrap();
    }

    fn exit_7(run: &mut ChildRun) {
        run.code = 7;
    }

    fn entry() -> Entry<ChildRun> {
        Entry::from_fn(exit_7).unwrap()
    }

    #[test]
    fn a_genuine_entry_runs_in_the_child() {
        let boot = Boot::new(entry(), Vec::new(), ident(), false).unwrap();
        assert_eq!(spawn_with(|s| send_boot(s, &boot)), 7);
    }

    #[test]
    fn a_forged_entry_offset_is_refused_by_the_child() {
        let (start, end) = os::code::text_range();
        let mut boot = Boot::new(entry(), Vec::new(), ident(), false).unwrap();
        boot.entry.0 = (end - start) as u64 + 16;
        assert_eq!(spawn_with(|s| send_boot(s, &boot)), BOOTSTRAP_FAILURE);
        // An offset inside the text with a tag that does not sign it.
        let mut boot = Boot::new(entry(), Vec::new(), ident(), false).unwrap();
        boot.entry.0 += 1;
        assert_eq!(spawn_with(|s| send_boot(s, &boot)), BOOTSTRAP_FAILURE);
        // The right entry under another tree's key.
        let mut boot = Boot::new(entry(), Vec::new(), ident(), false).unwrap();
        boot.key[0] ^= 1;
        assert_eq!(spawn_with(|s| send_boot(s, &boot)), BOOTSTRAP_FAILURE);
    }

    #[test]
    fn another_executable_is_refused_by_the_child() {
        let mut boot = Boot::new(entry(), Vec::new(), ident(), false).unwrap();
        boot.exe = (0, 0);
        assert_eq!(spawn_with(|s| send_boot(s, &boot)), BOOTSTRAP_FAILURE);
    }

    #[test]
    fn a_bad_magic_number_is_refused_by_the_child() {
        let mut boot = Boot::new(entry(), Vec::new(), ident(), false).unwrap();
        boot.magic ^= 1;
        assert_eq!(spawn_with(|s| send_boot(s, &boot)), BOOTSTRAP_FAILURE);
    }

    #[test]
    fn garbage_and_truncated_bootstrap_frames_are_refused() {
        let garbage = |s: BorrowedFd<'_>| {
            fdpass::send_frame(s, &[0xff; 64], &[], wire::DEFAULT_MAX_FRAME).unwrap();
        };
        assert_eq!(spawn_with(garbage), BOOTSTRAP_FAILURE);
        let truncated = |s: BorrowedFd<'_>| {
            let mut header = [0u8; 8];
            header[..4].copy_from_slice(&100u32.to_le_bytes());
            rustix::io::write(s, &header).unwrap();
            rustix::io::write(s, &[1u8; 10]).unwrap();
        };
        assert_eq!(spawn_with(truncated), BOOTSTRAP_FAILURE);
        let oversized = |s: BorrowedFd<'_>| {
            let mut header = [0u8; 8];
            header[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            rustix::io::write(s, &header).unwrap();
        };
        assert_eq!(spawn_with(oversized), BOOTSTRAP_FAILURE);
        assert_eq!(spawn_with(|_| {}), BOOTSTRAP_FAILURE, "EOF before any bootstrap");
    }

    #[test]
    fn a_missing_entry_hook_is_a_clear_error() {
        assert!(crate::init().is_ok());
        crate::entry::set_hook_ran_for_test(false);
        let err = crate::init().unwrap_err();
        assert!(matches!(err, Error::EntryHookMissing));
        assert!(err.to_string().contains("entry hook"));
        let mut p = crate::Process::new(|| {}, ()).with_start_method(StartMethod::Spawn);
        assert!(matches!(p.start(), Err(Error::EntryHookMissing)));
        let mut p = crate::Process::new(|| {}, ()).with_start_method(StartMethod::Forkserver);
        assert!(matches!(p.start(), Err(Error::EntryHookMissing)));
        crate::entry::set_hook_ran_for_test(true);
    }
}
