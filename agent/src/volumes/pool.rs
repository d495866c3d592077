//! The volume pool: one directory of sparse raw files, `<id>.raw`, one per volume, named by
//! the volume's UUID. A file is published complete (created under a temporary name, sized,
//! fsynced, then linked into place), so a crash never leaves a half-made volume under its
//! real name.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use stratus_common::volumes::is_uuid;

const SUFFIX: &str = ".raw";
const TMP_SUFFIX: &str = ".tmp";

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("volume ID {0:?} is not a lowercase hyphenated UUID")]
    InvalidId(String),
    #[error("volume size {0} is not a positive multiple of 512 bytes")]
    InvalidSize(u64),
    #[error("volume {id} exists with {existing} bytes, not {wanted}")]
    SizeMismatch {
        id: String,
        existing: u64,
        wanted: u64,
    },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PoolError + 'a {
    move |source| PoolError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A directory of volumes. Meant to be the only user of its directory within a process
/// ([`VolumePool::open`] removes temporary files it finds there).
#[derive(Debug)]
pub struct VolumePool {
    dir: PathBuf,
}

impl VolumePool {
    /// Opens the pool at `dir`, creating it if missing, and removes temporary files a crash
    /// left behind.
    ///
    /// A new directory gets mode 0711: others cannot list it (volume IDs are not discoverable
    /// from it), but QEMU, which runs as its own user on a libvirt host, can reach the file
    /// of a volume attached to a guest of this host (libvirt gives that one file to QEMU's
    /// user for the time it is attached). Volume files themselves are 0600.
    pub fn open(dir: &Path) -> Result<Self, PoolError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                .map_err(io_error("set the mode of", dir))?;
        }
        let pool = Self {
            dir: dir.to_path_buf(),
        };
        for entry in std::fs::read_dir(dir).map_err(io_error("read", dir))? {
            let entry = entry.map_err(io_error("read", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing an unfinished volume file");
                std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
            }
        }
        Ok(pool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of volume `id` (whether it exists or not).
    pub fn path(&self, id: &str) -> Result<PathBuf, PoolError> {
        // The ID becomes a file name: only the strict UUID form, never a path.
        if !is_uuid(id) {
            return Err(PoolError::InvalidId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}{SUFFIX}")))
    }

    /// The size of volume `id` in bytes, `None` when the pool does not hold it.
    pub fn size(&self, id: &str) -> Result<Option<u64>, PoolError> {
        let path = self.path(id)?;
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("inspect", &path)(e)),
        }
    }

    /// Makes volume `id`: a sparse raw file of `size_bytes` (zeros to the guest, no blocks
    /// allocated). Idempotent: a volume that exists with this size is left as it is (and
    /// `Ok(false)` returned); with another size it is an error, never resized or replaced.
    // `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn create(&self, id: &str, size_bytes: u64) -> Result<bool, PoolError> {
        let path = self.path(id)?;
        if size_bytes == 0 || size_bytes % 512 != 0 {
            return Err(PoolError::InvalidSize(size_bytes));
        }
        let existing = |existing: u64| {
            if existing == size_bytes {
                Ok(false)
            } else {
                Err(PoolError::SizeMismatch {
                    id: id.to_owned(),
                    existing,
                    wanted: size_bytes,
                })
            }
        };
        if let Some(size) = self.size(id)? {
            return existing(size);
        }

        // A unique temporary name, so concurrent creates of one volume do not share a file.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{id}{SUFFIX}.{}.{}{TMP_SUFFIX}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        let cleanup = RemoveOnDrop(&tmp);
        file.set_len(size_bytes).map_err(io_error("extend", &tmp))?;
        file.sync_all().map_err(io_error("fsync", &tmp))?;
        drop(file);
        // A link, not a rename: it never replaces a volume another create published
        // meanwhile (which a guest may already have opened).
        let created = match std::fs::hard_link(&tmp, &path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_error("publish", &path)(e)),
        };
        drop(cleanup);
        self.sync_dir()?;
        if !created {
            let size = self.size(id)?.unwrap_or(0);
            return existing(size);
        }
        tracing::info!(volume = id, size_bytes, "volume created");
        Ok(true)
    }

    /// Removes volume `id`; `Ok(false)` when the pool did not hold it.
    pub fn delete(&self, id: &str) -> Result<bool, PoolError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.sync_dir()?;
                tracing::info!(volume = id, "volume deleted");
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }

    /// The IDs of the volumes the pool holds, sorted. Other files are ignored.
    pub fn list(&self) -> Result<Vec<String>, PoolError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_error("read", &self.dir))? {
            let entry = entry.map_err(io_error("read", &self.dir))?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) {
                if is_uuid(id) {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// `(total, free)` bytes of the file system holding the pool, as an unprivileged user
    /// sees it (the blocks reserved for root are not free for volumes).
    pub fn space(&self) -> Result<(u64, u64), PoolError> {
        let stat = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| io_error("stat the file system of", &self.dir)(e.into()))?;
        let unit = stat.fragment_size();
        Ok((
            stat.blocks().saturating_mul(unit),
            stat.blocks_available().saturating_mul(unit),
        ))
    }

    /// The bytes the pool's volumes may take in all: what the file system has free for them
    /// plus what its volumes already occupy. The controller takes the volumes' full sizes from
    /// it, so what it places here fits even once every (sparse) volume is written full, and
    /// whatever else shares the file system is counted out.
    pub fn capacity(&self) -> Result<u64, PoolError> {
        let (_, free) = self.space()?;
        Ok(free.saturating_add(self.occupied()?))
    }

    /// The bytes the pool's volumes occupy on disk (their allocated blocks).
    pub fn occupied(&self) -> Result<u64, PoolError> {
        let mut occupied: u64 = 0;
        for id in self.list()? {
            let path = self.path(&id)?;
            match std::fs::metadata(&path) {
                Ok(meta) => {
                    occupied =
                        occupied.saturating_add(std::os::unix::fs::MetadataExt::blocks(&meta) * 512)
                }
                // Deleted meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("stat", &path)(e)),
            }
        }
        Ok(occupied)
    }

    /// Makes a link or unlink in the pool durable.
    fn sync_dir(&self) -> Result<(), PoolError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }
}

/// Removes a temporary file when dropped, whatever happened.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a temporary file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const A: &str = "9c5a2c03-8243-4a1b-a248-0f0d22d948c2";
    const B: &str = "0f0d22d9-48c2-4a1b-a248-9c5a2c038243";

    #[test]
    fn the_capacity_counts_what_the_volumes_occupy_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = VolumePool::open(&tmp.path().join("pool")).unwrap();
        assert_eq!(pool.occupied().unwrap(), 0);
        // Another file on the same file system is not the pool's.
        std::fs::write(tmp.path().join("other.bin"), vec![7u8; 4 << 20]).unwrap();
        assert_eq!(pool.occupied().unwrap(), 0);
        // A sparse volume occupies (next to) nothing until written into.
        pool.create(A, 64 << 20).unwrap();
        assert!(pool.occupied().unwrap() < 1 << 20);
        let mut file = OpenOptions::new()
            .write(true)
            .open(pool.path(A).unwrap())
            .unwrap();
        io::Write::write_all(&mut file, &vec![1u8; 8 << 20]).unwrap();
        file.sync_all().unwrap();
        let occupied = pool.occupied().unwrap();
        assert!(
            (8 << 20..9 << 20).contains(&occupied),
            "8 MiB written: {occupied}"
        );
        let capacity = pool.capacity().unwrap();
        let (total, _) = pool.space().unwrap();
        assert!(occupied <= capacity && capacity <= total);
    }

    #[test]
    fn volumes_are_sparse_files_created_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        let pool = VolumePool::open(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);

        assert!(pool.create(A, 1 << 30).unwrap());
        let path = pool.path(A).unwrap();
        assert_eq!(path, dir.join(format!("{A}.raw")));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Sparse: no data blocks for a GiB of zeros.
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());

        // Idempotent with the same size, refused with another, never changed.
        assert!(!pool.create(A, 1 << 30).unwrap());
        assert!(matches!(
            pool.create(A, 2 << 30),
            Err(PoolError::SizeMismatch { existing, wanted, .. })
                if existing == 1 << 30 && wanted == 2 << 30
        ));
        assert_eq!(pool.size(A).unwrap(), Some(1 << 30));
        assert_eq!(pool.size(B).unwrap(), None);

        pool.create(B, 512).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a volume").unwrap();
        assert_eq!(pool.list().unwrap(), [B, A]);

        assert!(pool.delete(A).unwrap());
        assert!(!pool.delete(A).unwrap());
        assert!(!path.exists());
        assert_eq!(pool.list().unwrap(), [B]);
        // Nothing temporary is left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn bad_ids_and_sizes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = VolumePool::open(tmp.path()).unwrap();
        for id in [
            "",
            "../9c5a2c03-8243-4a1b-a248-0f0d22d948c",
            "9C5A2C03-8243-4A1B-A248-0F0D22D948C2",
            "9c5a2c03-8243-4a1b-a248-0f0d22d948c2/",
            "x",
        ] {
            assert!(
                matches!(pool.path(id), Err(PoolError::InvalidId(_))),
                "{id}"
            );
            assert!(matches!(pool.create(id, 512), Err(PoolError::InvalidId(_))));
            assert!(matches!(pool.delete(id), Err(PoolError::InvalidId(_))));
        }
        for size in [0, 1, 513] {
            assert!(matches!(
                pool.create(A, size),
                Err(PoolError::InvalidSize(s)) if s == size
            ));
        }
        assert!(pool.list().unwrap().is_empty());
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let leftover = tmp.path().join(format!(".{A}.raw.1.0.tmp"));
        std::fs::write(&leftover, b"half").unwrap();
        std::fs::write(tmp.path().join(format!("{B}.raw")), b"").unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let pool = VolumePool::open(tmp.path()).unwrap();
        assert!(!leftover.exists());
        assert_eq!(pool.list().unwrap(), [B]);
        // An existing directory keeps its mode.
        let mode = std::fs::metadata(tmp.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
    }

    #[test]
    fn space_is_that_of_the_file_system() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = VolumePool::open(tmp.path()).unwrap();
        let (total, free) = pool.space().unwrap();
        assert!(total > 0);
        assert!(free <= total);
        // Creating a sparse volume takes (almost) nothing.
        pool.create(A, 1 << 40).unwrap();
        let (_, after) = pool.space().unwrap();
        assert!(after + (64 << 20) > free, "{free} -> {after}");
    }
}
