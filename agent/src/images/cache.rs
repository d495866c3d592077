//! The host's content-addressed image cache: `<root>/sha256/<hex>` holds each artifact (image
//! disk, kernel, initrd) under the SHA-256 of its content, written once and never changed.
//!
//! - A file is published (renamed into `sha256/`) only after its content was hashed, checked
//!   and fsynced in `tmp/`; `tmp/` is emptied at start-up, so a crash mid-download leaves
//!   nothing usable behind.
//! - Disks must be standalone raw or qcow2 of the format they are declared to be (checked by our
//!   own header inspector before they are published): a qcow2 with a backing file or an
//!   external data file, or a disk whose content is not its declared format, never enters.
//! - A download that declares no size may not write more than the cache's budget.
//! - Single flight: concurrent `ensure` calls for one missing artifact wait for one download.
//! - Reference counts: an artifact used by an instance is never evicted; the others are evicted
//!   least recently used once the cache exceeds its byte budget.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use stratus_common::api::{Artifact, DiskFormat};
use stratus_common::names::is_sha256_hex;

use super::download::{DownloadError, Downloader};
use super::qcow2::{self, DetectedFormat};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("image cache {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("{0}")]
    Unusable(String),
    /// The same failure, seen by a caller that waited for another's download.
    #[error("{0}")]
    Shared(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    /// Larger is more recent.
    last_used: u64,
    refs: u32,
}

/// A download in progress and, once finished, its outcome for the callers that waited.
struct Flight {
    outcome: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    in_flight: HashMap<String, Arc<Flight>>,
    clock: u64,
    downloads: u64,
    hits: u64,
    misses: u64,
    download_bytes: u64,
}

/// Counters for the benchmarks, the host's report and its metrics. The counts are of this
/// process's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: u64,
    /// Downloads started by this process.
    pub downloads: u64,
    /// [`ImageCache::ensure`] calls that found the artifact cached.
    pub hits: u64,
    /// Calls that did not: each started a download or waited for one under way.
    pub misses: u64,
    /// Bytes of the artifacts downloaded and published (after decompression).
    pub download_bytes: u64,
}

/// Artifacts kept from eviction while this lives (see [`ImageCache::hold`]); an instance owns
/// the one of its images, the reconciler the one of each pre-cached image.
#[must_use = "dropping it lets the artifacts be evicted"]
pub struct Held {
    cache: Arc<ImageCache>,
    digests: Vec<String>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Held").field(&self.digests).finish()
    }
}

impl Held {
    /// SHA-256 of the artifacts held.
    pub fn digests(&self) -> &[String] {
        &self.digests
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for digest in &self.digests {
            self.cache.release(digest);
        }
    }
}

pub struct ImageCache {
    root: PathBuf,
    budget_bytes: u64,
    downloader: Downloader,
    inner: Mutex<Inner>,
}

impl ImageCache {
    /// Opens the cache under `root`, dropping leftovers of interrupted downloads and indexing
    /// what is there (oldest modification first, as least recently used).
    pub fn open(
        root: &Path,
        budget_bytes: u64,
        downloader: Downloader,
    ) -> Result<Self, CacheError> {
        let (objects, tmp) = (root.join("sha256"), root.join("tmp"));
        for dir in [root, &objects] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            // qemu (user libvirt-qemu) must traverse to the bases and kernels.
            set_mode(dir, 0o755).map_err(io_err(dir))?;
        }
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        set_mode(&tmp, 0o700).map_err(io_err(&tmp))?;
        let mut found = Vec::new();
        for item in fs::read_dir(&objects).map_err(io_err(&objects))? {
            let item = item.map_err(io_err(&objects))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let meta = item.metadata().map_err(io_err(&item.path()))?;
            if is_sha256_hex(&name) && meta.is_file() {
                found.push((meta.modified().ok(), name, meta.len()));
            }
        }
        found.sort();
        let mut inner = Inner::default();
        for (_, sha, bytes) in found {
            inner.clock += 1;
            inner.entries.insert(
                sha,
                Entry {
                    bytes,
                    last_used: inner.clock,
                    refs: 0,
                },
            );
        }
        Ok(Self {
            root: root.to_owned(),
            budget_bytes,
            downloader,
            inner: Mutex::new(inner),
        })
    }

    /// Where the artifact with this digest lives (whether or not it is there).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// Makes sure the artifact is in the cache and returns its path; downloads it at most once
    /// however many callers ask at the same time. `disk` is the format a disk is declared to
    /// be (`None` for kernels and initrds).
    pub fn ensure(
        &self,
        artifact: &Artifact,
        disk: Option<DiskFormat>,
    ) -> Result<PathBuf, CacheError> {
        let sha = artifact.sha256.as_str();
        if !is_sha256_hex(sha) {
            return Err(CacheError::Unusable(format!("invalid sha256 {sha:?}")));
        }
        let (flight, leader) = {
            let mut inner = self.inner.lock().expect("cache lock");
            inner.clock += 1;
            let now = inner.clock;
            if let Some(entry) = inner.entries.get_mut(sha) {
                entry.last_used = now;
                inner.hits += 1;
                return Ok(self.path(sha));
            }
            inner.misses += 1;
            match inner.in_flight.get(sha) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight {
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    inner.in_flight.insert(sha.to_owned(), flight.clone());
                    inner.downloads += 1;
                    (flight, true)
                }
            }
        };
        if !leader {
            let mut outcome = flight.outcome.lock().expect("flight lock");
            while outcome.is_none() {
                outcome = flight.done.wait(outcome).expect("flight lock");
            }
            return match outcome.as_ref().expect("finished") {
                Ok(()) => Ok(self.path(sha)),
                Err(reason) => Err(CacheError::Shared(reason.clone())),
            };
        }
        let result = self.download(artifact, disk);
        {
            let mut inner = self.inner.lock().expect("cache lock");
            inner.in_flight.remove(sha);
            if let Ok(bytes) = &result {
                inner.download_bytes += *bytes;
                inner.clock += 1;
                let last_used = inner.clock;
                inner.entries.insert(
                    sha.to_owned(),
                    Entry {
                        bytes: *bytes,
                        last_used,
                        refs: 0,
                    },
                );
            }
        }
        *flight.outcome.lock().expect("flight lock") = Some(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| crate::failure::error_chain(e)),
        );
        flight.done.notify_all();
        result.map(|_| self.path(sha))
    }

    /// Downloads into `tmp/`, checks, publishes; returns the size.
    fn download(&self, artifact: &Artifact, disk: Option<DiskFormat>) -> Result<u64, CacheError> {
        let sha = &artifact.sha256;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{sha}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let started = std::time::Instant::now();
        let got = match self.downloader.fetch(artifact, &tmp, self.budget_bytes) {
            Ok(got) => got,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        if let Some(declared) = disk {
            if let Err(reason) = standalone_disk(&tmp, declared) {
                let _ = fs::remove_file(&tmp);
                return Err(CacheError::Unusable(reason));
            }
        }
        let target = self.path(sha);
        set_mode(&tmp, 0o644).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        let objects = self.root.join("sha256");
        fs::File::open(&objects)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&objects))?;
        tracing::info!(sha256 = %sha, bytes = got.bytes, from = %got.location, secs = started.elapsed().as_secs_f64(), "image cached");
        Ok(got.bytes)
    }

    /// Holds `digests` in the cache (none is evicted) for as long as the answer lives: what an
    /// instance's disk stands on, or a pre-cached image.
    pub fn hold(self: &Arc<Self>, digests: &[String]) -> Held {
        for digest in digests {
            self.acquire(digest);
        }
        Held {
            cache: self.clone(),
            digests: digests.to_vec(),
        }
    }

    /// Marks the artifact as used: it will not be evicted until released.
    fn acquire(&self, sha256: &str) {
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some(entry) = inner.entries.get_mut(sha256) {
            entry.refs += 1;
        }
    }

    fn release(&self, sha256: &str) {
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some(entry) = inner.entries.get_mut(sha256) {
            entry.refs = entry.refs.saturating_sub(1);
        }
    }

    /// Evicts least recently used artifacts no instance uses until the cache fits its budget;
    /// returns what was evicted.
    pub fn evict(&self) -> Vec<String> {
        let mut inner = self.inner.lock().expect("cache lock");
        let mut total: u64 = inner.entries.values().map(|e| e.bytes).sum();
        let mut candidates: Vec<(u64, String, u64)> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.refs == 0)
            .map(|(sha, e)| (e.last_used, sha.clone(), e.bytes))
            .collect();
        candidates.sort();
        let mut evicted = Vec::new();
        for (_, sha, bytes) in candidates {
            if total <= self.budget_bytes {
                break;
            }
            let path = self.path(&sha);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict");
                    continue;
                }
            }
            inner.entries.remove(&sha);
            total -= bytes;
            evicted.push(sha);
        }
        if !evicted.is_empty() {
            tracing::info!(
                evicted = evicted.len(),
                bytes_left = total,
                "image cache evicted"
            );
        }
        evicted
    }

    /// The digests of everything cached.
    pub fn held(&self) -> Vec<String> {
        let mut held: Vec<_> = self
            .inner
            .lock()
            .expect("cache lock")
            .entries
            .keys()
            .cloned()
            .collect();
        held.sort();
        held
    }

    pub fn refs(&self, sha256: &str) -> u32 {
        self.inner
            .lock()
            .expect("cache lock")
            .entries
            .get(sha256)
            .map_or(0, |e| e.refs)
    }

    /// The bytes the cache may hold before it evicts unused artifacts.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().expect("cache lock");
        CacheStats {
            entries: inner.entries.len(),
            bytes: inner.entries.values().map(|e| e.bytes).sum(),
            downloads: inner.downloads,
            hits: inner.hits,
            misses: inner.misses,
            download_bytes: inner.download_bytes,
        }
    }
}

/// A disk may enter the cache only as a standalone raw or qcow2 image of its declared format.
fn standalone_disk(path: &Path, declared: DiskFormat) -> Result<(), String> {
    let info = qcow2::inspect(path).map_err(|e| {
        format!(
            "cannot inspect the image: {}",
            crate::failure::error_chain(&e)
        )
    })?;
    let found = match info.format {
        DetectedFormat::Raw => DiskFormat::Raw,
        DetectedFormat::Qcow2 => DiskFormat::Qcow2,
        other => return Err(format!("image format {} is not allowed", other.as_str())),
    };
    if let Some(backing) = info.backing_file {
        return Err(format!(
            "image has a backing file ({backing}); base images must be standalone"
        ));
    }
    if info.external_data_file {
        return Err("image uses an external data file".into());
    }
    if found != declared {
        return Err(format_mismatch(declared, found));
    }
    Ok(())
}

/// The reason a disk whose content is not its declared format is refused.
pub fn format_mismatch(declared: DiskFormat, found: DiskFormat) -> String {
    format!(
        "image format mismatch: declared {}, found {}",
        declared.as_str(),
        found.as_str()
    )
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests;
