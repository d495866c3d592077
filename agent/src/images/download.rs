//! Fetching one artifact into a file: tries the locations in order (with a retry each for
//! transient failures), streams the body through the declared decompressor, hashes and writes
//! in the same pass, fsyncs, and checks size and SHA-256. The caller publishes the file only if
//! this returns `Ok`. Nothing is written past a bound: the declared size, or, for an artifact
//! that declares none, the site's maximum; so a decompression bomb stops at the bound.
//!
//! Where a location may point is restricted: an `http(s)` host is resolved first and every
//! address checked (loopback, link-local, cloud metadata and unspecified addresses are refused
//! unless the site allows loopback explicitly), and the connection is then pinned to the
//! checked address so a second DNS answer cannot redirect it. Redirects are not followed.
//! `file://` locations are read only under the configured roots.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use stratus_common::api::{Artifact, Compression};

/// Where artifacts may come from, and how large they may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePolicy {
    /// Allow `http(s)` locations that resolve to loopback addresses (tests, single-host sites).
    pub allow_loopback: bool,
    /// Directories `file://` locations may read from (none by default).
    pub file_roots: Vec<PathBuf>,
    /// The most bytes (after decompression) an artifact that declares no size may have.
    pub max_undeclared_bytes: u64,
}

/// [`SourcePolicy::max_undeclared_bytes`] unless configured: 32 GiB.
pub const DEFAULT_MAX_UNDECLARED_BYTES: u64 = 32 << 30;

impl Default for SourcePolicy {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            file_roots: Vec::new(),
            max_undeclared_bytes: DEFAULT_MAX_UNDECLARED_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("location {location} is refused: {why}")]
    Refused { location: String, why: String },
    #[error("cannot fetch {location}: {why}")]
    Fetch { location: String, why: String },
    #[error("cannot fetch {location}: {status}")]
    Status { location: String, status: String },
    #[error("{location} is not valid {compression} data: {why}")]
    Corrupt {
        location: String,
        compression: &'static str,
        why: String,
    },
    #[error("image checksum mismatch")]
    ChecksumMismatch,
    #[error("image size mismatch: declared {declared} bytes, got {got}")]
    SizeMismatch { declared: u64, got: u64 },
    #[error("image larger than its declared {declared} bytes")]
    TooLarge { declared: u64 },
    #[error("image larger than {limit} bytes, {why}")]
    OverLimit { limit: u64, why: &'static str },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no location could be fetched: {0}")]
    AllFailed(String),
}

/// What a finished download checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub bytes: u64,
    pub location: String,
}

/// Addresses an image location must not reach unless allowed: loopback, link-local (which
/// holds the cloud metadata service 169.254.169.254), unspecified, and the other well-known
/// metadata addresses.
pub fn address_refusal(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let metadata_v4 = [Ipv4Addr::new(100, 100, 100, 200)];
    let metadata_v6 = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => (!allow_loopback).then_some("loopback address"),
        IpAddr::V6(v6) if v6.is_loopback() => (!allow_loopback).then_some("loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local or metadata address"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local address"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => Some("unspecified address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified address"),
        IpAddr::V4(v4) if metadata_v4.contains(&v4) => Some("metadata address"),
        IpAddr::V6(v6) if metadata_v6.contains(&v6) => Some("metadata address"),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .and_then(|v4| address_refusal(IpAddr::V4(v4), allow_loopback)),
        IpAddr::V4(_) => None,
    }
}

/// The most bytes a download may write, and where that bound comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Declared(u64),
    Undeclared(u64),
    Room(u64),
}

impl Limit {
    fn bytes(self) -> u64 {
        match self {
            Limit::Declared(n) | Limit::Undeclared(n) | Limit::Room(n) => n,
        }
    }

    fn exceeded(self) -> DownloadError {
        match self {
            Limit::Declared(declared) => DownloadError::TooLarge { declared },
            Limit::Undeclared(limit) => DownloadError::OverLimit {
                limit,
                why: "the most accepted for an image that declares no size (max_image_bytes)",
            },
            Limit::Room(limit) => DownloadError::OverLimit {
                limit,
                why: "the room of the image cache",
            },
        }
    }
}

/// An opened location: the body and, for http, the declared length.
struct Opened {
    body: Box<dyn Read + Send>,
}

/// Fetches artifacts; one per agent (keeps its HTTP connection pool).
pub struct Downloader {
    policy: SourcePolicy,
}

/// Whether a failure may go away if tried again (connection trouble, 5xx).
fn transient(e: &DownloadError) -> bool {
    matches!(e, DownloadError::Fetch { .. })
}

impl Downloader {
    pub fn new(policy: SourcePolicy) -> Self {
        Self { policy }
    }

    pub fn policy(&self) -> &SourcePolicy {
        &self.policy
    }

    /// Fetches `artifact` into `target` (created, must not exist), trying each location; an
    /// artifact that declares no size may not exceed `room` (what the cache can take).
    pub fn fetch(
        &self,
        artifact: &Artifact,
        target: &Path,
        room: u64,
    ) -> Result<Downloaded, DownloadError> {
        let limit = self.limit(artifact, room);
        let mut failures = Vec::new();
        for location in &artifact.locations {
            for attempt in 0..2 {
                match self.fetch_one(location, artifact, target, limit) {
                    Ok(bytes) => {
                        return Ok(Downloaded {
                            bytes,
                            location: location.clone(),
                        })
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(target);
                        tracing::warn!(%location, attempt, error = %e, "download failed");
                        // A bad image is bad at every mirror only if they serve the same bytes;
                        // they may not, so every location gets its chance.
                        let retry = transient(&e) && attempt == 0;
                        if !retry {
                            failures.push(e);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
        // The user sees the most telling reason: a content problem over a network one.
        let content = failures.iter().position(|e| {
            matches!(
                e,
                DownloadError::ChecksumMismatch
                    | DownloadError::SizeMismatch { .. }
                    | DownloadError::TooLarge { .. }
                    | DownloadError::OverLimit { .. }
            )
        });
        match (content, failures.len()) {
            (Some(i), _) => Err(failures.swap_remove(i)),
            (None, 1) => Err(failures.pop().expect("one failure")),
            (None, _) => Err(DownloadError::AllFailed(
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    /// The most bytes `artifact` may have: its declared size, or else the site's maximum for
    /// undeclared sizes and never more than `room`.
    fn limit(&self, artifact: &Artifact, room: u64) -> Limit {
        match artifact.size {
            Some(declared) => Limit::Declared(declared),
            None if room < self.policy.max_undeclared_bytes => Limit::Room(room),
            None => Limit::Undeclared(self.policy.max_undeclared_bytes),
        }
    }

    fn open(&self, location: &str) -> Result<Opened, DownloadError> {
        let refused = |why: String| DownloadError::Refused {
            location: location.to_owned(),
            why,
        };
        let failed = |why: String| DownloadError::Fetch {
            location: location.to_owned(),
            why,
        };
        if let Some(path) = location.strip_prefix("file://") {
            let path = Path::new(path)
                .canonicalize()
                .map_err(|e| failed(e.to_string()))?;
            let allowed = self
                .policy
                .file_roots
                .iter()
                .any(|root| root.canonicalize().is_ok_and(|root| path.starts_with(root)));
            if !allowed {
                return Err(refused(
                    "file:// locations are allowed only under the configured file_location_roots"
                        .into(),
                ));
            }
            let file = File::open(&path).map_err(|e| failed(e.to_string()))?;
            return Ok(Opened {
                body: Box::new(file),
            });
        }
        let url = reqwest::Url::parse(location).map_err(|e| refused(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused("only http, https and file locations".into()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| refused("no host".into()))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host_for_lookup, port)
            .to_socket_addrs()
            .map_err(|e| failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| failed(format!("{host} has no address")))?;
        for a in &addrs {
            if let Some(why) = address_refusal(a.ip(), self.policy.allow_loopback) {
                return Err(refused(format!("{host} resolves to {} ({why})", a.ip())));
            }
        }
        // Pin the connection to the address just checked.
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host_for_lookup, addr)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let response = client.get(url).send().map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(refused(format!("redirects are not followed ({status})")));
        }
        if status.is_client_error() {
            // 4xx will not change on a retry.
            return Err(DownloadError::Status {
                location: location.to_owned(),
                status: status.to_string(),
            });
        }
        if !status.is_success() {
            return Err(failed(status.to_string()));
        }
        Ok(Opened {
            body: Box::new(response),
        })
    }

    /// One location, one pass: decompress, hash, write, fsync, check.
    fn fetch_one(
        &self,
        location: &str,
        artifact: &Artifact,
        target: &Path,
        limit: Limit,
    ) -> Result<u64, DownloadError> {
        let opened = self.open(location)?;
        let failed = |e: io::Error| DownloadError::Fetch {
            location: location.to_owned(),
            why: e.to_string(),
        };
        let raw = BufReader::with_capacity(1 << 20, opened.body);
        let mut body: Box<dyn Read> = match artifact.compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(raw)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(failed)?)
            }
        };
        let write_err = |source| DownloadError::Write {
            path: target.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(write_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total: u64 = 0;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::InvalidData
                        || e.kind() == io::ErrorKind::InvalidInput =>
                {
                    // Corrupt compressed data will not heal on a retry.
                    return Err(DownloadError::Corrupt {
                        location: location.to_owned(),
                        compression: artifact.compression.as_str(),
                        why: e.to_string(),
                    });
                }
                Err(e) => return Err(failed(e)),
            };
            total += n as u64;
            if total > limit.bytes() {
                return Err(limit.exceeded());
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(write_err)?;
        }
        file.sync_all().map_err(write_err)?;
        if let Some(declared) = artifact.size {
            if total != declared {
                return Err(DownloadError::SizeMismatch {
                    declared,
                    got: total,
                });
            }
        }
        let digest = stratus_common::hex::encode(hasher.finalize());
        if digest != artifact.sha256 {
            return Err(DownloadError::ChecksumMismatch);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(locations: Vec<String>, content: &[u8], compression: Compression) -> Artifact {
        Artifact {
            locations,
            sha256: stratus_common::hex::encode(Sha256::digest(content)),
            size: Some(content.len() as u64),
            compression,
        }
    }

    fn compressed(content: &[u8], compression: Compression) -> Vec<u8> {
        match compression {
            Compression::None => content.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(content).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(content).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(content, 1).unwrap(),
        }
    }

    #[test]
    fn file_locations_decompress_hash_and_land_for_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let d = Downloader::new(SourcePolicy {
            file_roots: vec![dir.path().to_owned()],
            ..SourcePolicy::default()
        });
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let src = dir.path().join(format!("src.{}", compression.as_str()));
            std::fs::write(&src, compressed(&content, compression)).unwrap();
            let target = dir.path().join(format!("out.{}", compression.as_str()));
            let a = artifact(
                vec![format!("file://{}", src.display())],
                &content,
                compression,
            );
            let got = d.fetch(&a, &target, u64::MAX).unwrap();
            assert_eq!(got.bytes, content.len() as u64);
            assert_eq!(std::fs::read(&target).unwrap(), content, "{compression:?}");
        }
    }

    #[test]
    fn a_mismatch_is_reported_and_leaves_no_file_then_the_next_location_is_tried() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"the real image".to_vec();
        std::fs::write(dir.path().join("bad"), b"a corrupted one").unwrap();
        std::fs::write(dir.path().join("good"), &good).unwrap();
        let d = Downloader::new(SourcePolicy {
            file_roots: vec![dir.path().to_owned()],
            ..SourcePolicy::default()
        });
        let bad_only = artifact(
            vec![format!("file://{}/bad", dir.path().display())],
            &good,
            Compression::None,
        );
        let target = dir.path().join("out");
        let mut sized = bad_only.clone();
        sized.size = None;
        assert!(matches!(
            d.fetch(&sized, &target, u64::MAX),
            Err(DownloadError::ChecksumMismatch)
        ));
        assert!(!target.exists());
        assert!(matches!(
            d.fetch(&bad_only, &target, u64::MAX),
            Err(DownloadError::TooLarge { declared: 14 })
        ));
        let fallback = artifact(
            vec![
                format!("file://{}/missing", dir.path().display()),
                format!("file://{}/good", dir.path().display()),
            ],
            &good,
            Compression::None,
        );
        assert_eq!(
            d.fetch(&fallback, &target, u64::MAX).unwrap().location,
            fallback.locations[1]
        );
        assert_eq!(std::fs::read(&target).unwrap(), good);
    }

    #[test]
    fn file_locations_outside_the_roots_and_forbidden_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = Downloader::new(SourcePolicy {
            file_roots: vec![dir.path().join("images")],
            ..SourcePolicy::default()
        });
        let a = artifact(vec!["file:///etc/hostname".into()], b"x", Compression::None);
        let err = d.fetch(&a, &dir.path().join("o"), u64::MAX).unwrap_err();
        assert!(err.to_string().contains("file_location_roots"), "{err}");
        let a = artifact(vec!["http://127.0.0.1:9/x".into()], b"x", Compression::None);
        let err = d.fetch(&a, &dir.path().join("o"), u64::MAX).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let a = artifact(
            vec!["http://169.254.169.254/latest".into()],
            b"x",
            Compression::None,
        );
        assert!(d
            .fetch(&a, &dir.path().join("o"), u64::MAX)
            .unwrap_err()
            .to_string()
            .contains("metadata"));
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_bound_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // 64 MiB of zeros, gzip'd to about 64 KiB.
        let zeros = vec![0u8; 64 << 20];
        let bomb = dir.path().join("bomb.gz");
        std::fs::write(&bomb, compressed(&zeros, Compression::Gzip)).unwrap();
        let d = Downloader::new(SourcePolicy {
            file_roots: vec![dir.path().to_owned()],
            max_undeclared_bytes: 1 << 20,
            ..SourcePolicy::default()
        });
        let mut a = artifact(
            vec![format!("file://{}", bomb.display())],
            &zeros,
            Compression::Gzip,
        );
        a.size = None;
        let target = dir.path().join("out");
        let err = d.fetch(&a, &target, u64::MAX).unwrap_err();
        assert!(
            matches!(err, DownloadError::OverLimit { limit: 1048576, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("max_image_bytes"), "{err}");
        assert!(!target.exists());
        // The cache's room bounds it too.
        let err = d.fetch(&a, &target, 4096).unwrap_err();
        assert!(err.to_string().contains("room of the image cache"), "{err}");
        assert!(!target.exists());
        // Declared, it is held to its declaration only (the cache evicts to make room).
        a.size = Some(zeros.len() as u64);
        assert_eq!(d.fetch(&a, &target, 4096).unwrap().bytes, 64 << 20);
    }

    #[test]
    fn address_classes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            address_refusal(ip("127.0.0.1"), false),
            Some("loopback address")
        );
        assert_eq!(address_refusal(ip("127.0.0.1"), true), None);
        assert_eq!(address_refusal(ip("::1"), false), Some("loopback address"));
        assert!(address_refusal(ip("169.254.169.254"), true).is_some());
        assert!(address_refusal(ip("fe80::1"), true).is_some());
        assert!(address_refusal(ip("::ffff:169.254.169.254"), true).is_some());
        assert!(address_refusal(ip("100.100.100.200"), true).is_some());
        assert!(address_refusal(ip("0.0.0.0"), true).is_some());
        assert_eq!(address_refusal(ip("192.0.2.10"), false), None);
    }
}
