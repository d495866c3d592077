//! An in-memory [`Hypervisor`] that records every call, for testing the logic above the
//! seam (reconciliation, the KVM probe) without libvirt or root.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::xml::domain_xml;
use super::{
    DomainInfo, DomainSpec, Hypervisor, HypervisorError, HypervisorInfo, InstanceTag, RunState,
};

/// One call made to a [`FakeHypervisor`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    List,
    Create(Box<DomainSpec>),
    Destroy(String),
    Info,
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
}

/// Domains live in a map; `create` validates the spec exactly as the real one does (by
/// building its XML) and starts the domain as Running. Failures and guest behaviour are set
/// by the test.
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
        self.state().domains.remove(name).is_some()
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
            }),
            state: RunState::Running,
        };
        state.domains.insert(spec.name.clone(), info);
        Ok(())
    }

    fn destroy(&self, name: &str) -> Result<bool, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::Destroy(name.to_owned()));
        if let Some(reason) = &state.destroy_failure {
            return Err(HypervisorError::Injected(reason.clone()));
        }
        Ok(state.domains.remove(name).is_some())
    }

    fn info(&self) -> Result<HypervisorInfo, HypervisorError> {
        let mut state = self.state();
        state.calls.push(FakeCall::Info);
        Ok(state.info.clone())
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
}
