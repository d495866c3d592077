//! Reconciliation: compares what the controller wants this host to run with what libvirt runs,
//! and acts: start what should run, power off (keeping its files) what should be stopped,
//! reboot what was asked to, destroy (and clean up after) what should be gone, report what it
//! sees. It never guesses: a domain of this cluster that no instance accounts for is reported,
//! not killed; a domain is destroyed only when the controller asks (or, after a power-off
//! request timed out, to stop or reboot it as asked).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use stratus_common::agent::{
    domain_name, ActualState, Desire, DesiredDisk, DesiredInstance, DiskLocation, DiskReport,
    HostDesired, ReportedDisk, ReportedExport, ReportedInstance, ReportedVolume,
};
use stratus_common::api::DomainType;
use tokio::sync::mpsc;

use crate::failure::error_chain;
use crate::instance_dir::InstanceDirs;

use crate::hypervisor::{DomainInfo, Hypervisor, RunState};
use crate::images::cache::{Held, ImageCache};
use crate::images::prepare;
use crate::metrics::Timings;
use crate::network::Network;
use crate::volumes::pool::VolumePool;

/// Messages for the reporter task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportEvent {
    Instance(ReportedInstance),
    /// A fresh start's Booting, which the start waits to see recorded (see `outbox.rs`).
    ConfirmStart(crate::outbox::ConfirmStart),
    UnknownDomains(Vec<String>),
    /// What the image cache holds (SHA-256 of each artifact), when it changed.
    Images(Vec<String>),
    Volume(ReportedVolume),
    Export(ReportedExport),
    Disk(ReportedDisk),
}

/// How long a stop or reboot waits for the guest to power off after the ACPI request before
/// cutting the power.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a detach waits for the guest to release the device before leaving it to later
/// passes (which only look, without asking again until [`DETACH_RETRY`]).
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long after an unplug request the guest is asked again: a guest can miss a request
/// (one made while it was still setting up the device just plugged in), and asking again is
/// harmless (see `hypervisor/libvirt.rs`).
const DETACH_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// The host-side state of reconciliation; cheap to share between tasks.
pub struct Reconciler {
    hv: Arc<dyn Hypervisor>,
    images: Arc<ImageCache>,
    network: Network,
    /// The network namespace the bridges' far side lives in, if any.
    netns: Option<String>,
    dirs: InstanceDirs,
    domain_type: DomainType,
    cluster_id: String,
    reports: mpsc::UnboundedSender<ReportEvent>,
    /// This host's volume pool, where local persistent disks are.
    volume_pool: Option<Arc<VolumePool>>,
    /// See [`DETACH_WAIT`].
    detach_wait: std::time::Duration,
    /// See [`DETACH_RETRY`].
    detach_retry: std::time::Duration,
    /// See [`STOP_TIMEOUT`].
    stop_timeout: std::time::Duration,
    /// How long a fresh start waits for the controller to record it Booting before creating
    /// the guest (`None`: it does not wait; only for tests without a controller).
    start_confirmation: Option<std::time::Duration>,
    /// This host's name, recorded in the domains it makes: domains of the cluster that name
    /// another host are another agent's (two agents sharing one libvirt).
    host: Option<String>,
    /// This host's boot (the kernel's boot ID): a domain booted during it that is gone
    /// stopped by itself; one booted during an earlier boot went with the host.
    host_boot: String,
    /// The latencies this host's metrics show, observed here.
    timings: Timings,
    /// The host's lease with the controller, where the site fences hosts by lease.
    lease: Option<Arc<crate::lease::Lease>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Instances with a start or destroy under way.
    in_flight: HashSet<u64>,
    /// Instances this process has seen running (so their disappearance is a failure, not a
    /// start to do).
    seen_running: HashSet<u64>,
    /// The last state queued for the controller, per instance.
    reported: HashMap<u64, ActualState>,
    /// Instances whose state the controller asked to confirm (it lost track while this host
    /// was counted down), and the desired-state version the last state was sent again for.
    confirmed: HashMap<u64, u64>,
    unknown: Vec<String>,
    /// The cache's contents as last queued for the controller.
    reported_images: Option<Vec<String>>,
    /// Pre-cached images held in the cache, by disk SHA-256.
    pinned: HashMap<String, Held>,
    /// What each instance's files stand on in the image cache (its `artifacts`), held until
    /// its directory goes.
    holds: HashMap<u64, Held>,
    /// Pre-caches under way, by disk SHA-256.
    precaching: HashSet<String>,
    /// Pre-caches that failed, by disk SHA-256, and when: retried after [`PRECACHE_RETRY`].
    precache_failed: HashMap<String, std::time::Instant>,
    /// Counts finished starts and destroys.
    epoch: u64,
    /// The epoch at which each instance's last start or destroy finished: a domain list taken
    /// before that is stale for this instance.
    finished_at: HashMap<u64, u64>,
    /// Instances whose persistent disks are being plugged or unplugged.
    disk_syncing: HashSet<u64>,
    /// The last state reported per (instance, volume).
    reported_disks: HashMap<(u64, String), DiskReport>,
    /// Unplugs already asked of the guest, per (instance, target), and when.
    detach_requested: HashMap<(u64, String), Unplug>,
}

/// The unplug requests of one pending detach.
#[derive(Debug, Clone, Copy)]
struct Unplug {
    /// The first (the detach latency runs from there to the guest releasing the device).
    first: std::time::Instant,
    /// The latest (the next is sent once `detach_retry` has passed since).
    last: std::time::Instant,
}

/// How long a failed pre-cache waits before it is tried again.
const PRECACHE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// What one pass decided to do, for the caller to run (and for tests to inspect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(Box<DesiredInstance>),
    /// Remove the instance's files and, when `domain` (the listing showed one of this host's
    /// with its name), its domain. A domain of that name that another host sharing this
    /// libvirt runs (the instance moved there) is left alone.
    Destroy {
        id: u64,
        domain: bool,
    },
    /// Power the guest off (ACPI, then the power cut after the timeout) and keep its files.
    Stop(u64),
    /// Start again, with its data, a guest that stopped by itself (restart policy `always`).
    Restart(Box<DesiredInstance>),
    /// Power the guest off as for a stop, then boot it again for its new generation.
    Reboot(Box<DesiredInstance>),
    /// Fetch an image an administrator asked for ahead of time, and keep it.
    Precache(Box<stratus_common::agent::ImageSpec>),
    /// Bring a running instance's persistent disks to what is desired: hot-plug, unplug, or
    /// see that the guest released a device.
    SyncDisks(u64, Vec<DesiredDisk>),
}

impl Reconciler {
    /// Builds the reconciler, holding in `images` every artifact that the instances found on
    /// this host use (so a restarted agent never evicts a base under a running guest).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hv: Arc<dyn Hypervisor>,
        images: Arc<ImageCache>,
        network: Network,
        netns: Option<String>,
        dirs: InstanceDirs,
        domain_type: DomainType,
        cluster_id: String,
        reports: mpsc::UnboundedSender<ReportEvent>,
    ) -> Self {
        let holds = dirs
            .instance_ids()
            .into_iter()
            .map(|id| (id, images.hold(&dirs.read_artifacts(id))))
            .collect();
        Self {
            hv,
            images,
            network,
            netns,
            dirs,
            domain_type,
            cluster_id,
            reports,
            volume_pool: None,
            detach_wait: DETACH_WAIT,
            detach_retry: DETACH_RETRY,
            stop_timeout: STOP_TIMEOUT,
            start_confirmation: None,
            host: None,
            host_boot: power::host_boot(),
            timings: Timings::default(),
            lease: None,
            inner: Mutex::new(Inner {
                holds,
                ..Inner::default()
            }),
        }
    }

    /// A fresh start (no instance directory yet) first waits, up to `wait`, for the controller
    /// to record the instance Booting on this host, and starts nothing if it refuses (the
    /// instance was placed elsewhere meanwhile) or does not answer in time (a later pass tries
    /// again). So an instance still Pending in the controller's state never runs anywhere, and
    /// the controller may place it again when this host goes down.
    pub fn with_start_confirmation(mut self, wait: std::time::Duration) -> Self {
        self.start_confirmation = Some(wait);
        self
    }

    /// Names this host in the domains it makes, and leaves domains that name another alone.
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// How long an unplug waits for the guest before later passes take over.
    pub fn with_detach_wait(mut self, wait: std::time::Duration) -> Self {
        self.detach_wait = wait;
        self
    }

    /// How long after an unplug request the guest is asked again.
    pub fn with_detach_retry(mut self, retry: std::time::Duration) -> Self {
        self.detach_retry = retry;
        self
    }

    /// How long a stop or reboot waits for the guest to power off before cutting the power.
    pub fn with_stop_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The host boot this agent runs in (tests pretend another boot to play a host reboot).
    pub fn with_host_boot(mut self, boot: &str) -> Self {
        self.host_boot = boot.to_owned();
        self
    }

    /// Holds back guests that may be evacuated while the host's lease has run out (see
    /// [`crate::lease`] and [`Self::fence`]).
    pub fn with_lease(mut self, lease: Arc<crate::lease::Lease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The latencies observed by this reconciler (for the host's metrics).
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Local persistent disks are files in this pool.
    pub fn with_volume_pool(mut self, pool: Arc<VolumePool>) -> Self {
        self.volume_pool = Some(pool);
        self
    }

    fn report_disk(&self, id: u64, disk: &DesiredDisk, state: DiskReport, reason: Option<String>) {
        let key = (id, disk.volume.clone());
        {
            let mut inner = self.inner.lock().expect("reconciler lock");
            if inner.reported_disks.get(&key) == Some(&state) {
                return;
            }
            inner.reported_disks.insert(key, state);
        }
        tracing::info!(instance = id, volume = %disk.volume, target = %disk.target, ?state, "persistent disk");
        let _ = self.reports.send(ReportEvent::Disk(ReportedDisk {
            instance: id,
            volume: disk.volume.clone(),
            state,
            reason,
        }));
    }

    /// Whether a running instance's disks need a look: one to plug, or one to unplug.
    fn disks_unsettled(inner: &Inner, id: u64, disks: &[DesiredDisk]) -> bool {
        disks.iter().any(|d| {
            let reported = inner.reported_disks.get(&(id, d.volume.clone()));
            if d.attach {
                reported != Some(&DiskReport::Attached)
                    && reported != Some(&DiskReport::Failed)
                    && d.source != DiskLocation::Pending
            } else {
                reported != Some(&DiskReport::Detached)
            }
        })
    }

    fn report(&self, id: u64, state: ActualState, reason: Option<String>) {
        let mut inner = self.inner.lock().expect("reconciler lock");
        if inner.reported.get(&id) == Some(&state) {
            return;
        }
        inner.reported.insert(id, state);
        drop(inner);
        let _ = self.reports.send(ReportEvent::Instance(ReportedInstance {
            id,
            state,
            reason,
        }));
    }

    /// The current epoch; take it before listing domains and pass it to [`Self::plan`].
    pub fn epoch(&self) -> u64 {
        self.inner.lock().expect("reconciler lock").epoch
    }

    /// One pass: looks at libvirt, reports what it sees, and returns the starts and destroys to
    /// run (each marked in flight until it finishes). `domains` were listed at `listed_at` (an
    /// [`Self::epoch`]); instances whose start or destroy finished since are left for the next
    /// pass, as the list does not show what that action did.
    pub fn plan(
        &self,
        desired: &HostDesired,
        domains: &[DomainInfo],
        listed_at: u64,
    ) -> Vec<Action> {
        let ours: HashMap<u64, &DomainInfo> = domains
            .iter()
            .filter_map(|d| {
                d.tag
                    .as_ref()
                    .filter(|t| match &self.host {
                        Some(host) => t.is_of(&self.cluster_id, host),
                        None => t.cluster_id == self.cluster_id,
                    })
                    .map(|t| (t.instance_id, d))
            })
            .collect();
        let wanted: HashSet<u64> = desired.instances.iter().map(|i| i.id).collect();
        let mut unknown: Vec<String> = ours
            .iter()
            .filter(|(id, _)| !wanted.contains(id))
            .map(|(_, d)| d.name.clone())
            .collect();
        unknown.sort();
        let mut actions = Vec::new();
        let mut reports = Vec::new();
        // Disks unplugged from a stopped instance: no guest holds them.
        let mut released = Vec::new();
        let lease_expired = self.lease_expired();
        {
            let mut inner = self.inner.lock().expect("reconciler lock");
            if unknown != inner.unknown {
                if !unknown.is_empty() {
                    tracing::warn!(domains = ?unknown, "domains of this cluster that no instance accounts for (left running)");
                }
                inner.unknown = unknown.clone();
                let _ = self.reports.send(ReportEvent::UnknownDomains(unknown));
            }
            for instance in &desired.instances {
                let id = instance.id;
                if instance.confirm && inner.confirmed.get(&id) != Some(&desired.version) {
                    inner.confirmed.insert(id, desired.version);
                    // What was queued before may have been lost with the contact: say it
                    // again. (With nothing queued yet, this pass reports what it sees.)
                    if let Some(&state) = inner.reported.get(&id) {
                        let _ = self.reports.send(ReportEvent::Instance(ReportedInstance {
                            id,
                            state,
                            reason: None,
                        }));
                    }
                }
                if inner.in_flight.contains(&id)
                    || inner.finished_at.get(&id).is_some_and(|&at| at > listed_at)
                {
                    continue;
                }
                // One read of the boot record per instance and pass.
                let booted = self.dirs.booted_generation(id);
                if instance.desire != Desire::Destroy && instance.generation < booted {
                    // A controller behind what this host already ran (a stale answer): never
                    // go back to an older generation.
                    tracing::warn!(
                        instance = id,
                        generation = instance.generation,
                        booted,
                        "desired state older than the generation this host booted: ignored"
                    );
                    continue;
                }
                let running = ours.get(&id).map(|d| d.state) == Some(RunState::Running);
                if instance.desire == Desire::Run && instance.evacuate && lease_expired && !running
                {
                    // The controller may start it elsewhere: not here until it answers again.
                    continue;
                }
                match instance.desire {
                    Desire::Run => match ours.get(&id).map(|d| d.state) {
                        Some(RunState::Running) if booted < instance.generation => {
                            inner.in_flight.insert(id);
                            actions.push(Action::Reboot(Box::new(instance.clone())));
                        }
                        Some(RunState::Running) => {
                            inner.seen_running.insert(id);
                            reports.push((id, ActualState::Running, None));
                            if !inner.disk_syncing.contains(&id)
                                && Self::disks_unsettled(&inner, id, &instance.disks)
                            {
                                inner.disk_syncing.insert(id);
                                actions.push(Action::SyncDisks(id, instance.disks.clone()));
                            }
                        }
                        Some(RunState::Paused | RunState::Other) => {}
                        Some(state @ (RunState::Shutoff | RunState::Crashed)) => {
                            reports.push((
                                id,
                                ActualState::Failed,
                                Some(format!("the domain is {state:?}")),
                            ));
                        }
                        None if self.stopped_by_itself(&inner, instance) => {
                            match self.after_stop(instance) {
                                AfterStop::Restart => {
                                    inner.in_flight.insert(id);
                                    actions.push(Action::Restart(Box::new(instance.clone())));
                                }
                                AfterStop::Report(reason) => {
                                    reports.push((id, ActualState::Stopped, Some(reason)));
                                }
                            }
                        }
                        None if inner.reported.get(&id) == Some(&ActualState::Failed) => {}
                        // A disk on another host whose export is not listening yet.
                        None if instance
                            .disks
                            .iter()
                            .any(|d| d.attach && d.source == DiskLocation::Pending) => {}
                        None => {
                            inner.in_flight.insert(id);
                            actions.push(Action::Start(Box::new(instance.clone())));
                        }
                    },
                    Desire::Destroy => {
                        let domain = ours.contains_key(&id);
                        let present = domain || self.dirs.dir(id).exists();
                        if present || inner.reported.get(&id) != Some(&ActualState::Gone) {
                            inner.in_flight.insert(id);
                            actions.push(Action::Destroy { id, domain });
                        }
                    }
                    Desire::Stop => {
                        if !ours.contains_key(&id) {
                            released.extend(
                                instance
                                    .disks
                                    .iter()
                                    .filter(|d| !d.attach)
                                    .map(|d| (id, d.clone())),
                            );
                        }
                        let left = ours.contains_key(&id) || self.dirs.holds_run(id);
                        if left || inner.reported.get(&id) != Some(&ActualState::Stopped) {
                            inner.in_flight.insert(id);
                            actions.push(Action::Stop(id));
                        }
                    }
                }
            }
            // Forget instances the controller no longer mentions.
            inner.reported.retain(|id, _| wanted.contains(id));
            inner.confirmed.retain(|id, _| wanted.contains(id));
            inner.seen_running.retain(|id| wanted.contains(id));
            inner.finished_at.retain(|id, _| wanted.contains(id));
            let disks_wanted: HashSet<(u64, &str)> = desired
                .instances
                .iter()
                .flat_map(|i| i.disks.iter().map(move |d| (i.id, d.volume.as_str())))
                .collect();
            inner
                .reported_disks
                .retain(|(id, volume), _| disks_wanted.contains(&(*id, volume.as_str())));
            let targets_wanted: HashSet<(u64, &str)> = desired
                .instances
                .iter()
                .flat_map(|i| {
                    i.disks
                        .iter()
                        .filter(|d| !d.attach)
                        .map(move |d| (i.id, d.target.as_str()))
                })
                .collect();
            inner
                .detach_requested
                .retain(|(id, target), _| targets_wanted.contains(&(*id, target.as_str())));
            // Pre-caches: fetch what is newly asked, let go of what is no longer asked.
            let asked: HashSet<&str> = desired
                .precache
                .iter()
                .map(|spec| spec.disk.sha256.as_str())
                .collect();
            let unpinned: Vec<String> = inner
                .pinned
                .keys()
                .filter(|sha| !asked.contains(sha.as_str()))
                .cloned()
                .collect();
            for sha in unpinned {
                inner.pinned.remove(&sha);
                tracing::info!(sha256 = %sha, "pre-cached image no longer pinned");
            }
            for spec in &desired.precache {
                let sha = &spec.disk.sha256;
                let recently_failed = inner
                    .precache_failed
                    .get(sha)
                    .is_some_and(|at| at.elapsed() < PRECACHE_RETRY);
                if !inner.pinned.contains_key(sha)
                    && !inner.precaching.contains(sha)
                    && !recently_failed
                {
                    inner.precaching.insert(sha.clone());
                    actions.push(Action::Precache(Box::new(spec.clone())));
                }
            }
            let held = self.images.held();
            if inner.reported_images.as_ref() != Some(&held) {
                inner.reported_images = Some(held.clone());
                let _ = self.reports.send(ReportEvent::Images(held));
            }
        }
        for (id, state, reason) in reports {
            self.report(id, state, reason);
        }
        for (id, disk) in released {
            self.report_disk(id, &disk, DiskReport::Detached, None);
        }
        actions
    }

    /// Runs one action to the end (blocking: libvirt and file I/O) and reports the outcome.
    pub fn execute(&self, action: Action) {
        let id = match action {
            Action::Precache(spec) => return self.precache(&spec),
            Action::SyncDisks(id, disks) => {
                let _guard = tracing::info_span!("instance", id).entered();
                self.sync_disks(id, &disks);
                self.inner
                    .lock()
                    .expect("reconciler lock")
                    .disk_syncing
                    .remove(&id);
                return;
            }
            Action::Start(instance) => {
                let _guard = tracing::info_span!("instance", id = instance.id).entered();
                match self.start(&instance) {
                    Ok(()) => {
                        self.dirs.unfence(instance.id);
                        self.inner
                            .lock()
                            .expect("reconciler lock")
                            .seen_running
                            .insert(instance.id);
                        tracing::info!("domain started");
                        self.report(instance.id, ActualState::Running, None);
                        for disk in instance.disks.iter().filter(|d| d.attach) {
                            self.report_disk(instance.id, disk, DiskReport::Attached, None);
                        }
                    }
                    Err(StartError::NotConfirmed(refusal)) => {
                        tracing::warn!(reason = %refusal, "not started");
                    }
                    Err(StartError::Failed(failure)) => {
                        let reason = error_chain(&failure);
                        tracing::warn!(%reason, "start failed");
                        self.report(instance.id, ActualState::Failed, Some(reason));
                    }
                }
                instance.id
            }
            Action::Restart(instance) if self.dirs.fenced(instance.id).is_some() => {
                let _guard = tracing::info_span!("instance", id = instance.id).entered();
                let fenced = self.dirs.fenced(instance.id).unwrap_or_default();
                match self.start(&instance) {
                    Ok(()) => {
                        self.dirs.unfence(instance.id);
                        let reason = format!(
                            "started again by its host, back in touch with the controller, \
                             which kept the instance there: {fenced}"
                        );
                        tracing::warn!("guest destroyed for the lease: started again");
                        self.report(instance.id, ActualState::Running, Some(reason));
                    }
                    Err(e) => {
                        let reason =
                            format!("{fenced}; starting it again failed: {}", e.into_reason());
                        tracing::warn!(%reason);
                        self.report(instance.id, ActualState::Stopped, Some(reason));
                    }
                }
                instance.id
            }
            Action::Restart(instance) => {
                let _guard = tracing::info_span!("instance", id = instance.id).entered();
                match self.start(&instance) {
                    Ok(()) => {
                        let count = self.dirs.record_restart(instance.id).unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "cannot record the restart");
                            self.dirs.restarts(instance.id).len() + 1
                        });
                        let reason = format!(
                            "started again by its host after the guest stopped by itself \
                             (restart policy always; restart {count})"
                        );
                        tracing::warn!(restarts = count, "guest stopped by itself: started again");
                        self.report(instance.id, ActualState::Running, Some(reason));
                    }
                    Err(e) => {
                        let reason = format!(
                            "the guest stopped by itself and its restart failed: {}",
                            e.into_reason()
                        );
                        tracing::warn!(%reason);
                        self.report(instance.id, ActualState::Stopped, Some(reason));
                    }
                }
                instance.id
            }
            Action::Stop(id) => {
                let _guard = tracing::info_span!("instance", id).entered();
                match self.stop(id) {
                    Ok(reason) => {
                        tracing::info!(reason = reason.as_deref(), "instance stopped");
                        self.inner
                            .lock()
                            .expect("reconciler lock")
                            .seen_running
                            .remove(&id);
                        self.report(id, ActualState::Stopped, reason);
                    }
                    Err(reason) => tracing::warn!(%reason, "stop failed; will retry"),
                }
                id
            }
            Action::Reboot(instance) => {
                let _guard = tracing::info_span!("instance", id = instance.id).entered();
                match self.reboot(&instance) {
                    Ok(()) => {
                        tracing::info!("instance rebooted");
                        self.report(instance.id, ActualState::Running, None);
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "reboot failed");
                        self.report(instance.id, ActualState::Failed, Some(reason));
                    }
                }
                instance.id
            }
            Action::Destroy { id, domain } => {
                let _guard = tracing::info_span!("instance", id).entered();
                match self.destroy(id, domain) {
                    Ok(()) => {
                        tracing::info!("instance destroyed and cleaned up");
                        self.report(id, ActualState::Gone, None);
                    }
                    Err(reason) => tracing::warn!(%reason, "destroy failed; will retry"),
                }
                id
            }
        };
        let mut inner = self.inner.lock().expect("reconciler lock");
        inner.in_flight.remove(&id);
        inner.epoch += 1;
        let epoch = inner.epoch;
        inner.finished_at.insert(id, epoch);
    }

    /// Fetches a pre-cache request's artifacts and holds them.
    fn precache(&self, spec: &stratus_common::agent::ImageSpec) {
        let sha = spec.disk.sha256.clone();
        let result = prepare(&self.images, spec);
        let mut inner = self.inner.lock().expect("reconciler lock");
        inner.precaching.remove(&sha);
        match result {
            Ok(image) => {
                inner
                    .pinned
                    .insert(sha.clone(), self.images.hold(&image.digests));
                inner.precache_failed.remove(&sha);
                tracing::info!(sha256 = %sha, image = %spec.name, "image pre-cached");
            }
            Err(e) => {
                inner
                    .precache_failed
                    .insert(sha.clone(), std::time::Instant::now());
                tracing::warn!(sha256 = %sha, image = %spec.name, reason = %error_chain(&e), "pre-cache failed; will retry");
            }
        }
    }

    /// Plugs in and unplugs a running instance's persistent disks, reporting each change. A
    /// detach is reported done only once libvirt's live definition no longer has the device,
    /// which happens when the guest released it.
    fn sync_disks(&self, id: u64, disks: &[DesiredDisk]) {
        let domain = domain_name(&self.cluster_id, id);
        let present = match self.hv.disk_targets(&domain) {
            Ok(targets) => targets,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the domain's disks");
                return;
            }
        };
        for disk in disks {
            let here = present.contains(&disk.target);
            if disk.attach {
                if here {
                    self.report_disk(id, disk, DiskReport::Attached, None);
                    continue;
                }
                let plugged = match self.domain_disk(disk) {
                    Ok(Some(d)) => {
                        let asked = std::time::Instant::now();
                        let plugged = self
                            .hv
                            .attach_disk(&domain, &d)
                            .map_err(|e| format!("libvirt: {}", error_chain(&e)));
                        if plugged.is_ok() {
                            self.timings
                                .disk_attach
                                .observe(asked.elapsed().as_secs_f64());
                        }
                        plugged
                    }
                    Ok(None) => continue,
                    Err(e) => Err(error_chain(&e)),
                };
                match plugged {
                    Ok(()) => self.report_disk(id, disk, DiskReport::Attached, None),
                    Err(reason) => {
                        tracing::warn!(volume = %disk.volume, %reason, "hot-plug failed");
                        self.report_disk(id, disk, DiskReport::Failed, Some(reason));
                    }
                }
            } else if !here {
                self.detach_done(id, disk);
                self.report_disk(id, disk, DiskReport::Detached, None);
            } else {
                let key = (id, disk.target.clone());
                let asked = self
                    .inner
                    .lock()
                    .expect("reconciler lock")
                    .detach_requested
                    .get(&key)
                    .is_some_and(|unplug| unplug.last.elapsed() < self.detach_retry);
                if asked {
                    continue;
                }
                if let Err(e) = self.hv.detach_disk(&domain, &disk.target) {
                    tracing::warn!(volume = %disk.volume, error = %error_chain(&e), "unplug request failed; will retry");
                    continue;
                }
                {
                    let mut inner = self.inner.lock().expect("reconciler lock");
                    let now = std::time::Instant::now();
                    inner
                        .detach_requested
                        .entry(key)
                        .and_modify(|unplug| unplug.last = now)
                        .or_insert(Unplug {
                            first: now,
                            last: now,
                        });
                }
                // Most guests release the device within a second: wait a little, so the
                // user hears of it now rather than at the next pass.
                let deadline = std::time::Instant::now() + self.detach_wait;
                while std::time::Instant::now() < deadline {
                    match self.hv.disk_targets(&domain) {
                        Ok(targets) if !targets.contains(&disk.target) => {
                            self.detach_done(id, disk);
                            self.report_disk(id, disk, DiskReport::Detached, None);
                            break;
                        }
                        Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// The guest released a disk it was asked to unplug: how long that took, from the first
    /// request.
    fn detach_done(&self, id: u64, disk: &DesiredDisk) {
        let started = self
            .inner
            .lock()
            .expect("reconciler lock")
            .detach_requested
            .remove(&(id, disk.target.clone()));
        if let Some(unplug) = started {
            self.timings
                .disk_detach
                .observe(unplug.first.elapsed().as_secs_f64());
        }
    }

    /// Destroys the domain (when it is this host's), removes the instance's files and lets go
    /// of its images.
    fn destroy(&self, id: u64, domain: bool) -> Result<(), String> {
        if domain {
            let name = domain_name(&self.cluster_id, id);
            self.hv
                .destroy(&name)
                .map_err(|e| format!("libvirt: {}", error_chain(&e)))?;
        }
        for tap in self.dirs.read_taps(id) {
            self.network
                .detach(&tap)
                .map_err(|e| format!("network: {}", error_chain(&e)))?;
        }
        let dir = self.dirs.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
        }
        let held = self
            .inner
            .lock()
            .expect("reconciler lock")
            .holds
            .remove(&id);
        drop(held);
        self.images.evict();
        Ok(())
    }
}

mod fence;
mod power;
mod restart;
mod start;
pub use power::host_boot;
use start::StartError;
pub mod storage;

use restart::AfterStop;

#[cfg(test)]
pub(crate) mod tests;
