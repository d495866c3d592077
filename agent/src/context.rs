//! Contextualization by cloud-init NoCloud: a `cidata` ISO per instance holding `meta-data`
//! (instance ID, host name), `user-data` (the user's SSH key and data) and `network-config`
//! (static addresses from the controller's leases), in the form `appliance/README.md` specifies.
//! The ISO 9660 image is built in memory by `hadris-iso`, with Rock Ridge and Joliet names so
//! that Linux and cloud-init see the files' lowercase, dashed names (the plain ISO 9660 names
//! are 8.3 uppercase), and no program runs on the instance's start path.

use std::fmt::Write as _;
use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};

use hadris_iso::joliet::JolietLevel;
use hadris_iso::read::PathSeparator;
use hadris_iso::rrip::RripOptions;
use hadris_iso::write::options::{BaseIsoLevel, CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{InputEntry, InputMetadata, InputTree, IsoCreationError, IsoImageWriter};
use stratus_common::agent::DesiredInstance;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the cidata ISO image")]
    Iso(#[source] IsoCreationError),
}

/// The volume label cloud-init's NoCloud source (and the appliance's `/init`) looks for.
const VOLUME_LABEL: &str = "cidata";

/// A host name a guest accepts: lowercase letters, digits and `-`, at most 63 characters;
/// `vm-<id>` when nothing is left of the instance's name.
pub fn hostname(name: &str, id: u64) -> String {
    let cleaned: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let cleaned: String = cleaned.chars().take(63).collect();
    let cleaned = cleaned.trim_end_matches('-').to_owned();
    if cleaned.is_empty() {
        format!("vm-{id}")
    } else {
        cleaned
    }
}

/// YAML double-quoted scalar (the values are validated already; this keeps them literal).
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn meta_data(instance: &DesiredInstance) -> String {
    format!(
        "instance-id: i-{:08x}\nlocal-hostname: {}\n",
        instance.id,
        hostname(&instance.hostname, instance.id)
    )
}

/// `#cloud-config` with the SSH key; the user's data is merged in when it is cloud-config too,
/// and otherwise sent as a second part of a MIME multipart document, as cloud-init expects.
pub fn user_data(instance: &DesiredInstance) -> String {
    let mut config = String::from("#cloud-config\n");
    if let Some(key) = &instance.ssh_key {
        let _ = write!(config, "ssh_authorized_keys:\n  - {}\n", quoted(key.trim()));
    }
    match instance.user_data.as_deref() {
        None => config,
        Some(data) => match data.strip_prefix("#cloud-config") {
            Some(rest) => {
                config.push_str(rest.trim_start_matches(['\r', '\n']));
                if !config.ends_with('\n') {
                    config.push('\n');
                }
                config
            }
            None => {
                let boundary = "==stratuslab-user-data==";
                format!(
                    "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
                     --{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\n\n{config}\n\
                     --{boundary}\nContent-Type: text/x-shellscript; charset=\"utf-8\"\n\n{data}\n\
                     --{boundary}--\n"
                )
            }
        },
    }
}

/// Netplan version 2: one ethernet per NIC, matched by MAC; the first carries the default route.
pub fn network_config(instance: &DesiredInstance) -> String {
    let mut out = String::from("version: 2\nethernets:\n");
    for (index, nic) in instance.nics.iter().enumerate() {
        let name = format!("eth{index}");
        let _ = write!(
            out,
            "  {name}:\n    match:\n      macaddress: {}\n    set-name: {name}\n    addresses:\n      - {}/{}\n",
            quoted(&nic.mac),
            nic.ip,
            nic.prefix
        );
        if index == 0 {
            let _ = writeln!(out, "    gateway4: {}", nic.gateway);
        }
        if !nic.dns.is_empty() {
            out.push_str("    nameservers:\n      addresses:\n");
            for dns in &nic.dns {
                let _ = writeln!(out, "        - {dns}");
            }
        }
    }
    out
}

/// Writes `<dir>/cidata.iso` for `instance` (replacing an earlier one) and returns its path.
/// The image is written to a temporary file in `dir`, flushed to disk and renamed over the old
/// one, so a guest (or a crash) never sees a half-written seed.
pub fn write_cidata(dir: &Path, instance: &DesiredInstance) -> Result<PathBuf, ContextError> {
    let image = cidata_image(instance)?;
    let iso = dir.join("cidata.iso");
    let partial = dir.join(".cidata.iso.partial");
    let write = |path: &Path| {
        let mut file = std::fs::File::create(path)?;
        file.write_all(&image)?;
        file.sync_all()
    };
    write(&partial)
        .and_then(|()| std::fs::rename(&partial, &iso))
        .map_err(|source| {
            let _ = std::fs::remove_file(&partial);
            ContextError::Write {
                path: iso.clone(),
                source,
            }
        })?;
    Ok(iso)
}

/// The seed's ISO 9660 image: `meta-data`, `user-data` and, when the instance has NICs,
/// `network-config` at the root, read-only (0444) and owned by root as `genisoimage -r` makes
/// them, under both Rock Ridge (what Linux's isofs reads first) and Joliet names.
fn cidata_image(instance: &DesiredInstance) -> Result<Vec<u8>, ContextError> {
    let read_only = InputMetadata {
        mode: Some(0o444),
        ..InputMetadata::default()
    };
    let mut files = vec![
        InputEntry::file("meta-data", meta_data(instance)),
        InputEntry::file("user-data", user_data(instance)),
    ];
    if !instance.nics.is_empty() {
        files.push(InputEntry::file("network-config", network_config(instance)));
    }
    let files = files
        .into_iter()
        .map(|file| file.with_metadata(read_only))
        .collect();
    let options = IsoFormatOptions {
        volume_name: VOLUME_LABEL.to_owned(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: None,
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        // The label stays lowercase, as `genisoimage -V cidata` writes it.
        strict_charset: false,
        features: CreationFeatures {
            filenames: BaseIsoLevel::Level1 {
                supports_lowercase: false,
                supports_rrip: true,
            },
            joliet: Some(JolietLevel::Level3),
            // Names, the entries' 0444 mode and times; uid and gid 0; no links or devices.
            rock_ridge: Some(RripOptions {
                enabled: true,
                relocate_deep_dirs: false,
                preserve_permissions: true,
                preserve_ownership: false,
                preserve_timestamps: true,
                preserve_symlinks: false,
                preserve_devices: false,
            }),
            ..CreationFeatures::default()
        },
    };
    let tree = InputTree::new(PathSeparator::ForwardSlash, files);
    let image = IsoImageWriter::create(Cursor::new(Vec::new()), tree, options)
        .map_err(ContextError::Iso)?;
    Ok(image.into_inner())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use stratus_common::agent::{Desire, ImageSpec};
    use stratus_common::api::{Artifact, DiskFormat};
    use stratus_common::network::NicSpec;

    use super::*;

    fn instance() -> DesiredInstance {
        DesiredInstance {
            generation: 0,
            id: 42,
            desire: Desire::Run,
            vcpus: 1,
            memory_mib: 128,
            image: ImageSpec {
                name: "i".into(),
                format: DiskFormat::Raw,
                disk: Artifact {
                    locations: vec![],
                    sha256: String::new(),
                    size: None,
                    compression: Default::default(),
                },
                kernel: None,
                initrd: None,
                cmdline: None,
            },
            nics: vec![NicSpec {
                network: "public".into(),
                bridge: "br0".into(),
                vlan: None,
                mac: "0a:53:0a:fa:01:0a".into(),
                ip: "10.250.1.10".into(),
                prefix: 24,
                gateway: "10.250.1.1".into(),
                dns: vec!["10.250.1.1".into()],
            }],
            ssh_key: Some("ssh-ed25519 AAAAC3Nza me@host".into()),
            user_data: None,
            hostname: "Web_1.example".into(),
            disks: Vec::new(),
            accepted_at_ms: None,
            confirm: false,
            restart: Default::default(),
            evacuate: false,
        }
    }

    #[test]
    fn host_names_are_made_valid() {
        assert_eq!(hostname("Web_1.example", 3), "web-1-example");
        assert_eq!(hostname("__", 3), "vm-3");
        assert_eq!(hostname(&"a".repeat(80), 3).len(), 63);
    }

    #[test]
    fn documents_follow_the_appliance_spec() {
        let i = instance();
        assert_eq!(
            meta_data(&i),
            "instance-id: i-0000002a\nlocal-hostname: web-1-example\n"
        );
        assert_eq!(
            user_data(&i),
            "#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAAC3Nza me@host\"\n"
        );
        assert_eq!(
            network_config(&i),
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"0a:53:0a:fa:01:0a\"\n    set-name: eth0\n    addresses:\n      - 10.250.1.10/24\n    gateway4: 10.250.1.1\n    nameservers:\n      addresses:\n        - 10.250.1.1\n"
        );
    }

    #[test]
    fn user_cloud_config_is_merged_and_scripts_go_in_a_second_part() {
        let mut i = instance();
        i.user_data =
            Some("#cloud-config\n#stratus-test: forge-ip 10.0.0.9\nruncmd: [true]\n".into());
        let merged = user_data(&i);
        assert!(
            merged.starts_with("#cloud-config\nssh_authorized_keys:"),
            "{merged}"
        );
        assert!(merged.contains("#stratus-test: forge-ip 10.0.0.9\nruncmd: [true]\n"));
        i.user_data = Some("#!/bin/sh\necho hi\n".into());
        let multipart = user_data(&i);
        assert!(
            multipart.contains("Content-Type: text/x-shellscript"),
            "{multipart}"
        );
        assert!(multipart.contains("#!/bin/sh\necho hi"));
    }

    #[test]
    fn the_iso_is_labelled_cidata() {
        let dir = tempfile::tempdir().unwrap();
        let iso = write_cidata(dir.path(), &instance()).unwrap();
        let bytes = std::fs::read(&iso).unwrap();
        // The ISO 9660 primary volume descriptor: "CD001" at 32769, the label at 32808.
        assert_eq!(&bytes[32769..32774], b"CD001");
        assert_eq!(&bytes[32808..32814], b"cidata");
        assert_eq!(bytes[32814], b' ', "the label is padded with blanks");
        // The volume space size (both-endian, little first) covers the whole file, and no more.
        let sectors = u32::from_le_bytes(bytes[32848..32852].try_into().unwrap());
        assert_eq!(sectors as usize * 2048, bytes.len());
        assert_eq!(
            files_in(dir.path()),
            ["cidata.iso"],
            "no temporary file left"
        );
    }

    /// The seed as `isoinfo` (cdrkit's reader, Debian's genisoimage package) sees it: the label,
    /// both name extensions, and under each the files with the documents' exact text.
    #[test]
    fn isoinfo_reads_the_label_names_and_documents() {
        let dir = tempfile::tempdir().unwrap();
        let i = instance();
        let iso = write_cidata(dir.path(), &i).unwrap();
        let description = isoinfo(&iso, &["-d"]);
        assert!(
            description.lines().any(|line| line == "Volume id: cidata"),
            "{description}"
        );
        assert!(
            description.contains("Rock Ridge signatures version 1 found"),
            "{description}"
        );
        assert!(
            description.contains("Joliet with UCS level 3 found"),
            "{description}"
        );
        let documents = [
            ("/meta-data", meta_data(&i)),
            ("/network-config", network_config(&i)),
            ("/user-data", user_data(&i)),
        ];
        for extension in ["-R", "-J"] {
            assert_eq!(
                listing(&iso, extension),
                ["/meta-data", "/network-config", "/user-data"],
                "isoinfo {extension}"
            );
            for (name, text) in &documents {
                assert_eq!(
                    &isoinfo(&iso, &[extension, "-x", name]),
                    text,
                    "isoinfo {extension} -x {name}"
                );
            }
        }
    }

    #[test]
    fn without_nics_there_is_no_network_config() {
        let dir = tempfile::tempdir().unwrap();
        write_cidata(dir.path(), &instance()).unwrap();
        let mut i = instance();
        i.nics.clear();
        // Written over the seed of the same instance with a NIC: the new image replaces it.
        let iso = write_cidata(dir.path(), &i).unwrap();
        for extension in ["-R", "-J"] {
            assert_eq!(
                listing(&iso, extension),
                ["/meta-data", "/user-data"],
                "isoinfo {extension}"
            );
        }
        assert_eq!(files_in(dir.path()), ["cidata.iso"]);
    }

    /// The names in a directory, sorted.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// `isoinfo ARGS -i ISO`'s output; the tool missing or failing fails the test.
    fn isoinfo(iso: &Path, args: &[&str]) -> String {
        let out = Command::new("isoinfo")
            .args(args)
            .arg("-i")
            .arg(iso)
            .output()
            .expect("isoinfo (Debian package genisoimage) runs");
        assert!(
            out.status.success(),
            "isoinfo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every path in the image under one name extension (`-R` Rock Ridge, `-J` Joliet), sorted.
    fn listing(iso: &Path, extension: &str) -> Vec<String> {
        let mut paths: Vec<String> = isoinfo(iso, &[extension, "-f"])
            .lines()
            .map(str::to_owned)
            .collect();
        paths.sort();
        paths
    }
}
