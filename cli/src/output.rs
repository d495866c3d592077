//! What the commands print, as pure functions from data to text, in the user's guide's style:
//! the ` :: ` action banners and steps of the original client, its fixed-width instance table,
//! the `:: KIND name` blocks of its describe commands (`describe-volumes`), the one-line
//! `DISK`/`ATTACHED`/... confirmations of the persistent disk commands, one-line verdicts of the
//! Marketplace commands, `[ERROR] ` lines, and pretty JSON for `--json`.

use serde::Serialize;
use stratus_common::api::{
    Compression, DiskFormat, Endorser, Group, Host, Image, ImageList, Instance, InstanceState,
    InstanceType, MarketplaceEntry, MarketplacePage, PolicyVerdict, User,
};
use stratus_common::events::EventEnvelope;
use stratus_common::marketplace::parse_timestamp;
use stratus_common::time::guide_datetime;
use stratus_common::volumes::{Volume, VolumeState};

/// A banner, as the original `printAction`: a blank line, then the message boxed in colons.
fn action(message: &str) -> String {
    let filler = ":".repeat(message.len() + 6);
    format!("\n {filler}\n :: {message} ::\n {filler}\n")
}

/// One step, as the original `printStep`.
fn step(message: &str) -> String {
    format!(" :: {message}\n")
}

/// The banner and first step of `run-instance`, printed before the first request.
pub fn render_run_header(count: u32) -> String {
    let label = if count == 1 { "machine" } else { "machines" };
    action("Starting machine(s)") + &step(&format!("Starting {count} {label}"))
}

/// The line for the `index`-th (from 1) instance started, and under it its address, if it has
/// one, indented as in the guide.
pub fn render_run_machine(index: usize, instance: &Instance) -> String {
    let mut out = step(&format!("Machine {index} (vm ID: {})", instance.id));
    if let Some(ip) = &instance.ip {
        out += &format!("      Public ip: {ip}\n");
    }
    out
}

pub fn render_run_done() -> String {
    step("Done!")
}

/// The whole `run-instance` output for instances started in one go (the command streams the
/// same pieces as it goes).
#[cfg(test)]
pub fn render_run(instances: &[Instance]) -> String {
    let count = u32::try_from(instances.len()).unwrap_or(u32::MAX);
    let mut out = render_run_header(count);
    for (i, instance) in instances.iter().enumerate() {
        out += &render_run_machine(i + 1, instance);
    }
    out + &render_run_done()
}

/// `run-instance --quiet`: one ID per line.
pub fn render_id(instance: &Instance) -> String {
    format!("{}\n", instance.id)
}

/// `--json`: the value pretty-printed, with a final newline.
pub fn render_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising our own plain data structs cannot fail (string keys, no custom serialisers).
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// One `kill-instance` confirmation.
/// One value on one line (`--json` of a stream: one object per line).
pub fn render_json_line<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("our types serialize") + "\n"
}

/// One event: time, sequence number, type, object, then owner, host and details as
/// `key=value`.
pub fn render_event(event: &EventEnvelope) -> String {
    let mut line = format!(
        "{} {:>10} {:<24} {}",
        event.time,
        event.seq,
        event.kind,
        event.object.key()
    );
    for (key, value) in [("owner", &event.owner), ("host", &event.host)] {
        if let Some(value) = value {
            line += &format!(" {key}={value}");
        }
    }
    for (key, value) in &event.details {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line += &format!(" {key}={}", one_line(&text));
    }
    line + "\n"
}

pub fn render_kill(instance: &Instance) -> String {
    step(&format!(
        "Killing instance {} (now {})",
        instance.id, instance.state
    ))
}

/// One `stop-instance`, `start-instance` or `reboot-instance` confirmation.
pub fn render_power(action: crate::client::PowerAction, instance: &Instance) -> String {
    let verb = match action {
        crate::client::PowerAction::Stop => "Stopping",
        crate::client::PowerAction::Start => "Starting",
        crate::client::PowerAction::Reboot => "Rebooting",
    };
    step(&format!(
        "{verb} instance {} (now {})",
        instance.id, instance.state
    ))
}

/// An error line for stderr.
pub fn render_error(message: &str) -> String {
    format!("[ERROR] {message}\n")
}

/// A warning line for stderr.
pub fn render_warning(message: &str) -> String {
    format!("[WARNING] {message}\n")
}

/// `build-metadata -o FILE`: what was written.
pub fn render_metadata_written(identifier: &str, path: &str) -> String {
    step(&format!(
        "Metadata for image {identifier} written to {path}"
    ))
}

/// `sign-metadata -o FILE`: what was signed, by whom.
pub fn render_metadata_signed(identifier: &str, email: &str, path: &str) -> String {
    step(&format!(
        "Metadata for image {identifier} signed as {email}, written to {path}"
    ))
}

/// One line of a table: every cell padded to its column's width, the last as it is.
fn table_line(cells: &[&str], widths: &[usize]) -> String {
    let mut text = String::new();
    for (c, cell) in cells.iter().enumerate() {
        if c + 1 == cells.len() {
            text.push_str(cell);
        } else {
            text.push_str(&format!("{cell:<width$}", width = widths[c]));
        }
    }
    text.push('\n');
    text
}

/// Text from the server on one line: control characters (newlines, escapes) become spaces, so
/// nothing in an entry can break the layout or drive the terminal.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An RFC 3339 time as the guide prints dates (`2011/07/20 16:37:10`, UTC); as it came if it
/// does not parse.
fn guide_time(rfc3339: &str) -> String {
    parse_timestamp("time", rfc3339).map_or_else(|_| one_line(rfc3339), guide_datetime)
}

/// `qcow2`, or `qcow2 (gzip)` for a compressed file.
fn format_and_compression(format: DiskFormat, compression: Compression) -> String {
    match compression {
        Compression::None => format.as_str().to_string(),
        other => format!("{} ({})", format.as_str(), other.as_str()),
    }
}

/// `upload-metadata`: one accepted entry.
pub fn render_uploaded(entry: &MarketplaceEntry) -> String {
    format!(
        "UPLOADED {} endorser {} (entry {})\n",
        one_line(&entry.identifier),
        one_line(&entry.endorser_email),
        entry.seq
    )
}

/// `deprecate-metadata`: the deprecating entry uploaded.
pub fn render_deprecated(entry: &MarketplaceEntry) -> String {
    format!(
        "DEPRECATED {} (entry {})\n",
        one_line(&entry.identifier),
        entry.seq
    )
}

/// `policy-image`: the site policy's verdict on one image.
pub fn render_verdict(verdict: &PolicyVerdict) -> String {
    let identifier = one_line(&verdict.identifier);
    if verdict.allowed {
        return match &verdict.entry {
            Some(entry) => format!(
                "ALLOWED {identifier} endorser {} (entry {})\n",
                one_line(&entry.endorser_email),
                entry.seq
            ),
            None => format!("ALLOWED {identifier}\n"),
        };
    }
    let reason = verdict
        .reason
        .as_deref()
        .or(verdict.code.as_deref())
        .unwrap_or("refused by the site policy");
    format!("REFUSED {identifier}: {}\n", one_line(reason))
}

/// One Marketplace entry of `describe-images`, in the guide's `describe-volumes` layout.
pub fn render_marketplace_entry(entry: &MarketplaceEntry) -> String {
    let m = &entry.metadata;
    let mut out = format!(
        ":: IMAGE {}\n    os: {} {} ({})   kind: {}   format: {}   size: {}\n    \
         version: {}   endorser: {}   created: {}   valid until: {}\n",
        one_line(&entry.identifier),
        one_line(&m.os),
        one_line(&m.os_version),
        one_line(&m.arch),
        m.kind.as_str(),
        format_and_compression(m.format, m.compression),
        m.size,
        one_line(&m.version),
        one_line(&entry.endorser_email),
        guide_time(&m.created),
        guide_time(&m.valid_until),
    );
    if !m.description.trim().is_empty() {
        out += &format!("    description: {}\n", one_line(&m.description));
    }
    if let Some(reason) = &m.deprecated {
        out += &format!("    deprecated: {}\n", one_line(reason));
    }
    out
}

/// One image registered by the site's administrators, for `describe-images`.
pub fn render_site_image(image: &Image) -> String {
    format!(
        ":: SITE IMAGE {}\n    format: {}   owner: {}   created: {}\n",
        one_line(&image.name),
        format_and_compression(image.format, image.disk.compression),
        one_line(&image.owner),
        guide_time(&image.created),
    )
}

/// The last line of `describe-images` when the Marketplace entries shown are not all of them
/// (a later page exists, or this is not the first); empty otherwise.
pub fn render_page_note(page: &MarketplacePage) -> String {
    let shown = page.items.len() as u64;
    if page.offset == 0 && shown >= page.total {
        return String::new();
    }
    if shown == 0 {
        return format!(
            "(showing none of {} Marketplace entries: offset {})\n",
            page.total, page.offset
        );
    }
    format!(
        "(showing {}-{} of {} Marketplace entries)\n",
        page.offset + 1,
        page.offset + shown,
        page.total
    )
}

/// `describe-images`: the Marketplace entries (newest first, as the server sends them), the
/// site's images, and the page note.
pub fn render_image_list(list: &ImageList) -> String {
    let mut out: String = list
        .marketplace
        .items
        .iter()
        .map(render_marketplace_entry)
        .collect();
    out.extend(list.site.iter().map(render_site_image));
    out + &render_page_note(&list.marketplace)
}

/// `describe-endorsers`: the registered endorser certificates.
pub fn render_endorsers(endorsers: &[Endorser]) -> String {
    endorsers
        .iter()
        .map(|e| {
            format!(
                ":: ENDORSER {}\n    emails: {}   valid until: {}\n    \
                 added: {} by {}\n    certificate sha256: {}\n",
                one_line(&e.subject),
                emails(&e.emails),
                guide_time(&e.not_after),
                guide_time(&e.added),
                one_line(&e.added_by),
                one_line(&e.cert_sha256),
            )
        })
        .collect()
}

/// `register-endorser`: the endorser now trusted.
pub fn render_endorser_registered(endorser: &Endorser) -> String {
    format!(
        "REGISTERED endorser {} ({}) certificate sha256 {}\n",
        emails(&endorser.emails),
        one_line(&endorser.subject),
        one_line(&endorser.cert_sha256)
    )
}

fn emails(emails: &[String]) -> String {
    if emails.is_empty() {
        return "(none)".to_string();
    }
    one_line(&emails.join(", "))
}

/// `create-volume` and `update-volume`: the disk's UUID, as the guide prints it.
pub fn render_disk(id: &str) -> String {
    format!("DISK {}\n", one_line(id))
}

/// `delete-volume`: one disk deleted.
pub fn render_deleted(id: &str) -> String {
    format!("DELETED {}\n", one_line(id))
}

/// `create-join-token`: the token (shown this once) and until when it may be used.
pub fn render_join_token(token: &stratus_common::agent::JoinTokenCreated) -> String {
    format!(
        "JOIN-TOKEN {} for host {} (until {})\n",
        one_line(&token.token),
        one_line(&token.host),
        one_line(&token.expires)
    )
}

/// `revoke-host`: a host whose certificates are out of force.
pub fn render_revoked(host: &str) -> String {
    format!("REVOKED host {}\n", one_line(host))
}

/// `update-host`: the host as it is now; in maintenance, whether it is drained (it may be shut
/// down) or how many instances it still runs.
pub fn render_host_updated(host: &Host) -> String {
    let name = one_line(&host.name);
    let Some(maintenance) = &host.maintenance else {
        return format!("IN SERVICE host {name}\n");
    };
    let reason = maintenance
        .reason
        .as_deref()
        .map_or_else(String::new, |reason| format!(" ({})", one_line(reason)));
    let holding = if host.drained {
        "drained".to_owned()
    } else {
        format!("still holds {}", count(host.instances, "instance"))
    };
    format!("MAINTENANCE host {name}{reason}: {holding}\n")
}

/// `update-host --roles/--labels`: what the host is for and the labels it carries now.
pub fn render_host_profile(host: &Host) -> String {
    let labels = if host.labels.is_empty() {
        "(none)".to_owned()
    } else {
        host_labels(host)
    };
    format!(
        "UPDATED host {}: roles {}; labels {labels}\n",
        one_line(&host.name),
        host_roles(host)
    )
}

/// `compute`, `storage` or `compute,storage`; `-` for none.
fn host_roles(host: &Host) -> String {
    if host.roles.is_empty() {
        return "-".to_owned();
    }
    host.roles
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels comma-separated (one word, as a table cell); `-` for none.
fn host_labels(host: &Host) -> String {
    if host.labels.is_empty() {
        return "-".to_owned();
    }
    one_line(&host.labels.join(","))
}

/// `remove-host`: a host the cloud no longer knows.
/// `fence-host`: the host fenced.
pub fn render_fenced_host(host: &Host) -> String {
    format!("FENCED host {}\n", one_line(&host.name))
}

pub fn render_removed_host(host: &str) -> String {
    format!("REMOVED host {}\n", one_line(host))
}

/// `1 instance`, `2 instances`.
fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Column labels of `describe-hosts`. The last column is not padded.
const HOST_COLUMNS: [&str; 9] = [
    "name",
    "status",
    "roles",
    "instances",
    "vcpu",
    "memory MiB",
    "pool GiB",
    "labels",
    "last seen",
];

/// `up` or `down`, then `,maintenance` while new instances are kept off it, or `,drained` once
/// it is in maintenance and runs no instance any more (it may be shut down).
fn host_status(host: &Host) -> String {
    let status = one_line(&host.status);
    match (&host.maintenance, host.drained) {
        (_, true) => format!("{status},drained"),
        (Some(_), false) => format!("{status},maintenance"),
        (None, false) => status,
    }
}

/// `describe-hosts`: one host a line, in the order given, with its roles, its instances and the
/// vCPUs, memory and volume pool used of its total (`-` for a host that stores no disks), its
/// labels, and when its agent last talked to the controller that answered (`-`: not since that
/// controller started). Under a host in maintenance, since when and why; under one whose
/// hypervisor runs domains no instance accounts for, their names.
pub fn render_hosts(hosts: &[Host]) -> String {
    let rows: Vec<[String; 9]> = hosts
        .iter()
        .map(|h| {
            [
                one_line(&h.name),
                host_status(h),
                host_roles(h),
                h.instances.to_string(),
                format!("{}/{}", h.used_vcpus, h.vcpus),
                format!("{}/{}", h.used_memory_mib, h.memory_mib),
                h.volume_pool_gib.map_or_else(
                    || "-".to_owned(),
                    |total| format!("{}/{total}", h.volume_pool_used_gib),
                ),
                host_labels(h),
                h.last_seen
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), guide_time),
            ]
        })
        .collect();
    let widths: [usize; 9] = std::array::from_fn(|c| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([HOST_COLUMNS[c].len()])
            .max()
            .unwrap_or(0)
            + 1
    });
    let line = |cells: [&str; 9]| table_line(&cells, &widths);

    let mut out = line(HOST_COLUMNS);
    for (host, row) in hosts.iter().zip(&rows) {
        out += &line(std::array::from_fn(|c| row[c].as_str()));
        if let Some(maintenance) = &host.maintenance {
            out += &format!("    maintenance since {}", guide_time(&maintenance.since));
            if let Some(reason) = &maintenance.reason {
                out += &format!(": {}", one_line(reason));
            }
            out.push('\n');
        }
        if !host.unknown_domains.is_empty() {
            out += &format!(
                "    unknown domains: {}\n",
                one_line(&host.unknown_domains.join(", "))
            );
        }
    }
    out
}

/// `create-group`: the group made, and its policy.
pub fn render_group_created(group: &Group) -> String {
    format!("GROUP {} ({})\n", one_line(&group.name), group.policy)
}

/// Column labels of `describe-groups`. The last column is not padded.
const GROUP_COLUMNS: [&str; 5] = ["name", "policy", "owner", "members", "id@host"];

/// `describe-groups`: one group a line, in the order given, with its policy, owner, how many
/// instances it holds (those not Done or Failed) and each as `ID@HOST` (`ID@-` while not placed
/// yet; `-` for none).
pub fn render_groups(groups: &[Group]) -> String {
    let rows: Vec<[String; 5]> = groups
        .iter()
        .map(|g| {
            let members = if g.members.is_empty() {
                "-".to_owned()
            } else {
                g.members
                    .iter()
                    .map(|m| {
                        let host = m.host.as_deref().map_or_else(|| "-".to_owned(), one_line);
                        format!("{}@{host}", m.id)
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            [
                one_line(&g.name),
                g.policy.to_string(),
                one_line(&g.owner),
                g.members.len().to_string(),
                members,
            ]
        })
        .collect();
    let widths: [usize; 5] = std::array::from_fn(|c| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([GROUP_COLUMNS[c].len()])
            .max()
            .unwrap_or(0)
            + 1
    });
    let line = |cells: [&str; 5]| table_line(&cells, &widths);

    let mut out = line(GROUP_COLUMNS);
    for row in &rows {
        out += &line(std::array::from_fn(|c| row[c].as_str()));
    }
    out
}

/// `create-user`: the account made, and the generated password if there is one (shown once).
pub fn render_user_created(user: &User, generated: Option<&str>) -> String {
    let mut text = format!("USER {}{}\n", one_line(&user.name), admin_mark(user));
    if let Some(password) = generated {
        text += &format!("PASSWORD {password}\n");
    }
    text
}

/// `update-user`: the account as it is now.
pub fn render_user_updated(user: &User) -> String {
    format!(
        "UPDATED user {}{}\n",
        one_line(&user.name),
        admin_mark(user)
    )
}

fn admin_mark(user: &User) -> &'static str {
    if user.admin {
        " (administrator)"
    } else {
        ""
    }
}

/// `describe-users`: one account a line, administrators marked.
pub fn render_users(users: &[User]) -> String {
    let width = users.iter().map(|u| u.name.len()).max().unwrap_or(0).max(4) + 1;
    let mut text = format!("{:<width$}admin\n", "name");
    for user in users {
        let admin = if user.admin { "yes" } else { "no" };
        text += &format!("{:<width$}{admin}\n", one_line(&user.name));
    }
    text
}

/// `attach-volume`: one disk the guest now has.
pub fn render_attached(id: &str, instance: u64, device: &str) -> String {
    format!(
        "ATTACHED {} in VM {instance} on {}\n",
        one_line(id),
        one_line(device)
    )
}

/// `detach-volume`: one disk the guest released (or that was forced off); `device` is where it
/// was, when known.
pub fn render_detached(id: &str, instance: u64, device: Option<&str>) -> String {
    match device {
        Some(device) => format!(
            "DETACHED {} from VM {instance} on {}\n",
            one_line(id),
            one_line(device)
        ),
        None => format!("DETACHED {} from VM {instance}\n", one_line(id)),
    }
}

/// `detach-volume --force`: the warning for a disk freed although the guest had not released
/// it.
pub fn render_forced_off(id: &str, instance: u64, device: Option<&str>) -> String {
    render_warning(&format!(
        "DISK {}: forced off VM {instance} without its guest releasing it: the guest may still \
         hold {}, and what it had not written to the disk is lost",
        one_line(id),
        device.map_or_else(|| "the device".to_owned(), one_line)
    ))
}

fn volume_state(state: VolumeState) -> &'static str {
    match state {
        VolumeState::Creating => "creating",
        VolumeState::Available => "available",
        VolumeState::Failed => "failed",
        VolumeState::Deleting => "deleting",
    }
}

/// One disk of `describe-volumes`: the guide's block (`created` to `users`), then its type, its
/// state unless `available` (with the reason when it failed), and one line per instance using
/// it.
pub fn render_volume(volume: &Volume) -> String {
    let mut out = format!(
        ":: DISK {}\n    created: {}\n    visibility: {}\n    tag: {}\n    owner: {}\n    \
         size: {}\n    users: {}\n    type: {}\n",
        one_line(&volume.id),
        guide_time(&volume.created),
        one_line(&volume.visibility),
        one_line(&volume.tag),
        one_line(&volume.owner),
        volume.size,
        volume.users,
        volume.volume_type.as_str(),
    );
    if volume.state != VolumeState::Available {
        out += &format!("    state: {}\n", volume_state(volume.state));
        if let (VolumeState::Failed, Some(reason)) = (volume.state, &volume.reason) {
            out += &format!("    reason: {}\n", one_line(reason));
        }
    }
    for a in &volume.attachments {
        out += &format!(
            "    attached: VM {} on {} ({})\n",
            a.instance,
            one_line(&a.device),
            a.state.as_str()
        );
    }
    out
}

/// `describe-volumes`: the disks in the order the API gives them.
pub fn render_volumes(volumes: &[Volume]) -> String {
    volumes.iter().map(render_volume).collect()
}

/// Column labels and minimum widths of `describe-instance`, as the original client's table
/// (which grew a column to one more than its longest value). The last column is not padded.
const INSTANCE_COLUMNS: [(&str, usize); 7] = [
    ("id", 4),
    ("state", 10),
    ("vcpu", 5),
    ("memory", 10),
    ("name", 16),
    ("cpu%", 5),
    ("host/ip", 0),
];

/// The `describe-instance` table, with the guide's columns. Memory is in KiB as in the guide
/// (131072 for 128 MiB); `cpu%` is the guest's recent CPU use (`-` when not measured: not
/// running, or no recent figure from its host). The last column is the guide's `host/ip`: the
/// instance's address, what a user connects to, or where it has none (no site network) the
/// host it was placed on. An instance that Failed or Stopped gets its reason on the next
/// line, indented under the state, and each persistent disk a line of its own.
pub fn render_instance_table(instances: &[Instance]) -> String {
    let rows: Vec<[String; 7]> = instances
        .iter()
        .map(|i| {
            [
                i.id.to_string(),
                i.state.to_string(),
                i.vcpus.to_string(),
                i.memory_mib.saturating_mul(1024).to_string(),
                i.name.clone(),
                i.cpu_percent
                    .map_or_else(|| "-".to_string(), |p| p.to_string()),
                i.ip.clone()
                    .or_else(|| i.host.clone())
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let widths: Vec<usize> = INSTANCE_COLUMNS
        .iter()
        .enumerate()
        .map(|(c, (_, min))| {
            let longest = rows.iter().map(|r| r[c].len()).max().unwrap_or(0);
            (*min).max(longest + 1)
        })
        .collect();
    let line = |cells: [&str; 7]| table_line(&cells, &widths);

    let mut out = line(INSTANCE_COLUMNS.map(|(label, _)| label));
    for (instance, row) in instances.iter().zip(&rows) {
        out += &line(std::array::from_fn(|c| row[c].as_str()));
        if let (InstanceState::Failed | InstanceState::Stopped, Some(reason)) =
            (instance.state, &instance.reason)
        {
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            out += &format!("{:indent$}{reason}\n", "", indent = widths[0]);
        }
        for disk in &instance.disks {
            out += &format!(
                "{:indent$}disk {} on {} ({})\n",
                "",
                one_line(&disk.volume),
                one_line(&disk.device),
                disk.state.as_str(),
                indent = widths[0]
            );
        }
    }
    out
}

/// The `run-instance --list-types` table, in the original client's layout (a type column, then
/// right-aligned values with their units).
pub fn render_types_table(types: &[InstanceType]) -> String {
    const VALUE_WIDTH: usize = 10;
    let name_width = types
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(VALUE_WIDTH);
    let line = |name: &str, cpu: &str, ram: &str, disk: &str| {
        format!(
            "{name:<name_width$} {cpu:>VALUE_WIDTH$} {ram:>VALUE_WIDTH$} {disk:>VALUE_WIDTH$}\n"
        )
    };
    let mut out = line("Type", "CPU", "RAM", "Disk");
    for t in types {
        out += &line(
            &t.name,
            &format!("{} CPU", t.vcpus),
            &format!("{} MiB", t.memory_mib),
            &format!("{} GiB", t.disk_gib),
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use stratus_common::api::{GroupMember, GroupPolicy, HostRole};

    use super::*;

    #[test]
    fn an_event_is_one_line_with_its_details() {
        let event: EventEnvelope = serde_json::from_value(serde_json::json!({
            "seq": 90001,
            "time": "2026-12-07T05:30:00.123Z",
            "type": "instance-failed",
            "object": {"kind": "instance", "id": "5"},
            "owner": "alice",
            "host": "node-1",
            "details": {"state": "Failed", "reason": "the guest\ncrashed"},
        }))
        .unwrap();
        assert_eq!(
            render_event(&event),
            "2026-12-07T05:30:00.123Z      90001 instance-failed          instance/5 owner=alice \
             host=node-1 reason=the guest crashed state=Failed\n"
        );
        assert_eq!(
            serde_json::from_str::<EventEnvelope>(render_json_line(&event).trim_end()).unwrap(),
            event
        );
    }

    /// An instance as the API would show it, for rendering tests.
    pub(crate) fn instance(id: u64, state: InstanceState) -> Instance {
        Instance {
            id,
            name: format!("vm-{id}"),
            owner: "alice".into(),
            image: "ttylinux".into(),
            instance_type: "m1.small".into(),
            vcpus: 1,
            memory_mib: 128,
            host: Some("node-1".into()),
            state,
            reason: None,
            domain: format!("one-{id}"),
            created: "2024-05-01T10:00:00Z".into(),
            updated: "2024-05-01T10:00:00Z".into(),
            history: Vec::new(),
            nics: Vec::new(),
            ip: None,
            disks: Vec::new(),
            cpu_percent: None,
            group: None,
            labels: Vec::new(),
            evacuate: false,
            restart: Default::default(),
            changes: Vec::new(),
        }
    }

    fn with_address(mut instance: Instance, ip: &str) -> Instance {
        instance.nics = vec![stratus_common::api::Nic {
            network: "public".into(),
            ip: ip.into(),
            mac: "0a:53:86:9e:4b:4b".into(),
        }];
        instance.ip = Some(ip.into());
        instance
    }

    #[test]
    fn run_output_shows_the_public_ip_as_the_guide() {
        assert_eq!(
            render_run(&[with_address(
                instance(5507, InstanceState::Pending),
                "134.158.75.75"
            )]),
            "
 :::::::::::::::::::::::::
 :: Starting machine(s) ::
 :::::::::::::::::::::::::
 :: Starting 1 machine
 :: Machine 1 (vm ID: 5507)
      Public ip: 134.158.75.75
 :: Done!
"
        );
    }

    #[test]
    fn instance_table_shows_the_address_in_the_host_ip_column() {
        let running = with_address(instance(5507, InstanceState::Running), "134.158.75.75");
        let mut plain = instance(12, InstanceState::Pending);
        plain.host = None;
        assert_eq!(
            render_instance_table(&[running, plain, instance(13, InstanceState::Running)]),
            "\
id   state     vcpu memory    name            cpu% host/ip
5507 Running   1    131072    vm-5507         -    134.158.75.75
12   Pending   1    131072    vm-12           -    -
13   Running   1    131072    vm-13           -    node-1
"
        );
    }

    #[test]
    fn metadata_steps_and_warnings() {
        assert_eq!(
            render_metadata_written("Y1eUkuvLYkdEPIbC0IkhELmre4o", "m.json"),
            " :: Metadata for image Y1eUkuvLYkdEPIbC0IkhELmre4o written to m.json\n"
        );
        assert_eq!(
            render_metadata_signed("X", "jane@example.org", "s.json"),
            " :: Metadata for image X signed as jane@example.org, written to s.json\n"
        );
        assert_eq!(render_warning("careful"), "[WARNING] careful\n");
    }

    #[test]
    fn run_output_is_the_guides() {
        assert_eq!(
            render_run(&[instance(5507, InstanceState::Pending)]),
            "
 :::::::::::::::::::::::::
 :: Starting machine(s) ::
 :::::::::::::::::::::::::
 :: Starting 1 machine
 :: Machine 1 (vm ID: 5507)
 :: Done!
"
        );
    }

    #[test]
    fn run_output_for_several_machines() {
        let started = [
            instance(7, InstanceState::Pending),
            instance(8, InstanceState::Pending),
        ];
        assert_eq!(
            render_run(&started),
            "
 :::::::::::::::::::::::::
 :: Starting machine(s) ::
 :::::::::::::::::::::::::
 :: Starting 2 machines
 :: Machine 1 (vm ID: 7)
 :: Machine 2 (vm ID: 8)
 :: Done!
"
        );
    }

    #[test]
    fn quiet_and_kill_and_error_lines() {
        let i = instance(5507, InstanceState::Stopping);
        assert_eq!(render_id(&i), "5507\n");
        assert_eq!(
            render_kill(&i),
            " :: Killing instance 5507 (now Stopping)\n"
        );
        assert_eq!(
            render_error("instance 42 not found"),
            "[ERROR] instance 42 not found\n"
        );
    }

    #[test]
    fn instance_table_has_the_guides_columns_and_kib() {
        let mut running = instance(5507, InstanceState::Running);
        running.host = Some("vm-75.lal.stratuslab.eu".into());
        running.cpu_percent = Some(4);
        let mut pending = instance(12, InstanceState::Pending);
        pending.host = None;
        pending.vcpus = 2;
        pending.memory_mib = 2048;
        assert_eq!(
            render_instance_table(&[running, pending]),
            "\
id   state     vcpu memory    name            cpu% host/ip
5507 Running   1    131072    vm-5507         4    vm-75.lal.stratuslab.eu
12   Pending   2    2097152   vm-12           -    -
"
        );
    }

    #[test]
    fn instance_table_grows_columns_for_long_values() {
        let mut i = instance(123456, InstanceState::Running);
        i.name = "a-rather-long-instance-name".into();
        assert_eq!(
            render_instance_table(&[i]),
            "\
id     state     vcpu memory    name                        cpu% host/ip
123456 Running   1    131072    a-rather-long-instance-name -    node-1
"
        );
    }

    #[test]
    fn failed_instances_show_their_reason_under_the_row() {
        let mut failed = instance(9, InstanceState::Failed);
        failed.host = None;
        failed.reason = Some("no host has room for\n m1.xlarge".into());
        assert_eq!(
            render_instance_table(&[failed]),
            "\
id  state     vcpu memory    name            cpu% host/ip
9   Failed    1    131072    vm-9            -    -
    no host has room for m1.xlarge
"
        );
    }

    #[test]
    fn stopped_instances_show_why_under_the_row() {
        let mut stopped = instance(7, InstanceState::Stopped);
        stopped.reason = Some("the guest powered off".into());
        assert_eq!(
            render_instance_table(&[stopped]),
            "\
id  state     vcpu memory    name            cpu% host/ip
7   Stopped   1    131072    vm-7            -    node-1
    the guest powered off
"
        );
        assert_eq!(
            render_power(
                crate::client::PowerAction::Stop,
                &instance(7, InstanceState::PoweringOff)
            ),
            " :: Stopping instance 7 (now PoweringOff)\n"
        );
    }

    #[test]
    fn user_lines() {
        let alice = User {
            name: "alice".into(),
            admin: false,
        };
        let root = User {
            name: "root".into(),
            admin: true,
        };
        assert_eq!(
            render_user_created(&alice, Some("s3cret-pw")),
            "USER alice\nPASSWORD s3cret-pw\n"
        );
        assert_eq!(
            render_user_created(&root, None),
            "USER root (administrator)\n"
        );
        assert_eq!(
            render_user_updated(&root),
            "UPDATED user root (administrator)\n"
        );
        assert_eq!(
            render_users(&[alice, root]),
            "name  admin\nalice no\nroot  yes\n"
        );
    }

    /// A host as the API would show it: up, idle, no volume pool.
    pub(crate) fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            vcpus: 8,
            memory_mib: 16384,
            disk_gib: 200,
            domain_type: stratus_common::api::DomainType::Kvm,
            arch: "x86_64".into(),
            hypervisor: "qemu:///system".into(),
            used_vcpus: 0,
            used_memory_mib: 0,
            used_disk_gib: 0,
            instances: 0,
            status: "up".into(),
            status_since: None,
            maintenance: None,
            drained: false,
            fenced: None,
            moved_away: Vec::new(),
            last_seen: Some("2026-05-01T10:00:00Z".into()),
            unknown_domains: Vec::new(),
            images: Vec::new(),
            precache: Vec::new(),
            volume_pool_gib: None,
            volume_pool_used_gib: 0,
            roles: stratus_common::api::HostRole::both(),
            labels: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn in_maintenance(mut host: Host, reason: Option<&str>) -> Host {
        host.maintenance = Some(stratus_common::api::HostMaintenance {
            reason: reason.map(Into::into),
            since: "2026-05-01T09:00:00Z".into(),
        });
        host
    }

    #[test]
    fn host_table_shows_status_load_and_maintenance() {
        let busy = Host {
            used_vcpus: 3,
            used_memory_mib: 384,
            used_disk_gib: 0,
            instances: 2,
            volume_pool_gib: Some(100),
            volume_pool_used_gib: 15,
            ..host("node-1")
        };
        let down = Host {
            status: "down".into(),
            status_since: Some("2026-04-30T08:00:00Z".into()),
            last_seen: None,
            unknown_domains: vec!["stray\nvm".into(), "old-7".into()],
            roles: vec![HostRole::Storage],
            ..host("node-2")
        };
        let draining = Host {
            instances: 1,
            used_vcpus: 1,
            used_memory_mib: 128,
            used_disk_gib: 0,
            roles: vec![HostRole::Compute],
            labels: vec!["ssd".into(), "gpu".into()],
            ..in_maintenance(host("node-3"), None)
        };
        let drained = Host {
            drained: true,
            labels: vec!["ssd".into()],
            ..in_maintenance(host("node-4-long-name"), Some("disk\nreplacement"))
        };
        assert_eq!(
            render_hosts(&[busy, down, draining, drained]),
            "\
name             status         roles           instances vcpu memory MiB pool GiB labels  last seen
node-1           up             compute,storage 2         3/8  384/16384  15/100   -       2026/05/01 10:00:00
node-2           down           storage         0         0/8  0/16384    -        -       -
    unknown domains: stray vm, old-7
node-3           up,maintenance compute         1         1/8  128/16384  -        ssd,gpu 2026/05/01 10:00:00
    maintenance since 2026/05/01 09:00:00
node-4-long-name up,drained     compute,storage 0         0/8  0/16384    -        ssd     2026/05/01 10:00:00
    maintenance since 2026/05/01 09:00:00: disk replacement
"
        );
        assert_eq!(
            render_hosts(&[]),
            "name status roles instances vcpu memory MiB pool GiB labels last seen\n"
        );
    }

    #[test]
    fn host_labels_stay_one_cell() {
        let odd = Host {
            labels: vec!["a\nb".into(), "c".into()],
            roles: Vec::new(),
            ..host("h1")
        };
        assert_eq!(
            render_hosts(&[odd]),
            "\
name status roles instances vcpu memory MiB pool GiB labels last seen
h1   up     -     0         0/8  0/16384    -        a b,c  2026/05/01 10:00:00
"
        );
    }

    #[test]
    fn host_profile_line() {
        let tagged = Host {
            roles: vec![HostRole::Compute],
            labels: vec!["ssd".into(), "gpu".into()],
            ..host("h1")
        };
        assert_eq!(
            render_host_profile(&tagged),
            "UPDATED host h1: roles compute; labels ssd,gpu\n"
        );
        assert_eq!(
            render_host_profile(&host("h2")),
            "UPDATED host h2: roles compute,storage; labels (none)\n"
        );
    }

    /// A group as the API would show it: anti-affinity, alice's, two members (one not placed
    /// yet).
    pub(crate) fn group(name: &str) -> Group {
        Group {
            name: name.into(),
            owner: "alice".into(),
            policy: GroupPolicy::AntiAffinity,
            created: "2026-05-01T10:00:00Z".into(),
            members: vec![
                GroupMember {
                    id: 5507,
                    state: InstanceState::Running,
                    host: Some("node-1".into()),
                },
                GroupMember {
                    id: 5508,
                    state: InstanceState::Pending,
                    host: None,
                },
            ],
        }
    }

    #[test]
    fn group_table_shows_policy_owner_and_members_on_their_hosts() {
        let db = Group {
            policy: GroupPolicy::Affinity,
            owner: "bob".into(),
            members: Vec::new(),
            ..group("db")
        };
        assert_eq!(
            render_groups(&[group("web"), db]),
            "\
name policy        owner members id@host
web  anti-affinity alice 2       5507@node-1 5508@-
db   affinity      bob   0       -
"
        );
        assert_eq!(render_groups(&[]), "name policy owner members id@host\n");
    }

    #[test]
    fn group_confirmations() {
        assert_eq!(
            render_group_created(&group("web")),
            "GROUP web (anti-affinity)\n"
        );
        assert_eq!(render_deleted("group web"), "DELETED group web\n");
        let json = render_json(&group("web"));
        assert_eq!(serde_json::from_str::<Group>(&json).unwrap(), group("web"));
        assert!(json.contains("\"policy\": \"anti-affinity\""), "{json}");
    }

    #[test]
    fn host_update_and_removal_lines() {
        let drained = Host {
            drained: true,
            ..in_maintenance(host("h1"), Some("disk replacement"))
        };
        assert_eq!(
            render_host_updated(&drained),
            "MAINTENANCE host h1 (disk replacement): drained\n"
        );
        let busy = Host {
            instances: 2,
            ..in_maintenance(host("h1"), None)
        };
        assert_eq!(
            render_host_updated(&busy),
            "MAINTENANCE host h1: still holds 2 instances\n"
        );
        let one = Host {
            instances: 1,
            ..in_maintenance(host("h1"), Some("a\x1b[31mb"))
        };
        assert_eq!(
            render_host_updated(&one),
            "MAINTENANCE host h1 (a [31mb): still holds 1 instance\n"
        );
        assert_eq!(render_host_updated(&host("h1")), "IN SERVICE host h1\n");
        assert_eq!(render_removed_host("h1"), "REMOVED host h1\n");
    }

    #[test]
    fn empty_instance_table_is_the_header() {
        assert_eq!(
            render_instance_table(&[]),
            "id  state     vcpu memory    name            cpu% host/ip\n"
        );
    }

    #[test]
    fn types_table() {
        let types = [
            InstanceType {
                name: "m1.small".into(),
                vcpus: 1,
                memory_mib: 128,
                disk_gib: 1,
            },
            InstanceType {
                name: "c1.xlarge".into(),
                vcpus: 4,
                memory_mib: 2048,
                disk_gib: 20,
            },
        ];
        assert_eq!(
            render_types_table(&types),
            "\
Type              CPU        RAM       Disk
m1.small        1 CPU    128 MiB      1 GiB
c1.xlarge       4 CPU   2048 MiB     20 GiB
"
        );
    }

    /// The entry of the user's guide example (docs/marketplace.md).
    pub(crate) fn marketplace_entry() -> MarketplaceEntry {
        use stratus_common::marketplace::{Checksums, Endorser as MetadataEndorser, ImageKind};
        MarketplaceEntry {
            seq: 12,
            identifier: "GOaxJFdoEXvqAm9ArJgnZO_ky6F".into(),
            endorser_email: "jane.doe@example.org".into(),
            endorser_subject: "CN=Jane Doe,OU=LAL,O=Example Grid,C=FR".into(),
            cert_sha256: "cd".repeat(32),
            trusted_by: "ca".into(),
            uploaded: "2026-11-21T22:46:00.000Z".into(),
            metadata: stratus_common::marketplace::ImageMetadata {
                identifier: "GOaxJFdoEXvqAm9ArJgnZO_ky6F".into(),
                kind: ImageKind::Machine,
                format: DiskFormat::Qcow2,
                compression: Compression::Gzip,
                size: 196_616,
                checksums: Checksums {
                    sha256: "ab".repeat(32),
                    sha1: None,
                    md5: None,
                },
                os: "ttylinux".into(),
                os_version: "9.3".into(),
                arch: "x86_64".into(),
                version: "1.0".into(),
                description: "ttylinux 9.3 test appliance".into(),
                locations: vec!["https://images.example.org/ttylinux-9.3.qcow2.gz".into()],
                endorser: MetadataEndorser {
                    email: "jane.doe@example.org".into(),
                    subject: "CN=Jane Doe,OU=LAL,O=Example Grid,C=FR".into(),
                },
                created: "2026-11-21T22:45:37Z".into(),
                valid_until: "2027-11-21T22:45:37Z".into(),
                deprecated: None,
                kernel: None,
                initrd: None,
                cmdline: None,
            },
        }
    }

    fn site_image() -> Image {
        Image {
            name: "debian-12".into(),
            format: DiskFormat::Raw,
            disk: stratus_common::api::Artifact {
                locations: vec!["file:///srv/images/debian-12.raw".into()],
                sha256: "ef".repeat(32),
                size: Some(2_147_483_648),
                compression: Compression::None,
            },
            kernel: None,
            initrd: None,
            cmdline: None,
            owner: "admin".into(),
            created: "2024-05-01T10:00:00.000Z".into(),
        }
    }

    fn page(items: Vec<MarketplaceEntry>, total: u64, offset: u64) -> MarketplacePage {
        MarketplacePage {
            items,
            total,
            offset,
            limit: 100,
        }
    }

    #[test]
    fn marketplace_entry_block() {
        assert_eq!(
            render_marketplace_entry(&marketplace_entry()),
            "\
:: IMAGE GOaxJFdoEXvqAm9ArJgnZO_ky6F
    os: ttylinux 9.3 (x86_64)   kind: machine   format: qcow2 (gzip)   size: 196616
    version: 1.0   endorser: jane.doe@example.org   created: 2026/11/21 22:45:37   valid until: 2027/11/21 22:45:37
    description: ttylinux 9.3 test appliance
"
        );
    }

    #[test]
    fn deprecated_disk_entry_without_description() {
        let mut entry = marketplace_entry();
        let m = &mut entry.metadata;
        m.kind = stratus_common::marketplace::ImageKind::Disk;
        m.format = DiskFormat::Raw;
        m.compression = Compression::None;
        m.description = String::new();
        m.created = "2026-12-01T08:00:00.250Z".into();
        m.deprecated = Some("security hole,\nuse 9.4".into());
        assert_eq!(
            render_marketplace_entry(&entry),
            "\
:: IMAGE GOaxJFdoEXvqAm9ArJgnZO_ky6F
    os: ttylinux 9.3 (x86_64)   kind: disk   format: raw   size: 196616
    version: 1.0   endorser: jane.doe@example.org   created: 2026/12/01 08:00:00   valid until: 2027/11/21 22:45:37
    deprecated: security hole, use 9.4
"
        );
    }

    #[test]
    fn site_image_block() {
        let mut image = site_image();
        assert_eq!(
            render_site_image(&image),
            ":: SITE IMAGE debian-12\n    format: raw   owner: admin   created: 2024/05/01 10:00:00\n"
        );
        image.format = DiskFormat::Qcow2;
        image.disk.compression = Compression::Zstd;
        image.created = "not a time\x1b[2J".into();
        assert_eq!(
            render_site_image(&image),
            ":: SITE IMAGE debian-12\n    format: qcow2 (zstd)   owner: admin   created: not a time [2J\n"
        );
    }

    #[test]
    fn page_note_only_when_paginated() {
        let one = || vec![marketplace_entry()];
        assert_eq!(render_page_note(&page(one(), 1, 0)), "");
        assert_eq!(render_page_note(&page(Vec::new(), 0, 0)), "");
        assert_eq!(
            render_page_note(&page(one(), 3, 0)),
            "(showing 1-1 of 3 Marketplace entries)\n"
        );
        assert_eq!(
            render_page_note(&page(vec![marketplace_entry(); 2], 3, 1)),
            "(showing 2-3 of 3 Marketplace entries)\n"
        );
        assert_eq!(
            render_page_note(&page(Vec::new(), 3, 100)),
            "(showing none of 3 Marketplace entries: offset 100)\n"
        );
    }

    #[test]
    fn image_list_has_entries_then_site_images_then_the_note() {
        let list = ImageList {
            site: vec![site_image()],
            marketplace: page(vec![marketplace_entry()], 250, 0),
        };
        assert_eq!(
            render_image_list(&list),
            "\
:: IMAGE GOaxJFdoEXvqAm9ArJgnZO_ky6F
    os: ttylinux 9.3 (x86_64)   kind: machine   format: qcow2 (gzip)   size: 196616
    version: 1.0   endorser: jane.doe@example.org   created: 2026/11/21 22:45:37   valid until: 2027/11/21 22:45:37
    description: ttylinux 9.3 test appliance
:: SITE IMAGE debian-12
    format: raw   owner: admin   created: 2024/05/01 10:00:00
(showing 1-1 of 250 Marketplace entries)
"
        );
        let empty = ImageList {
            site: Vec::new(),
            marketplace: page(Vec::new(), 0, 0),
        };
        assert_eq!(render_image_list(&empty), "");
    }

    #[test]
    fn upload_deprecate_and_policy_lines() {
        let entry = marketplace_entry();
        assert_eq!(
            render_uploaded(&entry),
            "UPLOADED GOaxJFdoEXvqAm9ArJgnZO_ky6F endorser jane.doe@example.org (entry 12)\n"
        );
        assert_eq!(
            render_deprecated(&entry),
            "DEPRECATED GOaxJFdoEXvqAm9ArJgnZO_ky6F (entry 12)\n"
        );
        let mut verdict = PolicyVerdict {
            identifier: entry.identifier.clone(),
            allowed: true,
            code: None,
            reason: None,
            entry: Some(entry),
        };
        assert_eq!(
            render_verdict(&verdict),
            "ALLOWED GOaxJFdoEXvqAm9ArJgnZO_ky6F endorser jane.doe@example.org (entry 12)\n"
        );
        verdict.allowed = false;
        verdict.entry = None;
        verdict.code = Some("deprecated".into());
        verdict.reason = Some(
            "image GOaxJFdoEXvqAm9ArJgnZO_ky6F is deprecated: security hole, use 9.4 \
             (endorser jane.doe@example.org)"
                .into(),
        );
        assert_eq!(
            render_verdict(&verdict),
            "REFUSED GOaxJFdoEXvqAm9ArJgnZO_ky6F: image GOaxJFdoEXvqAm9ArJgnZO_ky6F is \
             deprecated: security hole, use 9.4 (endorser jane.doe@example.org)\n"
        );
        verdict.reason = None;
        assert_eq!(
            render_verdict(&verdict),
            "REFUSED GOaxJFdoEXvqAm9ArJgnZO_ky6F: deprecated\n"
        );
    }

    #[test]
    fn endorser_blocks_and_registration() {
        let endorser = Endorser {
            subject: "CN=Jane Doe,O=Example,C=FR".into(),
            emails: vec!["jane@example.org".into(), "jd@lab.example.org".into()],
            cert_sha256: "0f".repeat(32),
            not_after: "2045-01-01T00:00:00.000Z".into(),
            added: "2026-11-21T22:00:00.000Z".into(),
            added_by: "admin".into(),
        };
        assert_eq!(
            render_endorsers(std::slice::from_ref(&endorser)),
            format!(
                ":: ENDORSER CN=Jane Doe,O=Example,C=FR
    emails: jane@example.org, jd@lab.example.org   valid until: 2045/01/01 00:00:00
    added: 2026/11/21 22:00:00 by admin
    certificate sha256: {}
",
                "0f".repeat(32)
            )
        );
        assert_eq!(render_endorsers(&[]), "");
        let mut no_email = endorser;
        no_email.emails.clear();
        assert_eq!(
            render_endorser_registered(&no_email),
            format!(
                "REGISTERED endorser (none) (CN=Jane Doe,O=Example,C=FR) certificate sha256 {}\n",
                "0f".repeat(32)
            )
        );
    }

    /// A disk of the guide's `describe-volumes` example, as the API shows it.
    pub(crate) fn volume(id: &str) -> Volume {
        Volume {
            id: id.into(),
            owner: "testor1".into(),
            tag: "myprivate-disk".into(),
            size: 5,
            visibility: "private".into(),
            volume_type: stratus_common::volumes::VolumeType::DataRw,
            state: VolumeState::Available,
            reason: None,
            host: "node-1".into(),
            created: "2011-07-20T16:10:37.000Z".into(),
            serial: id.chars().take(20).collect(),
            users: 0,
            attachments: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn attachment(
        instance: u64,
        device: &str,
        state: stratus_common::volumes::AttachmentState,
    ) -> stratus_common::volumes::VolumeAttachment {
        stratus_common::volumes::VolumeAttachment {
            instance,
            device: device.into(),
            state,
            hotplug: true,
            read_only: false,
            remote: false,
            since: "2011-07-20T16:40:00.000Z".into(),
        }
    }

    #[test]
    fn volume_blocks_are_the_guides_then_type_state_and_attachments() {
        use stratus_common::volumes::{AttachmentState, VolumeType};
        let mut public = volume("a4324f26-39e0-4965-8c8f-3287cd0936e5");
        public.visibility = "public".into();
        public.tag = "mypublic-disk".into();
        public.owner = "testor2".into();
        public.created = "2011-07-20T16:37:10.000Z".into();
        let private = volume("9c5a2c03-8243-4a1b-a248-0f0d22d948c2");
        assert_eq!(
            render_volumes(&[public, private]),
            "\
:: DISK a4324f26-39e0-4965-8c8f-3287cd0936e5
    created: 2011/07/20 16:37:10
    visibility: public
    tag: mypublic-disk
    owner: testor2
    size: 5
    users: 0
    type: data-rw
:: DISK 9c5a2c03-8243-4a1b-a248-0f0d22d948c2
    created: 2011/07/20 16:10:37
    visibility: private
    tag: myprivate-disk
    owner: testor1
    size: 5
    users: 0
    type: data-rw
"
        );

        let mut shared = volume("1e8e9104-681c-4269-8aae-e513c6723ac6");
        shared.volume_type = VolumeType::DataRo;
        shared.users = 2;
        shared.attachments = vec![
            attachment(24, "/dev/vdb", AttachmentState::Attached),
            attachment(25, "/dev/vdc", AttachmentState::Stuck),
        ];
        assert_eq!(
            render_volume(&shared),
            "\
:: DISK 1e8e9104-681c-4269-8aae-e513c6723ac6
    created: 2011/07/20 16:10:37
    visibility: private
    tag: myprivate-disk
    owner: testor1
    size: 5
    users: 2
    type: data-ro
    attached: VM 24 on /dev/vdb (attached)
    attached: VM 25 on /dev/vdc (stuck)
"
        );
        assert_eq!(render_volumes(&[]), "");
    }

    #[test]
    fn volume_state_shows_unless_available_and_the_reason_when_failed() {
        let mut creating = volume("5822c376-9ce1-434e-95d1-cdaa240cd47c");
        creating.state = VolumeState::Creating;
        creating.tag = String::new();
        let text = render_volume(&creating);
        assert!(text.contains("\n    tag: \n"), "{text}");
        assert!(
            text.ends_with("    type: data-rw\n    state: creating\n"),
            "{text}"
        );

        let mut failed = creating;
        failed.state = VolumeState::Failed;
        failed.reason = Some("no space\nleft on pool".into());
        assert!(
            render_volume(&failed)
                .ends_with("    state: failed\n    reason: no space left on pool\n"),
            "{}",
            render_volume(&failed)
        );
        // A reason kept from a past attachment is not a state: not shown when available.
        let mut available = failed;
        available.state = VolumeState::Available;
        assert!(render_volume(&available).ends_with("    type: data-rw\n"));
    }

    #[test]
    fn disk_confirmations_are_the_guides() {
        let id = "1e8e9104-681c-4269-8aae-e513c6723ac6";
        assert_eq!(render_disk(id), format!("DISK {id}\n"));
        assert_eq!(render_deleted(id), format!("DELETED {id}\n"));
        assert_eq!(
            render_attached(id, 24, "/dev/vda"),
            "ATTACHED 1e8e9104-681c-4269-8aae-e513c6723ac6 in VM 24 on /dev/vda\n"
        );
        assert_eq!(
            render_detached(id, 24, Some("/dev/vda")),
            "DETACHED 1e8e9104-681c-4269-8aae-e513c6723ac6 from VM 24 on /dev/vda\n"
        );
        assert_eq!(
            render_detached(id, 24, None),
            "DETACHED 1e8e9104-681c-4269-8aae-e513c6723ac6 from VM 24\n"
        );
        assert_eq!(
            render_forced_off(id, 24, Some("/dev/vdb")),
            "[WARNING] DISK 1e8e9104-681c-4269-8aae-e513c6723ac6: forced off VM 24 without its \
             guest releasing it: the guest may still hold /dev/vdb, and what it had not written \
             to the disk is lost\n"
        );
        assert!(render_forced_off(id, 24, None).contains("may still hold the device,"));
    }

    #[test]
    fn instance_disks_follow_their_row() {
        use stratus_common::volumes::{AttachmentState, InstanceDisk};
        let mut with_disks = instance(3, InstanceState::Running);
        with_disks.disks = vec![
            InstanceDisk {
                volume: "9c5a2c03-8243-4a1b-a248-0f0d22d948c2".into(),
                device: "/dev/vdb".into(),
                state: AttachmentState::Attached,
            },
            InstanceDisk {
                volume: "5822c376-9ce1-434e-95d1-cdaa240cd47c".into(),
                device: "/dev/vdc".into(),
                state: AttachmentState::Detaching,
            },
        ];
        assert_eq!(
            render_instance_table(&[with_disks, instance(4, InstanceState::Running)]),
            "\
id  state     vcpu memory    name            cpu% host/ip
3   Running   1    131072    vm-3            -    node-1
    disk 9c5a2c03-8243-4a1b-a248-0f0d22d948c2 on /dev/vdb (attached)
    disk 5822c376-9ce1-434e-95d1-cdaa240cd47c on /dev/vdc (detaching)
4   Running   1    131072    vm-4            -    node-1
"
        );
    }

    #[test]
    fn json_is_pretty_with_a_final_newline() {
        let text = render_json(&[instance(1, InstanceState::Running)]);
        assert!(text.starts_with("[\n  {\n    \"id\": 1,\n"), "{text}");
        assert!(text.ends_with("}\n]\n"), "{text}");
        let back: Vec<Instance> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![instance(1, InstanceState::Running)]);
    }
}
