//! CPython's connection handshake (`multiprocessing.connection.deliver_challenge` and
//! `answer_challenge`, 3.12+), byte for byte.
//!
//! The side that delivers sends `#CHALLENGE#{sha256}` and 40 random bytes; the other answers
//! `{sha256}` and the HMAC-SHA256 of the whole message after `#CHALLENGE#` (prefix included,
//! so a peer cannot downgrade the digest) under the shared key; the deliverer compares in
//! constant time and sends `#WELCOME#` or `#FAILURE#`. A connection runs it both ways
//! (mutual). Every handshake read is at most 256 bytes (CPython's `recv_bytes(256)`), so an
//! unauthenticated peer makes this side allocate nothing large, and waits no later than the
//! handshake's deadline.
//!
//! Python ≤ 3.11 speaks an older form: a 20-byte challenge and a raw 16-byte HMAC-MD5
//! answer, no prefix. It is accepted (as deliverer and answerer) only when asked for
//! (`legacy_md5`), unlike CPython 3.12, which accepts it always.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use mp_process::wire::WireError;

use crate::connection::pyframe;
use crate::error::{Error, Result};

/// The first bytes of a challenge.
const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The answer to a right digest.
const WELCOME: &[u8] = b"#WELCOME#";
/// The answer to a wrong digest.
const FAILURE: &[u8] = b"#FAILURE#";
/// The random bytes of a challenge.
const MESSAGE_LENGTH: usize = 40;
/// The longest handshake message read.
const HANDSHAKE_MAX: usize = 256;
/// The length of a legacy (Python ≤ 3.11) challenge's random part.
const MD5ONLY_MESSAGE_LENGTH: usize = 20;
/// The length of a legacy HMAC-MD5 answer.
const MD5_DIGEST_LEN: usize = 16;
/// The longest digest name CPython accepts (`sha3_256`).
const MAX_DIGEST_LEN: usize = 8;

/// The digests of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    /// HMAC-MD5: Python ≤ 3.11's only digest.
    Md5,
    /// HMAC-SHA256: CPython 3.12+'s default.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
}

impl Digest {
    /// The digest of a name CPython sends, if this side computes it.
    fn named(name: &[u8]) -> Option<Digest> {
        match name {
            b"md5" => Some(Digest::Md5),
            b"sha256" => Some(Digest::Sha256),
            b"sha384" => Some(Digest::Sha384),
            _ => None,
        }
    }

    /// The name in the `{name}` prefix.
    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    /// The HMAC of `message` under `key`.
    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
            match <M as KeyInit>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(message);
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
        }
    }

    /// Whether `tag` is the HMAC of `message` under `key`, compared in constant time.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            match <M as KeyInit>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(message);
                    mac.verify_slice(tag).is_ok()
                }
                Err(_) => false,
            }
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, tag),
        }
    }
}

/// How one side runs the handshake.
#[derive(Clone, Copy)]
pub(crate) struct Handshake<'a> {
    /// The shared key.
    pub key: &'a [u8],
    /// Whether Python ≤ 3.11's HMAC-MD5 form is accepted.
    pub legacy_md5: bool,
    /// No read waits past this.
    pub deadline: Option<Instant>,
}

/// The error of a refused handshake.
fn refused(why: impl Into<String>) -> Error {
    Error::Authentication(why.into())
}

/// The message of a refused legacy peer.
const LEGACY_REFUSED: &str = "the peer uses HMAC-MD5 (Python 3.11 or older), which this side \
                              accepts only when asked (`legacy_md5(true)`)";

/// Splits a message into its digest and payload, as CPython's `_get_digest_name_and_payload`:
/// a 16- or 20-byte message is legacy (`None`), else `{name}` must lead it.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == MD5ONLY_MESSAGE_LENGTH || message.len() == MD5_DIGEST_LEN {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        let window = message.get(1..message.len().min(MAX_DIGEST_LEN + 2)).unwrap_or(&[]);
        if let Some(close) = window.iter().position(|&b| b == b'}') {
            let name = window.get(..close).unwrap_or(&[]);
            let payload = message.get(close + 2..).unwrap_or(&[]);
            return match Digest::named(name) {
                Some(digest) => Ok((Some(digest), payload)),
                None => Err(refused(format!(
                    "the peer asks for the digest {{{}}}, which is not supported (md5, sha256, \
                     sha384 are)",
                    name.escape_ascii()
                ))),
            };
        }
    }
    Err(refused("unsupported message length, missing digest prefix, or unsupported digest"))
}

impl Handshake<'_> {
    /// Sends one handshake message.
    fn send(&self, fd: BorrowedFd<'_>, message: &[u8]) -> Result<()> {
        pyframe::send(fd, message).map_err(|e| match e {
            WireError::Io(source) => Error::Io { op: "send (handshake)", source },
            other => Error::Wire(other),
        })
    }

    /// Reads one handshake message of at most 256 bytes.
    fn recv(&self, fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
        match pyframe::recv(fd, HANDSHAKE_MAX, self.deadline) {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(Error::Eof),
            Err(WireError::Oversized { len, .. }) => Err(refused(format!(
                "a handshake message of {len} bytes (at most {HANDSHAKE_MAX} are read)"
            ))),
            Err(WireError::Io(source)) => Err(Error::Io { op: "recv (handshake)", source }),
            Err(other) => Err(Error::Wire(other)),
        }
    }

    /// A fresh challenge: the message the answer covers, and the challenge to send.
    fn challenge() -> Result<(Vec<u8>, Vec<u8>)> {
        let mut random = [0u8; MESSAGE_LENGTH];
        mp_process::fill_random(&mut random).map_err(|e| Error::io("getrandom", e))?;
        let mut message = format!("{{{}}}", Digest::Sha256.name()).into_bytes();
        message.extend_from_slice(&random);
        let mut challenge = CHALLENGE.to_vec();
        challenge.extend_from_slice(&message);
        Ok((message, challenge))
    }

    /// CPython's `deliver_challenge`: challenges the peer to prove it holds the key.
    pub(crate) fn deliver_challenge(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let (message, challenge) = Handshake::challenge()?;
        self.send(fd, &challenge)?;
        self.check_response(fd, &message)
    }

    /// The end of `deliver_challenge`: reads the peer's response to `message` and tells it
    /// whether it was right.
    fn check_response(&self, fd: BorrowedFd<'_>, message: &[u8]) -> Result<()> {
        let response = self.recv(fd)?;
        match self.verify(message, &response) {
            Ok(()) => self.send(fd, WELCOME),
            Err(e) => {
                // The peer learns it failed; this side's error is the one that matters.
                let _ = self.send(fd, FAILURE);
                Err(e)
            }
        }
    }

    /// The client's side: `answer_challenge` then `deliver_challenge`, as CPython's `Client`,
    /// with this side's challenge sent in the same write as its answer instead of after the
    /// listener's `#WELCOME#` (the listener reads it only once it has answered, so the bytes
    /// on the wire are CPython's; the round trip saved is one of the handshake's three).
    pub(crate) fn client(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let answer = self.answer(fd)?;
        let (message, challenge) = Handshake::challenge()?;
        let mut both = Vec::with_capacity(answer.len() + challenge.len() + 8);
        pyframe::frame_into(&mut both, &answer);
        pyframe::frame_into(&mut both, &challenge);
        pyframe::send_raw(fd, &both).map_err(|e| match e {
            WireError::Io(source) => Error::Io { op: "send (handshake)", source },
            other => Error::Wire(other),
        })?;
        if self.recv(fd)? != WELCOME {
            return Err(refused("digest sent was rejected"));
        }
        self.check_response(fd, &message)
    }

    /// CPython's `_verify_challenge`: whether `response` is the right digest of `message`.
    fn verify(&self, message: &[u8], response: &[u8]) -> Result<()> {
        let (digest, mac) = digest_and_payload(response)?;
        let digest = match digest {
            Some(Digest::Md5) | None if !self.legacy_md5 => return Err(refused(LEGACY_REFUSED)),
            Some(d) => d,
            None => Digest::Md5,
        };
        if digest.verify(self.key, message, mac) {
            Ok(())
        } else {
            Err(refused("digest received was wrong"))
        }
    }

    /// CPython's `answer_challenge`: proves to the peer that this side holds the key.
    pub(crate) fn answer_challenge(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let answer = self.answer(fd)?;
        self.send(fd, &answer)?;
        if self.recv(fd)? == WELCOME { Ok(()) } else { Err(refused("digest sent was rejected")) }
    }

    /// Reads the peer's challenge and makes the answer to it.
    fn answer(&self, fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
        let message = self.recv(fd)?;
        let Some(message) = message.strip_prefix(CHALLENGE) else {
            return Err(refused("protocol error: expected a challenge"));
        };
        if message.len() < MD5ONLY_MESSAGE_LENGTH {
            return Err(refused(format!("challenge too short: {} bytes", message.len())));
        }
        let (digest, _) = digest_and_payload(message)?;
        let answer = match digest {
            Some(Digest::Md5) | None if !self.legacy_md5 => return Err(refused(LEGACY_REFUSED)),
            // The legacy form: the raw HMAC-MD5, no prefix.
            None => Digest::Md5.mac(self.key, message),
            Some(d) => {
                let mut answer = format!("{{{}}}", d.name()).into_bytes();
                answer.extend_from_slice(&d.mac(self.key, message));
                answer
            }
        };
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn side(key: &[u8], legacy_md5: bool) -> Handshake<'_> {
        Handshake { key, legacy_md5, deadline: None }
    }

    #[test]
    fn mutual_handshake_with_the_same_key_succeeds_and_with_another_fails() {
        let (a, b) = mp_process::os::socket::stream_pair().unwrap();
        std::thread::scope(|s| {
            let server = s.spawn(|| side(b"key", false).deliver_challenge(a.as_fd()));
            side(b"key", false).answer_challenge(b.as_fd()).unwrap();
            server.join().unwrap().unwrap();
        });
        let (a, b) = mp_process::os::socket::stream_pair().unwrap();
        std::thread::scope(|s| {
            let server = s.spawn(|| side(b"key", false).deliver_challenge(a.as_fd()));
            let client = side(b"other", false).answer_challenge(b.as_fd());
            assert!(
                matches!(client, Err(Error::Authentication(m)) if m == "digest sent was rejected")
            );
            let server = server.join().unwrap();
            assert!(
                matches!(server, Err(Error::Authentication(m)) if m == "digest received was wrong")
            );
        });
    }

    #[test]
    fn the_challenge_is_cpythons() {
        let (a, b) = mp_process::os::socket::stream_pair().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| side(b"key", false).deliver_challenge(a.as_fd()));
            let challenge = pyframe::recv(b.as_fd(), 256, None).unwrap().unwrap();
            assert_eq!(challenge.len(), 11 + 8 + 40);
            assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"));
            // Answer as CPython 3.12 would.
            let message = &challenge[11..];
            let mut answer = b"{sha256}".to_vec();
            answer.extend(Digest::Sha256.mac(b"key", message));
            pyframe::send(b.as_fd(), &answer).unwrap();
            assert_eq!(pyframe::recv(b.as_fd(), 256, None).unwrap().unwrap(), b"#WELCOME#");
        });
    }

    #[test]
    fn legacy_md5_only_when_asked() {
        for legacy in [false, true] {
            let (a, b) = mp_process::os::socket::stream_pair().unwrap();
            std::thread::scope(|s| {
                // A Python 3.11 server's challenge: 20 random bytes.
                s.spawn(|| {
                    let mut challenge = CHALLENGE.to_vec();
                    challenge.extend_from_slice(&[9; 20]);
                    pyframe::send(a.as_fd(), &challenge).unwrap();
                    let answer = pyframe::recv(a.as_fd(), 256, None);
                    if let Ok(Some(answer)) = answer {
                        assert_eq!(answer, Digest::Md5.mac(b"key", &[9; 20]));
                        pyframe::send(a.as_fd(), WELCOME).unwrap();
                    }
                });
                let got = side(b"key", legacy).answer_challenge(b.as_fd());
                if legacy {
                    got.unwrap();
                } else {
                    assert!(matches!(got, Err(Error::Authentication(_))));
                    drop(b);
                }
            });
        }
    }

    #[test]
    fn garbage_and_oversized_handshakes_are_errors() {
        let (a, b) = mp_process::os::socket::stream_pair().unwrap();
        pyframe::send(a.as_fd(), b"hello").unwrap();
        assert!(matches!(
            side(b"k", false).answer_challenge(b.as_fd()),
            Err(Error::Authentication(_))
        ));
        let (a, b) = mp_process::os::socket::stream_pair().unwrap();
        pyframe::send(a.as_fd(), &[b'#'; 1000]).unwrap();
        assert!(
            matches!(side(b"k", false).answer_challenge(b.as_fd()), Err(Error::Authentication(m)) if m.contains("1000"))
        );
        let (a, b) = mp_process::os::socket::stream_pair().unwrap();
        let mut forged = CHALLENGE.to_vec();
        forged.extend_from_slice(b"{sha512}0123456789012345678901234567890123456789");
        pyframe::send(a.as_fd(), &forged).unwrap();
        assert!(
            matches!(side(b"k", false).answer_challenge(b.as_fd()), Err(Error::Authentication(m)) if m.contains("sha512"))
        );
        drop(a);
    }
}
