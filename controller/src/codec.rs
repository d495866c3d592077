//! The one place that decides how replicated values are encoded (Raft entries, snapshots), so the
//! codec can be swapped without touching the state machine or the Raft loop.
//!
//! Every persisted value is framed: a magic byte, the state-machine version that wrote it, the
//! first 8 bytes of the payload's SHA-256, then the payload. A node refuses what was written by
//! a newer state machine than its own (a rolling upgrade never applies an entry an old node
//! would apply differently) and what does not match its checksum (a damaged disk), with a
//! message saying so, instead of skipping it and diverging from its peers.
//!
//! The payload is JSON, because it is self-describing: records shared with the API carry serde
//! attributes (`skip_serializing_if`, `default`) that a positional codec such as bincode cannot
//! decode, and fields added by later versions must read old entries with their defaults.

use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

/// The version of the state machine's commands and state this build writes and understands.
/// Bump it when a command's meaning changes, so that older nodes refuse the new entries.
pub const STATE_MACHINE_VERSION: u16 = 1;

/// The first byte of a framed value (never the first byte of a JSON document).
const MAGIC: u8 = 0xE5;
const HEADER: usize = 1 + 2 + 8;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("replicated value codec")]
    Json(#[from] serde_json::Error),
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

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let payload = serde_json::to_vec(value)?;
    let mut framed = Vec::with_capacity(HEADER + payload.len());
    framed.push(MAGIC);
    framed.extend_from_slice(&STATE_MACHINE_VERSION.to_le_bytes());
    framed.extend_from_slice(&checksum(&payload));
    framed.extend_from_slice(&payload);
    Ok(framed)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
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
    Ok(serde_json::from_slice(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_comes_back_as_it_went() {
        let value = vec!["a".to_owned(), "b".to_owned()];
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes[0], MAGIC);
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), value);
        // Values from before framing still read.
        assert_eq!(decode::<Vec<String>>(br#"["a","b"]"#).unwrap(), value);
    }

    #[test]
    fn newer_damaged_or_cut_values_are_refused() {
        let mut bytes = encode(&vec![1u32, 2, 3]).unwrap();
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
