//! This process and its relatives: `current_process`, `parent_process`, `active_children`.

use crate::state::global;

/// A snapshot of what mp knows about the calling process (Python's `current_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
    daemon: bool,
    identity: Vec<u32>,
}

impl ProcessInfo {
    /// The process name: `MainProcess`, `Process-N`, `Process-N:M` for a grandchild, or the
    /// name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is daemonic.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The chain of child counters from the main process (empty for the main process).
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    /// The calling process's authentication key: Python's `current_process().authkey`, the
    /// same as [`authkey`](crate::authkey()). 32 random bytes made by the main process,
    /// inherited by every child under every start method; [`set_authkey`](crate::set_authkey)
    /// replaces it.
    ///
    /// ```
    /// let key = mp_process::current_process().authkey()?;
    /// assert_eq!(key.as_bytes().len(), mp_process::AUTHKEY_LEN);
    /// assert_eq!(key, mp_process::authkey()?, "one key per process");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// Errors: the kernel's, if it cannot give random bytes for the first key.
    pub fn authkey(&self) -> std::io::Result<crate::AuthKey> {
        authkey()
    }
}

fn pid_u32(pid: rustix::process::Pid) -> u32 {
    pid.as_raw_nonzero().get().unsigned_abs()
}

/// The calling process's key, made at random the first time in a process that has none
/// (the main process).
///
/// Errors: the kernel's, if it cannot give random bytes for a first key.
pub fn authkey() -> std::io::Result<crate::AuthKey> {
    if let Some(key) = global().authkey.clone() {
        return Ok(key);
    }
    let fresh = crate::AuthKey::random()?;
    // Another thread may have made one meanwhile: the first one stays.
    Ok(global().authkey.get_or_insert(fresh).clone())
}

/// Replaces the calling process's key (Python's `current_process().authkey = key`). Children
/// started afterwards inherit the new key; processes already running keep theirs.
pub fn set_authkey(key: impl AsRef<[u8]>) {
    global().authkey = Some(crate::AuthKey::new(key));
}

/// The key to hand to a child being started: the calling process's (made if needed).
pub(crate) fn key_for_child() -> std::io::Result<crate::authkey::InheritedKey> {
    authkey().map(|k| crate::authkey::InheritedKey(k.as_bytes().to_vec()))
}

/// The calling process.
pub fn current_process() -> ProcessInfo {
    let g = global();
    ProcessInfo {
        name: g.name(),
        pid: pid_u32(rustix::process::getpid()),
        daemon: g.me.daemon,
        identity: g.me.identity.clone(),
    }
}

/// The parent of the calling process, or `None` in the main process.
pub fn parent_process() -> Option<crate::ParentProcess> {
    global().parent.clone()
}

/// A live child, as listed by [`active_children`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's pid.
    pub pid: u32,
    /// The child's name.
    pub name: String,
    /// Whether the child is daemonic.
    pub daemon: bool,
}

/// The children of this process that are still running. As in Python, this reaps (joins)
/// every child that has already exited.
pub fn active_children() -> Vec<ChildInfo> {
    let children = global().children.clone();
    let mut live = Vec::new();
    let mut done = Vec::new();
    for c in &children {
        match c.poll_status() {
            Ok(None) => {
                live.push(ChildInfo { pid: pid_u32(c.pid), name: c.name.clone(), daemon: c.daemon })
            }
            _ => done.push(c.pid),
        }
    }
    if !done.is_empty() {
        global().children.retain(|c| !done.contains(&c.pid));
    }
    live
}

/// Python's exit function, run when the `init` guard ends and when a child's target
/// returns: terminate the daemonic children that are still running, then join every child.
pub(crate) fn exit_function() {
    let children = global().children.clone();
    for c in &children {
        if c.daemon && c.is_alive() {
            let _ = c.signal(rustix::process::Signal::TERM);
        }
    }
    for c in &children {
        let _ = c.wait(None);
    }
    global().children.clear();
}
