//! What a pool runs: `fn` items and non-capturing closures (the worker side turns one into an
//! entry that crosses into workers: `worker::entry_for`).

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
