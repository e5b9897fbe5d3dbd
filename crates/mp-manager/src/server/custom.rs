//! The program's own types in a manager: [`Registry::register`], the [`Registration`] it
//! returns, and the object that serves a registered type (its value under a mutex, and the
//! methods exposed for its type).
//!
//! Registration runs in the manager's process, so the functions of the exposed methods are
//! plain function pointers of that process: nothing but method names and postcard arguments
//! cross. A method of a type that returns another managed type (Python's `method_to_typeid`)
//! adds the new object to the manager's table and hands the caller a reference to it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::RemoteError;
use crate::managed::{Exposed, Handler, Kinds, Managed, Outcome};
use crate::proto::{Payload, decode};
use crate::proxy::proxy_payload;
use crate::server::objects::{Cx, Served, guarded, not_exposed};
use crate::server::registry::Registry;

/// How long a stopping manager waits for an object that a call holds before it gives up on
/// telling it ([`Managed::on_shutdown`]).
const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);

/// A registered type's exposed methods.
pub(crate) struct Kind<T> {
    methods: HashMap<&'static str, Handler<T>>,
    /// Every registered type (the registry outlives every object).
    kinds: Weak<Kinds>,
}

/// An object of a registered type: its value, one call at a time.
struct Custom<T> {
    value: Mutex<T>,
    kind: Arc<Kind<T>>,
}

impl<T: Managed> Served for Custom<T> {
    fn typeid(&self) -> &str {
        T::TYPEID
    }

    fn call(&self, cx: &Cx<'_>, method: &str, args: &[u8]) -> Result<Payload, RemoteError> {
        let handler =
            self.kind.methods.get(method).ok_or_else(|| not_exposed(T::TYPEID, method))?;
        let kinds = self
            .kind
            .kinds
            .upgrade()
            .ok_or_else(|| RemoteError::new("Refused", "the manager is stopping"))?;
        let outcome = {
            let mut value = self.value.lock();
            guarded(|| handler(&kinds, &mut value, args))??
        };
        match outcome {
            Outcome::Value(payload) => Ok(payload),
            Outcome::Object(obj, typeid) => {
                let id = cx.store.add(obj);
                proxy_payload(id, typeid).inspect_err(|_| cx.store.release([id]))
            }
        }
    }

    fn shutdown(&self) {
        // A call that blocks in a method holds the value: the manager does not wait for it.
        if let Some(mut value) = self.value.try_lock_for(SHUTDOWN_WAIT) {
            let _ = guarded(|| value.on_shutdown());
        }
    }
}

/// The registration of a type `T` in progress: which methods it exposes, whether clients may
/// create objects of it. It takes effect when dropped (at the end of the statement that
/// chains its calls).
///
/// ```
/// use mp_manager::{Managed, Method, Registry, RemoteError};
///
/// struct Total(i64);
///
/// impl Managed for Total {
///     const TYPEID: &'static str = "Total";
///     type Init = i64;
///     fn create(start: i64) -> Result<Self, RemoteError> {
///         Ok(Total(start))
///     }
/// }
///
/// const ADD: Method<Total, i64, i64> = Method::new("add", |t, n| {
///     t.0 += n;
///     Ok(t.0)
/// });
///
/// fn register(registry: &mut Registry) {
///     registry.register::<Total>().expose(ADD);
/// }
///
/// let manager = mp_manager::Manager::builder().register(register).start()?;
/// let total = manager.make::<Total>(40)?;
/// assert_eq!(total.call(&ADD, 2)?, 42);
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct Registration<'r, T: Managed> {
    registry: &'r mut Registry,
    methods: HashMap<&'static str, Handler<T>>,
    create: bool,
}

impl<T: Managed> Registration<'_, T> {
    /// Exposes `method` (a [`Method`](crate::Method) or a [`ProxyMethod`](crate::ProxyMethod)):
    /// clients may call it on objects of `T`. A method of the same name exposed before is
    /// replaced. Calling a method that is not exposed fails with a `NotExposed` remote error
    /// (Python's `exposed`).
    pub fn expose(mut self, method: impl Into<Exposed<T>>) -> Self {
        let Exposed { name, handler } = method.into();
        self.methods.insert(name, handler);
        self
    }

    /// Whether clients may create objects of `T` with [`Manager::make`](crate::Manager::make)
    /// (`true` unless told otherwise). With `false`, objects of `T` are made only by methods
    /// of other objects that return one ([`ProxyMethod`](crate::ProxyMethod)): Python's
    /// `create_method=False`.
    pub fn create_method(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

impl<T: Managed> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        let kind = Arc::new(Kind {
            methods: std::mem::take(&mut self.methods),
            kinds: Arc::downgrade(&self.registry.kinds),
        });
        let served = Arc::clone(&kind);
        self.registry.kinds.insert::<T>(Box::new(move |value| {
            let value = value.downcast::<T>().map_err(|_| {
                RemoteError::new("TypeError", format!("a value is not a {}", T::TYPEID))
            })?;
            Ok(Arc::new(Custom { value: Mutex::new(*value), kind: Arc::clone(&served) }))
        }));
        self.registry.add(
            T::TYPEID,
            self.create,
            Box::new(move |_, args| {
                let init: T::Init = decode(args)?;
                let value = guarded(|| T::create(init))??;
                Ok(Arc::new(Custom { value: Mutex::new(value), kind: Arc::clone(&kind) }))
            }),
        );
    }
}

impl Registry {
    /// Registers the type `T` under its [`TYPEID`](Managed::TYPEID), replacing a type
    /// registered under that name before: Python's `BaseManager.register(typeid, callable)`.
    /// The [`Registration`] returned says which methods it exposes
    /// ([`expose`](Registration::expose)) and whether clients may create objects of it
    /// ([`create_method`](Registration::create_method)).
    ///
    /// Objects of `T` are made by [`Managed::create`] in the manager; each is held under a
    /// mutex, so its methods run one at a time.
    pub fn register<T: Managed>(&mut self) -> Registration<'_, T> {
        Registration { registry: self, methods: HashMap::new(), create: true }
    }
}
