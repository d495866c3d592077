//! The persisted format of the replicated state: the types Raft log entries and snapshots are
//! written as, kept apart from the in-memory state and from the API types, and encoded with
//! bincode 2. An API type may change freely; what is on disk changes only when these types do,
//! and they are frozen once released (a change means a new state-machine version, see
//! [`crate::codec`]).
//!
//! [`Persist`] maps an in-memory type to its stored twin and back. Each stored type names every
//! field with its stored type, so a field added to, removed from or retyped in an in-memory
//! record fails to compile here instead of silently changing the bytes; the golden test in
//! `tests.rs` fails when the encoding of a fixed state changes.

mod entry;
mod records;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub use entry::Entry;
pub use snapshot::Snapshot;

/// A stored value that does not make an in-memory one.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("bincode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("a Marketplace entry's signed metadata does not parse: {0}")]
    Metadata(#[from] stratus_common::marketplace::MetadataError),
}

/// An in-memory type and the type it is stored as.
pub trait Persist: Sized {
    type Stored: bincode::Encode + bincode::Decode<()>;
    fn store(&self) -> Self::Stored;
    fn load(stored: Self::Stored) -> Result<Self, FormatError>;

    /// The value a payload written by state-machine `version` (bincode, version 2 or later)
    /// holds. A type whose stored form changed since reads the older forms here.
    fn load_payload(version: u16, payload: &[u8]) -> Result<Self, FormatError> {
        let _ = version;
        from_bytes(payload)
    }
}

/// The bincode configuration of every stored value: little-endian, variable-length integers.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The bincode bytes of `value`'s stored form.
pub fn to_bytes<T: Persist>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value.store(), config()).expect("encoding into a Vec cannot fail")
}

/// The value whose stored form `bytes` hold, all of them.
pub fn from_bytes<T: Persist>(bytes: &[u8]) -> Result<T, FormatError> {
    T::load(decode_all(bytes)?)
}

/// The stored value `bytes` hold, all of them.
fn decode_all<S: bincode::Decode<()>>(bytes: &[u8]) -> Result<S, FormatError> {
    let (stored, used) = bincode::decode_from_slice::<S, _>(bytes, config())?;
    if used != bytes.len() {
        return Err(FormatError::Trailing(bytes.len() - used));
    }
    Ok(stored)
}

/// Types stored as they are: their bincode encoding is fixed by bincode itself.
macro_rules! stored_as_is {
    ($($t:ty),*) => {$(
        impl Persist for $t {
            type Stored = $t;
            fn store(&self) -> $t {
                self.clone()
            }
            fn load(stored: $t) -> Result<Self, FormatError> {
                Ok(stored)
            }
        }
    )*};
}
stored_as_is!(bool, u8, u16, u32, u64, String, Ipv4Addr);

impl<T: Persist> Persist for Option<T> {
    type Stored = Option<T::Stored>;
    fn store(&self) -> Self::Stored {
        self.as_ref().map(T::store)
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        stored.map(T::load).transpose()
    }
}

impl<T: Persist> Persist for Vec<T> {
    type Stored = Vec<T::Stored>;
    fn store(&self) -> Self::Stored {
        self.iter().map(T::store).collect()
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        stored.into_iter().map(T::load).collect()
    }
}

/// Boxed in memory, boxed stored (bincode writes a box as what it holds: the bytes are the
/// same as unboxed, and a stored type may hold itself).
impl<T: Persist> Persist for Box<T> {
    type Stored = Box<T::Stored>;
    fn store(&self) -> Self::Stored {
        Box::new((**self).store())
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        T::load(*stored).map(Box::new)
    }
}

impl<A: Persist, B: Persist> Persist for (A, B) {
    type Stored = (A::Stored, B::Stored);
    fn store(&self) -> Self::Stored {
        (self.0.store(), self.1.store())
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        Ok((A::load(stored.0)?, B::load(stored.1)?))
    }
}

impl<K, V> Persist for BTreeMap<K, V>
where
    K: Persist + Ord,
    K::Stored: Ord,
    V: Persist,
{
    type Stored = BTreeMap<K::Stored, V::Stored>;
    fn store(&self) -> Self::Stored {
        self.iter().map(|(k, v)| (k.store(), v.store())).collect()
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        stored
            .into_iter()
            .map(|(k, v)| Ok((K::load(k)?, V::load(v)?)))
            .collect()
    }
}

impl<T> Persist for BTreeSet<T>
where
    T: Persist + Ord,
    T::Stored: Ord,
{
    type Stored = BTreeSet<T::Stored>;
    fn store(&self) -> Self::Stored {
        self.iter().map(T::store).collect()
    }
    fn load(stored: Self::Stored) -> Result<Self, FormatError> {
        stored.into_iter().map(T::load).collect()
    }
}

/// A stored struct: every field with its stored type, converted field by field. `older`
/// names the frozen stored forms of earlier state-machine versions (each convertible into the
/// current one), read when a payload of that version is loaded.
macro_rules! stored_struct {
    ($(#[$meta:meta])* $stored:ident for $orig:path { $($field:ident: $ty:ty),* $(,)? }
     older { $($version:literal => $old:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, bincode::Encode, bincode::Decode)]
        pub struct $stored {
            $(pub $field: $ty,)*
        }

        impl $crate::persist::Persist for $orig {
            type Stored = $stored;
            fn store(&self) -> $stored {
                $stored { $($field: $crate::persist::Persist::store(&self.$field),)* }
            }
            fn load(stored: $stored) -> Result<Self, $crate::persist::FormatError> {
                Ok(Self { $($field: $crate::persist::Persist::load(stored.$field)?,)* })
            }
            fn load_payload(
                version: u16,
                payload: &[u8],
            ) -> Result<Self, $crate::persist::FormatError> {
                match version {
                    $($version => Self::load($stored::from(
                        $crate::persist::decode_older::<$old>(payload)?,
                    )),)*
                    _ => $crate::persist::from_bytes(payload),
                }
            }
        }
    };
    ($(#[$meta:meta])* $stored:ident for $orig:path { $($field:ident: $ty:ty),* $(,)? }) => {
        $crate::persist::stored_struct!(
            $(#[$meta])* $stored for $orig { $($field: $ty),* } older {}
        );
    };
}

/// A stored enum of unit variants; bincode writes the variant's position, so the order here is
/// the format.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $stored:ident for $orig:path { $($variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
        pub enum $stored {
            $($variant,)*
        }

        impl $crate::persist::Persist for $orig {
            type Stored = $stored;
            fn store(&self) -> $stored {
                match self {
                    $(Self::$variant => $stored::$variant,)*
                }
            }
            fn load(stored: $stored) -> Result<Self, $crate::persist::FormatError> {
                Ok(match stored {
                    $($stored::$variant => Self::$variant,)*
                })
            }
        }
    };
}

pub(crate) use {stored_enum, stored_struct};

/// A payload in the frozen stored form of an earlier state-machine version.
pub fn decode_older<S: bincode::Decode<()>>(payload: &[u8]) -> Result<S, FormatError> {
    decode_all(payload)
}
