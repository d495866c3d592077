//! The one place that decides how replicated values are encoded (Raft entries, snapshots), so the
//! codec can be swapped without touching the state machine or the Raft loop.
//!
//! JSON, because it is self-describing: records shared with the API carry serde attributes
//! (`skip_serializing_if`, `default`) that a positional codec such as bincode cannot decode, and
//! fields added by later versions must read old entries with their defaults.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("replicated value codec")]
pub struct CodecError(#[from] serde_json::Error);

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(serde_json::to_vec(value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(serde_json::from_slice(bytes)?)
}
