//! Powering guests off and on without losing them: the ACPI power-off request with the power
//! cut after a timeout (for a stop and for a reboot), the record of which run a domain belongs
//! to (`instances/<id>/booted`: the generation it was booted for and the host boot it was
//! booted in), and from it whether a domain that is gone stopped by itself (the guest powered
//! off or its emulator died: reported Stopped, or started again if its restart policy says
//! `always`, see `restart.rs`) or went with a host reboot (started again).

use std::time::{Duration, Instant};

use stratus_common::agent::{domain_name, ActualState, DesiredInstance};

use super::{error_chain, Inner, Reconciler};

/// How often a power-off request is checked on.
const POWER_OFF_POLL: Duration = Duration::from_millis(100);

/// The kernel's ID of this host boot; a fixed word when it cannot be read (then every domain
/// looks booted in this boot, which errs towards reporting a vanished guest Stopped).
pub fn host_boot() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl Reconciler {
    /// Whether the absent domain of an instance the controller wants running stopped by
    /// itself: it was booted for the generation wanted now, during this host boot. Without a
    /// record (a domain adopted from an older agent), whether this agent saw it running.
    pub(super) fn stopped_by_itself(&self, inner: &Inner, instance: &DesiredInstance) -> bool {
        match self.dirs.read_boot(instance.id) {
            Some((generation, boot)) => generation == instance.generation && boot == self.host_boot,
            None => inner.seen_running.contains(&instance.id),
        }
    }

    /// Asks the guest to power off and waits for it; cuts the power after the stop timeout.
    /// `Ok(Some(reason))` when the power had to be cut.
    fn power_off(&self, id: u64) -> Result<Option<String>, String> {
        let name = domain_name(&self.cluster_id, id);
        let libvirt =
            |e: crate::hypervisor::HypervisorError| format!("libvirt: {}", error_chain(&e));
        if !self.hv.shutdown(&name).map_err(libvirt)? {
            return Ok(None);
        }
        let asked = Instant::now();
        while asked.elapsed() < self.stop_timeout {
            if !self.hv.exists(&name).map_err(libvirt)? {
                tracing::info!(after = ?asked.elapsed(), "the guest powered off");
                return Ok(None);
            }
            std::thread::sleep(POWER_OFF_POLL);
        }
        self.hv.destroy(&name).map_err(libvirt)?;
        let reason = format!(
            "the guest did not power off within {} s of the request; its power was cut",
            self.stop_timeout.as_secs()
        );
        tracing::warn!("{reason}");
        Ok(Some(reason))
    }

    /// Takes the instance's taps (and their rules) away; the start makes them again.
    fn release_taps(&self, id: u64) -> Result<(), String> {
        for tap in self.dirs.read_taps(id) {
            self.network
                .detach(&tap)
                .map_err(|e| format!("network: {}", error_chain(&e)))?;
        }
        match std::fs::remove_file(self.dirs.taps(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot forget the instance's taps: {e}")),
        }
    }

    /// Powers the guest off and keeps its directory (disk, console log, recorded images);
    /// its taps go (its addresses stay leased by the controller). `Ok(Some(reason))` when
    /// the power had to be cut.
    pub(super) fn stop(&self, id: u64) -> Result<Option<String>, String> {
        let reason = self.power_off(id)?;
        self.release_taps(id)?;
        self.dirs
            .forget_boot(id)
            .map_err(|e| format!("cannot forget the domain's boot: {e}"))?;
        Ok(reason)
    }

    /// Powers the guest off as a stop does, then boots it again from its own disk for the
    /// instance's new generation.
    pub(super) fn reboot(&self, instance: &DesiredInstance) -> Result<(), String> {
        let id = instance.id;
        // Reported so that the Running that follows the new boot is news to the controller.
        self.report(id, ActualState::Booting, None);
        if let Some(reason) = self.power_off(id)? {
            tracing::info!(%reason, "hard reset");
        }
        self.release_taps(id)?;
        // Its directory exists, so the start asks no confirmation: it fails or boots.
        self.start(instance)
            .map_err(super::StartError::into_reason)?;
        self.inner
            .lock()
            .expect("reconciler lock")
            .seen_running
            .insert(id);
        Ok(())
    }
}
