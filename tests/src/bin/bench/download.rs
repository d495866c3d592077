//! download: our download-and-verify of a 1 GiB image into the image cache (read, SHA-256,
//! write, fsync, publish) against a bare read of the same bytes from the same HTTP server on
//! loopback (no hash, no write), alternating in the same run.
//!
//! The floor is a plain HTTP/1.1 GET on a `TcpStream`, read into one reused 1 MiB buffer. A
//! second bare read through `reqwest::blocking` (the agent's HTTP client) shows what the client
//! library itself costs. Ours runs twice a round: into the state disk (which writes at about
//! 0.5 GB/s here, so the fsync bounds it) and into tmpfs (what the pipeline itself sustains).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use stratus_agent::images::cache::ImageCache;
use stratus_agent::images::download::{Downloader, SourcePolicy};
use stratus_common::api::{Artifact, Compression, DiskFormat};

use super::ms;

const SIZE: usize = 1 << 30;

/// Reads `url` (plain `http://host:port/path`) to its end over a bare socket; returns the body's
/// length.
fn bare_read(url: &str) -> anyhow::Result<u64> {
    let rest = url.strip_prefix("http://").context("an http URL")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET {url}: {}", status.trim());
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<u64>()?);
            }
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    if length != Some(total) {
        bail!("GET {url}: {total} bytes, content-length {length:?}");
    }
    Ok(total)
}

/// The same read through `reqwest::blocking`, as the agent's downloader opens it.
fn reqwest_read(url: &str) -> anyhow::Result<u64> {
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;
    let response = client.get(url).send()?.error_for_status()?;
    let mut body = BufReader::with_capacity(1 << 20, response);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match body.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    Ok(total)
}

/// Our download-and-verify into a fresh cache under `root`, removed afterwards.
fn our_download(root: &Path, artifact: &Artifact, round: usize) -> anyhow::Result<Duration> {
    let downloader = Downloader::new(SourcePolicy {
        allow_loopback: true,
        ..SourcePolicy::default()
    });
    let cache_dir = root.join(format!(
        "stratus-bench-cache-{}-{round}",
        std::process::id()
    ));
    let cache = ImageCache::open(&cache_dir, u64::MAX, downloader)?;
    let started = Instant::now();
    let result = cache.ensure(artifact, Some(DiskFormat::Raw));
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&cache_dir)?;
    result?;
    Ok(elapsed)
}

/// A 1 GiB incompressible file (a cheap xorshift stream, not all zeroes) at `path`.
fn write_source(path: &Path) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..SIZE / block.len() {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

fn gbps(d: Duration) -> f64 {
    SIZE as f64 / d.as_secs_f64() / 1e9
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub(crate) fn download_bench(rounds: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(stratus_e2e::TEST_ROOT)?;
    let dir = tempfile::tempdir_in(stratus_e2e::TEST_ROOT)?;
    // The source sits in memory so the server's reads do not compete with the cache's writes.
    let source_dir = tempfile::tempdir_in("/dev/shm")?;
    let source = source_dir.path().join("big.raw");
    write_source(&source)?;
    let sha256 = stratus_e2e::sha256_file(&source)?;
    let server = stratus_e2e::image_server::ImageServer::start()?;
    server.serve_file("/big.raw", &source);
    let url = server.url("/big.raw");
    let artifact = Artifact {
        locations: vec![url.clone()],
        sha256,
        size: Some(SIZE as u64),
        compression: Compression::None,
    };
    let roots: [(&str, PathBuf); 2] = [
        ("state disk", dir.path().to_owned()),
        ("tmpfs (/dev/shm)", PathBuf::from("/dev/shm")),
    ];
    let (mut bare, mut client) = (Vec::new(), Vec::new());
    let mut ours: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let started = Instant::now();
        let got = bare_read(&url)?;
        bare.push(started.elapsed());
        anyhow::ensure!(got == SIZE as u64, "bare read got {got} bytes");
        let started = Instant::now();
        let got = reqwest_read(&url)?;
        client.push(started.elapsed());
        anyhow::ensure!(got == SIZE as u64, "reqwest read got {got} bytes");
        for (samples, (_, root)) in ours.iter_mut().zip(&roots) {
            samples.push(our_download(root, &artifact, round)?);
        }
    }
    println!(
        "\nDownload and verify 1 GiB from loopback HTTP into the cache (read, SHA-256, write, fsync) \
         vs a bare read of the same bytes, alternating, {rounds} rounds (medians)"
    );
    let bare = median(&mut bare);
    let client = median(&mut client);
    println!(
        "  bare read (TcpStream, no hash, no write)   {:>5.2} GB/s ({:>5.0} ms)",
        gbps(bare),
        ms(bare)
    );
    println!(
        "  bare read through reqwest::blocking        {:>5.2} GB/s ({:>5.0} ms)   {:>5.1} % of the bare read",
        gbps(client),
        ms(client),
        100.0 * bare.as_secs_f64() / client.as_secs_f64()
    );
    for (samples, (label, _)) in ours.iter_mut().zip(&roots) {
        let best = samples.iter().min().copied().context("no sample")?;
        let ours = median(samples);
        let share = 100.0 * bare.as_secs_f64() / ours.as_secs_f64();
        println!(
            "  ours into the {label:<18}          {:>5.2} GB/s ({:>5.0} ms, best {:.2} GB/s)   {share:>5.1} % of the bare read   (goal: >= 95%) {}",
            gbps(ours),
            ms(ours),
            gbps(best),
            if share >= 95.0 { "MET" } else { "NOT MET" }
        );
    }
    Ok(())
}
