//! Named shared memory: names no two tests share, probes of `/dev/shm`, and a guard that
//! leaves nothing behind.

use std::path::Path;
use std::time::Duration;

/// A segment name unique to this process and `tag`, so that tests never collide.
pub fn unique_name(tag: &str) -> String {
    format!("mp-shm-test-{}-{tag}", std::process::id())
}

/// Whether `/dev/shm/<name>` exists (`name` with or without its leading `/`).
pub fn shm_exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name.trim_start_matches('/')).exists()
}

/// Waits, for at most 30 seconds, until `/dev/shm/<name>` is gone (a resource tracker
/// unlinks it in a process of its own, so there is no event to wait for); whether it went.
pub fn wait_gone(name: &str) -> bool {
    crate::eventually(Duration::from_secs(30), || !shm_exists(name))
}

/// Unlinks the named segments it holds when dropped, also when a test fails, so that no test
/// leaves an entry in `/dev/shm` behind.
#[derive(Debug)]
pub struct Cleanup(pub Vec<String>);

impl Cleanup {
    /// A guard for one name.
    pub fn one(name: &str) -> Cleanup {
        Cleanup(vec![name.to_owned()])
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            // The segment is normally unlinked by the test already; a failure here is expected.
            let _ = rustix::shm::unlink(format!("/{name}").as_str());
        }
    }
}
