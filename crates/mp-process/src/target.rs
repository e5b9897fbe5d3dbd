//! What a process runs: `fn` items and non-capturing closures with serde argument tuples.

use std::fmt::Debug;

/// How a target's return value becomes the child's exit code.
pub trait TargetOutput {
    /// The exit code: 0 for success.
    fn exit_code(self) -> i32;
}

impl TargetOutput for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl<E: Debug> TargetOutput for Result<(), E> {
    /// `Err(e)` prints `Error: {e:?}` to stderr and exits 1, as a Rust `main` does.
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("Error: {e:?}");
                1
            }
        }
    }
}

/// A process target taking the argument tuple `Args`: implemented for every `fn` item and
/// non-capturing closure of up to six arguments that returns `()` or `Result<(), E>`.
///
/// The target must be zero-sized (a `fn` item or a closure that captures nothing): under
/// `spawn` and `forkserver` only its code, not its value, reaches the child. This is checked
/// when the program is compiled. Capturing closures go through
/// [`Process::fork_closure`](crate::Process::fork_closure).
pub trait Target<Args>: Copy + Send + Sync + 'static {
    /// Calls the target with its arguments and turns the result into an exit code.
    fn call(self, args: Args) -> i32;
}

macro_rules! impl_target {
    ($($arg:ident),*) => {
        impl<Func, Out, $($arg,)*> Target<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Out + Copy + Send + Sync + 'static,
            Out: TargetOutput,
        {
            #[allow(non_snake_case)]
            fn call(self, args: ($($arg,)*)) -> i32 {
                let ($($arg,)*) = args;
                (self)($($arg),*).exit_code()
            }
        }
    };
}

impl_target!();
impl_target!(A);
impl_target!(A, B);
impl_target!(A, B, C);
impl_target!(A, B, C, D);
impl_target!(A, B, C, D, E);
impl_target!(A, B, C, D, E, G);
