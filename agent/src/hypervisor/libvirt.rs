//! [`Hypervisor`] on libvirt, through the `virt` crate's blocking C bindings.
//!
//! A libvirt connection is thread-safe, so one is shared by all callers; it sits behind a
//! read-write lock only so that a connection broken by a libvirtd restart can be replaced
//! while calls on a healthy one run concurrently.

use std::path::Path;
use std::sync::{Once, RwLock, RwLockReadGuard};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::xml::{domain_xml, parse_capabilities, parse_metadata_element, INSTANCE_NAMESPACE};
use super::{DomainInfo, DomainSpec, Hypervisor, HypervisorError, HypervisorInfo, RunState};

/// A connection to a libvirt driver (`qemu:///system` on a host, `test:///default` in tests).
pub struct LibvirtHypervisor {
    uri: String,
    conn: RwLock<Connect>,
}

impl std::fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHypervisor")
            .field("uri", &self.uri)
            .finish()
    }
}

fn open(uri: &str) -> Result<Connect, HypervisorError> {
    // libvirt's default error handler prints every error to stderr, including the expected
    // "domain not found"; errors are returned and logged by the caller instead.
    static QUIET: Once = Once::new();
    QUIET.call_once(virt::error::clear_error_callback);
    Connect::open(Some(uri)).map_err(|source| HypervisorError::Connect {
        uri: uri.to_owned(),
        source,
    })
}

fn is_no_domain(e: &virt::error::Error) -> bool {
    e.code() == ErrorNumber::NoDomain
}

fn run_state(state: sys::virDomainState) -> RunState {
    match state {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => RunState::Running,
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => RunState::Paused,
        sys::VIR_DOMAIN_SHUTOFF => RunState::Shutoff,
        sys::VIR_DOMAIN_CRASHED => RunState::Crashed,
        _ => RunState::Other,
    }
}

/// libvirt encodes versions as `major * 1_000_000 + minor * 1_000 + release`.
fn version(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1_000 % 1_000, v % 1_000)
}

impl LibvirtHypervisor {
    pub fn connect(uri: &str) -> Result<Self, HypervisorError> {
        Ok(Self {
            uri: uri.to_owned(),
            conn: RwLock::new(open(uri)?),
        })
    }

    /// The connection, reopened first if libvirtd closed it (for instance by restarting).
    fn conn(&self) -> Result<RwLockReadGuard<'_, Connect>, HypervisorError> {
        {
            let conn = self.conn.read().unwrap_or_else(|e| e.into_inner());
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn);
            }
        }
        let mut conn = self.conn.write().unwrap_or_else(|e| e.into_inner());
        if !conn.is_alive().unwrap_or(false) {
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
            let mut old = std::mem::replace(&mut *conn, open(&self.uri)?);
            let _ = old.close();
        }
        drop(conn);
        Ok(self.conn.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// One domain's listing, or `None` if it vanished meanwhile.
    fn describe(dom: &Domain) -> Result<Option<DomainInfo>, HypervisorError> {
        let name = match dom.get_name() {
            Ok(name) => name,
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(source) => {
                return Err(HypervisorError::Host {
                    action: "read a domain name",
                    source,
                })
            }
        };
        let failed = |action, source| HypervisorError::Domain {
            action,
            name: name.clone(),
            source,
        };
        let state = match dom.get_state() {
            Ok((state, _reason)) => run_state(state),
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(e) => return Err(failed("read the state of", e)),
        };
        let tag = match dom.get_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(INSTANCE_NAMESPACE),
            0,
        ) {
            Ok(xml) => parse_metadata_element(&xml),
            Err(e) if e.code() == ErrorNumber::NoDomainMetadata => None,
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(e) => return Err(failed("read the metadata of", e)),
        };
        Ok(Some(DomainInfo { name, tag, state }))
    }
}

impl Drop for LibvirtHypervisor {
    fn drop(&mut self) {
        // The virt crate's Connect does not close itself.
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = conn.close();
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn list(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        let conn = self.conn()?;
        let domains = conn
            .list_all_domains(0)
            .map_err(|source| HypervisorError::Host {
                action: "list domains",
                source,
            })?;
        let mut out = Vec::with_capacity(domains.len());
        for dom in &domains {
            if let Some(info) = Self::describe(dom)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn create(&self, spec: &DomainSpec) -> Result<(), HypervisorError> {
        let xml = domain_xml(spec).map_err(|source| HypervisorError::Xml {
            name: spec.name.clone(),
            source,
        })?;
        let conn = self.conn()?;
        match Domain::create_xml(&conn, &xml, 0) {
            Ok(_domain) => Ok(()),
            // libvirt says "operation failed: domain 'x' already exists"; make it a variant
            // callers can match.
            Err(e)
                if e.code() == ErrorNumber::OperationFailed
                    && Domain::lookup_by_name(&conn, &spec.name).is_ok() =>
            {
                Err(HypervisorError::AlreadyExists(spec.name.clone()))
            }
            Err(source) => Err(HypervisorError::Domain {
                action: "create",
                name: spec.name.clone(),
                source,
            }),
        }
    }

    fn destroy(&self, name: &str) -> Result<bool, HypervisorError> {
        if name.contains('\0') {
            // No domain can have this name (and the bindings would panic on it).
            return Ok(false);
        }
        let conn = self.conn()?;
        let failed = |source| HypervisorError::Domain {
            action: "destroy",
            name: name.to_owned(),
            source,
        };
        let dom = match Domain::lookup_by_name(&conn, name) {
            Ok(dom) => dom,
            Err(e) if is_no_domain(&e) => return Ok(false),
            Err(e) => return Err(failed(e)),
        };
        match dom.destroy() {
            Ok(()) => Ok(true),
            // Gone meanwhile, or a persistent domain that is defined but not running
            // ("domain is not running"): either way nothing runs under that name.
            Err(e) if is_no_domain(&e) || e.code() == ErrorNumber::OperationInvalid => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    fn info(&self) -> Result<HypervisorInfo, HypervisorError> {
        let conn = self.conn()?;
        let host = |action| move |source| HypervisorError::Host { action, source };
        let kind = conn.get_type().map_err(host("read the hypervisor type"))?;
        let hv_version = conn
            .get_hyp_version()
            .map_err(host("read the hypervisor version"))?;
        let lib_version = conn
            .get_lib_version()
            .map_err(host("read the libvirt version"))?;
        let caps_xml = conn
            .get_capabilities()
            .map_err(host("read the host capabilities"))?;
        let caps = parse_capabilities(&caps_xml).map_err(HypervisorError::Capabilities)?;
        Ok(HypervisorInfo {
            hypervisor: format!(
                "{kind} {} (libvirt {})",
                version(hv_version),
                version(lib_version)
            ),
            kvm_available: Path::new("/dev/kvm").exists() && caps.offers("kvm"),
            arch: caps.host_arch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{parse_instance_tag, InstanceTag};
    use crate::images::qcow2;
    use std::path::PathBuf;
    use std::process::Command;
    use stratus_common::api::{DiskFormat, DomainType};

    fn spec(name: &str, dir: &Path, domain_type: DomainType) -> DomainSpec {
        DomainSpec {
            name: name.to_owned(),
            cluster_id: format!("cluster-{}", std::process::id()),
            instance_id: 42,
            domain_type,
            vcpus: 1,
            memory_mib: 64,
            disk: dir.join("disk.qcow2"),
            kernel: None,
            initrd: None,
            cmdline: None,
            console_log: dir.join("console.log"),
            nics: Vec::new(),
            cidata: None,
        }
    }

    fn find<'a>(domains: &'a [DomainInfo], name: &str) -> Option<&'a DomainInfo> {
        domains.iter().find(|d| d.name == name)
    }

    #[test]
    fn version_numbers_format() {
        assert_eq!(version(9_000_000), "9.0.0");
        assert_eq!(version(7_002_022), "7.2.22");
    }

    /// libvirt's built-in test driver (no daemon) takes the very XML the agent sends to
    /// QEMU: it accepts domain types `qemu` and `kvm` as well as `test`.
    #[test]
    fn test_driver_lifecycle() {
        let hv = LibvirtHypervisor::connect("test:///default").unwrap();
        let info = hv.info().unwrap();
        assert!(info.hypervisor.starts_with("TEST "), "{info:?}");
        assert!(!info.arch.is_empty());

        // test:///default is shared by the connections of a process: unique names.
        let name = format!("stratus-unit-{}-lifecycle", std::process::id());
        let s = spec(&name, Path::new("/nonexistent"), DomainType::Qemu);
        hv.create(&s).unwrap();
        assert!(matches!(
            hv.create(&s),
            Err(HypervisorError::AlreadyExists(n)) if n == name
        ));

        let domains = hv.list().unwrap();
        let ours = find(&domains, &name).expect("created domain is listed");
        assert_eq!(ours.state, RunState::Running);
        assert_eq!(
            ours.tag,
            Some(InstanceTag {
                cluster_id: s.cluster_id.clone(),
                instance_id: 42
            })
        );
        // The driver's own sample domain has no tag.
        assert_eq!(find(&domains, "test").map(|d| d.tag.clone()), Some(None));

        assert!(hv.destroy(&name).unwrap());
        assert!(find(&hv.list().unwrap(), &name).is_none());
        assert!(!hv.destroy(&name).unwrap());
        assert!(!hv.destroy("no-such-domain").unwrap());
        assert!(!hv.destroy("nul\0name").unwrap());
    }

    #[test]
    fn invalid_spec_is_refused_before_libvirt() {
        let hv = LibvirtHypervisor::connect("test:///default").unwrap();
        let mut s = spec("stratus-unit-invalid", Path::new("/x"), DomainType::Qemu);
        s.disk = PathBuf::from("relative.qcow2");
        assert!(matches!(hv.create(&s), Err(HypervisorError::Xml { .. })));
    }

    #[test]
    fn connect_failure_names_the_uri() {
        let err = LibvirtHypervisor::connect("nosuchdriver:///x").unwrap_err();
        assert!(err.to_string().contains("nosuchdriver:///x"), "{err}");
    }

    /// Removes the test domain and files even when the test fails.
    struct SystemGuard {
        name: String,
        dir: PathBuf,
    }

    impl Drop for SystemGuard {
        fn drop(&mut self) {
            if let Ok(hv) = LibvirtHypervisor::connect("qemu:///system") {
                let _ = hv.destroy(&self.name);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
            // libvirt keeps one QEMU log per domain name; the names are per-run.
            let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{}.log", self.name));
        }
    }

    /// One real domain under `qemu:///system` (TCG, no OS: it only has to start). Needs root
    /// and a running libvirtd (`scripts/install-deps.sh` starts it); never skipped.
    #[test]
    fn system_qemu_lifecycle() {
        let hv = LibvirtHypervisor::connect("qemu:///system").unwrap_or_else(|e| {
            panic!("qemu:///system unavailable (run scripts/install-deps.sh): {e}")
        });
        let pid = std::process::id();
        // QEMU runs as libvirt-qemu: the directory must be traversable by it, which a
        // private temporary directory under /tmp is not.
        let dir = PathBuf::from(format!("/var/lib/stratuslab-test-{pid}"));
        let name = format!("stratus-unit-{pid}-system");
        let _guard = SystemGuard {
            name: name.clone(),
            dir: dir.clone(),
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let base = dir.join("base.qcow2");
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("1M")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let s = spec(&name, &dir, DomainType::Qemu);
        qcow2::create_overlay(&s.disk, &base, DiskFormat::Qcow2, 1 << 20).unwrap();

        let info = hv.info().unwrap();
        assert!(info.hypervisor.starts_with("QEMU "), "{info:?}");
        assert_eq!(info.arch, "x86_64");

        hv.create(&s).unwrap();
        let domains = hv.list().unwrap();
        let ours = find(&domains, &name).expect("created domain is listed");
        assert_eq!(ours.state, RunState::Running);
        let expected = Some(InstanceTag {
            cluster_id: s.cluster_id.clone(),
            instance_id: 42,
        });
        assert_eq!(ours.tag, expected);
        // The daemon's reformatted description still carries the tag.
        let live_xml = {
            let conn = hv.conn().unwrap();
            Domain::lookup_by_name(&conn, &name)
                .unwrap()
                .get_xml_desc(0)
                .unwrap()
        };
        assert_eq!(parse_instance_tag(&live_xml), expected);
        assert!(live_xml.contains("pc-i440fx"), "{live_xml}");

        assert!(hv.destroy(&name).unwrap());
        assert!(find(&hv.list().unwrap(), &name).is_none());
        assert!(!hv.destroy(&name).unwrap());
    }
}
