//! What a pool runs: `fn` items and non-capturing closures, shipped to workers as the text
//! offset of a monomorphised trampoline that decodes the arguments and encodes the result.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use mp_process::code::{Body, Callable, Entry};
use mp_process::fdpass;
use mp_process::wire::WireError;

use crate::error::{Error, Result};
use crate::proto;
use crate::worker::ChunkRun;

/// A pool task taking the argument tuple `Args`: implemented for every `fn` item and
/// non-capturing closure of up to six arguments.
///
/// The task must be zero-sized (a `fn` item or a closure that captures nothing): only its
/// code, not its value, reaches a worker. The pool checks this when the program is compiled:
///
/// ```compile_fail
/// let pool = mp_pool::Pool::new(1)?;
/// let k = 3;
/// pool.apply(move |x: i32| x * k, (1,))?; // captures `k`: does not compile
/// # Ok::<(), mp_pool::Error>(())
/// ```
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
    /// The result, which holds descriptors: its bytes and descriptors.
    Owned(Vec<u8>, Vec<OwnedFd>),
    /// The task panicked.
    Panic { message: String, traceback: String },
    /// The result did not serialise.
    EncodeResult(String),
    /// The arguments did not deserialise.
    DecodeArgs(String),
}

thread_local! {
    /// The backtrace of the last panic on this thread, recorded by the worker's panic hook.
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The code a worker runs for a chunk of tasks of type `F` with arguments `Args`: runs each
/// task under `catch_unwind` and appends the results to the chunk's.
impl<F, Args> Body<ChunkRun> for Callable<F, Args>
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    fn run(self, run: &mut ChunkRun) {
        run_tasks(self.0, run);
    }
}

/// Runs the tasks of the chunk `run` describes with the task `task`.
fn run_tasks<F, Args>(task: F, run: &mut ChunkRun)
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    let seq_args = run.form & proto::F_SEQ_ARGS != 0;
    let seq_results = run.form & proto::F_SEQ_RESULTS != 0;
    run.results.out.buf.reserve(usize::try_from(run.count.min(1 << 16)).unwrap_or(0) * 8);
    // With bare arguments, where the next one starts.
    let mut seq_at = run.payload.start;
    let seq_end = run.payload.end;
    // Arguments that refer to shared objects are decoded in one session per chunk, in the
    // chunk's scope (lent by the worker, given back below).
    let mut scope = std::mem::take(&mut run.scope);
    let mut cache = std::mem::take(&mut run.cache);
    let mut session = if scope.is_empty() || run.form & proto::F_SELF_CONTAINED != 0 {
        None
    } else {
        // Fails only while the thread ends; the items then fail to decode.
        fdpass::DecodeSession::begin(&mut scope, &mut cache).ok()
    };
    for i in 0..run.count {
        let index = run.first + i;
        // The task counts as started before its arguments are decoded: a decoder that kills
        // the worker is blamed on this task, which then fails, instead of being run again.
        run.start_task();
        let args = if seq_args {
            let bytes = run.reader.slice(seq_at..seq_end);
            let taken = match session.as_mut() {
                None => postcard::take_from_bytes::<Args>(bytes)
                    .map(|(args, tail)| (args, bytes.len() - tail.len()))
                    .map_err(|e| e.to_string()),
                Some(session) => session.take::<Args>(bytes, Vec::new()).map_err(|e| e.to_string()),
            };
            match taken {
                Ok((args, used)) => {
                    seq_at += used;
                    Ok(args)
                }
                Err(e) => {
                    // Nothing tells where the next value starts: the rest fail too.
                    seq_at = seq_end;
                    Err(e)
                }
            }
        } else {
            let Ok((input, fds)) = run.reader.blob_ref() else {
                run.alive = false;
                break;
            };
            if run.form & proto::F_SELF_CONTAINED != 0 {
                crate::state::decode::<Args>(input, fds).map_err(|e| e.to_string())
            } else if let Some(session) = session.as_mut() {
                match session.take::<Args>(input, fds) {
                    Ok((args, used)) if used == input.len() => Ok(args),
                    Ok((_, used)) => {
                        Err(WireError::TrailingBytes { extra: input.len() - used }.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            } else {
                fdpass::decode_in::<Args>(input, fds, &mut Vec::new(), &mut Default::default())
                    .map_err(|e| e.to_string())
            }
        };
        run.results.open_run(run.job, index, seq_results);
        let outcome = match args {
            Err(e) => Outcome::DecodeArgs(e),
            Ok(args) => match catch_unwind(AssertUnwindSafe(|| task.call(args))) {
                Err(payload) => panic_outcome(payload.as_ref()),
                Ok(value) => {
                    let from = run.results.out.buf.len();
                    match run.results.out.run_value(&value, seq_results) {
                        Ok(()) => {
                            if !run.finish_written(index, from, seq_results) {
                                run.alive = false;
                                break;
                            }
                            continue;
                        }
                        Err(e) if proto::too_large(&e) => {
                            Outcome::EncodeResult(proto::too_large_message("result"))
                        }
                        // A value holding descriptors (or one that does not serialise).
                        Err(_) => match mp_process::fdpass::encode_with_fds(&value) {
                            Ok((bytes, _)) if bytes.len() > proto::MAX_VALUE => {
                                Outcome::EncodeResult(proto::too_large_message("result"))
                            }
                            Ok((bytes, fds)) => Outcome::Owned(bytes, fds),
                            Err(e) => Outcome::EncodeResult(e.to_string()),
                        },
                    }
                }
            },
        };
        if !run.finish_task(index, outcome) {
            run.alive = false;
            break;
        }
    }
    drop(session);
    run.scope = scope;
    run.cache = cache;
}

/// The message of a caught panic and the backtrace the worker's hook recorded.
pub(crate) fn panic_outcome(payload: &(dyn Any + Send)) -> Outcome {
    let message = panic_message(payload);
    let traceback = LAST_BACKTRACE.with(|b| b.borrow_mut().take()).unwrap_or_default();
    Outcome::Panic { message, traceback }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
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

/// The entry of task `F` with arguments `Args`, as the offset and tag that cross into workers.
/// Takes a value of `F`, which is what allows a worker to re-make one.
pub(crate) fn entry_for<F, Args>(task: F) -> Result<proto::TaskEntry>
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
    Entry::of(Callable::new(task))
        .map(Entry::to_parts)
        .ok_or(Error::InvalidArgument("the task's code lies outside the executable's text"))
}

/// Runs the chunk `run` describes with the task behind `entry`. An entry this pool did not
/// make (the tag does not sign it) fails every task of the chunk.
pub(crate) fn run_chunk(entry: proto::TaskEntry, run: &mut ChunkRun) {
    if run.entry.is_none_or(|e| e.to_parts() != entry) {
        run.entry = Entry::from_parts(entry.0, entry.1);
    }
    if let Some(e) = run.entry {
        e.call(run);
        return;
    }
    for i in 0..run.count {
        if run.form & proto::F_SEQ_ARGS == 0 && run.reader.blob_ref().is_err() {
            run.alive = false;
            break;
        }
        let index = run.first + i;
        run.results.open_run(run.job, index, false);
        let outcome =
            Outcome::DecodeArgs(format!("task entry {:#x} is not one this pool made", entry.0));
        if !run.finish_task(index, outcome) {
            run.alive = false;
            break;
        }
    }
}
