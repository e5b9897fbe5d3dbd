//! The client's side of the program's own types: [`Manager::make`], and the functions a
//! [`ManagerBuilder`] has the manager's process run before it serves (registrations, an
//! initializer), crossing as checked entries of the executable.

use std::marker::PhantomData;

use mp_process::code::{Body, Entry};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::managed::{Managed, Proxy};
use crate::manager::{Manager, ManagerBuilder};
use crate::server::registry::Registry;

impl Manager {
    /// Makes an object of the registered type `T` from `init` in the manager
    /// ([`Managed::create`] runs there) and returns a proxy of it: Python's
    /// `manager.<typeid>(...)`.
    ///
    /// Errors: [`Error::Remote`](crate::Error::Remote) of kind `"NotExposed"` if the manager
    /// has no type `T::TYPEID` registered, `"Refused"` if `T` was registered with
    /// [`create_method(false)`](crate::Registration::create_method), or the error of `create`;
    /// [`Error::ShutDown`](crate::Error::ShutDown) after a shutdown.
    pub fn make<T: Managed>(&self, init: T::Init) -> Result<Proxy<T>> {
        Ok(Proxy::from_handle(self.create(T::TYPEID, &init)?))
    }
}

/// A registration function, as the manager's process runs it.
#[derive(Clone, Copy)]
struct Setup<F>(F);

impl<F: Fn(&mut Registry) + Copy + Send + Sync> Body<Registry> for Setup<F> {
    fn run(self, registry: &mut Registry) {
        (self.0)(registry);
    }
}

/// An initializer, as the manager's process runs it.
#[derive(Clone, Copy)]
struct Initializer<F>(F);

impl<F: Fn() + Copy + Send + Sync> Body<Registry> for Initializer<F> {
    fn run(self, _: &mut Registry) {
        (self.0)();
    }
}

/// The entry's parts, or parts the manager refuses (it then fails to start, saying so).
fn parts(entry: Option<Entry<Registry>>) -> (u64, u64) {
    entry.map_or((u64::MAX, 0), Entry::to_parts)
}

impl ManagerBuilder {
    /// Has the manager's process run `f` before it serves, to register the program's types:
    /// Python's `BaseManager.register`, done in the manager under every start method. `f` is
    /// a `fn` item or a closure that captures nothing (it crosses as a checked entry of the
    /// executable, never as a pointer); a closure that captures something does not compile.
    ///
    /// Functions given here and to [`initializer`](ManagerBuilder::initializer) run in the
    /// order given. If one panics, [`start`](ManagerBuilder::start) fails with a `StartFailed`
    /// remote error.
    ///
    /// ```
    /// use mp_manager::{Managed, Manager, Method, Registry, RemoteError};
    ///
    /// struct Greeter(String);
    ///
    /// impl Managed for Greeter {
    ///     const TYPEID: &'static str = "Greeter";
    ///     type Init = String;
    ///     fn create(greeting: String) -> Result<Self, RemoteError> {
    ///         Ok(Greeter(greeting))
    ///     }
    /// }
    ///
    /// const GREET: Method<Greeter, String, String> =
    ///     Method::new("greet", |g, name| Ok(format!("{}, {name}!", g.0)));
    ///
    /// let manager = Manager::builder()
    ///     .register(|r: &mut Registry| {
    ///         r.register::<Greeter>().expose(GREET);
    ///     })
    ///     .start()?;
    /// let greeter = manager.make::<Greeter>("Hello".into())?;
    /// assert_eq!(greeter.call(&GREET, "world".into())?, "Hello, world!");
    /// # Ok::<(), mp_manager::Error>(())
    /// ```
    pub fn register<F>(self, f: F) -> Self
    where
        F: Fn(&mut Registry) + Copy + Send + Sync + 'static,
    {
        self.setup_entry(parts(Entry::of(Setup(f))), Vec::new())
    }

    /// Has the manager's process run `f` before it serves: Python's `start(initializer)`.
    /// `f` is a `fn` item or a closure that captures nothing. Runs in order with the functions
    /// given to [`register`](ManagerBuilder::register).
    pub fn initializer<F>(self, f: F) -> Self
    where
        F: Fn() + Copy + Send + Sync + 'static,
    {
        self.setup_entry(parts(Entry::of(Initializer(f))), Vec::new())
    }

    /// Has the manager's process run `f(args)` before it serves: Python's
    /// `start(initializer, initargs)`. `args` crosses to the manager's process encoded
    /// (postcard), under every start method; `f` is a `fn` item or a closure that captures
    /// nothing.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// static SEED: AtomicU64 = AtomicU64::new(0);
    ///
    /// let manager = mp_manager::Manager::builder()
    ///     .initializer_with(|seed: u64| SEED.store(seed, Ordering::SeqCst), 42)
    ///     .start()?;
    /// # drop(manager);
    /// # Ok::<(), mp_manager::Error>(())
    /// ```
    ///
    /// Errors, at [`start`](ManagerBuilder::start): [`Error::Wire`](crate::Error::Wire) if
    /// `args` does not encode; a `StartFailed` remote error if `f` panics.
    pub fn initializer_with<F, A>(self, f: F, args: A) -> Self
    where
        F: Fn(A) + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        match postcard::to_allocvec(&args) {
            Ok(bytes) => {
                self.setup_entry(parts(Entry::of(InitializerWith(f, PhantomData::<fn(A)>))), bytes)
            }
            Err(e) => self.fail_setup(crate::Error::Wire(mp_process::wire::encode_error(e, &args))),
        }
    }
}

/// An initializer with arguments, as the manager's process runs it: the arguments are in the
/// registry while it runs.
struct InitializerWith<F, A>(F, PhantomData<fn(A)>);

impl<F: Copy, A> Clone for InitializerWith<F, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, A> Copy for InitializerWith<F, A> {}

impl<F, A> Body<Registry> for InitializerWith<F, A>
where
    F: Fn(A) + Copy + Send + Sync,
    A: DeserializeOwned + 'static,
{
    fn run(self, registry: &mut Registry) {
        match postcard::from_bytes::<A>(&registry.setup_args) {
            Ok(args) => (self.0)(args),
            Err(e) => {
                registry.setup_error = Some(format!("the initializer's arguments: {e}"));
            }
        }
    }
}
