//! What the host offers: CPUs, memory and the disk under the state directory (sysinfo).

use std::path::Path;

use sysinfo::{Disks, System};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// Measures the host; `reserved_memory_mib` is kept back for the host itself.
pub fn measure(state_dir: &Path, reserved_memory_mib: u64) -> Result<Inventory, sysinfo::Error> {
    let mut system = System::new()?;
    system.refresh_memory();
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mib = (system.total_memory() / (1024 * 1024)).saturating_sub(reserved_memory_mib);
    // The disk holding the state directory: the mount point that is the longest prefix of it.
    let disks = Disks::new_with_refreshed_list()?;
    let disk_gib = disks
        .iter()
        .filter(|d| state_dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0, |d| d.total_space() / (1 << 30));
    Ok(Inventory {
        vcpus,
        memory_mib,
        disk_gib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_this_host() {
        let inv = measure(Path::new("/"), 0).unwrap();
        assert!(inv.vcpus >= 1);
        assert!(inv.memory_mib > 0);
        assert!(inv.disk_gib > 0, "the root file system has a size");
        let reserved = measure(Path::new("/"), 256).unwrap();
        assert!(reserved.memory_mib < inv.memory_mib);
    }
}
