//! The program's own types in a manager, typed: Python's `BaseManager.register`. This file
//! holds what clients and the manager share: [`Managed`], the method constants, [`Proxy`].
//!
//! A type the manager holds implements [`Managed`] (its name and how to make one); each
//! method clients may call is a constant [`Method`] (a name, and the function the manager
//! runs, whose argument and result types the client's call is checked against) or a
//! [`ProxyMethod`] (a method returning a new managed object: Python's `method_to_typeid`). A
//! function `fn(&mut Registry)` given to `ManagerBuilder::register` registers the types and
//! the methods they expose in the manager's process, under every start method
//! (`server/custom.rs`); clients make objects with `Manager::make` (`custom.rs`) and call them
//! through a [`Proxy`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{RemoteError, Result};
use crate::proto::{Payload, decode};
use crate::proxy::Handle;
use crate::server::objects::Served;

/// A type whose objects a manager holds, for other processes to use through a [`Proxy`].
///
/// It is registered in the manager by [`Registry::register`](crate::Registry::register); an object of it is made in the
/// manager's process by [`create`](Managed::create) from the [`Init`](Managed::Init) a client
/// sends ([`Manager::make`](crate::Manager::make)), or returned by a [`ProxyMethod`] of another object.
///
/// ```
/// use mp_manager::{Managed, RemoteError};
///
/// struct Counter(u64);
///
/// impl Managed for Counter {
///     const TYPEID: &'static str = "Counter";
///     type Init = u64;
///     fn create(start: u64) -> Result<Self, RemoteError> {
///         Ok(Counter(start))
///     }
/// }
/// ```
pub trait Managed: Send + Sized + 'static {
    /// The type's name in the manager (Python's `typeid`): what proxies check they refer to.
    const TYPEID: &'static str;
    /// What a client sends to make an object.
    type Init: Serialize + DeserializeOwned;
    /// Makes an object from `init`, in the manager's process. An error is returned to the
    /// client as it is (kind and message).
    fn create(init: Self::Init) -> Result<Self, RemoteError>;
    /// Called in the manager's process when the manager stops (it was shut down), on every
    /// object still held, unless a call is busy in it: the object's last word, as Python's
    /// `SharedMemoryServer.shutdown` unlinks its segments. A manager that is killed (with the
    /// process that started it) says nothing. Does nothing by default.
    fn on_shutdown(&mut self) {}
}

/// A method of a [`Managed`] type `T`, taking an `A` and returning an `R`: its name and the
/// function the manager runs on the object, `fn(&mut T, A) -> Result<R, RemoteError>`.
///
/// Define it as a constant, expose it when registering `T`
/// ([`Registration::expose`](crate::Registration::expose)), and call it through a proxy
/// ([`Proxy::call`]): the client's arguments and result are checked against `A` and `R` when
/// the program is compiled. Several arguments are a tuple. An `Err` returned by the function
/// reaches the caller as [`Error::Remote`](crate::Error::Remote) with its kind and message.
///
/// ```
/// # use mp_manager::{Managed, RemoteError};
/// # struct Counter(u64);
/// # impl Managed for Counter {
/// #     const TYPEID: &'static str = "Counter";
/// #     type Init = u64;
/// #     fn create(start: u64) -> Result<Self, RemoteError> { Ok(Counter(start)) }
/// # }
/// use mp_manager::Method;
///
/// const ADD: Method<Counter, u64, u64> = Method::new("add", |c, n| {
///     c.0 = c.0.checked_add(n).ok_or_else(|| RemoteError::new("OverflowError", "too big"))?;
///     Ok(c.0)
/// });
/// ```
pub struct Method<T, A, R> {
    name: &'static str,
    f: fn(&mut T, A) -> Result<R, RemoteError>,
}

impl<T, A, R> Method<T, A, R> {
    /// The method `name`, running `f` in the manager.
    pub const fn new(name: &'static str, f: fn(&mut T, A) -> Result<R, RemoteError>) -> Self {
        Method { name, f }
    }

    /// The method's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// A method of a [`Managed`] type `T` that returns a new managed object of type `U`: the
/// manager keeps the object and the caller gets a [`Proxy<U>`] to it. Python's
/// `method_to_typeid`. `U` must be registered in the same manager (possibly with
/// [`create_method(false)`](crate::Registration::create_method), if clients may not make one
/// otherwise).
pub struct ProxyMethod<T, A, U> {
    name: &'static str,
    f: fn(&mut T, A) -> Result<U, RemoteError>,
}

impl<T, A, U> ProxyMethod<T, A, U> {
    /// The method `name`, running `f` in the manager.
    pub const fn new(name: &'static str, f: fn(&mut T, A) -> Result<U, RemoteError>) -> Self {
        ProxyMethod { name, f }
    }

    /// The method's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

macro_rules! method_impls {
    ($name:ident) => {
        impl<T, A, R> Clone for $name<T, A, R> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<T, A, R> Copy for $name<T, A, R> {}

        impl<T, A, R> fmt::Debug for $name<T, A, R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.name)
            }
        }
    };
}
method_impls!(Method);
method_impls!(ProxyMethod);

/// What a client calls on a [`Proxy<T>`]: a [`Method`] or a [`ProxyMethod`] of `T`, with the
/// type of its arguments and of what the call returns.
pub trait RemoteMethod<T> {
    /// The arguments.
    type Args: Serialize;
    /// What the call returns.
    type Output: DeserializeOwned;
    /// The method's name.
    fn name(&self) -> &'static str;
}

impl<T, A: Serialize, R: DeserializeOwned> RemoteMethod<T> for Method<T, A, R> {
    type Args = A;
    type Output = R;
    fn name(&self) -> &'static str {
        self.name
    }
}

impl<T, A: Serialize, U: Managed> RemoteMethod<T> for ProxyMethod<T, A, U> {
    type Args = A;
    type Output = Proxy<U>;
    fn name(&self) -> &'static str {
        self.name
    }
}

/// A method as the manager runs it, made from a [`Method`] or a [`ProxyMethod`] for
/// [`Registration::expose`](crate::Registration::expose).
pub struct Exposed<T> {
    pub(crate) name: &'static str,
    pub(crate) handler: Handler<T>,
}

impl<T> fmt::Debug for Exposed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Exposed({:?})", self.name)
    }
}

/// The fingerprint of the method type `M` (its type's name without module paths, FNV-1a): a
/// call carries the one of the constant the client called, so that two constants of one name
/// but other argument or result types cannot be taken for each other (a postcard encoding does
/// not say its type). Paths are left out so that another program defining the same types (a
/// remote manager's client) calls them: `Method<Counter, u64, u64>` whatever crate `Counter`
/// is in.
fn fingerprint<M: ?Sized>() -> u64 {
    without_paths(std::any::type_name::<M>())
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A type's name with every `path::` prefix removed: `a::b::Foo<c::Bar, u8>` is
/// `Foo<Bar, u8>`.
fn without_paths(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            word.clear();
        } else if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

/// Decodes a call's arguments for the method `name` of type `M`, checking its fingerprint.
fn decode_args<T: Managed, M: ?Sized, A: DeserializeOwned>(
    name: &str,
    bytes: &[u8],
) -> Result<A, RemoteError> {
    let (print, args): (u64, A) = decode(bytes).map_err(|e| mismatch::<T>(name, &e.message))?;
    if print != fingerprint::<M>() {
        return Err(mismatch::<T>(name, "its arguments or result are of other types"));
    }
    Ok(args)
}

/// The error for a call of `name` that is not the method exposed under that name.
fn mismatch<T: Managed>(name: &str, why: &str) -> RemoteError {
    RemoteError::new(
        "TypeError",
        format!(
            "method {name:?} of {} was called as another method of that name: {why}",
            T::TYPEID
        ),
    )
}

impl<T, A, R> From<Method<T, A, R>> for Exposed<T>
where
    T: Managed,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    fn from(method: Method<T, A, R>) -> Exposed<T> {
        let f = method.f;
        Exposed {
            name: method.name,
            handler: Box::new(move |_, value, args| {
                let args: A = decode_args::<T, Method<T, A, R>, A>(method.name, args)?;
                let result = f(value, args)?;
                Payload::of(&result).map(Outcome::Value)
            }),
        }
    }
}

impl<T, A, U> From<ProxyMethod<T, A, U>> for Exposed<T>
where
    T: Managed,
    A: DeserializeOwned + 'static,
    U: Managed,
{
    fn from(method: ProxyMethod<T, A, U>) -> Exposed<T> {
        let f = method.f;
        Exposed {
            name: method.name,
            handler: Box::new(move |kinds, value, args| {
                let args: A = decode_args::<T, ProxyMethod<T, A, U>, A>(method.name, args)?;
                let made = f(value, args)?;
                kinds.wrap(made).map(|obj| Outcome::Object(obj, U::TYPEID))
            }),
        }
    }
}

/// What a method of a registered type runs in the manager: the registered types (for a
/// method that makes an object of one), the object's value, the arguments (postcard).
pub(crate) type Handler<T> =
    Box<dyn Fn(&Kinds, &mut T, &[u8]) -> Result<Outcome, RemoteError> + Send + Sync>;

/// What a method of a registered type returns.
pub(crate) enum Outcome {
    /// A value, encoded.
    Value(Payload),
    /// A new object of the manager (of the registered type named), of which the caller gets
    /// a reference.
    Object(Arc<dyn Served>, &'static str),
}

/// Makes a value of a registered type (boxed) an object the manager serves.
pub(crate) type Wrapper =
    Box<dyn Fn(Box<dyn Any + Send>) -> Result<Arc<dyn Served>, RemoteError> + Send + Sync>;

/// How to serve a value of each registered type, by Rust type.
#[derive(Default)]
pub(crate) struct Kinds(RwLock<HashMap<TypeId, Wrapper>>);

impl Kinds {
    /// Serves values of `U` with `wrap` from now on.
    pub(crate) fn insert<U: Managed>(&self, wrap: Wrapper) {
        self.0.write().insert(TypeId::of::<U>(), wrap);
    }

    /// `value` as an object the manager serves, with the methods registered for `U`.
    pub(crate) fn wrap<U: Managed>(&self, value: U) -> Result<Arc<dyn Served>, RemoteError> {
        let kinds = self.0.read();
        let wrap = kinds.get(&TypeId::of::<U>()).ok_or_else(|| {
            RemoteError::new(
                "TypeError",
                format!("a method returned a {} but that type is not registered", U::TYPEID),
            )
        })?;
        wrap(Box::new(value))
    }
}

/// A proxy of an object of a registered type `T` held by a manager: Python's `AutoProxy` of a
/// registered `typeid`.
///
/// [`call`](Proxy::call) runs one of the type's exposed methods on the object, in the
/// manager, one round trip. Like every proxy it is `Clone` (clones share one reference),
/// `Serialize` and `Deserialize`: it passes into a `Process`, a pool task, a queue message,
/// and into an object of the same manager.
pub struct Proxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Proxy<T> {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        Proxy { handle, _type: PhantomData }
    }
}

impl<T: Managed> Proxy<T> {
    /// Calls `method` with `args` on the object, in the manager, and returns its result (for
    /// a [`ProxyMethod`], a proxy of the object it made).
    ///
    /// Errors: [`Error::Remote`](crate::Error::Remote) with the method's own error, or of kind
    /// `"NotExposed"` if the manager's registration of `T` does not expose the method, `"Panic"`
    /// if it panicked, `"TypeError"` if the method exposed under that name is another constant
    /// with other argument or result types; [`Error::ManagerGone`](crate::Error::ManagerGone) if the manager is gone.
    pub fn call<M: RemoteMethod<T>>(&self, method: &M, args: M::Args) -> Result<M::Output> {
        self.handle.call(method.name(), &(fingerprint::<M>(), args))
    }
}

impl<T> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        Proxy::from_handle(self.handle.clone())
    }
}

impl<T> Serialize for Proxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T: Managed> Deserialize<'de> for Proxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Proxy::from_handle(Handle::deserialize(d)?.expect(T::TYPEID)?))
    }
}

impl<T> fmt::Debug for Proxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.handle, f)
    }
}

#[cfg(test)]
mod tests {
    use super::without_paths;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            without_paths(
                "mp_manager::managed::Method<app::model::Counter, u64, alloc::string::String>"
            ),
            "Method<Counter, u64, String>"
        );
        assert_eq!(without_paths("(u8, [std::vec::Vec<i32>; 2])"), "(u8, [Vec<i32>; 2])");
    }
}
