//! What a connection to a manager of this host is made of: an `mp_queue` pipe with
//! shared-memory lanes, or a plain socket pair, by whether this process spins. Used by the
//! doorway's connections (`link.rs`) and the same-host shortcut's (`shortcut.rs`).

use mp_process::os;
use mp_queue::Connection;

use crate::error::Result;

/// The two ends of a new connection to a manager of this host (through the doorway, or the
/// same-host shortcut): with `lanes`, an `mp_queue` pipe, whose shared-memory lanes carry a
/// request or a reply without a system call while the receiver spins for it; without, a
/// plain socket pair with CPython's framing (`mp_queue::socket_pipe`), which a process that
/// does not spin takes ([`spins`]: `mp_sync::set_spin_limit(0)`, or one CPU).
///
/// Without spinning every message sleeps, and the lanes only add to it: a futex wake-up,
/// whose shared key costs a page-table walk, and naps timed to notice a peer that died, where
/// a socket read ends at the kernel's end of file. The blocking round trip of a socket pair
/// is the least the kernel offers: the manager's calls over it measured 0.84–0.93× a bare
/// one (`manager_dict_blocking`, in a slow phase of the bench machine), where over the lanes
/// they were 1.26–1.45×. The setting is read when the connection is made: a connection keeps
/// its kind for its life.
pub(crate) fn connection_pair(lanes: bool) -> Result<(Connection, Connection)> {
    Ok(if lanes { mp_queue::pipe(true)? } else { mp_queue::socket_pipe()? })
}

/// Whether this process spins before it sleeps on a receive: then its new connections to a
/// manager carry lanes (see [`connection_pair`]).
pub(crate) fn spins() -> bool {
    os::spin::budget(std::time::Duration::from_micros(1)).is_some()
}
