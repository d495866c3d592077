//! An instance's directory on this host, `<state_dir>/instances/<id>/`, and every file in it:
//! the overlay (`disk.qcow2`), the console log, the cloud-init seed, the taps made for its NICs
//! (`taps`), the cached artifacts it holds (`artifacts`), which run its domain belongs to
//! (`booted`: generation and host boot), the restarts its host made (`restarts`) and why its
//! guest was destroyed for the host's lease (`fenced`). The reconciler decides; this module
//! only names, reads and writes.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the files made for each instance live: `<state_dir>/instances/<id>/`.
#[derive(Debug, Clone)]
pub struct InstanceDirs {
    pub(crate) root: PathBuf,
}

impl InstanceDirs {
    pub fn new(state_dir: &std::path::Path) -> Self {
        Self {
            root: state_dir.join("instances"),
        }
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    pub fn disk(&self, id: u64) -> PathBuf {
        self.dir(id).join("disk.qcow2")
    }

    pub fn console_log(&self, id: u64) -> PathBuf {
        self.dir(id).join("console.log")
    }

    /// The taps made for an instance's NICs, one per line.
    pub fn taps(&self, id: u64) -> PathBuf {
        self.dir(id).join("taps")
    }

    pub(crate) fn read_taps(&self, id: u64) -> Vec<String> {
        std::fs::read_to_string(self.taps(id))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The cached artifacts an instance uses, one SHA-256 per line.
    pub fn artifacts(&self, id: u64) -> PathBuf {
        self.dir(id).join("artifacts")
    }

    /// Records the artifacts an instance uses (written whole, then renamed into place).
    pub(crate) fn write_artifacts(&self, id: u64, digests: &[String]) -> std::io::Result<()> {
        let tmp = self.dir(id).join("artifacts.tmp");
        std::fs::write(&tmp, digests.join("\n"))?;
        std::fs::rename(&tmp, self.artifacts(id))
    }

    pub(crate) fn read_artifacts(&self, id: u64) -> Vec<String> {
        std::fs::read_to_string(self.artifacts(id))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// IDs of the instances that have a directory here.
    pub fn instance_ids(&self) -> Vec<u64> {
        std::fs::read_dir(&self.root)
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `<generation> <host boot ID>` of the domain last booted for the instance.
    fn boot_record(&self, id: u64) -> std::path::PathBuf {
        self.dir(id).join("booted")
    }

    /// Records that the instance's domain was booted for `generation` during host boot `boot`.
    pub(crate) fn record_boot(&self, id: u64, generation: u64, boot: &str) -> std::io::Result<()> {
        let tmp = self.dir(id).join("booted.tmp");
        std::fs::write(&tmp, format!("{generation} {boot}\n"))?;
        std::fs::rename(&tmp, self.boot_record(id))
    }

    /// The generation and host boot of the domain last booted, if one was recorded.
    pub(crate) fn read_boot(&self, id: u64) -> Option<(u64, String)> {
        let text = std::fs::read_to_string(self.boot_record(id)).ok()?;
        let (generation, boot) = text.trim().split_once(' ')?;
        Some((generation.parse().ok()?, boot.to_owned()))
    }

    /// Forgets the domain's run (it was powered off for good).
    pub(crate) fn forget_boot(&self, id: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.boot_record(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The generation the domain last booted was booted for, if one was recorded.
    pub(crate) fn booted_for(&self, id: u64) -> Option<u64> {
        self.read_boot(id).map(|(generation, _)| generation)
    }

    /// The generation the running domain was booted for (0 when none was recorded, as for
    /// domains started before generations existed).
    pub(crate) fn booted_generation(&self, id: u64) -> u64 {
        self.read_boot(id).map_or(0, |(generation, _)| generation)
    }

    /// Whether anything of a run is left besides the directory: a boot record or taps.
    pub(crate) fn holds_run(&self, id: u64) -> bool {
        self.boot_record(id).exists() || !self.read_taps(id).is_empty()
    }

    /// The restarts of the restart policy, one line of Unix seconds each.
    fn restarts_file(&self, id: u64) -> std::path::PathBuf {
        self.dir(id).join("restarts")
    }

    /// When the guest was restarted by its host, oldest first (Unix seconds).
    pub(crate) fn restarts(&self, id: u64) -> Vec<u64> {
        std::fs::read_to_string(self.restarts_file(id))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Records a restart now; answers how many there were in all.
    pub(crate) fn record_restart(&self, id: u64) -> std::io::Result<usize> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.restarts_file(id))?;
        writeln!(file, "{}", now_secs())?;
        file.sync_all()?;
        Ok(self.restarts(id).len())
    }

    /// Why the guest was destroyed for the host's lease (self-fencing), while it is.
    fn fence_marker(&self, id: u64) -> PathBuf {
        self.dir(id).join("fenced")
    }

    /// Marks the instance's guest destroyed for the lease, saying why.
    pub fn mark_fenced(&self, id: u64, why: &str) -> std::io::Result<()> {
        std::fs::write(self.fence_marker(id), why)
    }

    /// Why the instance's guest was destroyed for the lease, if it was and has not run since.
    pub fn fenced(&self, id: u64) -> Option<String> {
        std::fs::read_to_string(self.fence_marker(id)).ok()
    }

    /// Forgets that the guest was destroyed for the lease (it runs again).
    pub fn unfence(&self, id: u64) {
        let _ = std::fs::remove_file(self.fence_marker(id));
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
