//! The instances of the replicated state, by ID, with what each host's instances take kept
//! beside them. Placement asks "what is used on this host" for every candidate host of every
//! creation; scanning every instance for it made one placement cost O(hosts x instances). The
//! table answers it from a per-host sum updated on each change instead. Likewise every
//! long-poll answer asks "which instances are on this host": the table keeps each host's
//! instances that are not finished there, so the answer visits those alone.
//!
//! Reads see the records through `Deref` to the map; every change goes through [`insert`] or
//! [`update`], which keep the sums and the per-host sets right. Both are derived: they are
//! neither stored nor compared, and are rebuilt whenever a table is made from records (a
//! snapshot, a decoded state).
//!
//! [`insert`]: InstanceTable::insert
//! [`update`]: InstanceTable::update

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{InstanceRecord, Usage};

#[derive(Debug, Clone, Default)]
pub struct InstanceTable {
    records: BTreeMap<u64, InstanceRecord>,
    /// Host name -> the capacity its instances hold ([`InstanceRecord::holds_capacity`]).
    usage: HashMap<String, Usage>,
    /// Host name -> the IDs of the instances placed there that are not finished with it (see
    /// [`listed_on`]).
    on_host: HashMap<String, BTreeSet<u64>>,
}

/// The empty set of a host without listed instances.
static NONE: BTreeSet<u64> = BTreeSet::new();

impl InstanceTable {
    /// Capacity taken on `host` by the instances placed there.
    pub fn usage(&self, host: &str) -> Usage {
        self.usage.get(host).copied().unwrap_or_default()
    }

    /// The IDs of the instances placed on `host` that still hold their lease there (neither
    /// Done, nor Failed with the host's cleanup confirmed), lowest first: every instance whose
    /// copy there the host may still have to run, stop or destroy.
    pub fn on_host(&self, host: &str) -> &BTreeSet<u64> {
        self.on_host.get(host).unwrap_or(&NONE)
    }

    /// Adds (or replaces) the record of its ID.
    pub fn insert(&mut self, record: InstanceRecord) {
        tally(&mut self.usage, &record, true);
        if let Some(host) = listed_on(&record) {
            list(&mut self.on_host, host, record.id, true);
        }
        let id = record.id;
        if let Some(old) = self.records.insert(id, record) {
            tally(&mut self.usage, &old, false);
            let new = self.records.get(&id).and_then(listed_on);
            match listed_on(&old) {
                Some(host) if Some(host) != new => list(&mut self.on_host, host, id, false),
                _ => {}
            }
        }
    }

    /// Changes the record of `id`, if there is one, and what it takes on its host with it.
    pub fn update<R>(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut InstanceRecord) -> R,
    ) -> Option<R> {
        let record = self.records.get_mut(&id)?;
        tally(&mut self.usage, record, false);
        let listed = listed_on(record).map(str::to_owned);
        let result = change(record);
        tally(&mut self.usage, record, true);
        let now = listed_on(record);
        if listed.as_deref() != now {
            if let Some(host) = &listed {
                list(&mut self.on_host, host, id, false);
            }
            if let Some(host) = now {
                list(&mut self.on_host, host, id, true);
            }
        }
        Some(result)
    }

    /// The sums computed again from every record: what the kept ones must equal.
    #[cfg(test)]
    pub fn usage_recounted(&self) -> HashMap<String, Usage> {
        self.records.values().cloned().collect::<Self>().usage
    }

    #[cfg(test)]
    pub fn usage_kept(&self) -> &HashMap<String, Usage> {
        &self.usage
    }

    /// The per-host sets computed again from every record: what the kept ones must equal.
    #[cfg(test)]
    pub fn on_host_recounted(&self) -> HashMap<String, BTreeSet<u64>> {
        self.records.values().cloned().collect::<Self>().on_host
    }

    #[cfg(test)]
    pub fn on_host_kept(&self) -> &HashMap<String, BTreeSet<u64>> {
        &self.on_host
    }
}

/// The host whose set lists `record`: its host while it holds its lease there.
fn listed_on(record: &InstanceRecord) -> Option<&str> {
    record.host.as_deref().filter(|_| record.holds_lease())
}

/// Lists instance `id` on `host` or (`plus` false) takes it off; an emptied set is dropped.
fn list(on_host: &mut HashMap<String, BTreeSet<u64>>, host: &str, id: u64, plus: bool) {
    if plus {
        if let Some(ids) = on_host.get_mut(host) {
            ids.insert(id);
        } else {
            on_host.insert(host.to_owned(), BTreeSet::from([id]));
        }
    } else if let Some(ids) = on_host.get_mut(host) {
        ids.remove(&id);
        if ids.is_empty() {
            on_host.remove(host);
        }
    }
}

/// Adds what `record` takes on its host to the sums, or (`plus` false) takes it away.
fn tally(usage: &mut HashMap<String, Usage>, record: &InstanceRecord, plus: bool) {
    let Some(host) = record.host.as_deref().filter(|_| record.holds_capacity()) else {
        return;
    };
    if plus {
        if !usage.contains_key(host) {
            usage.insert(host.to_owned(), Usage::default());
        }
        let used = usage.get_mut(host).expect("just inserted");
        used.vcpus += record.vcpus;
        used.memory_mib += record.memory_mib;
        used.disk_gib += super::type_disk_gib(&record.instance_type);
        used.instances += 1;
    } else if let Some(used) = usage.get_mut(host) {
        used.vcpus -= record.vcpus;
        used.memory_mib -= record.memory_mib;
        used.disk_gib -= super::type_disk_gib(&record.instance_type);
        used.instances -= 1;
        if used.instances == 0 {
            usage.remove(host);
        }
    }
}

impl Deref for InstanceTable {
    type Target = BTreeMap<u64, InstanceRecord>;
    fn deref(&self) -> &Self::Target {
        &self.records
    }
}

impl FromIterator<InstanceRecord> for InstanceTable {
    fn from_iter<I: IntoIterator<Item = InstanceRecord>>(records: I) -> Self {
        let mut table = Self::default();
        for record in records {
            table.insert(record);
        }
        table
    }
}

impl From<BTreeMap<u64, InstanceRecord>> for InstanceTable {
    fn from(records: BTreeMap<u64, InstanceRecord>) -> Self {
        records.into_values().collect()
    }
}

/// Two tables are equal when their records are (the sums follow from them).
impl PartialEq for InstanceTable {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

/// Serialized as the map of records alone, as the state was before the sums were kept.
impl Serialize for InstanceTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.records.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for InstanceTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<u64, InstanceRecord>::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use stratus_common::agent::ImageSpec;
    use stratus_common::api::{Artifact, Compression, DiskFormat, InstanceState};

    use super::*;

    fn record(id: u64, host: Option<&str>, vcpus: u32, memory_mib: u64) -> InstanceRecord {
        InstanceRecord {
            id,
            name: format!("vm-{id}"),
            owner: "alice".into(),
            image: "appliance".into(),
            image_spec: ImageSpec {
                name: "appliance".into(),
                format: DiskFormat::Qcow2,
                disk: Artifact {
                    locations: vec!["file:///images/appliance.qcow2".into()],
                    sha256: "0".repeat(64),
                    size: None,
                    compression: Compression::default(),
                },
                kernel: None,
                initrd: None,
                cmdline: None,
            },
            instance_type: "m1.small".into(),
            vcpus,
            memory_mib,
            host: host.map(str::to_owned),
            state: InstanceState::Pending,
            reason: None,
            created_ms: 0,
            history: Vec::new(),
            host_cleaned: false,
            nics: Vec::new(),
            ssh_key: None,
            user_data: None,
        }
    }

    #[test]
    fn sums_follow_creations_and_ends() {
        let mut t = InstanceTable::default();
        t.insert(record(1, Some("a"), 2, 512));
        t.insert(record(2, Some("a"), 1, 256));
        t.insert(record(3, Some("b"), 4, 1024));
        t.insert(record(4, None, 8, 4096));
        let a = Usage {
            vcpus: 3,
            memory_mib: 768,
            disk_gib: 4,
            instances: 2,
        };
        assert_eq!(t.usage("a"), a);
        assert_eq!(t.usage("c"), Usage::default());
        // An instance that ends frees its room; one that goes on running keeps it.
        t.update(1, |r| r.state = InstanceState::Done);
        t.update(2, |r| r.state = InstanceState::Running);
        assert_eq!(
            t.usage("a"),
            Usage {
                vcpus: 1,
                memory_mib: 256,
                disk_gib: 2,
                instances: 1
            }
        );
        t.update(3, |r| r.state = InstanceState::Failed);
        assert_eq!(t.usage("b"), Usage::default());
        assert!(
            !t.usage_kept().contains_key("b"),
            "an empty host's sum is dropped"
        );
        assert_eq!(t.usage_kept(), &t.usage_recounted());
        assert_eq!(t.update(99, |_| ()), None);
    }

    #[test]
    fn per_host_sets_follow_placement_moves_and_ends() {
        let mut t = InstanceTable::default();
        t.insert(record(1, Some("a"), 1, 256));
        t.insert(record(2, Some("a"), 1, 256));
        t.insert(record(3, Some("b"), 1, 256));
        t.insert(record(4, None, 1, 256));
        assert_eq!(t.on_host("a"), &BTreeSet::from([1, 2]));
        assert!(t.on_host("c").is_empty());
        // Moved to another host.
        t.update(2, |r| r.host = Some("b".into()));
        assert_eq!(t.on_host("a"), &BTreeSet::from([1]));
        assert_eq!(t.on_host("b"), &BTreeSet::from([2, 3]));
        // Failed: listed until its host confirmed the cleanup; Done: off.
        t.update(1, |r| r.state = InstanceState::Failed);
        assert_eq!(t.on_host("a"), &BTreeSet::from([1]));
        t.update(1, |r| r.host_cleaned = true);
        assert!(t.on_host("a").is_empty());
        assert!(
            !t.on_host_kept().contains_key("a"),
            "an empty set is dropped"
        );
        t.update(3, |r| r.state = InstanceState::Done);
        assert_eq!(t.on_host("b"), &BTreeSet::from([2]));
        // Replaced by a record on another host.
        t.insert(record(2, Some("c"), 1, 256));
        assert!(t.on_host("b").is_empty());
        assert_eq!(t.on_host("c"), &BTreeSet::from([2]));
        assert_eq!(t.on_host_kept(), &t.on_host_recounted());
        let back: InstanceTable =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.on_host_kept(), t.on_host_kept());
    }

    #[test]
    fn replacing_a_record_counts_it_once_and_decoding_rebuilds_the_sums() {
        let mut t = InstanceTable::default();
        t.insert(record(1, Some("a"), 2, 512));
        t.insert(record(1, Some("b"), 2, 512));
        assert_eq!(t.usage("a"), Usage::default());
        assert_eq!(t.usage("b").instances, 1);
        let json = serde_json::to_string(&t).unwrap();
        let back: InstanceTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.usage_kept(), t.usage_kept());
        assert!(
            json.starts_with("{\"1\":"),
            "stored as the plain map: {json}"
        );
    }
}
