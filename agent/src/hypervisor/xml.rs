//! libvirt XML: the domain definition the agent writes (with its persistent disks, also as
//! single `<disk>` elements for hot-plug), the instance tag and live disks it reads back, and
//! the host capabilities it reads. Written with an XML writer and read with a
//! namespace-aware reader, never by string concatenation or matching.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::{NsReader, Writer};
use stratus_common::api::DomainType;

use super::{DiskSource, DomainDisk, DomainSpec, InstanceTag};
use crate::volumes::nbd::is_export_name;

/// The XML namespace of StratusLab's domain metadata. libvirt keys metadata elements by
/// namespace URI and may change the prefix, so readers match this URI, never a prefix.
pub const INSTANCE_NAMESPACE: &str = "https://stratuslab.eu/xmlns/instance/1";
const PREFIX: &str = "stratus";

/// Why a domain definition could not be written or a libvirt document read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("domain name {0:?} is empty or contains '/'")]
    InvalidName(String),
    #[error("{0} holds a character XML cannot carry")]
    InvalidChar(&'static str),
    #[error("{field} {path} is not an absolute path")]
    RelativePath { field: &'static str, path: String },
    #[error("{0} is not valid UTF-8")]
    NonUtf8Path(&'static str),
    #[error("{0} given without a kernel")]
    NoKernel(&'static str),
    #[error("a domain needs at least one vCPU and some memory")]
    NoResources,
    #[error("cannot write XML")]
    Write(#[from] io::Error),
    #[error("cannot parse XML")]
    Parse(#[from] quick_xml::Error),
    #[error("{0} missing")]
    Missing(&'static str),
    #[error("disk target {0:?} is not one of vdb to vdz")]
    InvalidTarget(String),
    #[error("disk target {0} given twice")]
    DuplicateTarget(String),
    #[error("disk serial {0:?} is not 1 to 20 characters of [A-Za-z0-9-]")]
    InvalidSerial(String),
    #[error("NBD export name {0:?} is not 1 to 128 characters of [A-Za-z0-9_-]")]
    InvalidExport(String),
    #[error("NBD host {0:?} is neither an IP address nor a DNS name")]
    InvalidHost(String),
    #[error("NBD port 0")]
    InvalidPort,
}

/// XML 1.0 cannot carry most control characters, escaped or not.
fn check_chars(field: &'static str, value: &str) -> Result<(), XmlError> {
    let bad = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if value.chars().any(bad) {
        return Err(XmlError::InvalidChar(field));
    }
    Ok(())
}

fn path_str<'a>(field: &'static str, path: &'a Path) -> Result<&'a str, XmlError> {
    let s = path.to_str().ok_or(XmlError::NonUtf8Path(field))?;
    if !path.is_absolute() {
        return Err(XmlError::RelativePath {
            field,
            path: s.to_owned(),
        });
    }
    check_chars(field, s)?;
    Ok(s)
}

fn text_element<W: io::Write>(w: &mut Writer<W>, name: &str, text: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(text))?;
    Ok(())
}

/// The libvirt definition of a transient domain for `spec`.
///
/// Choices, and why:
/// - machine `pc` (i440fx): the lightest machine under TCG (no PCIe root ports to emulate),
///   and its root bus takes virtio disks hot-plugged through ACPI, with no pre-allocated
///   hot-plug ports as q35 would need.
/// - disk `cache='writeback'`: `cache='none'` needs `O_DIRECT`, which tmpfs (and some FUSE
///   file systems) lack, so a state directory there could not start a single guest.
///   Writeback shows the guest a volatile write cache whose flushes QEMU honours with
///   fsync, so guest file systems stay crash-consistent; it is QEMU's own default. The cost
///   is double caching in the host page cache.
/// - `discard='unmap'`: blocks the guest trims are released from the overlay.
/// - `memballoon model='none'`: nothing uses ballooning and the device costs boot time.
/// - a virtio RNG fed by `/dev/urandom`, so first-boot key generation does not stall.
/// - serial console to a file (written by virtlogd), no graphics: a cloud guest is read
///   through its console log.
/// - KVM guests get `host-passthrough` CPUs (instances never migrate); TCG keeps libvirt's
///   default model, the cheapest to emulate.
pub fn domain_xml(spec: &DomainSpec) -> Result<String, XmlError> {
    if spec.name.is_empty() || spec.name.contains('/') {
        return Err(XmlError::InvalidName(spec.name.clone()));
    }
    check_chars("domain name", &spec.name)?;
    check_chars("cluster ID", &spec.cluster_id)?;
    if let Some(host) = &spec.host {
        check_chars("host name", host)?;
    }
    if spec.vcpus == 0 || spec.memory_mib == 0 {
        return Err(XmlError::NoResources);
    }
    let disk = path_str("disk", &spec.disk)?;
    let console = path_str("console log", &spec.console_log)?;
    let cidata = spec
        .cidata
        .as_deref()
        .map(|c| path_str("cidata", c))
        .transpose()?;
    for nic in &spec.nics {
        check_chars("tap name", &nic.tap)?;
        check_chars("MAC address", &nic.mac)?;
    }
    let kernel = spec
        .kernel
        .as_deref()
        .map(|k| path_str("kernel", k))
        .transpose()?;
    let initrd = spec
        .initrd
        .as_deref()
        .map(|i| path_str("initrd", i))
        .transpose()?;
    if let Some(cmdline) = &spec.cmdline {
        check_chars("kernel command line", cmdline)?;
    }
    let mut targets = BTreeSet::new();
    for disk in &spec.disks {
        check_disk(disk)?;
        if !targets.insert(disk.target.as_str()) {
            return Err(XmlError::DuplicateTarget(disk.target.clone()));
        }
    }
    if kernel.is_none() {
        if initrd.is_some() {
            return Err(XmlError::NoKernel("initrd"));
        }
        if spec.cmdline.is_some() {
            return Err(XmlError::NoKernel("kernel command line"));
        }
    }

    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.create_element("domain")
        .with_attribute(("type", spec.domain_type.as_str()))
        .write_inner_content(|w| {
            text_element(w, "name", &spec.name)?;
            w.create_element("metadata").write_inner_content(|w| {
                let ns_attr = format!("xmlns:{PREFIX}");
                w.create_element(format!("{PREFIX}:instance"))
                    .with_attribute((ns_attr.as_str(), INSTANCE_NAMESPACE))
                    .write_inner_content(|w| {
                        text_element(w, &format!("{PREFIX}:cluster"), &spec.cluster_id)?;
                        text_element(w, &format!("{PREFIX}:id"), &spec.instance_id.to_string())?;
                        if let Some(host) = &spec.host {
                            text_element(w, &format!("{PREFIX}:host"), host)?;
                        }
                        Ok(())
                    })?;
                Ok(())
            })?;
            w.create_element("memory")
                .with_attribute(("unit", "MiB"))
                .write_text_content(BytesText::new(&spec.memory_mib.to_string()))?;
            text_element(w, "vcpu", &spec.vcpus.to_string())?;
            w.create_element("os").write_inner_content(|w| {
                w.create_element("type")
                    .with_attributes([("arch", "x86_64"), ("machine", "pc")])
                    .write_text_content(BytesText::new("hvm"))?;
                match kernel {
                    Some(kernel) => {
                        text_element(w, "kernel", kernel)?;
                        if let Some(initrd) = initrd {
                            text_element(w, "initrd", initrd)?;
                        }
                        if let Some(cmdline) = &spec.cmdline {
                            text_element(w, "cmdline", cmdline)?;
                        }
                    }
                    None => {
                        w.create_element("boot")
                            .with_attribute(("dev", "hd"))
                            .write_empty()?;
                    }
                }
                Ok(())
            })?;
            w.create_element("features").write_inner_content(|w| {
                w.create_element("acpi").write_empty()?;
                w.create_element("apic").write_empty()?;
                Ok(())
            })?;
            if spec.domain_type == DomainType::Kvm {
                w.create_element("cpu")
                    .with_attribute(("mode", "host-passthrough"))
                    .write_empty()?;
            }
            w.create_element("clock")
                .with_attribute(("offset", "utc"))
                .write_empty()?;
            text_element(w, "on_poweroff", "destroy")?;
            text_element(w, "on_reboot", "restart")?;
            text_element(w, "on_crash", "destroy")?;
            w.create_element("devices").write_inner_content(|w| {
                w.create_element("disk")
                    .with_attributes([("type", "file"), ("device", "disk")])
                    .write_inner_content(|w| {
                        w.create_element("driver")
                            .with_attributes([
                                ("name", "qemu"),
                                ("type", "qcow2"),
                                ("cache", "writeback"),
                                ("discard", "unmap"),
                            ])
                            .write_empty()?;
                        w.create_element("source")
                            .with_attribute(("file", disk))
                            .write_empty()?;
                        w.create_element("target")
                            .with_attributes([("dev", "vda"), ("bus", "virtio")])
                            .write_empty()?;
                        Ok(())
                    })?;
                if let Some(cidata) = cidata {
                    w.create_element("disk")
                        .with_attributes([("type", "file"), ("device", "cdrom")])
                        .write_inner_content(|w| {
                            w.create_element("driver")
                                .with_attributes([("name", "qemu"), ("type", "raw")])
                                .write_empty()?;
                            w.create_element("source")
                                .with_attribute(("file", cidata))
                                .write_empty()?;
                            w.create_element("target")
                                .with_attributes([("dev", "hdc"), ("bus", "ide")])
                                .write_empty()?;
                            w.create_element("readonly").write_empty()?;
                            Ok(())
                        })?;
                }
                for disk in &spec.disks {
                    write_disk(w, disk)?;
                }
                for nic in &spec.nics {
                    // managed='no': the agent made the tap (with its anti-spoofing rules in place
                    // first); libvirt only opens it.
                    w.create_element("interface")
                        .with_attribute(("type", "ethernet"))
                        .write_inner_content(|w| {
                            w.create_element("mac")
                                .with_attribute(("address", nic.mac.as_str()))
                                .write_empty()?;
                            w.create_element("target")
                                .with_attributes([("dev", nic.tap.as_str()), ("managed", "no")])
                                .write_empty()?;
                            w.create_element("model")
                                .with_attribute(("type", "virtio"))
                                .write_empty()?;
                            Ok(())
                        })?;
                }
                // append: a stopped and started (or rebooted) instance keeps its earlier
                // output, so the console log only grows while the instance exists.
                w.create_element("serial")
                    .with_attribute(("type", "file"))
                    .write_inner_content(|w| {
                        w.create_element("source")
                            .with_attributes([("path", console), ("append", "on")])
                            .write_empty()?;
                        w.create_element("target")
                            .with_attribute(("port", "0"))
                            .write_empty()?;
                        Ok(())
                    })?;
                w.create_element("console")
                    .with_attribute(("type", "file"))
                    .write_inner_content(|w| {
                        w.create_element("source")
                            .with_attributes([("path", console), ("append", "on")])
                            .write_empty()?;
                        w.create_element("target")
                            .with_attributes([("type", "serial"), ("port", "0")])
                            .write_empty()?;
                        Ok(())
                    })?;
                w.create_element("memballoon")
                    .with_attribute(("model", "none"))
                    .write_empty()?;
                w.create_element("rng")
                    .with_attribute(("model", "virtio"))
                    .write_inner_content(|w| {
                        w.create_element("backend")
                            .with_attribute(("model", "random"))
                            .write_text_content(BytesText::new("/dev/urandom"))?;
                        Ok(())
                    })?;
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(String::from_utf8(w.into_inner()).expect("the writer was given only UTF-8"))
}

/// Whether `serial` is what a persistent disk may show the guest: virtio-blk keeps 20 bytes,
/// and libvirt refuses some punctuation, so a conservative set.
fn is_serial(serial: &str) -> bool {
    (1..=20).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// An IP address, or a DNS name (LDH labels of 1 to 63 characters, 253 in all).
fn is_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks everything of `disk` that ends up in XML; nothing unchecked reaches libvirt.
fn check_disk(disk: &DomainDisk) -> Result<(), XmlError> {
    if !stratus_common::volumes::is_target(&disk.target) {
        return Err(XmlError::InvalidTarget(disk.target.clone()));
    }
    if !is_serial(&disk.serial) {
        return Err(XmlError::InvalidSerial(disk.serial.clone()));
    }
    match &disk.source {
        DiskSource::File(path) => {
            path_str("volume file", path)?;
        }
        DiskSource::Nbd {
            host,
            port,
            export,
            tls_server,
        } => {
            if !is_host(host) {
                return Err(XmlError::InvalidHost(host.clone()));
            }
            if let Some(server) = tls_server.as_ref().filter(|s| !is_host(s)) {
                return Err(XmlError::InvalidHost(server.clone()));
            }
            if *port == 0 {
                return Err(XmlError::InvalidPort);
            }
            if !is_export_name(export) {
                return Err(XmlError::InvalidExport(export.clone()));
            }
        }
    }
    Ok(())
}

/// One persistent disk's `<disk>` element; `disk` was checked by [`check_disk`].
///
/// Choices, and why:
/// - raw: a volume is a plain sparse file, also when exported (the NBD server exports it
///   raw), so no format probing and no image-format metadata the guest could forge.
/// - `cache='none'`: no host page cache between the guest and the volume, so nothing the
///   guest was told is written sits only in this host's memory, and the storage host's NBD
///   server sees the guest's flushes (QEMU shows the guest a write cache and forwards its
///   FLUSH, which the server turns into fdatasync). For files, `io='native'` (Linux AIO,
///   which needs `O_DIRECT`, so the pool must be on a file system that has it).
/// - `discard='unmap'`: blocks the guest trims are released, keeping volumes sparse.
/// - read-only disks get `<readonly/>`; libvirt then shares their locks, so several
///   instances may read one volume. Writable ones are never `<shareable/>`: a volume is
///   written by one instance at a time, and QEMU's image locking enforces that.
/// - NBD over TLS (`tls='yes'`) with the client certificate of libvirt's NBD certificate
///   directory, the server's certificate checked against the storage host's name
///   (`tlsHostname`) rather than the address the export listens on.
/// - a serial, because guests name disks in the order they find them and the serial is the
///   stable name (`/dev/disk/by-id/virtio-<serial>`).
fn write_disk<W: io::Write>(w: &mut Writer<W>, disk: &DomainDisk) -> io::Result<()> {
    let kind = match disk.source {
        DiskSource::File(_) => "file",
        DiskSource::Nbd { .. } => "network",
    };
    w.create_element("disk")
        .with_attributes([("type", kind), ("device", "disk")])
        .write_inner_content(|w| {
            match &disk.source {
                DiskSource::File(path) => {
                    // Checked absolute and UTF-8 by check_disk.
                    let file = path.to_str().unwrap_or_default();
                    w.create_element("driver")
                        .with_attributes([
                            ("name", "qemu"),
                            ("type", "raw"),
                            ("cache", "none"),
                            ("io", "native"),
                            ("discard", "unmap"),
                        ])
                        .write_empty()?;
                    w.create_element("source")
                        .with_attribute(("file", file))
                        .write_empty()?;
                }
                DiskSource::Nbd {
                    host,
                    port,
                    export,
                    tls_server,
                } => {
                    w.create_element("driver")
                        .with_attributes([
                            ("name", "qemu"),
                            ("type", "raw"),
                            ("cache", "none"),
                            ("discard", "unmap"),
                        ])
                        .write_empty()?;
                    let port = port.to_string();
                    let mut source = w
                        .create_element("source")
                        .with_attributes([("protocol", "nbd"), ("name", export.as_str())]);
                    if let Some(server) = tls_server {
                        source = source
                            .with_attributes([("tls", "yes"), ("tlsHostname", server.as_str())]);
                    }
                    source.write_inner_content(|w| {
                        w.create_element("host")
                            .with_attributes([("name", host.as_str()), ("port", port.as_str())])
                            .write_empty()?;
                        Ok(())
                    })?;
                }
            }
            w.create_element("target")
                .with_attributes([("dev", disk.target.as_str()), ("bus", "virtio")])
                .write_empty()?;
            text_element(w, "serial", &disk.serial)?;
            if disk.read_only {
                w.create_element("readonly").write_empty()?;
            }
            Ok(())
        })?;
    Ok(())
}

/// The single `<disk>` element of `disk`, as `virDomainAttachDeviceFlags` takes it (the same
/// element [`domain_xml`] writes for disks attached at start).
pub fn disk_xml(disk: &DomainDisk) -> Result<String, XmlError> {
    check_disk(disk)?;
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_disk(&mut w, disk)?;
    Ok(String::from_utf8(w.into_inner()).expect("the writer was given only UTF-8"))
}

/// A `<disk device='disk'>` of a domain's live definition: its target and, when it is a
/// kind the agent writes (a file, or NBD over TCP), its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveDisk {
    pub target: String,
    pub source: Option<DiskSource>,
}

#[derive(Default)]
struct DiskFields {
    kind: Option<String>,
    device: Option<String>,
    target: Option<String>,
    file: Option<String>,
    protocol: Option<String>,
    export: Option<String>,
    tls: Option<String>,
    tls_hostname: Option<String>,
    host: Option<String>,
    port: Option<String>,
}

impl DiskFields {
    fn into_live(self) -> Option<LiveDisk> {
        if self.device.as_deref().unwrap_or("disk") != "disk" {
            return None;
        }
        let target = self.target?;
        let source = match (self.kind.as_deref(), self.protocol.as_deref()) {
            (Some("file"), _) => self.file.map(|f| DiskSource::File(PathBuf::from(f))),
            (Some("network"), Some("nbd")) => match (self.host, self.export) {
                (Some(host), Some(export)) => Some(DiskSource::Nbd {
                    host,
                    // libvirt's default NBD port when none is written.
                    port: self
                        .port
                        .as_deref()
                        .map_or(Some(10809), |p| p.parse().ok())?,
                    export,
                    tls_server: match self.tls.as_deref() {
                        Some("yes") => self.tls_hostname.or(Some(String::new())),
                        _ => None,
                    },
                }),
                _ => None,
            },
            _ => None,
        };
        Some(LiveDisk { target, source })
    }
}

/// The disks (`device='disk'`, not CD-ROMs) of a domain description, in document order.
pub(crate) fn parse_disks(xml: &str) -> Result<Vec<LiveDisk>, XmlError> {
    let mut reader = NsReader::from_str(xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut disks = Vec::new();
    let mut current: Option<DiskFields> = None;
    loop {
        let event = reader.read_event()?;
        let is_empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name().as_ref().to_vec();
                match (path_names(&path).as_slice(), name.as_slice()) {
                    (["domain", "devices"], b"disk") => {
                        current = Some(DiskFields {
                            kind: attribute(&e, b"type"),
                            device: attribute(&e, b"device"),
                            ..DiskFields::default()
                        });
                    }
                    (["domain", "devices", "disk"], b"target") => {
                        if let Some(d) = current.as_mut() {
                            d.target = attribute(&e, b"dev");
                        }
                    }
                    (["domain", "devices", "disk"], b"source") => {
                        if let Some(d) = current.as_mut() {
                            d.file = attribute(&e, b"file");
                            d.protocol = attribute(&e, b"protocol");
                            d.export = attribute(&e, b"name");
                            d.tls = attribute(&e, b"tls");
                            d.tls_hostname = attribute(&e, b"tlsHostname");
                        }
                    }
                    (["domain", "devices", "disk", "source"], b"host") => {
                        // The first host only: the agent writes one.
                        if let Some(d) = current.as_mut().filter(|d| d.host.is_none()) {
                            d.host = attribute(&e, b"name");
                            d.port = attribute(&e, b"port");
                        }
                    }
                    _ => {}
                }
                let closes_disk = is_empty && path_names(&path).as_slice() == ["domain", "devices"];
                if closes_disk {
                    disks.extend(current.take().and_then(DiskFields::into_live));
                } else if !is_empty {
                    path.push(name);
                }
            }
            Event::End(_) => {
                path.pop();
                if path_names(&path).as_slice() == ["domain", "devices"] {
                    disks.extend(current.take().and_then(DiskFields::into_live));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(disks)
}

fn is_in(ns: &ResolveResult, namespace: Option<&str>) -> bool {
    match (ns, namespace) {
        (ResolveResult::Bound(Namespace(uri)), Some(want)) => *uri == want.as_bytes(),
        (ResolveResult::Unbound, None) => true,
        _ => false,
    }
}

/// Reads the instance tag of a domain from its XML description (as written by
/// [`domain_xml`] or as libvirt returns it, whatever prefix it uses). `None` when the domain
/// has no StratusLab metadata or it is malformed.
pub fn parse_instance_tag(domain_xml: &str) -> Option<InstanceTag> {
    parse_tag(domain_xml, Some(INSTANCE_NAMESPACE))
}

/// Reads the instance tag from what `virDomainGetMetadata` returns for our namespace: the
/// `instance` element with the namespace stripped.
pub(crate) fn parse_metadata_element(xml: &str) -> Option<InstanceTag> {
    parse_tag(xml, None)
}

fn parse_tag(xml: &str, namespace: Option<&str>) -> Option<InstanceTag> {
    #[derive(Clone, Copy)]
    enum Field {
        Cluster,
        Id,
        Host,
    }
    let mut reader = NsReader::from_str(xml);
    // Depth below the instance element; None until it is found.
    let mut depth: Option<usize> = None;
    let mut field = None;
    let mut cluster: Option<String> = None;
    let mut id: Option<String> = None;
    let mut host: Option<String> = None;
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        match event {
            Event::Start(e) => match depth {
                None => {
                    if is_in(&ns, namespace) && e.local_name().as_ref() == b"instance" {
                        depth = Some(0);
                    }
                }
                Some(d) => {
                    field = match (d, is_in(&ns, namespace), e.local_name().as_ref()) {
                        (0, true, b"cluster") => Some(Field::Cluster),
                        (0, true, b"id") => Some(Field::Id),
                        (0, true, b"host") => Some(Field::Host),
                        _ => None,
                    };
                    depth = Some(d + 1);
                }
            },
            Event::Text(t) => {
                if let Some(f) = field {
                    let text = t.unescape().ok()?;
                    let slot = match f {
                        Field::Cluster => &mut cluster,
                        Field::Id => &mut id,
                        Field::Host => &mut host,
                    };
                    slot.get_or_insert_with(String::new).push_str(&text);
                }
            }
            Event::End(_) => match depth {
                Some(0) => break,
                Some(d) => {
                    depth = Some(d - 1);
                    field = None;
                }
                None => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    let cluster_id = cluster?.trim().to_owned();
    let instance_id = id?.trim().parse().ok()?;
    if cluster_id.is_empty() {
        return None;
    }
    Some(InstanceTag {
        cluster_id,
        instance_id,
        host: host.map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()),
    })
}

/// The parts of libvirt's host capabilities the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The host's architecture (`host/cpu/arch`).
    pub host_arch: String,
    /// `(guest architecture, domain type)` for every hardware-virtual-machine guest.
    pub hvm_domain_types: Vec<(String, String)>,
}

impl Capabilities {
    /// libvirt offers `domain_type` guests of the host's own architecture.
    pub fn offers(&self, domain_type: &str) -> bool {
        self.hvm_domain_types
            .iter()
            .any(|(arch, t)| *arch == self.host_arch && t == domain_type)
    }
}

fn attribute(e: &BytesStart, name: &[u8]) -> Option<String> {
    let attr = e.try_get_attribute(name).ok()??;
    Some(attr.unescape_value().ok()?.into_owned())
}

/// Parses `virConnectGetCapabilities` output.
pub fn parse_capabilities(xml: &str) -> Result<Capabilities, XmlError> {
    let mut reader = NsReader::from_str(xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut caps = Capabilities::default();
    let mut os_type = String::new();
    let mut guest_arch = String::new();
    let mut guest_types: Vec<String> = Vec::new();
    loop {
        let event = reader.read_event()?;
        let is_empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name().as_ref().to_vec();
                match (path_names(&path).as_slice(), name.as_slice()) {
                    (["capabilities"], b"guest") => {
                        os_type.clear();
                        guest_arch.clear();
                        guest_types.clear();
                    }
                    (["capabilities", "guest"], b"arch") => {
                        guest_arch = attribute(&e, b"name").unwrap_or_default();
                    }
                    (["capabilities", "guest", "arch"], b"domain") => {
                        if let Some(t) = attribute(&e, b"type") {
                            guest_types.push(t);
                        }
                    }
                    _ => {}
                }
                if !is_empty {
                    path.push(name);
                }
            }
            Event::Text(t) => {
                let text = t.unescape()?.trim().to_owned();
                match path_names(&path).as_slice() {
                    ["capabilities", "host", "cpu", "arch"] => caps.host_arch = text,
                    ["capabilities", "guest", "os_type"] => os_type = text,
                    _ => {}
                }
            }
            Event::End(_) => {
                if path_names(&path).as_slice() == ["capabilities", "guest", "arch"]
                    && os_type == "hvm"
                {
                    for t in guest_types.drain(..) {
                        caps.hvm_domain_types.push((guest_arch.clone(), t));
                    }
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if caps.host_arch.is_empty() {
        return Err(XmlError::Missing("host architecture"));
    }
    Ok(caps)
}

fn path_names(path: &[Vec<u8>]) -> Vec<&str> {
    path.iter()
        .map(|p| std::str::from_utf8(p).unwrap_or(""))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn spec() -> DomainSpec {
        DomainSpec {
            name: "stratus-0123abcd-7".into(),
            cluster_id: "0123abcd-cluster".into(),
            instance_id: 7,
            host: None,
            domain_type: DomainType::Qemu,
            vcpus: 2,
            memory_mib: 256,
            disk: PathBuf::from("/var/lib/stratuslab/instances/7/disk.qcow2"),
            kernel: None,
            initrd: None,
            cmdline: None,
            console_log: PathBuf::from("/var/lib/stratuslab/instances/7/console.log"),
            nics: Vec::new(),
            cidata: None,
            disks: Vec::new(),
        }
    }

    fn file_disk(target: &str, path: &str) -> DomainDisk {
        DomainDisk {
            target: target.into(),
            serial: "9c5a2c03-8243-4a1b-a".into(),
            read_only: false,
            source: DiskSource::File(path.into()),
        }
    }

    fn nbd_disk(target: &str, host: &str, export: &str) -> DomainDisk {
        DomainDisk {
            target: target.into(),
            serial: "0f0d22d9-48c2-4a1b-a".into(),
            read_only: true,
            source: DiskSource::Nbd {
                host: host.into(),
                port: 10809,
                export: export.into(),
                tls_server: Some("storage-1".into()),
            },
        }
    }

    /// Every element and attribute value of a document, for structural assertions.
    fn flatten(xml: &str) -> Vec<(String, String)> {
        let mut reader = NsReader::from_str(xml);
        let mut path: Vec<String> = Vec::new();
        let mut out = Vec::new();
        loop {
            let event = reader.read_event().unwrap();
            match &event {
                Event::Start(e) | Event::Empty(e) => {
                    let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                    let here = format!("{}/{name}", path.join("/"));
                    for a in e.attributes() {
                        let a = a.unwrap();
                        let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                        out.push((format!("{here}@{key}"), a.unescape_value().unwrap().into()));
                    }
                    if matches!(event, Event::Start(_)) {
                        path.push(name);
                    }
                }
                Event::End(_) => {
                    path.pop();
                }
                Event::Text(t) => {
                    let text = t.unescape().unwrap().trim().to_owned();
                    if !text.is_empty() {
                        out.push((path.join("/"), text));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    fn value<'a>(doc: &'a [(String, String)], key: &str) -> Option<&'a str> {
        doc.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn disk_boot_domain_has_the_expected_shape() {
        let xml = domain_xml(&spec()).unwrap();
        let doc = flatten(&xml);
        let v = |k: &str| value(&doc, k);
        assert_eq!(v("/domain@type"), Some("qemu"));
        assert_eq!(v("domain/name"), Some("stratus-0123abcd-7"));
        assert_eq!(v("domain/memory"), Some("256"));
        assert_eq!(v("domain/vcpu"), Some("2"));
        assert_eq!(v("domain/os/type"), Some("hvm"));
        assert_eq!(v("domain/os/boot@dev"), Some("hd"));
        assert_eq!(v("domain/os/kernel"), None);
        assert_eq!(v("domain/cpu@mode"), None);
        assert_eq!(v("domain/on_crash"), Some("destroy"));
        assert_eq!(v("domain/devices/disk/driver@type"), Some("qcow2"));
        assert_eq!(
            v("domain/devices/disk/source@file"),
            Some("/var/lib/stratuslab/instances/7/disk.qcow2")
        );
        assert_eq!(v("domain/devices/disk/target@bus"), Some("virtio"));
        assert_eq!(
            v("domain/devices/serial/source@path"),
            Some("/var/lib/stratuslab/instances/7/console.log")
        );
        assert_eq!(v("domain/devices/memballoon@model"), Some("none"));
        assert!(!xml.contains("graphics"));
        assert_eq!(
            parse_instance_tag(&xml),
            Some(InstanceTag {
                cluster_id: "0123abcd-cluster".into(),
                instance_id: 7,
                host: None,
            })
        );
    }

    #[test]
    fn the_host_is_recorded_beside_the_cluster_and_read_back() {
        let mut s = spec();
        assert_eq!(
            parse_instance_tag(&domain_xml(&s).unwrap()).unwrap().host,
            None
        );
        s.host = Some("node-7".into());
        let tag = parse_instance_tag(&domain_xml(&s).unwrap()).unwrap();
        assert_eq!(tag.host.as_deref(), Some("node-7"));
        assert!(tag.is_of(&s.cluster_id, "node-7"));
        assert!(!tag.is_of(&s.cluster_id, "node-8"));
        assert!(!tag.is_of("another", "node-7"));
        s.host = Some("bad\u{7}".into());
        assert!(domain_xml(&s).is_err(), "control characters are refused");
    }

    #[test]
    fn direct_kernel_boot_and_kvm() {
        let mut s = spec();
        s.domain_type = DomainType::Kvm;
        s.kernel = Some("/images/vmlinuz".into());
        s.initrd = Some("/images/initrd.img".into());
        s.cmdline = Some("console=ttyS0 quiet".into());
        let doc = flatten(&domain_xml(&s).unwrap());
        let v = |k: &str| value(&doc, k);
        assert_eq!(v("/domain@type"), Some("kvm"));
        assert_eq!(v("domain/cpu@mode"), Some("host-passthrough"));
        assert_eq!(v("domain/os/kernel"), Some("/images/vmlinuz"));
        assert_eq!(v("domain/os/initrd"), Some("/images/initrd.img"));
        assert_eq!(v("domain/os/cmdline"), Some("console=ttyS0 quiet"));
        assert_eq!(v("domain/os/boot@dev"), None);
    }

    #[test]
    fn values_are_escaped_and_round_trip() {
        let mut s = spec();
        s.kernel = Some("/images/k'e\"r<n>&el".into());
        s.cmdline = Some(r#"a=<b> c='d' e="f" g&h"#.into());
        s.cluster_id = "c<&>'\"".into();
        s.disk = "/d/it's \"<disk>\"&.qcow2".into();
        let xml = domain_xml(&s).unwrap();
        assert!(!xml.contains("<b>"), "{xml}");
        assert!(xml.contains("a=&lt;b&gt;"), "{xml}");
        let doc = flatten(&xml);
        let v = |k: &str| value(&doc, k);
        assert_eq!(v("domain/os/cmdline"), s.cmdline.as_deref());
        assert_eq!(v("domain/os/kernel"), Some("/images/k'e\"r<n>&el"));
        assert_eq!(
            v("domain/devices/disk/source@file"),
            Some("/d/it's \"<disk>\"&.qcow2")
        );
        assert_eq!(parse_instance_tag(&xml).unwrap().cluster_id, "c<&>'\"");
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut s = spec();
        s.cmdline = Some("console=ttyS0\u{1}".into());
        s.kernel = Some("/k".into());
        assert!(matches!(domain_xml(&s), Err(XmlError::InvalidChar(_))));
        let mut s = spec();
        s.disk = "disk.qcow2".into();
        assert!(matches!(domain_xml(&s), Err(XmlError::RelativePath { .. })));
        let mut s = spec();
        s.initrd = Some("/i".into());
        assert!(matches!(domain_xml(&s), Err(XmlError::NoKernel("initrd"))));
        let mut s = spec();
        s.name = "a/b".into();
        assert!(matches!(domain_xml(&s), Err(XmlError::InvalidName(_))));
        let mut s = spec();
        s.memory_mib = 0;
        assert!(matches!(domain_xml(&s), Err(XmlError::NoResources)));
    }

    #[test]
    fn tag_is_found_by_namespace_not_prefix() {
        // libvirt may rewrite the prefix, or use a default namespace.
        let other_prefix = r#"<domain type='kvm'><name>x</name><metadata>
            <other xmlns="urn:someone-else"><cluster>no</cluster></other>
            <sl:instance xmlns:sl="https://stratuslab.eu/xmlns/instance/1">
              <sl:cluster> abc </sl:cluster>
              <sl:id>42</sl:id>
            </sl:instance></metadata></domain>"#;
        let tag = parse_instance_tag(other_prefix).unwrap();
        assert_eq!(tag.cluster_id, "abc");
        assert_eq!(tag.instance_id, 42);

        let default_ns = r#"<domain><metadata><instance
            xmlns="https://stratuslab.eu/xmlns/instance/1"><cluster>abc</cluster>
            <id>9</id></instance></metadata></domain>"#;
        assert_eq!(parse_instance_tag(default_ns).unwrap().instance_id, 9);

        // Same local names in a foreign namespace are not ours.
        let foreign = r#"<domain><metadata><x:instance xmlns:x="urn:x"><x:cluster>abc</x:cluster>
            <x:id>9</x:id></x:instance></metadata></domain>"#;
        assert_eq!(parse_instance_tag(foreign), None);
        assert_eq!(
            parse_instance_tag("<domain><name>plain</name></domain>"),
            None
        );
        assert_eq!(parse_instance_tag("not xml <<<"), None);
        let bad_id = r#"<s:instance xmlns:s="https://stratuslab.eu/xmlns/instance/1">
            <s:cluster>abc</s:cluster><s:id>-1</s:id></s:instance>"#;
        assert_eq!(parse_instance_tag(bad_id), None);
    }

    #[test]
    fn metadata_element_without_namespace_parses() {
        // What virDomainGetMetadata returns.
        let xml = "<instance>\n  <cluster>abc</cluster>\n  <id>7</id>\n</instance>\n";
        let tag = parse_metadata_element(xml).unwrap();
        assert_eq!((tag.cluster_id.as_str(), tag.instance_id), ("abc", 7));
    }

    #[test]
    fn capabilities_parse() {
        let xml = r#"<capabilities>
  <host><uuid>x</uuid><cpu><arch>x86_64</arch><model>Skylake</model></cpu></host>
  <guest><os_type>hvm</os_type>
    <arch name='i686'><wordsize>32</wordsize><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
  <guest><os_type>hvm</os_type>
    <arch name='x86_64'><wordsize>64</wordsize><machine>pc</machine>
      <domain type='qemu'/><domain type='kvm'><emulator>/usr/bin/qemu</emulator></domain></arch>
  </guest>
</capabilities>"#;
        let caps = parse_capabilities(xml).unwrap();
        assert_eq!(caps.host_arch, "x86_64");
        assert!(caps.offers("kvm"));
        assert!(caps.offers("qemu"));
        assert!(!caps.offers("test"));

        let tcg_only = xml.replace(
            "<domain type='kvm'><emulator>/usr/bin/qemu</emulator></domain>",
            "",
        );
        assert!(!parse_capabilities(&tcg_only).unwrap().offers("kvm"));
        assert!(parse_capabilities("<capabilities/>").is_err());
    }

    #[test]
    fn file_disk_element_has_the_expected_shape() {
        let xml = disk_xml(&file_disk("vdb", "/pool/9c5a2c03.raw")).unwrap();
        let doc = flatten(&xml);
        let v = |k: &str| value(&doc, k);
        assert_eq!(v("/disk@type"), Some("file"));
        assert_eq!(v("/disk@device"), Some("disk"));
        assert_eq!(v("disk/driver@type"), Some("raw"));
        assert_eq!(v("disk/driver@cache"), Some("none"));
        assert_eq!(v("disk/driver@io"), Some("native"));
        assert_eq!(v("disk/driver@discard"), Some("unmap"));
        assert_eq!(v("disk/source@file"), Some("/pool/9c5a2c03.raw"));
        assert_eq!(v("disk/target@dev"), Some("vdb"));
        assert_eq!(v("disk/target@bus"), Some("virtio"));
        assert_eq!(v("disk/serial"), Some("9c5a2c03-8243-4a1b-a"));
        assert!(!xml.contains("readonly"), "{xml}");
        assert!(!xml.contains("shareable"), "{xml}");
    }

    #[test]
    fn nbd_disk_element_has_the_expected_shape() {
        let xml = disk_xml(&nbd_disk("vdz", "storage-1.example.org", "exp-Ab_9")).unwrap();
        let doc = flatten(&xml);
        let v = |k: &str| value(&doc, k);
        assert_eq!(v("/disk@type"), Some("network"));
        assert_eq!(v("disk/driver@type"), Some("raw"));
        assert_eq!(v("disk/driver@cache"), Some("none"));
        assert_eq!(v("disk/driver@io"), None);
        assert_eq!(v("disk/source@protocol"), Some("nbd"));
        assert_eq!(v("disk/source@name"), Some("exp-Ab_9"));
        assert_eq!(v("disk/source/host@name"), Some("storage-1.example.org"));
        assert_eq!(v("disk/source/host@port"), Some("10809"));
        assert_eq!(v("disk/source@tls"), Some("yes"));
        assert_eq!(v("disk/source@tlsHostname"), Some("storage-1"));
        assert_eq!(v("disk/target@dev"), Some("vdz"));
        assert!(xml.contains("<readonly/>"), "{xml}");
        // What the hypervisor reads back is what was written.
        assert_eq!(
            parse_disks(&format!("<domain><devices>{xml}</devices></domain>")).unwrap(),
            [LiveDisk {
                target: "vdz".into(),
                source: Some(nbd_disk("vdz", "storage-1.example.org", "exp-Ab_9").source),
            }]
        );
        for host in ["10.1.2.3", "::1", "fe80::1", "host.", "a-b.c"] {
            assert!(disk_xml(&nbd_disk("vdb", host, "e")).is_ok(), "{host}");
        }
        // An export made before TLS is written (and read back) plain.
        let mut plain = nbd_disk("vdz", "10.0.0.2", "e");
        if let DiskSource::Nbd { tls_server, .. } = &mut plain.source {
            *tls_server = None;
        }
        let xml = disk_xml(&plain).unwrap();
        assert!(!xml.contains("tls"), "{xml}");
        let live = parse_disks(&format!("<domain><devices>{xml}</devices></domain>")).unwrap();
        assert_eq!(live[0].source.as_ref(), Some(&plain.source));
        // It is still the same disk as the one described with TLS.
        assert!(plain
            .source
            .same_disk(&nbd_disk("vdz", "10.0.0.2", "e").source));
        assert!(!plain
            .source
            .same_disk(&nbd_disk("vdz", "10.0.0.2", "f").source));
    }

    #[test]
    fn domain_carries_its_persistent_disks_after_the_root_disk() {
        let mut s = spec();
        s.disks = vec![
            file_disk("vdc", "/pool/a.raw"),
            nbd_disk("vdb", "10.0.0.2", "e1"),
        ];
        let xml = domain_xml(&s).unwrap();
        let disks = parse_disks(&xml).unwrap();
        let targets: Vec<&str> = disks.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["vda", "vdc", "vdb"]);
        assert_eq!(
            disks[1].source,
            Some(DiskSource::File("/pool/a.raw".into()))
        );
        assert_eq!(disks[2].source, Some(s.disks[1].source.clone()));

        s.disks.push(file_disk("vdb", "/pool/b.raw"));
        assert!(matches!(
            domain_xml(&s),
            Err(XmlError::DuplicateTarget(t)) if t == "vdb"
        ));
        s.disks = vec![file_disk("vda", "/pool/a.raw")];
        assert!(matches!(domain_xml(&s), Err(XmlError::InvalidTarget(_))));
    }

    #[test]
    fn disk_values_are_escaped_and_round_trip() {
        let path = "/pool/it's \"<vol>\"&.raw";
        let xml = disk_xml(&file_disk("vdb", path)).unwrap();
        assert!(!xml.contains("<vol>"), "{xml}");
        let doc = flatten(&xml);
        assert_eq!(value(&doc, "disk/source@file"), Some(path));
        let disks = parse_disks(&format!("<domain><devices>{xml}</devices></domain>")).unwrap();
        assert_eq!(disks[0].source, Some(DiskSource::File(path.into())));
    }

    #[test]
    fn invalid_disks_are_refused() {
        for target in ["vda", "vd", "vdaa", "sdb", "vdB", "hdc", "", "vd{"] {
            assert!(
                matches!(
                    disk_xml(&file_disk(target, "/p.raw")),
                    Err(XmlError::InvalidTarget(_))
                ),
                "{target}"
            );
        }
        for serial in [
            "",
            "x".repeat(21).as_str(),
            "a b",
            "a_b",
            "a'b",
            "é",
            "a\u{1}",
        ] {
            let mut d = file_disk("vdb", "/p.raw");
            d.serial = serial.into();
            assert!(
                matches!(disk_xml(&d), Err(XmlError::InvalidSerial(_))),
                "{serial:?}"
            );
        }
        assert!(matches!(
            disk_xml(&file_disk("vdb", "relative.raw")),
            Err(XmlError::RelativePath { .. })
        ));
        assert!(matches!(
            disk_xml(&file_disk("vdb", "/p\u{1}.raw")),
            Err(XmlError::InvalidChar(_))
        ));
        for export in ["", "a/b", "a b", "a'b", "a.b", "é", &"e".repeat(129)] {
            assert!(
                matches!(
                    disk_xml(&nbd_disk("vdb", "h", export)),
                    Err(XmlError::InvalidExport(_))
                ),
                "{export:?}"
            );
        }
        for host in [
            "",
            "a b",
            "-a",
            "a-",
            "a..b",
            "h'x",
            "h/x",
            "[::1]",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    disk_xml(&nbd_disk("vdb", host, "e")),
                    Err(XmlError::InvalidHost(_))
                ),
                "{host:?}"
            );
        }
        let mut d = nbd_disk("vdb", "h", "e");
        d.source = DiskSource::Nbd {
            host: "h".into(),
            port: 0,
            export: "e".into(),
            tls_server: None,
        };
        assert!(matches!(disk_xml(&d), Err(XmlError::InvalidPort)));
        d.source = DiskSource::Nbd {
            host: "h".into(),
            port: 1,
            export: "e".into(),
            tls_server: Some("a b'".into()),
        };
        assert!(matches!(disk_xml(&d), Err(XmlError::InvalidHost(h)) if h == "a b'"));
    }

    #[test]
    fn live_disks_are_read_from_libvirt_descriptions() {
        // As `virsh dumpxml` printed it for a domain with a hot-plugged file and NBD disk.
        let xml = r#"<domain type='qemu' id='1'>
  <name>exp-hotplug</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/x/vda.qcow2' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/var/lib/x/cidata.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>
      <source file='/var/lib/x/vdb.raw' index='2'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
      <serial>vol-abc</serial>
      <alias name='virtio-disk1'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source protocol='nbd' name='myexport' tls='no' index='3'>
        <host name='127.0.0.1' port='52491'/>
      </source>
      <target dev='vdc' bus='virtio'/>
      <serial>vol-nbd</serial>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='noport' tls='yes' tlsHostname='storage-2'><host name='h'/></source>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/sdx'/>
      <target dev='vde' bus='virtio'/>
    </disk>
    <interface type='ethernet'><target dev='tap0'/></interface>
  </devices>
</domain>"#;
        let disks = parse_disks(xml).unwrap();
        let targets: Vec<&str> = disks.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["vda", "vdb", "vdc", "vdd", "vde"]);
        assert_eq!(
            disks[1].source,
            Some(DiskSource::File("/var/lib/x/vdb.raw".into()))
        );
        assert_eq!(
            disks[2].source,
            Some(DiskSource::Nbd {
                host: "127.0.0.1".into(),
                port: 52491,
                export: "myexport".into(),
                tls_server: None,
            })
        );
        assert_eq!(
            disks[3].source,
            Some(DiskSource::Nbd {
                host: "h".into(),
                port: 10809,
                export: "noport".into(),
                tls_server: Some("storage-2".into()),
            })
        );
        assert_eq!(disks[4].source, None);
        assert!(parse_disks("<domain><devices><disk").is_err());
    }
}
