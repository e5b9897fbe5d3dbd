//! What a pool runs: `fn` items and non-capturing closures, shipped to workers as the text
//! offset of a monomorphised trampoline that decodes the arguments and encodes the result.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::proto::Writer;
use crate::sys;

/// A pool task taking the argument tuple `Args`: implemented for every `fn` item and
/// non-capturing closure of up to six arguments.
///
/// The task must be zero-sized (a `fn` item or a closure that captures nothing): only its
/// code, not its value, reaches a worker. The pool checks this when the program is compiled.
pub trait Task<Args>: Copy + Send + Sync + 'static {
    /// What the task returns.
    type Output;
    /// Calls the task.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_task {
    ($($arg:ident),*) => {
        impl<Func, Out, $($arg,)*> Task<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Out + Copy + Send + Sync + 'static,
        {
            type Output = Out;
            #[allow(non_snake_case)]
            fn call(self, args: ($($arg,)*)) -> Out {
                let ($($arg,)*) = args;
                (self)($($arg),*)
            }
        }
    };
}

impl_task!();
impl_task!(A);
impl_task!(A, B);
impl_task!(A, B, C);
impl_task!(A, B, C, D);
impl_task!(A, B, C, D, E);
impl_task!(A, B, C, D, E, G);

/// What one call of a task produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The result, appended to the output frame as a value of the open run.
    Written,
    /// The result, which holds descriptors: its bytes and descriptors.
    Owned(Vec<u8>, Vec<OwnedFd>),
    /// The task panicked.
    Panic { message: String, traceback: String },
    /// The result did not serialise.
    EncodeResult(String),
    /// The arguments did not deserialise.
    DecodeArgs(String),
}

/// One call handed to a trampoline through [`CALL`]; its buffers are reused from call to call.
pub(crate) struct Call {
    input: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// The frame the result is appended to.
    out: Writer,
    outcome: Option<Outcome>,
}

thread_local! {
    /// The call a trampoline is about to run, and then its outcome.
    static CALL: RefCell<Call> = const {
        RefCell::new(Call {
            input: Vec::new(),
            fds: Vec::new(),
            out: Writer { buf: Vec::new(), fds: Vec::new() },
            outcome: None,
        })
    };
    /// The backtrace of the last panic on this thread, recorded by the worker's panic hook.
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The trampoline a worker calls for a task of type `F` with arguments `Args`: takes the
/// call from [`CALL`], runs it under `catch_unwind`, and puts the outcome back.
fn trampoline<F, Args>()
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    // The call's state is borrowed only around decoding and encoding, never while the task
    // runs.
    let decoded = CALL.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let fds = std::mem::take(&mut c.fds);
        Some(crate::state::decode::<Args>(&c.input, fds))
    });
    let Some(decoded) = decoded else { return };
    let outcome = match decoded {
        Err(e) => Outcome::DecodeArgs(e.to_string()),
        Ok(args) => match catch_unwind(AssertUnwindSafe(|| sys::conjure::<F>().call(args))) {
            Err(payload) => panic_outcome(payload.as_ref()),
            Ok(value) => {
                let written = CALL.with(|c| match c.try_borrow_mut() {
                    Ok(mut c) => c.out.run_value(&value).is_ok(),
                    Err(_) => false,
                });
                if written {
                    Outcome::Written
                } else {
                    // A value holding descriptors (or one that does not serialise).
                    match mp_process::fdpass::encode_with_fds(&value) {
                        Ok((bytes, fds)) => Outcome::Owned(bytes, fds),
                        Err(e) => Outcome::EncodeResult(e.to_string()),
                    }
                }
            }
        },
    };
    CALL.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.outcome = Some(outcome);
        }
    });
}

/// The message of a caught panic and the backtrace the worker's hook recorded.
pub(crate) fn panic_outcome(payload: &(dyn Any + Send)) -> Outcome {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let traceback = LAST_BACKTRACE.with(|b| b.borrow_mut().take()).unwrap_or_default();
    Outcome::Panic { message, traceback }
}

/// Installs the worker's panic hook: it records the backtrace for the task's `Remote` error
/// instead of printing, as a Python worker sends its traceback with the exception.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|_info| {
        let bt = Backtrace::force_capture().to_string();
        let _ = LAST_BACKTRACE.try_with(|b| {
            if let Ok(mut slot) = b.try_borrow_mut() {
                *slot = Some(bt);
            }
        });
    }));
}

/// The trampoline offset of task `F` with arguments `Args`. Takes a value of `F`, which is
/// what allows a worker to conjure one.
pub(crate) fn entry_for<F, Args>(_task: F) -> Result<u64>
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a pool task must be a fn item or a non-capturing closure"
        )
    };
    sys::entry_of(trampoline::<F, Args> as fn())
        .ok_or(Error::InvalidArgument("the task's code lies outside the executable's text"))
}

/// Runs the task behind `entry` on `input` in this worker; a successful result without
/// descriptors is appended to `out` as a run value, anything else is returned.
pub(crate) fn run_entry(entry: u64, input: &[u8], fds: Vec<OwnedFd>, out: &mut Writer) -> Outcome {
    let Some(f) = sys::entry_at(entry) else {
        return Outcome::DecodeArgs(format!("task offset {entry:#x} lies outside the text"));
    };
    let ready = CALL.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return false };
        c.input.clear();
        c.input.extend_from_slice(input);
        c.fds = fds;
        std::mem::swap(&mut c.out, out);
        c.outcome = None;
        true
    });
    if !ready {
        return Outcome::DecodeArgs("the worker's call state is in use".into());
    }
    f();
    let outcome = CALL.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        std::mem::swap(&mut c.out, out);
        c.outcome.take()
    });
    outcome.unwrap_or_else(|| Outcome::DecodeArgs("the task's trampoline produced nothing".into()))
}
