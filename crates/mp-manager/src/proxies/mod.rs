//! The typed proxies a [`Manager`](crate::Manager) makes.

pub(crate) mod containers;
pub(crate) mod sync;

/// Implements `Serialize`, `Deserialize` (checking the object's type), `Clone` and `Debug` for
/// a proxy type holding a `handle: Handle` and type parameters in `PhantomData`.
macro_rules! proxy_impls {
    ($name:ident $(<$($p:ident),*>)?, $typeid:expr) => {
        impl$(<$($p),*>)? Clone for $name$(<$($p),*>)? {
            fn clone(&self) -> Self {
                Self::from_handle(self.handle.clone())
            }
        }

        impl$(<$($p),*>)? serde::Serialize for $name$(<$($p),*>)? {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.handle, s)
            }
        }

        impl<'de $($(, $p)*)?> serde::Deserialize<'de> for $name$(<$($p),*>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let handle = <crate::proxy::Handle as serde::Deserialize>::deserialize(d)?.expect($typeid)?;
                Ok(Self::from_handle(handle))
            }
        }

        impl$(<$($p),*>)? std::fmt::Debug for $name$(<$($p),*>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.handle, f)
            }
        }
    };
}
pub(crate) use proxy_impls;
