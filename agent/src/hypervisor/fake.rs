//! An in-memory [`Hypervisor`] that records every call, for testing the logic above the
//! seam (reconciliation, the KVM probe, disk hot-plug) without libvirt or root.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use super::xml::{disk_xml, domain_xml, XmlError};
use super::{
    DomainDisk, DomainInfo, DomainSpec, GuestStats, Hypervisor, HypervisorError, HypervisorInfo,
    InstanceTag, RunState,
};

/// One call made to a [`FakeHypervisor`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    List,
    Create(Box<DomainSpec>),
    Destroy(String),
    Shutdown(String),
    Info,
    AttachDisk { domain: String, disk: DomainDisk },
    DetachDisk { domain: String, target: String },
    DiskTargets(String),
}

#[derive(Debug)]
struct State {
    domains: BTreeMap<String, DomainInfo>,
    calls: Vec<FakeCall>,
    info: HypervisorInfo,
    create_failure: Option<String>,
    destroy_failure: Option<String>,
    list_failure: Option<String>,
    console_output: Option<String>,
    /// The live disks of each domain, by target.
    disks: BTreeMap<String, BTreeMap<String, DomainDisk>>,
    attach_failure: Option<String>,
    /// Domains whose guest ignores unplug requests.
    uncooperative: BTreeSet<String>,
    /// Domains whose guest ignores power-off requests.
    deaf: BTreeSet<String>,
    /// CPU time of each domain, as the test sets it.
    cpu_time: BTreeMap<String, u64>,
    /// Counters of each domain, as the test sets them.
    guest_stats: BTreeMap<String, GuestStats>,
}

/// Domains live in a map; `create` validates the spec exactly as the real one does (by
/// building its XML) and starts the domain as Running. Failures and guest behaviour are set
/// by the test. A guest releases an unplugged disk at once unless told not to cooperate
/// ([`FakeHypervisor::set_guest_cooperates`]), as a guest without ACPI hot-plug would.
#[derive(Debug)]
pub struct FakeHypervisor {
    state: Mutex<State>,
}

impl Default for FakeHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHypervisor {
    /// A host without KVM.
    pub fn new() -> Self {
        Self::with_info(HypervisorInfo {
            hypervisor: "Fake 1.0.0 (libvirt 0.0.0)".into(),
            arch: "x86_64".into(),
            kvm_available: false,
        })
    }

    pub fn with_info(info: HypervisorInfo) -> Self {
        Self {
            state: Mutex::new(State {
                domains: BTreeMap::new(),
                calls: Vec::new(),
                info,
                create_failure: None,
                destroy_failure: None,
                list_failure: None,
                console_output: None,
                disks: BTreeMap::new(),
                attach_failure: None,
                uncooperative: BTreeSet::new(),
                deaf: BTreeSet::new(),
                cpu_time: BTreeMap::new(),
                guest_stats: BTreeMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// The calls so far, forgetting them.
    pub fn take_calls(&self) -> Vec<FakeCall> {
        std::mem::take(&mut self.state().calls)
    }

    /// The specs of every `create` call (successful or not), oldest first.
    pub fn created(&self) -> Vec<DomainSpec> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::Create(spec) => Some((**spec).clone()),
                _ => None,
            })
            .collect()
    }

    /// The names passed to every `destroy` call, oldest first.
    pub fn destroyed(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::Destroy(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// The domains that exist now, by name.
    pub fn domains(&self) -> Vec<DomainInfo> {
        self.state().domains.values().cloned().collect()
    }

    /// Adds a domain as if someone else had started it (not recorded as a call).
    pub fn insert_domain(&self, name: &str, tag: Option<InstanceTag>, state: RunState) {
        let info = DomainInfo {
            name: name.to_owned(),
            tag,
            state,
        };
        self.state().domains.insert(name.to_owned(), info);
    }

    /// Changes a domain's state (a guest pausing, crashing, ...); false if there is none.
    pub fn set_state(&self, name: &str, state: RunState) -> bool {
        match self.state().domains.get_mut(name) {
            Some(d) => {
                d.state = state;
                true
            }
            None => false,
        }
    }

    /// Removes a domain as a transient domain disappears when its guest powers off;
    /// false if there is none.
    pub fn remove_domain(&self, name: &str) -> bool {
        let mut state = self.state();
        state.disks.remove(name);
        state.domains.remove(name).is_some()
    }

    /// The disks the domain has now (attached at start or hot-plugged, not yet released), in
    /// target order.
    pub fn disks(&self, domain: &str) -> Vec<DomainDisk> {
        self.state()
            .disks
            .get(domain)
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the domain's guest releases a disk when asked to (the default). A guest that
    /// does not keeps every disk `detach_disk` asks it to release.
    pub fn set_guest_cooperates(&self, domain: &str, cooperates: bool) {
        let mut state = self.state();
        if cooperates {
            state.uncooperative.remove(domain);
        } else {
            state.uncooperative.insert(domain.to_owned());
        }
    }

    /// The guest releases the disk at `target` after all (as a late guest would, with libvirt
    /// then removing it); false if it had no such disk.
    pub fn release_disk(&self, domain: &str, target: &str) -> bool {
        self.state()
            .disks
            .get_mut(domain)
            .is_some_and(|d| d.remove(target).is_some())
    }

    /// Whether the domain's guest powers off when asked to (the default: at once, its
    /// domain going away). A guest that does not keeps running until destroyed.
    pub fn set_guest_powers_off(&self, domain: &str, powers_off: bool) {
        let mut state = self.state();
        if powers_off {
            state.deaf.remove(domain);
        } else {
            state.deaf.insert(domain.to_owned());
        }
    }

    /// The names passed to every `shutdown` call, oldest first.
    pub fn shut_down(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::Shutdown(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Sets the CPU time (nanoseconds) the domain has used.
    /// What [`Hypervisor::all_guest_stats`] answers for the domain while it exists (its CPU time
    /// set by [`Self::set_cpu_time`] and nothing else, if this is not called).
    pub fn set_guest_stats(&self, domain: &str, stats: GuestStats) {
        self.state().guest_stats.insert(domain.to_owned(), stats);
    }

    pub fn set_cpu_time(&self, domain: &str, nanoseconds: u64) {
        self.state().cpu_time.insert(domain.to_owned(), nanoseconds);
    }

    /// While set, every `attach_disk` fails with this message.
    pub fn fail_attaches(&self, reason: Option<&str>) {
        self.state().attach_failure = reason.map(str::to_owned);
    }

    /// The `(domain, target)` of every `detach_disk` call, oldest first.
    pub fn detached(&self) -> Vec<(String, String)> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                FakeCall::DetachDisk { domain, target } => Some((domain.clone(), target.clone())),
                _ => None,
            })
            .collect()
    }

    /// While set, every `create` fails with this message.
    pub fn fail_creates(&self, reason: Option<&str>) {
        self.state().create_failure = reason.map(str::to_owned);
    }

    /// While set, every `destroy` fails with this message.
    pub fn fail_destroys(&self, reason: Option<&str>) {
        self.state().destroy_failure = reason.map(str::to_owned);
    }

    /// While set, every `list` fails with this message.
    pub fn fail_lists(&self, reason: Option<&str>) {
        self.state().list_failure = reason.map(str::to_owned);
    }

    /// What a created guest "prints": written to the spec's console log on every successful
    /// `create`. `None` (the default) writes nothing, like a guest that hangs.
    pub fn set_console_output(&self, text: Option<&str>) {
        self.state().console_output = text.map(str::to_owned);
    }
}

impl Hypervisor for FakeHypervisor {
    fn list(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::List);
        if let Some(reason) = &state.list_failure {
            return Err(HypervisorError::Injected(reason.clone()));
        }
        Ok(state.domains.values().cloned().collect())
    }

    fn create(&self, spec: &DomainSpec) -> Result<(), HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::Create(Box::new(spec.clone())));
        domain_xml(spec).map_err(|source| HypervisorError::Xml {
            name: spec.name.clone(),
            source,
        })?;
        if let Some(reason) = &state.create_failure {
            return Err(HypervisorError::Injected(reason.clone()));
        }
        if state.domains.contains_key(&spec.name) {
            return Err(HypervisorError::AlreadyExists(spec.name.clone()));
        }
        if let Some(text) = &state.console_output {
            std::fs::write(&spec.console_log, text).map_err(|e| {
                HypervisorError::Injected(format!(
                    "cannot write {}: {e}",
                    spec.console_log.display()
                ))
            })?;
        }
        let info = DomainInfo {
            name: spec.name.clone(),
            tag: Some(InstanceTag {
                cluster_id: spec.cluster_id.clone(),
                instance_id: spec.instance_id,
                host: spec.host.clone(),
            }),
            state: RunState::Running,
        };
        state.domains.insert(spec.name.clone(), info);
        let disks = spec
            .disks
            .iter()
            .map(|d| (d.target.clone(), d.clone()))
            .collect();
        state.disks.insert(spec.name.clone(), disks);
        Ok(())
    }

    fn destroy(&self, name: &str) -> Result<bool, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::Destroy(name.to_owned()));
        if let Some(reason) = &state.destroy_failure {
            return Err(HypervisorError::Injected(reason.clone()));
        }
        state.disks.remove(name);
        Ok(state.domains.remove(name).is_some())
    }

    fn shutdown(&self, name: &str) -> Result<bool, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::Shutdown(name.to_owned()));
        if !state.domains.contains_key(name) {
            return Ok(false);
        }
        if !state.deaf.contains(name) {
            state.disks.remove(name);
            state.domains.remove(name);
        }
        Ok(true)
    }

    fn exists(&self, name: &str) -> Result<bool, HypervisorError> {
        Ok(self.state().domains.contains_key(name))
    }

    fn cpu_time(&self, name: &str) -> Result<Option<u64>, HypervisorError> {
        let state = self.state();
        Ok(state
            .domains
            .contains_key(name)
            .then(|| state.cpu_time.get(name).copied().unwrap_or(0)))
    }

    fn all_guest_stats(
        &self,
    ) -> Result<std::collections::BTreeMap<String, GuestStats>, HypervisorError> {
        let state = self.state();
        Ok(state
            .domains
            .keys()
            .map(|name| {
                let stats = state
                    .guest_stats
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| GuestStats {
                        cpu_ns: state.cpu_time.get(name).copied().unwrap_or(0),
                        ..GuestStats::default()
                    });
                (name.clone(), stats)
            })
            .collect())
    }

    fn info(&self) -> Result<HypervisorInfo, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::Info);
        Ok(state.info.clone())
    }

    fn attach_disk(&self, domain: &str, disk: &DomainDisk) -> Result<(), HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::AttachDisk {
            domain: domain.to_owned(),
            disk: disk.clone(),
        });
        disk_xml(disk).map_err(|source| HypervisorError::Disk {
            domain: domain.to_owned(),
            target: disk.target.clone(),
            source,
        })?;
        if !state.domains.contains_key(domain) {
            return Err(HypervisorError::NoSuchDomain(domain.to_owned()));
        }
        let disks = state.disks.entry(domain.to_owned()).or_default();
        match disks.get(&disk.target) {
            Some(d) if d.source == disk.source => return Ok(()),
            Some(_) => {
                return Err(HypervisorError::TargetInUse {
                    domain: domain.to_owned(),
                    target: disk.target.clone(),
                })
            }
            None => {}
        }
        if let Some(reason) = &state.attach_failure {
            return Err(HypervisorError::Injected(reason.clone()));
        }
        state
            .disks
            .entry(domain.to_owned())
            .or_default()
            .insert(disk.target.clone(), disk.clone());
        Ok(())
    }

    fn detach_disk(&self, domain: &str, target: &str) -> Result<(), HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::DetachDisk {
            domain: domain.to_owned(),
            target: target.to_owned(),
        });
        if !stratus_common::volumes::is_target(target) {
            return Err(HypervisorError::Disk {
                domain: domain.to_owned(),
                target: target.to_owned(),
                source: XmlError::InvalidTarget(target.to_owned()),
            });
        }
        if state.uncooperative.contains(domain) {
            return Ok(());
        }
        if let Some(disks) = state.disks.get_mut(domain) {
            disks.remove(target);
        }
        Ok(())
    }

    fn disk_targets(&self, domain: &str) -> Result<Vec<String>, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::DiskTargets(domain.to_owned()));
        if !state.domains.contains_key(domain) {
            return Err(HypervisorError::NoSuchDomain(domain.to_owned()));
        }
        Ok(state
            .disks
            .get(domain)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use stratus_common::api::DomainType;

    fn spec(name: &str) -> DomainSpec {
        DomainSpec {
            name: name.into(),
            cluster_id: "c1".into(),
            instance_id: 1,
            host: None,
            domain_type: DomainType::Qemu,
            vcpus: 1,
            memory_mib: 64,
            disk: PathBuf::from("/d/disk.qcow2"),
            kernel: None,
            initrd: None,
            cmdline: None,
            console_log: PathBuf::from("/d/console.log"),
            nics: Vec::new(),
            cidata: None,
            disks: Vec::new(),
        }
    }

    fn disk(target: &str, file: &str) -> DomainDisk {
        DomainDisk {
            target: target.into(),
            serial: "s1".into(),
            read_only: false,
            source: super::super::DiskSource::File(PathBuf::from(file)),
        }
    }

    #[test]
    fn behaves_like_libvirt_and_records_calls() {
        let hv = FakeHypervisor::new();
        hv.create(&spec("a")).unwrap();
        assert!(matches!(
            hv.create(&spec("a")),
            Err(HypervisorError::AlreadyExists(_))
        ));
        let listed = hv.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].tag.as_ref().unwrap().cluster_id, "c1");
        assert!(hv.destroy("a").unwrap());
        assert!(!hv.destroy("a").unwrap());
        assert_eq!(hv.destroyed(), ["a", "a"]);
        assert_eq!(hv.created().len(), 2);

        let mut bad = spec("b");
        bad.disk = PathBuf::from("relative");
        assert!(matches!(hv.create(&bad), Err(HypervisorError::Xml { .. })));

        hv.fail_creates(Some("no memory"));
        assert!(matches!(
            hv.create(&spec("c")),
            Err(HypervisorError::Injected(_))
        ));
        hv.fail_creates(None);
        hv.create(&spec("c")).unwrap();
        assert!(hv.set_state("c", RunState::Crashed));
        assert_eq!(hv.list().unwrap()[0].state, RunState::Crashed);
        assert!(hv.remove_domain("c"));
        assert!(hv.list().unwrap().is_empty());
    }

    #[test]
    fn disks_are_attached_detached_and_released_like_libvirt() {
        let hv = FakeHypervisor::new();
        let mut s = spec("a");
        s.disks = vec![disk("vdb", "/p/1.raw")];
        hv.create(&s).unwrap();
        assert_eq!(hv.disk_targets("a").unwrap(), ["vdb"]);

        // Hot-plug; repeating it is harmless; another source on the same target is refused.
        hv.attach_disk("a", &disk("vdc", "/p/2.raw")).unwrap();
        hv.attach_disk("a", &disk("vdc", "/p/2.raw")).unwrap();
        assert!(matches!(
            hv.attach_disk("a", &disk("vdc", "/p/3.raw")),
            Err(HypervisorError::TargetInUse { .. })
        ));
        assert!(matches!(
            hv.attach_disk("a", &disk("vda", "/p/3.raw")),
            Err(HypervisorError::Disk { .. })
        ));
        assert!(matches!(
            hv.attach_disk("nope", &disk("vdd", "/p/3.raw")),
            Err(HypervisorError::NoSuchDomain(_))
        ));
        hv.fail_attaches(Some("PCI slots full"));
        assert!(matches!(
            hv.attach_disk("a", &disk("vdd", "/p/4.raw")),
            Err(HypervisorError::Injected(_))
        ));
        hv.fail_attaches(None);
        assert_eq!(hv.disk_targets("a").unwrap(), ["vdb", "vdc"]);

        // A cooperating guest releases at once; absent disks and domains are fine.
        hv.detach_disk("a", "vdb").unwrap();
        hv.detach_disk("a", "vdb").unwrap();
        hv.detach_disk("nope", "vdb").unwrap();
        assert_eq!(hv.disk_targets("a").unwrap(), ["vdc"]);

        // One that does not keeps the disk, however often asked, until it releases it.
        hv.set_guest_cooperates("a", false);
        hv.detach_disk("a", "vdc").unwrap();
        hv.detach_disk("a", "vdc").unwrap();
        assert_eq!(hv.disk_targets("a").unwrap(), ["vdc"]);
        assert!(hv.release_disk("a", "vdc"));
        assert!(hv.disk_targets("a").unwrap().is_empty());
        assert_eq!(hv.detached().len(), 5);

        hv.attach_disk("a", &disk("vdd", "/p/4.raw")).unwrap();
        assert_eq!(hv.disks("a"), [disk("vdd", "/p/4.raw")]);
        assert!(hv.destroy("a").unwrap());
        assert!(matches!(
            hv.disk_targets("a"),
            Err(HypervisorError::NoSuchDomain(_))
        ));
        assert!(hv.disks("a").is_empty());
    }
}
