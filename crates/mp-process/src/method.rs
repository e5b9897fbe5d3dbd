//! The start methods: `fork`, `spawn`, `forkserver`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The environment variable that sets the default start method (`fork` when unset).
pub const START_METHOD_ENV: &str = "MP_START_METHOD";

/// How a child process is created (Python's start methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// The child is a fork of the caller: it starts with a copy of the parent's memory.
    Fork,
    /// The child is a fresh exec of the current executable; the target and its arguments
    /// travel to it as serde bytes.
    Spawn,
    /// A single-threaded server, itself a fresh exec of the executable, forks the children.
    Forkserver,
}

impl StartMethod {
    /// The name Python uses for this method.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            other => Err(Error::UnknownStartMethod(other.to_owned())),
        }
    }
}

/// All start methods available on this platform, the default first.
pub fn get_all_start_methods() -> [StartMethod; 3] {
    [StartMethod::Fork, StartMethod::Spawn, StartMethod::Forkserver]
}
