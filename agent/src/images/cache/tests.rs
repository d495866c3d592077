use std::process::Command;
use std::sync::{Arc, Barrier};

use sha2::{Digest, Sha256};
use stratus_common::api::{Artifact, Compression, DiskFormat};

use super::*;
use crate::images::download::SourcePolicy;

fn hex(bytes: &[u8]) -> String {
    stratus_common::hex::encode(Sha256::digest(bytes))
}

fn cache(dir: &Path, budget: u64) -> ImageCache {
    let downloader = Downloader::new(SourcePolicy {
        file_roots: vec![dir.join("src")],
        ..SourcePolicy::default()
    });
    ImageCache::open(&dir.join("cache"), budget, downloader).unwrap()
}

fn source(dir: &Path, name: &str, content: &[u8]) -> Artifact {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let path = dir.join("src").join(name);
    std::fs::write(&path, content).unwrap();
    Artifact {
        locations: vec![format!("file://{}", path.display())],
        sha256: hex(content),
        size: Some(content.len() as u64),
        compression: Compression::None,
    }
}

fn tmp_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("cache/tmp"))
        .unwrap()
        .next()
        .is_none()
}

#[test]
fn an_artifact_is_fetched_once_and_then_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache(dir.path(), u64::MAX);
    let a = source(dir.path(), "disk.raw", &vec![1u8; 4096]);
    let path = c.ensure(&a, Some(DiskFormat::Raw)).unwrap();
    assert_eq!(path, dir.path().join("cache/sha256").join(&a.sha256));
    assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; 4096]);
    // Even with the source gone, the cached copy serves.
    std::fs::remove_file(dir.path().join("src/disk.raw")).unwrap();
    assert_eq!(c.ensure(&a, Some(DiskFormat::Raw)).unwrap(), path);
    let stats = c.stats();
    assert_eq!(stats.downloads, 1);
    assert_eq!((stats.misses, stats.hits), (1, 1));
    assert_eq!((stats.download_bytes, stats.bytes), (4096, 4096));
    // A restart finds it again.
    drop(c);
    let c = cache(dir.path(), u64::MAX);
    assert_eq!(c.held(), vec![a.sha256.clone()]);
    assert_eq!(c.ensure(&a, Some(DiskFormat::Raw)).unwrap(), path);
    assert_eq!(c.stats().downloads, 0);
}

#[test]
fn concurrent_ensures_of_one_missing_artifact_download_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(cache(dir.path(), u64::MAX));
    // Big enough that the 20 callers overlap with the one download.
    let a = source(dir.path(), "big.raw", &vec![7u8; 64 << 20]);
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let (c, a, barrier) = (c.clone(), a.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                c.ensure(&a, Some(DiskFormat::Raw)).unwrap()
            })
        })
        .collect();
    let paths: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(paths.iter().all(|p| p == &paths[0]));
    let stats = c.stats();
    assert_eq!(stats.downloads, 1);
    // Every caller found it missing (some waited for the one download); none found it there.
    assert_eq!(stats.misses + stats.hits, 20);
    assert_eq!(stats.download_bytes, 64 << 20);
}

#[test]
fn a_corrupted_image_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache(dir.path(), u64::MAX);
    let mut a = source(dir.path(), "disk.raw", b"corrupted bytes!");
    a.sha256 = hex(b"original bytes!!");
    let err = c.ensure(&a, Some(DiskFormat::Raw)).unwrap_err();
    assert_eq!(crate::failure::error_chain(&err), "image checksum mismatch");
    assert!(c.held().is_empty());
    assert!(!c.path(&a.sha256).exists());
    assert!(tmp_is_empty(dir.path()));
}

#[test]
fn a_qcow2_with_a_backing_file_never_enters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let base = dir.path().join("src/base.qcow2");
    let evil = dir.path().join("src/evil.qcow2");
    let run = |args: &[&str]| {
        assert!(Command::new("qemu-img")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    run(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    run(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        evil.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&evil).unwrap();
    let a = source(dir.path(), "evil.qcow2", &bytes);
    let err = crate::failure::error_chain(&c_ensure(dir.path(), &a));
    assert!(err.contains("backing file"), "{err}");
    assert!(tmp_is_empty(dir.path()));
}

#[test]
fn a_disk_that_is_not_its_declared_format_never_enters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let qcow2 = dir.path().join("src/disk.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", qcow2.to_str().unwrap(), "1M"])
        .status()
        .unwrap()
        .success());
    let a = source(dir.path(), "disk.qcow2", &std::fs::read(&qcow2).unwrap());
    let c = cache(dir.path(), u64::MAX);
    let err = crate::failure::error_chain(&c.ensure(&a, Some(DiskFormat::Raw)).unwrap_err());
    assert_eq!(err, "image format mismatch: declared raw, found qcow2");
    assert!(!c.path(&a.sha256).exists());
    assert_eq!(c.stats().entries, 0);
    assert!(tmp_is_empty(dir.path()));
    // Declared rightly, the same bytes enter.
    assert!(c.ensure(&a, Some(DiskFormat::Qcow2)).is_ok());
}

fn c_ensure(dir: &Path, a: &Artifact) -> CacheError {
    cache(dir, u64::MAX)
        .ensure(a, Some(DiskFormat::Raw))
        .unwrap_err()
}

#[test]
fn leftovers_of_an_interrupted_download_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cache/tmp")).unwrap();
    std::fs::write(dir.path().join("cache/tmp/half.123"), b"half").unwrap();
    let c = cache(dir.path(), u64::MAX);
    assert!(tmp_is_empty(dir.path()));
    assert!(c.held().is_empty());
}

#[test]
fn eviction_takes_the_least_recently_used_and_never_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(cache(dir.path(), 2500));
    let a = source(dir.path(), "a", &[1u8; 1000]);
    let b = source(dir.path(), "b", &[2u8; 1000]);
    let d = source(dir.path(), "d", &[3u8; 1000]);
    c.ensure(&a, None).unwrap();
    c.ensure(&b, None).unwrap();
    let held = c.hold(std::slice::from_ref(&a.sha256));
    assert_eq!(held.digests(), std::slice::from_ref(&a.sha256));
    c.ensure(&d, None).unwrap();
    // 3000 bytes over a 2500 budget: a is the oldest but in use, so b goes.
    assert_eq!(c.evict(), vec![b.sha256.clone()]);
    assert!(c.path(&a.sha256).exists());
    assert!(!c.path(&b.sha256).exists());
    // Even far over budget, an artifact in use stays.
    let tiny = cache(dir.path(), 0);
    tiny.acquire(&a.sha256);
    let evicted = tiny.evict();
    assert!(!evicted.contains(&a.sha256));
    assert!(tiny.path(&a.sha256).exists());
    assert_eq!(c.refs(&a.sha256), 1);
    let again = c.hold(std::slice::from_ref(&a.sha256));
    assert_eq!(c.refs(&a.sha256), 2, "each holder counts");
    drop(held);
    drop(again);
    assert_eq!(c.refs(&a.sha256), 0, "let go with the last holder");
    c.ensure(&b, None).unwrap();
    assert_eq!(c.evict(), vec![a.sha256.clone()], "then evictable");
}
