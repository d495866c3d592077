//! Starting an instance's guest, as one straight line: the controller's confirmation of a fresh
//! start, the image (fetched and checked), the instance directory and the images it holds, the
//! overlay, the NICs (bridge, anti-spoofing rules, tap), the cloud-init seed, the persistent
//! disks, then the domain. Each step's failure is a [`StartFailure`], typed until it is
//! rendered as the reason the user sees. What a failed start made is undone by guards (the
//! fresh directory and its image holds, each NIC); a directory kept from an earlier run (a
//! stopped instance, a host reboot) holds the guest's disk and is left as it was.

use std::path::PathBuf;

use stratus_common::agent::{domain_name, ActualState, DesiredDisk, DesiredInstance, DiskLocation};

use super::Reconciler;
use crate::context::{self, ContextError};
use crate::failure::error_chain;
use crate::hypervisor::{DiskSource, DomainDisk, DomainNic, DomainSpec, HypervisorError};
use crate::images::cache::Held;
use crate::images::qcow2::{self, Qcow2Error};
use crate::images::{prepare, PrepareError};
use crate::network::{tap_name, NameError, NetworkError, NicPlan};
use crate::outbox::{ConfirmStart, Confirmation};
use crate::volumes::pool::PoolError;

/// Why a start did not start the guest.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    /// The controller did not record the start: nothing was made and nothing is reported.
    #[error(transparent)]
    NotConfirmed(#[from] NotConfirmed),
    /// The start failed; its reason is reported.
    #[error(transparent)]
    Failed(#[from] StartFailure),
}

impl StartError {
    /// What it says, as one line.
    pub(super) fn into_reason(self) -> String {
        error_chain(&self)
    }
}

/// The controller did not record a fresh start.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotConfirmed {
    #[error("the controller refused the start: {0}")]
    Refused(String),
    #[error("the controller did not record the start within {0:?}")]
    Unanswered(std::time::Duration),
}

/// A step of a start that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartFailure {
    /// The image could not be fetched or is not what it claims.
    #[error(transparent)]
    Image(#[from] PrepareError),
    #[error("cannot create {}", .0.display())]
    Directory(PathBuf, #[source] std::io::Error),
    #[error("cannot record the instance's images")]
    Artifacts(#[source] std::io::Error),
    #[error("cannot create the instance disk")]
    Overlay(#[source] Qcow2Error),
    #[error("tap name")]
    TapName(#[source] NameError),
    #[error("invalid MAC {0}")]
    Mac(String),
    #[error("invalid address {0}")]
    Address(String),
    #[error("network")]
    Network(#[source] NetworkError),
    #[error("cannot record the instance's taps")]
    Taps(#[source] std::io::Error),
    #[error("cannot make the cloud-init ISO")]
    Seed(#[source] ContextError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("disk {0} is not reachable yet")]
    DiskNotReachable(String),
    #[error("libvirt")]
    Libvirt(#[source] HypervisorError),
}

/// A persistent disk the domain cannot be given.
#[derive(Debug, thiserror::Error)]
pub(super) enum DiskError {
    #[error("disk {0} is local but this host has no volume pool")]
    NoPool(String),
    #[error("disk {0}")]
    Pool(String, #[source] PoolError),
}

/// The instance directory a start uses and the hold on the images it records in it: on
/// success, or when the directory was kept from an earlier run (it holds the guest's disk), the
/// instance owns the hold (its earlier one let go); when a fresh directory's start fails, the
/// directory is removed and the hold dropped.
struct StartDir<'a> {
    reconciler: &'a Reconciler,
    id: u64,
    dir: PathBuf,
    fresh: bool,
    held: Option<Held>,
    kept: bool,
}

impl StartDir<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for StartDir<'_> {
    fn drop(&mut self) {
        let held = self.held.take();
        if self.kept || !self.fresh {
            if let Some(held) = held {
                let mut inner = self.reconciler.inner.lock().expect("reconciler lock");
                inner.holds.insert(self.id, held);
            }
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(held);
    }
}

impl Reconciler {
    /// Prepares the disk and starts the domain; on failure removes what it made.
    pub(super) fn start(&self, instance: &DesiredInstance) -> Result<(), StartError> {
        let id = instance.id;
        match self.start_confirmation {
            Some(wait) if !self.dirs.dir(id).exists() => self.confirm_start(id, wait)?,
            _ => self.report(id, ActualState::Booting, None),
        }
        let image = prepare(&self.images, &instance.image).map_err(StartFailure::Image)?;
        let dir = self.dirs.dir(id);
        let fresh = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| StartFailure::Directory(dir.clone(), e))?;
        let made = StartDir {
            reconciler: self,
            id,
            dir: dir.clone(),
            fresh,
            held: Some(self.images.hold(&image.digests)),
            kept: false,
        };
        self.dirs
            .write_artifacts(id, &image.digests)
            .map_err(StartFailure::Artifacts)?;
        // With this instance's images held, the cache can shrink back to its budget.
        self.images.evict();
        let disk = self.dirs.disk(id);
        // A disk left by an earlier start (say, before a host reboot) keeps the guest's data.
        if !disk.exists() {
            qcow2::create_overlay(&disk, &image.disk, image.format, image.virtual_size)
                .map_err(StartFailure::Overlay)?;
        }
        // NICs: bridge, anti-spoofing rules, then the tap, each undone if a later step fails.
        let network_started = std::time::Instant::now();
        let mut guards = Vec::new();
        let mut nics = Vec::new();
        for (index, nic) in instance.nics.iter().enumerate() {
            let tap =
                tap_name(&self.cluster_id, id, index as u32).map_err(StartFailure::TapName)?;
            let plan = NicPlan {
                tap: tap.clone(),
                mac: (nic.mac.parse()).map_err(|_| StartFailure::Mac(nic.mac.clone()))?,
                ip: (nic.ip.parse()).map_err(|_| StartFailure::Address(nic.ip.clone()))?,
                bridge: nic.bridge.clone(),
                netns: self.netns.clone(),
            };
            guards.push(self.network.attach(&plan).map_err(StartFailure::Network)?);
            nics.push(DomainNic {
                tap,
                mac: nic.mac.clone(),
            });
        }
        if !nics.is_empty() {
            self.timings
                .network_setup
                .observe(network_started.elapsed().as_secs_f64());
        }
        let taps: Vec<&str> = nics.iter().map(|n| n.tap.as_str()).collect();
        std::fs::write(self.dirs.taps(id), taps.join("\n")).map_err(StartFailure::Taps)?;
        let cidata = context::write_cidata(&dir, instance).map_err(StartFailure::Seed)?;
        let mut disks = Vec::new();
        for disk in instance.disks.iter().filter(|d| d.attach) {
            match self.domain_disk(disk).map_err(StartFailure::Disk)? {
                Some(d) => disks.push(d),
                None => return Err(StartFailure::DiskNotReachable(disk.volume.clone()).into()),
            }
        }
        let spec = DomainSpec {
            name: domain_name(&self.cluster_id, id),
            cluster_id: self.cluster_id.clone(),
            instance_id: id,
            host: self.host.clone(),
            domain_type: self.domain_type,
            vcpus: instance.vcpus,
            memory_mib: instance.memory_mib,
            disk,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            cmdline: image.cmdline.clone(),
            console_log: self.dirs.console_log(id),
            nics,
            cidata: Some(cidata),
            disks,
        };
        // A generation booted before (the host rebooted since) was measured then.
        let first_boot = self.dirs.booted_for(id) != Some(instance.generation);
        self.hv.create(&spec).map_err(StartFailure::Libvirt)?;
        made.keep();
        for guard in guards {
            guard.keep();
        }
        if let Some(accepted_at_ms) = instance.accepted_at_ms.filter(|_| first_boot) {
            self.timings.observe_running(accepted_at_ms);
        }
        if let Err(e) = self
            .dirs
            .record_boot(id, instance.generation, &self.host_boot)
        {
            // Without the record a later disappearance looks like a host reboot (the
            // instance is started again rather than reported stopped): worth a warning only.
            tracing::warn!(error = %e, "cannot record the domain's boot");
        }
        Ok(())
    }

    /// Reports instance `id` Booting and waits, up to `wait`, for the controller to record it.
    fn confirm_start(&self, id: u64, wait: std::time::Duration) -> Result<(), NotConfirmed> {
        let (answer, word) = std::sync::mpsc::sync_channel(1);
        self.inner
            .lock()
            .expect("reconciler lock")
            .reported
            .insert(id, ActualState::Booting);
        let _ = self
            .reports
            .send(super::ReportEvent::ConfirmStart(ConfirmStart {
                id,
                answer,
            }));
        let refusal = match word.recv_timeout(wait) {
            Ok(Confirmation::Recorded) => return Ok(()),
            Ok(Confirmation::Refused(reason)) => NotConfirmed::Refused(reason),
            Err(_) => NotConfirmed::Unanswered(wait),
        };
        // Said again by the next attempt, if there is one.
        self.inner
            .lock()
            .expect("reconciler lock")
            .reported
            .remove(&id);
        Err(refusal)
    }

    /// The domain's view of a desired disk; `None` while its export is not ready.
    pub(super) fn domain_disk(&self, disk: &DesiredDisk) -> Result<Option<DomainDisk>, DiskError> {
        let source = match &disk.source {
            DiskLocation::Pending => return Ok(None),
            DiskLocation::Local => {
                let pool = (self.volume_pool.as_ref())
                    .ok_or_else(|| DiskError::NoPool(disk.volume.clone()))?;
                let path = (pool.path(&disk.volume))
                    .map_err(|e| DiskError::Pool(disk.volume.clone(), e))?;
                DiskSource::File(path)
            }
            DiskLocation::Nbd {
                host,
                port,
                export,
                tls_server,
            } => DiskSource::Nbd {
                host: host.clone(),
                port: *port,
                export: export.clone(),
                tls_server: tls_server.clone(),
            },
        };
        Ok(Some(DomainDisk {
            target: disk.target.clone(),
            serial: stratus_common::volumes::serial(&disk.volume),
            read_only: disk.read_only,
            source,
        }))
    }
}
