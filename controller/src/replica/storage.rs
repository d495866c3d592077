//! Durable Raft storage: the log, the hard state and the latest state-machine snapshot live in a
//! redb database whose commits are fsynced (`Durability::Immediate`); a `MemStorage` mirrors the
//! live part of the log so raft-rs reads it without touching the disk. Every mutation is written
//! to redb first and mirrored only once the commit has returned, so nothing raft-rs sees as
//! stable can be lost by a crash.

use std::path::Path;
use std::sync::{Arc, RwLock};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};
use redb::{Database, ReadableDatabase, TableDefinition};

/// Log entries by index, protobuf-encoded.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `hard_state`, `conf_state`, `snapshot` (protobuf-encoded).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";
const IDENTITY: &str = "identity";

/// Whose store this is: a random incarnation made when the store was created (a node that
/// comes back with an empty disk under an old ID has a new one, and its peers can tell), and
/// the cluster it belongs to (made with the store of a cluster's first node, adopted by a
/// joining node when the leader first contacts it, never changed after).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub incarnation: String,
    pub cluster_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft store {path}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("raft store")]
    Db(#[from] redb::Error),
    #[error("raft store holds a corrupt {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("raft store holds a corrupt identity record")]
    CorruptIdentity(#[source] serde_json::Error),
    #[error("this node belongs to cluster {ours}, not {offered}")]
    OtherCluster { ours: String, offered: String },
    #[error("raft log")]
    Raft(#[from] raft::Error),
}

fn encode_identity(identity: &Identity) -> Vec<u8> {
    serde_json::to_vec(identity).expect("an identity encodes")
}

fn db_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Db(e.into())
}

/// A write transaction whose commit is on disk when it returns. Immediate is redb's default
/// today; it is set here so that no default change can make the log lossy.
fn begin_durable(db: &Database) -> Result<redb::WriteTransaction, StorageError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(db_err)?;
    Ok(txn)
}

/// What a restart finds in the store.
pub struct Recovered {
    /// The latest state-machine snapshot, if one was taken; its index is where replay starts.
    pub snapshot: Option<Snapshot>,
    /// Whether the store already held a Raft group (false on the very first start).
    pub existing: bool,
    pub identity: Identity,
}

/// Raft storage over redb, cheap to clone (raft-rs owns one copy, the node loop another).
#[derive(Clone)]
pub struct DurableStorage {
    mem: MemStorage,
    db: Arc<Database>,
    /// The latest snapshot with its data, served to raft-rs when a follower needs one.
    snapshot: Arc<RwLock<Snapshot>>,
}

impl DurableStorage {
    /// Opens (or creates) the store at `path`. A new store is initialised with `voters` as the
    /// group's configuration; with none, it waits to learn its configuration from a leader
    /// (a node joining a cluster).
    pub fn open(path: &Path, voters: &[u64]) -> Result<(Self, Recovered), StorageError> {
        let db = Database::create(path).map_err(|source| StorageError::Open {
            path: path.display().to_string(),
            source,
        })?;
        {
            // Make sure both tables exist so read transactions never meet a missing table.
            let txn = begin_durable(&db)?;
            txn.open_table(LOG).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
        }
        let mem = MemStorage::new();
        let read = db.begin_read().map_err(db_err)?;
        let meta = read.open_table(META).map_err(db_err)?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, StorageError> {
            Ok(meta.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
        };
        let snapshot = match get(SNAPSHOT)? {
            Some(bytes) => Some(Snapshot::parse_from_bytes(&bytes).map_err(|source| {
                StorageError::Corrupt {
                    what: "snapshot",
                    source,
                }
            })?),
            None => None,
        };
        let hard_state = match get(HARD_STATE)? {
            Some(bytes) => Some(HardState::parse_from_bytes(&bytes).map_err(|source| {
                StorageError::Corrupt {
                    what: "hard state",
                    source,
                }
            })?),
            None => None,
        };
        let conf_state = match get(CONF_STATE)? {
            Some(bytes) => Some(ConfState::parse_from_bytes(&bytes).map_err(|source| {
                StorageError::Corrupt {
                    what: "conf state",
                    source,
                }
            })?),
            None => None,
        };
        let existing = conf_state.is_some();
        let identity = match get(IDENTITY)? {
            Some(bytes) => {
                Some(serde_json::from_slice(&bytes).map_err(StorageError::CorruptIdentity)?)
            }
            None => None,
        };
        let storage = Self {
            mem,
            db: Arc::new(db),
            snapshot: Arc::new(RwLock::new(snapshot.clone().unwrap_or_default())),
        };
        let from_index = {
            let mut core = storage.mem.wl();
            let mut from = 1;
            if let Some(snap) = &snapshot {
                from = snap.get_metadata().index + 1;
                core.apply_snapshot(snap.clone())?;
            }
            if let Some(cs) = &conf_state {
                core.set_conf_state(cs.clone());
            }
            if let Some(mut hs) = hard_state {
                // The commit index is saved lazily (see `set_commit`): never below the snapshot.
                hs.commit = hs.commit.max(from - 1);
                core.set_hardstate(hs);
            }
            from
        };
        let log = read.open_table(LOG).map_err(db_err)?;
        let mut entries = Vec::new();
        for row in log.range(from_index..).map_err(db_err)? {
            let (_, value) = row.map_err(db_err)?;
            entries.push(Entry::parse_from_bytes(value.value()).map_err(|source| {
                StorageError::Corrupt {
                    what: "log entry",
                    source,
                }
            })?);
        }
        drop((log, meta, read));
        storage.mem.wl().append(&entries)?;
        let identity = match identity {
            Some(identity) => identity,
            None => {
                // A new store (or one from before identities): a new incarnation, and a new
                // cluster if this node starts one.
                let identity = Identity {
                    incarnation: uuid::Uuid::new_v4().to_string(),
                    cluster_id: (!existing && !voters.is_empty())
                        .then(|| uuid::Uuid::new_v4().to_string()),
                };
                storage.write_meta(&[(IDENTITY, encode_identity(&identity))])?;
                identity
            }
        };
        if !existing && !voters.is_empty() {
            let cs = ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            };
            storage.write_meta(&[(CONF_STATE, cs.write_to_bytes().expect("encode conf state"))])?;
            storage.mem.wl().set_conf_state(cs);
        }
        Ok((
            storage,
            Recovered {
                snapshot,
                existing,
                identity,
            },
        ))
    }

    /// Makes `cluster_id` this store's cluster, durably, if it has none yet; a store of
    /// another cluster refuses.
    pub fn adopt_cluster(
        &self,
        identity: &Identity,
        cluster_id: &str,
    ) -> Result<Identity, StorageError> {
        match &identity.cluster_id {
            Some(ours) if ours == cluster_id => Ok(identity.clone()),
            Some(ours) => Err(StorageError::OtherCluster {
                ours: ours.clone(),
                offered: cluster_id.to_owned(),
            }),
            None => {
                let adopted = Identity {
                    incarnation: identity.incarnation.clone(),
                    cluster_id: Some(cluster_id.to_owned()),
                };
                self.write_meta(&[(IDENTITY, encode_identity(&adopted))])?;
                Ok(adopted)
            }
        }
    }

    fn write_meta(&self, values: &[(&str, Vec<u8>)]) -> Result<(), StorageError> {
        let txn = begin_durable(&self.db)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            for (key, value) in values {
                meta.insert(*key, value.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Appends `entries` (replacing any conflicting tail) and saves `hard_state`, in one fsynced
    /// transaction; only then are they visible to raft-rs.
    pub fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let txn = begin_durable(&self.db)?;
        {
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            if let Some(first) = entries.first() {
                // A new leader may overwrite an uncommitted tail: drop everything from there on.
                log.retain_in(first.index.., |_, _| false).map_err(db_err)?;
                for entry in entries {
                    let bytes = entry.write_to_bytes().expect("encode entry");
                    log.insert(entry.index, bytes.as_slice()).map_err(db_err)?;
                }
            }
            if let Some(hs) = hard_state {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                let bytes = hs.write_to_bytes().expect("encode hard state");
                meta.insert(HARD_STATE, bytes.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        let mut core = self.mem.wl();
        core.append(entries)?;
        if let Some(hs) = hard_state {
            core.set_hardstate(hs.clone());
        }
        Ok(())
    }

    /// Records a new commit index, in memory only. It need not be durable: a restarted node
    /// takes the commit index from the last fsynced hard state (never below its snapshot, see
    /// `open`) and learns the rest again from its log, so no write is spent on it per batch.
    pub fn set_commit(&self, commit: u64) {
        self.mem.wl().mut_hard_state().commit = commit;
    }

    /// Saves the state machine's data as of `index` (with the applied index in the same
    /// transaction), then drops the log up to it.
    pub fn save_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let term = self.mem.term(index)?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.mem.initial_state()?.conf_state);
        let bytes = snapshot.write_to_bytes().expect("encode snapshot");
        let txn = begin_durable(&self.db)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert(SNAPSHOT, bytes.as_slice()).map_err(db_err)?;
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            log.retain_in(..index, |_, _| false).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.mem.wl().compact(index)?;
        *self.snapshot.write().expect("snapshot lock") = snapshot;
        Ok(())
    }

    /// Makes `id` the group's only voter (the one-shot recovery of a cluster that lost its
    /// majority for good); the log and snapshot are kept.
    pub fn force_single_voter(&self, id: u64) -> Result<(), StorageError> {
        let cs = ConfState {
            voters: vec![id],
            ..Default::default()
        };
        self.set_conf_state(&cs)
    }

    /// Saves the group's configuration once a configuration change applied.
    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), StorageError> {
        let bytes = conf_state.write_to_bytes().expect("encode conf state");
        self.write_meta(&[(CONF_STATE, bytes)])?;
        self.mem.wl().set_conf_state(conf_state.clone());
        Ok(())
    }

    /// Installs a snapshot a leader sent: the snapshot, its configuration, a hard state whose
    /// commit reaches it, and a log emptied of everything it covers, in one fsynced
    /// transaction; only then does raft-rs see it.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        let index = meta.index;
        let mut hard_state = self.mem.initial_state()?.hard_state;
        hard_state.commit = hard_state.commit.max(index);
        hard_state.term = hard_state.term.max(meta.term);
        let txn = begin_durable(&self.db)?;
        {
            let mut table = txn.open_table(META).map_err(db_err)?;
            let bytes = snapshot.write_to_bytes().expect("encode snapshot");
            table.insert(SNAPSHOT, bytes.as_slice()).map_err(db_err)?;
            let bytes = meta
                .get_conf_state()
                .write_to_bytes()
                .expect("encode conf state");
            table.insert(CONF_STATE, bytes.as_slice()).map_err(db_err)?;
            let bytes = hard_state.write_to_bytes().expect("encode hard state");
            table.insert(HARD_STATE, bytes.as_slice()).map_err(db_err)?;
            // The snapshot replaces the whole log: entries it covers, and any after it that
            // may conflict with the leader's.
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            log.retain(|_, _| false).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let mut core = self.mem.wl();
        core.apply_snapshot(snapshot.clone())?;
        core.set_hardstate(hard_state);
        drop(core);
        *self.snapshot.write().expect("snapshot lock") = snapshot.clone();
        Ok(())
    }

    /// Index of the first entry still in the log (1 until the log was first compacted).
    pub fn first_log_index(&self) -> u64 {
        Storage::first_index(&self.mem).unwrap_or(1)
    }

    /// Index of the last entry in the log.
    pub fn last_index(&self) -> u64 {
        Storage::last_index(&self.mem).unwrap_or(0)
    }
}

impl Storage for DurableStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        Storage::last_index(&self.mem)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.snapshot.read().expect("snapshot lock").clone();
        if snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snapshot)
    }
}

/// Rewrites the data of log entry `index` in the store at `path` (closed): for tests of what
/// a node does with an entry it cannot apply.
#[cfg(any(test, feature = "fault-injection"))]
pub fn rewrite_entry_data(path: &Path, index: u64, f: impl FnOnce(&mut Vec<u8>)) {
    use redb::ReadableTable as _;
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(LOG).unwrap();
        let mut entry = Entry::parse_from_bytes(log.get(index).unwrap().unwrap().value()).unwrap();
        let mut data = entry.data.to_vec();
        f(&mut data);
        entry.data = data.into();
        let bytes = entry.write_to_bytes().unwrap();
        log.insert(index, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn log_and_hard_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let (s, rec) = DurableStorage::open(&path, &[1]).unwrap();
            assert!(!rec.existing);
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 2,
                ..Default::default()
            };
            s.persist(
                &[entry(1, 1, b"a"), entry(2, 2, b"b"), entry(3, 2, b"c")],
                Some(&hs),
            )
            .unwrap();
        }
        let (s, rec) = DurableStorage::open(&path, &[1]).unwrap();
        assert!(rec.existing);
        assert!(rec.snapshot.is_none());
        let state = s.initial_state().unwrap();
        assert_eq!(state.hard_state.term, 2);
        assert_eq!(state.hard_state.commit, 2);
        assert_eq!(state.conf_state.voters, vec![1]);
        assert_eq!(Storage::last_index(&s).unwrap(), 3);
        let got = s
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.data.to_vec()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn a_conflicting_append_replaces_the_tail_on_disk_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let (s, _) = DurableStorage::open(&path, &[1]).unwrap();
            s.persist(
                &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
                None,
            )
            .unwrap();
            s.persist(&[entry(2, 2, b"B")], None).unwrap();
            assert_eq!(Storage::last_index(&s).unwrap(), 2);
        }
        let (s, _) = DurableStorage::open(&path, &[1]).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
    }

    #[test]
    fn snapshot_compacts_and_restart_starts_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let (s, _) = DurableStorage::open(&path, &[1]).unwrap();
            let hs = HardState {
                term: 1,
                vote: 1,
                commit: 3,
                ..Default::default()
            };
            s.persist(
                &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
                Some(&hs),
            )
            .unwrap();
            s.save_snapshot(2, b"state@2".to_vec()).unwrap();
            // In memory the snapshot's own entry stays, so its term is known.
            assert_eq!(s.first_index().unwrap(), 2);
        }
        let (s, rec) = DurableStorage::open(&path, &[1]).unwrap();
        let snap = rec.snapshot.expect("snapshot");
        assert_eq!(snap.get_metadata().index, 2);
        assert_eq!(&snap.data[..], b"state@2");
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(Storage::last_index(&s).unwrap(), 3);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 3);
        assert_eq!(s.snapshot(2, 0).unwrap().get_metadata().index, 2);
    }
}
