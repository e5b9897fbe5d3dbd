//! Start methods and contexts: `fork`, `spawn`, `forkserver`, chosen globally or per context.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::process::Process;
use crate::state::global;
use crate::target::Target;
use crate::{Error, Result};

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

    fn from_str(s: &str) -> Result<Self> {
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

/// The default start method: `MP_START_METHOD` if set, else `fork`.
fn default_method() -> Result<StartMethod> {
    match std::env::var(START_METHOD_ENV) {
        Ok(name) if !name.is_empty() => name.parse(),
        _ => Ok(StartMethod::Fork),
    }
}

/// Sets the start method used by [`Process::new`] and [`Process::start`] in this process.
///
/// As in Python, this may be called once: after the method is fixed (by this call, or by
/// [`get_start_method`] or the first start), it is an error unless `force` is true.
pub fn set_start_method(method: StartMethod, force: bool) -> Result<()> {
    let mut g = global();
    if g.method.is_some() && !force {
        return Err(Error::ContextAlreadySet);
    }
    g.method = Some(method);
    Ok(())
}

/// The start method of this process, fixing the default (`MP_START_METHOD` or `fork`) if
/// none was set. An unknown name in `MP_START_METHOD` is an error.
///
/// In a child it is the method the child was started with (as in Python), whatever the
/// parent's default: a child started through `get_context("fork")` reports `fork`, and
/// the children it starts without a context of their own are forked too.
pub fn get_start_method() -> Result<StartMethod> {
    let mut g = global();
    if let Some(m) = g.method {
        return Ok(m);
    }
    let m = default_method()?;
    g.method = Some(m);
    Ok(m)
}

/// A start method bound to a handle, as Python's `multiprocessing.get_context(name)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// A context for `method`.
    pub fn new(method: StartMethod) -> Self {
        Context { method }
    }

    /// The start method of this context.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process that will start with this context's method (see [`Process::new`]).
    pub fn process<F, Args>(&self, target: F, args: Args) -> Process
    where
        F: Target<Args>,
        Args: Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        Process::new(target, args).with_start_method(self.method)
    }
}

/// The context for a start method given by name (`"fork"`, `"spawn"`, `"forkserver"`).
pub fn get_context(name: &str) -> Result<Context> {
    Ok(Context::new(name.parse()?))
}
