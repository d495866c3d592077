//! The one place that decides how replicated values are encoded (Raft entries, snapshots), so the
//! codec can be swapped without touching the state machine or the Raft loop.
//!
//! Every persisted value is framed: a magic byte, the state-machine version that wrote it, the
//! first 8 bytes of the payload's SHA-256, then the payload. A node refuses what was written by
//! a newer state machine than its own (a rolling upgrade never applies an entry an old node
//! would apply differently) and what does not match its checksum (a damaged disk), with a
//! message saying so, instead of skipping it and diverging from its peers.
//!
//! The payload is what the state-machine version says: version 6 (this build: a host's whole
//! report as one entry), version 5 (placement rules and evacuation), version 4 (hosts' life,
//! that is up, down, maintenance and removal, and instances in an Unknown state), version 3
//! (trust, that is join tokens, host certificates, API tokens, certificate subjects; the power
//! commands and Stopped states of the instance life-cycle; account changes) and version 2
//! write the stored types of [`crate::persist`] with bincode 2, a snapshot of version 2, 3 or 4
//! read through its frozen form; version 1 wrote the in-memory types as JSON, and values from before framing
//! are bare JSON. Every older form is still read, so a store written by an older controller
//! opens after an upgrade. A rolling upgrade therefore
//! upgrades the followers first and the leader last: an old follower refuses (and halts on)
//! the entries of a newer leader rather than applying what it does not understand.

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::persist::{self, FormatError, Persist};

/// The version of the state machine's commands and state this build writes and understands.
/// Bump it when a command's meaning or the stored format changes, so that older nodes refuse
/// the new entries.
pub const STATE_MACHINE_VERSION: u16 = 6;

/// The last version whose payload was JSON.
const LAST_JSON_VERSION: u16 = 1;

/// The first byte of a framed value (never the first byte of a JSON document).
const MAGIC: u8 = 0xE5;
const HEADER: usize = 1 + 2 + 8;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("replicated value codec (JSON of version 1)")]
    Json(#[from] serde_json::Error),
    #[error("replicated value codec: {0}")]
    Format(#[from] FormatError),
    #[error(
        "written by state machine version {found}; this controller understands up to \
         {STATE_MACHINE_VERSION}: upgrade it to the cluster's version"
    )]
    TooNew { found: u16 },
    #[error("damaged: its checksum does not match (a disk or memory fault)")]
    Checksum,
    #[error("damaged: {0} bytes is too short for its header")]
    Truncated(usize),
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&digest[..8]);
    sum
}

/// The framed bytes of `value` as this version stores it.
pub fn encode<T: Persist>(value: &T) -> Vec<u8> {
    let payload = persist::to_bytes(value);
    let mut framed = Vec::with_capacity(HEADER + payload.len());
    framed.push(MAGIC);
    framed.extend_from_slice(&STATE_MACHINE_VERSION.to_le_bytes());
    framed.extend_from_slice(&checksum(&payload));
    framed.extend_from_slice(&payload);
    framed
}

/// The value framed in `bytes`, written by this version or an older one.
pub fn decode<T: Persist + DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let Some(&first) = bytes.first() else {
        return Err(CodecError::Truncated(0));
    };
    if first != MAGIC {
        // Written before values were framed: bare JSON of version 1.
        return Ok(serde_json::from_slice(bytes)?);
    }
    if bytes.len() < HEADER {
        return Err(CodecError::Truncated(bytes.len()));
    }
    let found = u16::from_le_bytes([bytes[1], bytes[2]]);
    if found > STATE_MACHINE_VERSION {
        return Err(CodecError::TooNew { found });
    }
    let payload = &bytes[HEADER..];
    if checksum(payload) != bytes[3..HEADER] {
        return Err(CodecError::Checksum);
    }
    if found <= LAST_JSON_VERSION {
        return Ok(serde_json::from_slice(payload)?);
    }
    Ok(T::load_payload(found, payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_comes_back_as_it_went() {
        let value = vec!["a".to_owned(), "b".to_owned()];
        let bytes = encode(&value);
        assert_eq!(bytes[0], MAGIC);
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), value);
        // Values from before framing, and framed JSON of version 1, still read.
        assert_eq!(decode::<Vec<String>>(br#"["a","b"]"#).unwrap(), value);
        let payload = br#"["a","b"]"#;
        let mut v1 = vec![MAGIC];
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&checksum(payload));
        v1.extend_from_slice(payload);
        assert_eq!(decode::<Vec<String>>(&v1).unwrap(), value);
    }

    #[test]
    fn newer_damaged_or_cut_values_are_refused() {
        let mut bytes = encode(&vec![1u32, 2, 3]);
        let mut newer = bytes.clone();
        newer[1..3].copy_from_slice(&(STATE_MACHINE_VERSION + 1).to_le_bytes());
        let err = decode::<Vec<u32>>(&newer).unwrap_err();
        assert!(matches!(err, CodecError::TooNew { found } if found == STATE_MACHINE_VERSION + 1));
        assert!(err.to_string().contains("upgrade it"), "{err}");
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        assert!(matches!(
            decode::<Vec<u32>>(&bytes),
            Err(CodecError::Checksum)
        ));
        assert!(matches!(
            decode::<Vec<u32>>(&bytes[..5]),
            Err(CodecError::Truncated(5))
        ));
        assert!(matches!(
            decode::<Vec<u32>>(&[]),
            Err(CodecError::Truncated(0))
        ));
    }
}
