//! The process's authentication key: Python's `current_process().authkey`.
//!
//! The main process makes 32 random bytes the first time the key is asked for (or a child
//! is started); every child gets its parent's key under every start method (a forked child
//! inherits it with the parent's memory, a spawned or forkserver child receives it in its
//! boot message), so all processes of one tree share it, as in Python. `set_authkey`
//! replaces it in the calling process (and so in the children it starts afterwards).
//! Listeners, clients and managers take it as their default key. The key of the calling
//! process is kept in its registry (`state.rs`) and read by `current.rs`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The length of a key made at random, in bytes (Python's `os.urandom(32)`).
pub const AUTHKEY_LEN: usize = 32;

/// An authentication key: the secret both ends of a `Listener`/`Client` connection or a
/// manager connection prove they hold (Python's `AuthenticationString`).
///
/// Cheap to clone. Its `Debug` form never shows the bytes, and it is deliberately not
/// `Serialize`: as Python refuses to pickle an `AuthenticationString`, a key does not travel
/// inside messages by accident; children receive it when they start.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Arc<[u8]>);

impl AuthKey {
    /// A key of the given bytes (any length, empty included, as Python allows).
    pub fn new(bytes: impl AsRef<[u8]>) -> AuthKey {
        AuthKey(Arc::from(bytes.as_ref()))
    }

    /// A fresh key of [`AUTHKEY_LEN`] random bytes from the kernel (`getrandom`).
    ///
    /// Errors: the kernel's, if it cannot give random bytes.
    pub fn random() -> std::io::Result<AuthKey> {
        let mut bytes = [0u8; AUTHKEY_LEN];
        fill_random(&mut bytes)?;
        Ok(AuthKey::new(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for AuthKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthKey(<{} bytes, hidden>)", self.0.len())
    }
}

/// Fills `buf` with random bytes from the kernel.
///
/// Errors: the kernel's (`getrandom` failing, which Linux only does for a bad buffer or an
/// interrupted wait for entropy at early boot; interruptions are retried).
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A key as a child receives it in its boot message: bytes, never printed.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct InheritedKey(pub Vec<u8>);

impl fmt::Debug for InheritedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_differ_and_debug_hides_them() {
        let a = AuthKey::random().unwrap();
        let b = AuthKey::random().unwrap();
        assert_eq!(a.as_bytes().len(), AUTHKEY_LEN);
        assert_ne!(a, b);
        let shown = format!("{a:?}");
        assert_eq!(shown, "AuthKey(<32 bytes, hidden>)");
    }
}
