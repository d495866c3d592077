//! Reading an image file for its metadata in one pass: the compression from the file's magic
//! bytes, then the decompressed content's size, SHA-256, SHA-1 and MD5, and its disk format from
//! its header. Hosts check downloads against the decompressed image, so that is what is hashed.

use std::io::{self, BufRead, BufReader, Read};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use stratus_common::api::{Compression, DiskFormat};
use thiserror::Error;

/// Bytes read per step.
const CHUNK: usize = 1 << 20;
/// Bytes of the decompressed start kept to recognise the format (VDI's signature is at 64).
const HEAD_LEN: usize = 4096;
/// Bytes of the end kept: a fixed VHD has its footer in the last 512.
const TAIL_LEN: usize = 512;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("cannot read the image")]
    Read(#[source] io::Error),
    #[error("cannot decompress the image as {compression}")]
    Decompress {
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the image is {format}: only qcow2 and raw images are accepted (convert it with qemu-img convert -O qcow2)")]
    UnsupportedFormat { format: &'static str },
    #[error("the image is compressed with {0}: only gzip, xz and zstd are accepted")]
    UnsupportedCompression(&'static str),
    #[error("the image is empty")]
    Empty,
}

/// What an image file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Compression of the file itself.
    pub compression: Compression,
    /// Format of the decompressed image.
    pub format: DiskFormat,
    /// Size of the decompressed image in bytes.
    pub size: u64,
    /// Lowercase hex digests of the decompressed image.
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
}

/// The compression a file's first bytes announce.
pub fn detect_compression(head: &[u8]) -> Result<Compression, InspectError> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Ok(Compression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.len() >= 10
        && head.starts_with(b"BZh")
        && head[3].is_ascii_digit()
        && head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
    {
        Err(InspectError::UnsupportedCompression("bzip2"))
    } else {
        Ok(Compression::None)
    }
}

/// The format a decompressed image's first bytes (and last 512) announce: qcow2, else raw;
/// other formats qemu knows are refused rather than mistaken for raw disks.
pub fn detect_format(head: &[u8], tail: &[u8]) -> Result<DiskFormat, InspectError> {
    let refuse = |format| Err(InspectError::UnsupportedFormat { format });
    if head.starts_with(b"QFI\xfb") {
        return Ok(DiskFormat::Qcow2);
    }
    if head.starts_with(b"KDMV")
        || head.starts_with(b"COWD")
        || head.starts_with(b"# Disk DescriptorFile")
    {
        return refuse("vmdk");
    }
    if head.starts_with(b"vhdxfile") {
        return refuse("vhdx");
    }
    if head.starts_with(b"QED\0") {
        return refuse("qed");
    }
    if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return refuse("vdi");
    }
    if head.starts_with(b"conectix") || tail.starts_with(b"conectix") {
        return refuse("vhd (vpc)");
    }
    if head.starts_with(b"WithoutFreeSpace") || head.starts_with(b"WithouFreSpacExt") {
        return refuse("parallels");
    }
    Ok(DiskFormat::Raw)
}

/// Reads `file` to its end once, decompressing as its magic bytes say, and hashes the content.
pub fn inspect(file: impl Read) -> Result<Inspection, InspectError> {
    let mut file = BufReader::with_capacity(CHUNK, file);
    let compression = detect_compression(file.fill_buf().map_err(InspectError::Read)?)?;
    let name = compression.as_str();
    let decompress_error = move |source| InspectError::Decompress {
        compression: name,
        source,
    };
    match compression {
        Compression::None => hash(file, InspectError::Read),
        Compression::Gzip => hash(flate2::bufread::MultiGzDecoder::new(file), decompress_error),
        Compression::Xz => hash(
            liblzma::bufread::XzDecoder::new_multi_decoder(file),
            decompress_error,
        ),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(file).map_err(decompress_error)?;
            hash(decoder, decompress_error)
        }
    }
    .map(|mut inspection| {
        inspection.compression = compression;
        inspection
    })
}

fn hash(
    mut content: impl Read,
    on_error: impl Fn(io::Error) -> InspectError,
) -> Result<Inspection, InspectError> {
    let (mut sha256, mut sha1, mut md5) = (Sha256::new(), Sha1::new(), Md5::new());
    let mut buffer = vec![0u8; CHUNK];
    let mut head = Vec::with_capacity(HEAD_LEN);
    let mut tail: Vec<u8> = Vec::with_capacity(2 * TAIL_LEN);
    let mut size = 0u64;
    loop {
        let n = match content.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(on_error(e)),
        };
        let chunk = &buffer[..n];
        sha256.update(chunk);
        sha1.update(chunk);
        md5.update(chunk);
        size += n as u64;
        if head.len() < HEAD_LEN {
            let take = (HEAD_LEN - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        tail.extend_from_slice(&chunk[n.saturating_sub(TAIL_LEN)..]);
        if tail.len() > TAIL_LEN {
            tail.drain(..tail.len() - TAIL_LEN);
        }
    }
    if size == 0 {
        return Err(InspectError::Empty);
    }
    Ok(Inspection {
        compression: Compression::None,
        format: detect_format(&head, &tail)?,
        size,
        sha256: hex(&sha256.finalize()),
        sha1: hex(&sha1.finalize()),
        md5: hex(&md5.finalize()),
    })
}

fn hex(bytes: &[u8]) -> String {
    stratus_common::hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A small qcow2-looking image: the magic, then zeros and some text.
    fn qcow2_bytes() -> Vec<u8> {
        let mut image = b"QFI\xfb\x00\x00\x00\x03".to_vec();
        image.resize(3 * CHUNK / 2, 0);
        image.extend_from_slice(b"the end");
        image
    }

    #[test]
    fn raw_content_is_hashed_as_is() {
        let inspection = inspect(&b"hello world"[..]).unwrap();
        assert_eq!(
            inspection,
            Inspection {
                compression: Compression::None,
                format: DiskFormat::Raw,
                size: 11,
                sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9".into(),
                sha1: "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed".into(),
                md5: "5eb63bbbe01eeed093cb22bb8f5acdc3".into(),
            }
        );
    }

    #[test]
    fn compressed_files_are_hashed_after_decompression() {
        let image = qcow2_bytes();
        let plain = inspect(&image[..]).unwrap();
        assert_eq!(plain.format, DiskFormat::Qcow2);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&image).unwrap();
        let gz = gz.finish().unwrap();
        let xz = liblzma::encode_all(&image[..], 1).unwrap();
        let zst = zstd::encode_all(&image[..], 1).unwrap();
        for (compressed, compression) in [
            (gz, Compression::Gzip),
            (xz, Compression::Xz),
            (zst, Compression::Zstd),
        ] {
            let inspection = inspect(&compressed[..]).unwrap();
            assert_eq!(inspection.compression, compression);
            assert_eq!(
                Inspection {
                    compression: Compression::None,
                    ..inspection
                },
                plain,
                "{compression:?}"
            );
        }
    }

    #[test]
    fn other_disk_formats_are_refused() {
        let mut vdi = b"<<< Oracle VM VirtualBox Disk Image >>>\n".to_vec();
        vdi.resize(64, 0);
        vdi.extend_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        let mut fixed_vhd = vec![0u8; 4096];
        fixed_vhd.extend_from_slice(b"conectix");
        fixed_vhd.resize(4096 + 512, 0);
        for (image, format) in [
            (b"KDMV\x01\x00\x00\x00".to_vec(), "vmdk"),
            (b"# Disk DescriptorFile\n".to_vec(), "vmdk"),
            (b"vhdxfile".to_vec(), "vhdx"),
            (b"QED\0xxxx".to_vec(), "qed"),
            (vdi, "vdi"),
            (fixed_vhd, "vhd (vpc)"),
        ] {
            let err = inspect(&image[..]).unwrap_err();
            assert!(
                matches!(err, InspectError::UnsupportedFormat { format: f } if f == format),
                "{format}: {err}"
            );
        }
    }

    #[test]
    fn empty_truncated_and_bzip2_files_are_errors() {
        assert!(matches!(inspect(&b""[..]), Err(InspectError::Empty)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&qcow2_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let err = inspect(&gz[..gz.len() / 2]).unwrap_err();
        assert!(
            matches!(
                err,
                InspectError::Decompress {
                    compression: "gzip",
                    ..
                }
            ),
            "{err}"
        );
        let bzip2 = b"BZh91AY&SYxxxx";
        assert!(matches!(
            inspect(&bzip2[..]),
            Err(InspectError::UnsupportedCompression("bzip2"))
        ));
    }
}
