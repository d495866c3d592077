//! Contextualization by cloud-init NoCloud: a `cidata` ISO per instance holding `meta-data`
//! (instance ID, host name), `user-data` (the user's SSH key and data) and `network-config`
//! (static addresses from the controller's leases), in the form `appliance/README.md` specifies.
//! The ISO is made by `genisoimage`, the standard tool, from files written here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use stratus_common::agent::DesiredInstance;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("genisoimage: {0}")]
    Iso(String),
}

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
pub fn write_cidata(dir: &Path, instance: &DesiredInstance) -> Result<PathBuf, ContextError> {
    let staging = dir.join("cidata");
    let write = |name: &str, text: String| {
        let path = staging.join(name);
        std::fs::write(&path, text).map_err(|source| ContextError::Write { path, source })
    };
    std::fs::create_dir_all(&staging).map_err(|source| ContextError::Write {
        path: staging.clone(),
        source,
    })?;
    write("meta-data", meta_data(instance))?;
    write("user-data", user_data(instance))?;
    if !instance.nics.is_empty() {
        write("network-config", network_config(instance))?;
    }
    let iso = dir.join("cidata.iso");
    let output = Command::new("genisoimage")
        .args(["-quiet", "-V", "cidata", "-J", "-r", "-o"])
        .arg(&iso)
        .arg(&staging)
        .output()
        .map_err(|e| ContextError::Iso(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&staging);
    if !output.status.success() {
        return Err(ContextError::Iso(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(iso)
}

#[cfg(test)]
mod tests {
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
        assert!(!dir.path().join("cidata").exists(), "staging files removed");
    }
}
