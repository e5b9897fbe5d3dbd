//! The manager's process: its objects, the types it can make, and its loop.

pub(crate) mod containers;
pub(crate) mod custom;
pub(crate) mod objects;
pub(crate) mod registry;
pub(crate) mod serve;
pub(crate) mod sync;
