//! The messages that start a child: the bootstrap message a spawned or forkserver child
//! receives (what it runs, its arguments, who it is), and the markers that divert a fresh exec
//! of the binary before `main`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::method::StartMethod;
use crate::os;
use crate::os::code::Entry;
use crate::{Error, Result};

/// The environment variable that marks a spawned child; its value is the bootstrap fd.
pub(crate) const BOOT_ENV: &str = "MP_BOOTSTRAP_FD";
/// The environment variable that marks the forkserver; its value is its socket's fd.
pub(crate) const FORKSERVER_ENV: &str = "MP_FORKSERVER_FD";

/// The exit code of a child whose bootstrap failed (its message is on stderr).
pub const BOOTSTRAP_FAILURE: i32 = 70;

pub(crate) const MAGIC: u64 = 0x6d70_626f_6f74_0001; // "mpboot", version 1

/// Everything a fresh exec of the binary needs to become the child: sent over the inherited
/// socketpair, with the parent's pidfd and the arguments' fds beside it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub magic: u64,
    /// Device and inode of the executable the parent runs.
    pub exe: (u64, u64),
    /// The key of the process tree, which signs `entry`.
    pub key: [u64; 2],
    /// What the child runs: an [`Entry`] as its offset and tag.
    pub entry: (u64, u64),
    /// The target's arguments, encoded with `fdpass::encode_with_fds`.
    pub payload: Vec<u8>,
    pub ident: ChildIdentity,
    /// Whether the resource tracker's connection rides after the parent's pidfd.
    pub tracker: bool,
    /// The parent's `log_to_stderr` level, which the child takes on
    /// (`crate::logging::inherited`).
    pub log: Option<u8>,
}

impl Boot {
    /// The message for a child running `entry`; `tracker` says whether the resource
    /// tracker's connection rides along.
    pub fn new(
        entry: Entry<ChildRun>,
        payload: Vec<u8>,
        ident: ChildIdentity,
        tracker: bool,
    ) -> Result<Boot> {
        Ok(Boot {
            magic: MAGIC,
            exe: exe_identity()?,
            key: os::code::tree_key(),
            entry: entry.to_parts(),
            payload,
            ident,
            tracker,
            log: crate::logging::inherited(),
        })
    }

    /// The descriptors that ride beside this message: the parent's pidfd, the tracker's
    /// connection if `tracker` is set, then the payload's.
    pub fn fds<'a>(
        &self,
        parent_pidfd: &'a OwnedFd,
        tracker: Option<&'a Arc<OwnedFd>>,
        payload: &'a [OwnedFd],
    ) -> Vec<std::os::fd::BorrowedFd<'a>> {
        let mut fds = Vec::with_capacity(payload.len() + 2);
        fds.push(parent_pidfd.as_fd());
        if self.tracker {
            fds.extend(tracker.map(|t| t.as_fd()));
        }
        fds.extend(payload.iter().map(|f| f.as_fd()));
        fds
    }
}

/// What a spawned or forkserver child's entry runs with: the target's encoded arguments and
/// their descriptors, and the exit code it leaves.
pub(crate) struct ChildRun {
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub code: i32,
}

/// What a child is told about itself and its parent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChildIdentity {
    pub name: String,
    pub identity: Vec<u32>,
    pub daemon: bool,
    pub parent_pid: i32,
    pub parent_name: String,
    pub method: StartMethod,
    /// The parent's authentication key, which the child takes as its own.
    pub authkey: crate::authkey::InheritedKey,
}

/// A target ready to cross into a fresh exec of the binary.
pub(crate) struct Encoded {
    pub entry: Entry<ChildRun>,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Device and inode of `/proc/self/exe`, read once per executable image (a forked child
/// runs the same image, so it inherits the cached value rightly; an exec starts afresh).
pub(crate) fn exe_identity() -> Result<(u64, u64)> {
    static EXE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    if let Some(id) = EXE.get() {
        return Ok(*id);
    }
    let st = rustix::fs::stat("/proc/self/exe").map_err(|e| Error::io("stat /proc/self/exe", e))?;
    Ok(*EXE.get_or_init(|| (st.st_dev, st.st_ino)))
}
