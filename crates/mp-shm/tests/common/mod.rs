//! Helpers shared by the integration tests of `mp-shm`.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::Path;

/// A segment name unique to this process and `tag`, so that tests never collide.
pub fn unique_name(tag: &str) -> String {
    format!("mp-shm-test-{}-{tag}", std::process::id())
}

/// Whether `/dev/shm/<name>` exists.
pub fn shm_exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

/// Unlinks the named segments it holds when dropped, also when a test fails, so that no test
/// leaves an entry in `/dev/shm` behind.
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
