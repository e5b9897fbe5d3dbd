//! The synchronisation types of a manager: queues, locks, semaphores, conditions, events,
//! barriers.

use crate::server::registry::Registry;

/// Registers the synchronisation types.
pub(crate) fn register(_r: &mut Registry) {}
