//! Choosing a start method: for the whole process (`set_start_method`, `MP_START_METHOD`) or
//! per context (`get_context`; a context's `process` is made in `process.rs`).

use crate::method::{START_METHOD_ENV, StartMethod};
use crate::state::global;
use crate::{Error, Result};

/// The default start method: `MP_START_METHOD` if set, else `fork`.
fn default_method() -> Result<StartMethod> {
    match std::env::var(START_METHOD_ENV) {
        Ok(name) if !name.is_empty() => name.parse(),
        _ => Ok(StartMethod::Fork),
    }
}

/// Sets the start method used by [`Process::new`](crate::Process::new) and [`Process::start`](crate::Process::start) in this process.
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
}

/// The context for a start method given by name (`"fork"`, `"spawn"`, `"forkserver"`).
pub fn get_context(name: &str) -> Result<Context> {
    Ok(Context::new(name.parse()?))
}
