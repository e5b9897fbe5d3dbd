//! [`SharedMemoryManager`]: Python's `multiprocessing.managers.SharedMemoryManager`, a manager
//! whose server tracks the named shared-memory segments its clients create and unlinks them
//! all when it stops.

use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use mp_shm::{Item, ShareableList, SharedMemory};

use crate::error::{Error, RemoteError, Result};
use crate::managed::{Managed, Method, Proxy};
use crate::manager::{Manager, ManagerBuilder};
use crate::server::registry::Registry;

/// How many generated names [`SharedMemoryManager::shareable_list`] tries.
const UNIQUE_ATTEMPTS: usize = 64;

/// The server's list of segments: Python's `SharedMemoryTracker` in the `SharedMemoryServer`.
struct SegmentTracker {
    /// The names, in the order they were tracked.
    names: Vec<String>,
}

/// Unlinks the named segment `name`, and withdraws it from the resource tracker. A segment
/// already gone (its creator unlinked it) is no error.
fn unlink(name: &str) -> std::result::Result<(), RemoteError> {
    let failed = |e: mp_shm::Error| {
        RemoteError::new("OSError", format!("cannot unlink the segment {name:?}: {e}"))
    };
    match SharedMemory::open(name).and_then(|shm| shm.unlink()) {
        Ok(()) | Err(mp_shm::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(failed(e)),
    }
}

impl Managed for SegmentTracker {
    const TYPEID: &'static str = "SharedMemoryServer";
    type Init = ();

    fn create((): ()) -> std::result::Result<Self, RemoteError> {
        Ok(SegmentTracker { names: Vec::new() })
    }

    fn on_shutdown(&mut self) {
        for name in std::mem::take(&mut self.names) {
            if let Err(e) = unlink(&name) {
                log::warn!(target: "mp_manager", "{e}");
            }
        }
    }
}

/// Python's `SharedMemoryServer.track_segment`.
const TRACK: Method<SegmentTracker, String, ()> = Method::new("track_segment", |t, name| {
    if !t.names.contains(&name) {
        t.names.push(name);
    }
    Ok(())
});

/// Python's `SharedMemoryServer.release_segment`: untracks and unlinks.
const RELEASE: Method<SegmentTracker, String, ()> = Method::new("release_segment", |t, name| {
    let at = t.names.iter().position(|n| *n == name).ok_or_else(|| {
        RemoteError::new("ValueError", format!("the segment {name:?} is not tracked"))
    })?;
    t.names.remove(at);
    unlink(&name)
});

/// Python's `SharedMemoryServer.list_segments`.
const LIST: Method<SegmentTracker, (), Vec<String>> =
    Method::new("list_segments", |t, ()| Ok(t.names.clone()));

/// Registers the segment tracker in a shared-memory manager.
fn register_tracker(registry: &mut Registry) {
    registry.register::<SegmentTracker>().expose(TRACK).expose(RELEASE).expose(LIST);
}

/// A generated segment name, `psm_<8 hex digits>`, as Python's.
fn generated_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let salt =
        (std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), std::time::SystemTime::now());
    let random = std::collections::hash_map::RandomState::new().hash_one(salt);
    format!("psm_{:08x}", random as u32)
}

/// A manager that tracks named shared-memory segments: Python's
/// `multiprocessing.managers.SharedMemoryManager`.
///
/// [`shared_memory`](SharedMemoryManager::shared_memory) and
/// [`shareable_list`](SharedMemoryManager::shareable_list) create named segments in the
/// calling process (real [`SharedMemory`] and [`ShareableList`] objects, not proxies, which
/// pass into other processes as arguments or in messages) and register their names with the
/// manager's server, which unlinks them all when it stops: at
/// [`shutdown`](SharedMemoryManager::shutdown) or when the `SharedMemoryManager` is dropped.
/// If the manager's process is killed instead (it is, with the process that started it, if
/// that process dies), mp's resource tracker unlinks the segments once every process of the
/// program has ended.
///
/// It is a [`Manager`] too (through `Deref`): its process holds lists, dicts and registered
/// types as well.
///
/// ```
/// use mp_manager::SharedMemoryManager;
///
/// let mut smm = SharedMemoryManager::start()?;
/// let shm = smm.shared_memory(64)?;
/// shm.write(0, b"hello")?;
/// let list = smm.shareable_list(&[1i64.into(), "two".into()])?;
/// assert_eq!(smm.list_segments()?, [shm.name(), list.shm().name()]);
/// let name = shm.name().to_string();
/// smm.shutdown()?;
/// assert!(!std::path::Path::new("/dev/shm").join(name).exists());
/// # Ok::<(), mp_manager::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// - The segments' names are tracked by an object of the manager (typeid
///   `"SharedMemoryServer"`) rather than by the server itself.
/// - The manager does not outlive the process that started it (Python's does, gh-81158);
///   the resource tracker then unlinks the segments.
pub struct SharedMemoryManager {
    // Declared first: the manager is shut down (and the segments unlinked) before the
    // tracker's proxy gives its reference back.
    manager: Manager,
    tracker: Proxy<SegmentTracker>,
}

impl SharedMemoryManager {
    /// Starts a shared-memory manager with the default start method.
    ///
    /// Errors as [`ManagerBuilder::start`].
    pub fn start() -> Result<SharedMemoryManager> {
        SharedMemoryManager::start_with(Manager::builder().name("SharedMemoryManager"))
    }

    /// Starts a shared-memory manager with the options of `builder` (its start method, types
    /// it registers...).
    ///
    /// Errors as [`ManagerBuilder::start`].
    pub fn start_with(builder: ManagerBuilder) -> Result<SharedMemoryManager> {
        let manager = builder.register(register_tracker).start()?;
        let tracker = manager.make::<SegmentTracker>(())?;
        Ok(SharedMemoryManager { manager, tracker })
    }

    /// Creates a named segment of `size` bytes under a generated name (as
    /// [`SharedMemory::create_unique`]) and has the server track it: Python's
    /// `smm.SharedMemory(size)`.
    ///
    /// Errors: [`Error::SharedMemory`] if the segment cannot be made; an error reaching the
    /// server (the segment is unlinked again).
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        let shm = SharedMemory::create_unique(size)?;
        self.track(&shm)?;
        Ok(shm)
    }

    /// Creates a [`ShareableList`] holding `items` in a named segment under a generated name,
    /// and has the server track it: Python's `smm.ShareableList(sequence)`.
    ///
    /// Errors as [`shared_memory`](SharedMemoryManager::shared_memory).
    pub fn shareable_list(&self, items: &[Item]) -> Result<ShareableList> {
        let mut attempts = 0;
        let list = loop {
            match ShareableList::create(&generated_name(), items) {
                Err(mp_shm::Error::Exists(_)) if attempts < UNIQUE_ATTEMPTS => attempts += 1,
                other => break other?,
            }
        };
        self.track(list.shm())?;
        Ok(list)
    }

    /// Has the server track `shm`'s name, or unlinks it.
    fn track(&self, shm: &SharedMemory) -> Result<()> {
        if let Err(e) = self.tracker.call(&TRACK, shm.name().to_string()) {
            let _ = shm.unlink();
            return Err(e);
        }
        Ok(())
    }

    /// The names of the segments the server tracks, in the order they were made: Python's
    /// `list_segments`.
    pub fn list_segments(&self) -> Result<Vec<String>> {
        self.tracker.call(&LIST, ())
    }

    /// Unlinks the segment `name` now and stops tracking it: Python's `release_segment`.
    ///
    /// Errors: a `ValueError` remote error if the server does not track `name`.
    pub fn release_segment(&self, name: &str) -> Result<()> {
        self.tracker.call(&RELEASE, name.to_string())
    }

    /// Stops the manager, which unlinks every segment it tracks: Python's `shutdown`. Segments
    /// stay mapped in the processes that hold them. Idempotent.
    pub fn shutdown(&mut self) -> Result<()> {
        self.manager.shutdown()
    }
}

impl Deref for SharedMemoryManager {
    type Target = Manager;
    fn deref(&self) -> &Manager {
        &self.manager
    }
}

impl std::fmt::Debug for SharedMemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryManager").field("manager", &self.manager).finish()
    }
}

impl From<mp_shm::Error> for Error {
    fn from(e: mp_shm::Error) -> Error {
        Error::SharedMemory(e)
    }
}
