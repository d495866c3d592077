//! Choosing the domain type (`kvm` or `qemu`) a host runs guests with.
//!
//! `/dev/kvm` and libvirt's capabilities only say KVM *should* work. Under nested
//! virtualisation a KVM guest can start and then hang forever, which would fail every
//! instance on the host. So with `domain_type = "auto"` the agent trusts KVM only after a
//! small probe guest, booted under KVM, has printed its banner on the serial console;
//! otherwise it falls back to software emulation (TCG), slower but always working.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratus_common::api::{DiskFormat, DomainType};

use super::{DomainSpec, Hypervisor, HypervisorError, HypervisorInfo};
use crate::config::DomainTypeSetting;
use crate::images::qcow2::{self, Qcow2Error};

/// A direct-boot guest that prints a known line on its serial console once up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The console line starts with this once the guest is up.
    pub banner: String,
    /// Where the probe's disk and console log go (created if missing; QEMU's user must be
    /// able to reach it).
    pub work_dir: PathBuf,
}

/// How long a KVM probe guest may take to print its banner. A working KVM guest is up in a
/// second or two; the test appliance needs about 5 s even under TCG.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The probe's domain name: fixed, so a probe domain left behind by a crashed agent is
/// destroyed by the next probe.
pub const PROBE_DOMAIN: &str = "stratus-probe-kvm";

const PROBE_CMDLINE: &str = "console=ttyS0 quiet";
const PROBE_MEMORY_MIB: u64 = 256;
const PROBE_DISK_SIZE: u64 = 1 << 20;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a probe could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the probe disk")]
    Disk(#[from] Qcow2Error),
    #[error("cannot start the probe guest")]
    Start(#[source] HypervisorError),
}

/// The domain type to run guests with. An explicit setting wins; `auto` picks KVM only when
/// it is available and the probe guest proved it boots. Logs why.
pub fn resolve_domain_type(
    setting: DomainTypeSetting,
    info: &HypervisorInfo,
    probe: Option<&ProbeGuest>,
    hv: &dyn Hypervisor,
) -> DomainType {
    match setting {
        DomainTypeSetting::Kvm => {
            if !info.kvm_available {
                tracing::warn!("domain_type = kvm is configured but KVM does not look available");
            }
            DomainType::Kvm
        }
        DomainTypeSetting::Qemu => DomainType::Qemu,
        DomainTypeSetting::Auto => {
            if !info.kvm_available {
                tracing::info!("KVM is not available: guests run under software emulation");
                return DomainType::Qemu;
            }
            let Some(guest) = probe else {
                tracing::info!(
                    "no probe guest configured to check that KVM guests boot: \
                     guests run under software emulation"
                );
                return DomainType::Qemu;
            };
            match run_probe(guest, hv, PROBE_TIMEOUT) {
                Ok(true) => {
                    tracing::info!("the probe guest booted under KVM: guests run under KVM");
                    DomainType::Kvm
                }
                Ok(false) => {
                    tracing::warn!(
                        timeout_secs = PROBE_TIMEOUT.as_secs(),
                        "the probe guest printed no banner under KVM in time: \
                         guests run under software emulation"
                    );
                    DomainType::Qemu
                }
                Err(e) => {
                    tracing::warn!(
                        error = %error_chain(&e),
                        "the KVM probe failed: guests run under software emulation"
                    );
                    DomainType::Qemu
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Files and domain of one probe run, removed on drop whatever happened.
struct ProbeRun<'a> {
    hv: &'a dyn Hypervisor,
    files: [PathBuf; 3],
}

impl ProbeRun<'_> {
    fn clean(&self) {
        if let Err(e) = self.hv.destroy(PROBE_DOMAIN) {
            tracing::warn!(error = %e, "cannot destroy the probe domain");
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for ProbeRun<'_> {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Boots `guest` under KVM and waits up to `timeout` for its banner. `Ok(false)`: it started
/// but said nothing in time.
pub fn run_probe(
    guest: &ProbeGuest,
    hv: &dyn Hypervisor,
    timeout: Duration,
) -> Result<bool, ProbeError> {
    let dir = &guest.work_dir;
    let prepare = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProbeError::Prepare { path, source }
    };
    std::fs::create_dir_all(dir).map_err(prepare(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(prepare(dir))?;

    let base = dir.join("probe-base.raw");
    let disk = dir.join("probe-disk.qcow2");
    let console_log = dir.join("probe-console.log");
    let run = ProbeRun {
        hv,
        files: [base.clone(), disk.clone(), console_log.clone()],
    };
    // Leftovers of an earlier probe that did not finish.
    run.clean();

    std::fs::File::create(&base)
        .and_then(|f| f.set_len(PROBE_DISK_SIZE))
        .map_err(prepare(&base))?;
    qcow2::create_overlay(&disk, &base, DiskFormat::Raw, PROBE_DISK_SIZE)?;

    let spec = DomainSpec {
        name: PROBE_DOMAIN.to_owned(),
        cluster_id: "probe".to_owned(),
        instance_id: 0,
        host: None,
        domain_type: DomainType::Kvm,
        vcpus: 1,
        memory_mib: PROBE_MEMORY_MIB,
        disk,
        kernel: Some(guest.kernel.clone()),
        initrd: Some(guest.initrd.clone()),
        cmdline: Some(PROBE_CMDLINE.to_owned()),
        console_log: console_log.clone(),
        nics: Vec::new(),
        cidata: None,
        disks: Vec::new(),
    };
    let started = Instant::now();
    hv.create(&spec).map_err(ProbeError::Start)?;
    loop {
        if console_shows(&console_log, &guest.banner) {
            tracing::debug!(elapsed = ?started.elapsed(), "probe banner seen");
            return Ok(true);
        }
        if started.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Whether a line of the console log starts with `banner` (serial consoles end lines with
/// CR LF).
fn console_shows(console_log: &Path, banner: &str) -> bool {
    let Ok(bytes) = std::fs::read(console_log) else {
        return false;
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .any(|line| line.trim_start_matches('\r').starts_with(banner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{FakeCall, FakeHypervisor};

    const BANNER: &str = "STRATUSLAB-APPLIANCE-READY";

    fn kvm_host() -> FakeHypervisor {
        FakeHypervisor::with_info(HypervisorInfo {
            hypervisor: "Fake".into(),
            arch: "x86_64".into(),
            kvm_available: true,
        })
    }

    fn guest(dir: &Path) -> ProbeGuest {
        ProbeGuest {
            kernel: "/boot/vmlinuz".into(),
            initrd: "/boot/initrd.img".into(),
            banner: BANNER.into(),
            work_dir: dir.join("probe"),
        }
    }

    fn resolve(
        setting: DomainTypeSetting,
        hv: &FakeHypervisor,
        probe: Option<&ProbeGuest>,
    ) -> DomainType {
        let info = hv.info().unwrap();
        resolve_domain_type(setting, &info, probe, hv)
    }

    #[test]
    fn explicit_settings_win_without_probing() {
        let dir = tempfile::tempdir().unwrap();
        let g = guest(dir.path());
        let hv = FakeHypervisor::new();
        assert_eq!(
            resolve(DomainTypeSetting::Kvm, &hv, Some(&g)),
            DomainType::Kvm
        );
        let hv = kvm_host();
        assert_eq!(
            resolve(DomainTypeSetting::Qemu, &hv, Some(&g)),
            DomainType::Qemu
        );
        assert!(hv.created().is_empty());
    }

    #[test]
    fn auto_without_kvm_or_probe_is_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let hv = FakeHypervisor::new();
        hv.set_console_output(Some(BANNER));
        let g = guest(dir.path());
        assert_eq!(
            resolve(DomainTypeSetting::Auto, &hv, Some(&g)),
            DomainType::Qemu
        );
        let hv = kvm_host();
        assert_eq!(
            resolve(DomainTypeSetting::Auto, &hv, None),
            DomainType::Qemu
        );
        assert!(hv.created().is_empty());
    }

    #[test]
    fn auto_is_kvm_when_the_probe_guest_prints_its_banner() {
        let dir = tempfile::tempdir().unwrap();
        let hv = kvm_host();
        hv.set_console_output(Some(&format!("noise\r\n{BANNER} hostname=x disk=none\r\n")));
        let g = guest(dir.path());
        assert_eq!(
            resolve(DomainTypeSetting::Auto, &hv, Some(&g)),
            DomainType::Kvm
        );

        let created = hv.created();
        assert_eq!(created.len(), 1);
        let spec = &created[0];
        assert_eq!(spec.domain_type, DomainType::Kvm);
        assert_eq!(spec.kernel.as_deref(), Some(Path::new("/boot/vmlinuz")));
        assert_eq!(spec.name, PROBE_DOMAIN);
        // The probe domain is destroyed (once before, as a leftover, once after) and its
        // files are gone.
        assert_eq!(hv.destroyed(), [PROBE_DOMAIN, PROBE_DOMAIN]);
        assert!(hv.domains().is_empty());
        assert_eq!(std::fs::read_dir(&g.work_dir).unwrap().count(), 0);
    }

    #[test]
    fn auto_is_qemu_when_the_probe_guest_cannot_start() {
        let dir = tempfile::tempdir().unwrap();
        let hv = kvm_host();
        hv.fail_creates(Some("KVM is broken"));
        let g = guest(dir.path());
        assert_eq!(
            resolve(DomainTypeSetting::Auto, &hv, Some(&g)),
            DomainType::Qemu
        );
        assert_eq!(std::fs::read_dir(&g.work_dir).unwrap().count(), 0);
    }

    #[test]
    fn a_silent_probe_guest_times_out_and_is_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let hv = kvm_host();
        let g = guest(dir.path());
        // A leftover from a crashed agent is replaced.
        hv.insert_domain(PROBE_DOMAIN, None, crate::hypervisor::RunState::Running);
        let found = run_probe(&g, &hv, Duration::from_millis(250)).unwrap();
        assert!(!found);
        assert!(hv.domains().is_empty());
        let calls = hv.calls();
        assert!(matches!(calls.first(), Some(FakeCall::Destroy(_))));
        assert!(matches!(calls.last(), Some(FakeCall::Destroy(_))));
    }

    #[test]
    fn banner_must_start_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, format!("echo {BANNER}\n")).unwrap();
        assert!(!console_shows(&log, BANNER));
        std::fs::write(&log, format!("boot\r\n{BANNER} ok\r\n")).unwrap();
        assert!(console_shows(&log, BANNER));
        assert!(!console_shows(&dir.path().join("missing"), BANNER));
    }
}
