//! Snapshots between controllers, in checksummed chunks. The receiver writes them to a file
//! in its state directory, checks each chunk's and the whole snapshot's SHA-256, fsyncs the
//! file, renames it into place and fsyncs the directory; only then is the sender answered and
//! the snapshot handed to Raft to install.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::Message;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::wire::SnapshotChunk;

/// Bytes of snapshot data per chunk.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("snapshot header: {0}")]
    Header(String),
    #[error("snapshot chunk at {offset} expected at {expected}")]
    OutOfOrder { offset: u64, expected: u64 },
    #[error("snapshot chunk at {0} does not match its checksum")]
    ChunkChecksum(u64),
    #[error("snapshot is {got} bytes, its header says {want}")]
    Length { got: u64, want: u64 },
    #[error("snapshot does not match its checksum")]
    Checksum,
    #[error("writing the snapshot to {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ReceiveError {
    pub fn status(&self) -> tonic::Status {
        match self {
            ReceiveError::Io { .. } => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::data_loss(self.to_string()),
        }
    }
}

/// The chunks of `message` (a MsgSnapshot): the header first, then the data.
pub fn chunks(message: &Message) -> Vec<SnapshotChunk> {
    let data = &message.get_snapshot().data;
    let mut header = message.clone();
    header.mut_snapshot().data = Default::default();
    let header = header.write_to_bytes().expect("a raft message encodes");
    let total_sha256 = Sha256::digest(data).to_vec();
    let mut chunks: Vec<SnapshotChunk> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, piece)| SnapshotChunk {
            offset: (i * CHUNK) as u64,
            sha256: Sha256::digest(piece).to_vec(),
            data: piece.to_vec(),
            ..Default::default()
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(SnapshotChunk {
            sha256: Sha256::digest([]).to_vec(),
            ..Default::default()
        });
    }
    chunks[0].header = header;
    chunks[0].total_len = data.len() as u64;
    chunks[0].total_sha256 = total_sha256;
    chunks
}

/// A snapshot being received into `<dir>/from-<node>.part`.
pub struct Receiving {
    header: Message,
    total_len: u64,
    total_sha256: Vec<u8>,
    hasher: Sha256,
    data: Vec<u8>,
    file: tokio::fs::File,
    part: PathBuf,
    done: PathBuf,
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReceiveError + '_ {
    move |source| ReceiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Receiving {
    pub async fn start(dir: &Path, from: u64, first: &SnapshotChunk) -> Result<Self, ReceiveError> {
        let header = Message::parse_from_bytes(&first.header)
            .map_err(|e| ReceiveError::Header(e.to_string()))?;
        if header.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
            return Err(ReceiveError::Header("not a snapshot message".into()));
        }
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        let part = dir.join(format!("from-{from}.part"));
        let done = dir.join(format!("from-{from}.snap"));
        let file = tokio::fs::File::create(&part).await.map_err(io(&part))?;
        Ok(Self {
            header,
            total_len: first.total_len,
            total_sha256: first.total_sha256.clone(),
            hasher: Sha256::new(),
            data: Vec::with_capacity(first.total_len.min(1 << 30) as usize),
            file,
            part,
            done,
            dir: dir.to_owned(),
        })
    }

    pub async fn take(&mut self, chunk: &SnapshotChunk) -> Result<(), ReceiveError> {
        let expected = self.data.len() as u64;
        if chunk.offset != expected {
            return Err(ReceiveError::OutOfOrder {
                offset: chunk.offset,
                expected,
            });
        }
        if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
            return Err(ReceiveError::ChunkChecksum(chunk.offset));
        }
        self.file
            .write_all(&chunk.data)
            .await
            .map_err(io(&self.part))?;
        self.hasher.update(&chunk.data);
        self.data.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// Checks the whole, makes it durable under its final name, and answers the message to
    /// step into Raft.
    pub async fn finish(mut self) -> Result<Message, ReceiveError> {
        let got = self.data.len() as u64;
        if got != self.total_len {
            return Err(ReceiveError::Length {
                got,
                want: self.total_len,
            });
        }
        if self.hasher.finalize().as_slice() != self.total_sha256.as_slice() {
            return Err(ReceiveError::Checksum);
        }
        self.file.flush().await.map_err(io(&self.part))?;
        self.file.sync_all().await.map_err(io(&self.part))?;
        tokio::fs::rename(&self.part, &self.done)
            .await
            .map_err(io(&self.done))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(io(&self.dir))?;
        let mut message = self.header;
        message.mut_snapshot().data = self.data.into();
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_message(len: usize) -> Message {
        let mut message = Message::default();
        message.set_msg_type(raft::prelude::MessageType::MsgSnapshot);
        message.from = 1;
        message.to = 2;
        let snap = message.mut_snapshot();
        snap.mut_metadata().index = 42;
        snap.data = (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        message
    }

    async fn receive(dir: &Path, chunks: &[SnapshotChunk]) -> Result<Message, ReceiveError> {
        let mut receiving = Receiving::start(dir, 1, &chunks[0]).await?;
        for chunk in chunks {
            receiving.take(chunk).await?;
        }
        receiving.finish().await
    }

    #[tokio::test]
    async fn a_snapshot_crosses_in_chunks_and_lands_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let message = snapshot_message(2 * CHUNK + 17);
        let chunks = chunks(&message);
        assert_eq!(chunks.len(), 3);
        let got = receive(dir.path(), &chunks).await.unwrap();
        assert_eq!(got, message);
        let on_disk = std::fs::read(dir.path().join("from-1.snap")).unwrap();
        assert_eq!(on_disk.as_slice(), &message.get_snapshot().data[..]);
        assert!(!dir.path().join("from-1.part").exists());
    }

    #[tokio::test]
    async fn an_empty_snapshot_is_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let message = snapshot_message(0);
        let chunks = chunks(&message);
        assert_eq!(chunks.len(), 1);
        assert_eq!(receive(dir.path(), &chunks).await.unwrap(), message);
    }

    #[tokio::test]
    async fn a_damaged_missing_or_reordered_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let message = snapshot_message(3 * CHUNK);
        let good = chunks(&message);

        let mut damaged = good.clone();
        damaged[1].data[5] ^= 1;
        let err = receive(dir.path(), &damaged).await.unwrap_err();
        assert!(
            matches!(err, ReceiveError::ChunkChecksum(o) if o == CHUNK as u64),
            "{err}"
        );

        let mut missing = good.clone();
        missing.pop();
        let err = receive(dir.path(), &missing).await.unwrap_err();
        assert!(matches!(err, ReceiveError::Length { .. }), "{err}");

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        let err = receive(dir.path(), &reordered).await.unwrap_err();
        assert!(matches!(err, ReceiveError::OutOfOrder { .. }), "{err}");

        let mut forged = good.clone();
        forged[0].total_sha256[0] ^= 1;
        let err = receive(dir.path(), &forged).await.unwrap_err();
        assert!(matches!(err, ReceiveError::Checksum), "{err}");
        // Nothing damaged ever took the final name.
        assert!(!dir.path().join("from-1.snap").exists());
    }
}
