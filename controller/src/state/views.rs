//! Rendering of state records as the API's view types.

use stratus_common::agent::domain_name;
use stratus_common::api::{
    Endorser, Group, GroupMember, Host, HostRole, Image, Instance, MarketplaceEntry, Network, Nic,
    StateChange,
};
use stratus_common::time::rfc3339_ms;

use stratus_common::volumes::{AttachmentState, InstanceDisk, Volume, VolumeAttachment};

use super::{
    EndorserRecord, GroupRecord, HostRecord, ImageRecord, InstanceRecord, NetworkRecord, State,
    VolumeRecord,
};
use crate::marketplace::{StoredEntry, TrustPath};

pub fn instance_view(state: &State, record: &InstanceRecord) -> Instance {
    let updated = record.history.last().map_or(record.created_ms, |t| t.at_ms);
    // Once the addresses are given back they may belong to another instance: not shown.
    let nics: Vec<Nic> = if record.holds_lease() {
        record
            .nics
            .iter()
            .map(|n| Nic {
                network: n.network.clone(),
                ip: n.ip.to_string(),
                mac: n.mac.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let rules = state.placement_rules(record.id);
    Instance {
        id: record.id,
        name: record.name.clone(),
        owner: record.owner.clone(),
        image: record.image.clone(),
        instance_type: record.instance_type.clone(),
        vcpus: record.vcpus,
        memory_mib: record.memory_mib,
        host: record.host.clone(),
        state: record.state,
        reason: record.reason.clone(),
        domain: domain_name(&state.cluster_id, record.id),
        created: rfc3339_ms(record.created_ms),
        updated: rfc3339_ms(updated),
        history: record
            .history
            .iter()
            .map(|t| StateChange {
                state: t.state,
                at: rfc3339_ms(t.at_ms),
                reason: t.reason.clone(),
            })
            .collect(),
        ip: nics.first().map(|n| n.ip.clone()),
        nics,
        disks: state
            .volumes
            .values()
            .flat_map(|v| v.attachments.iter().map(move |a| (v, a)))
            .filter(|(_, a)| a.instance == record.id)
            .map(|(v, a)| InstanceDisk {
                volume: v.id.clone(),
                device: format!("/dev/{}", a.target),
                state: a.state,
            })
            .collect(),
        group: rules.group.clone(),
        labels: rules.labels.iter().cloned().collect(),
        evacuate: rules.evacuate,
        restart: rules.restart,
        cpu_percent: None,
        changes: changes(state, &super::audit::key("instance", record.id)),
    }
}

/// The audit trail of `object` as the API shows it.
pub fn changes(state: &State, object: &str) -> Vec<stratus_common::api::Change> {
    state
        .audit
        .of(object)
        .iter()
        .map(|c| stratus_common::api::Change {
            at: rfc3339_ms(c.at_ms),
            by: c.by.clone(),
            action: c.action.clone(),
        })
        .collect()
}

/// A volume as the API shows it; an attachment Detaching for `stuck_after_ms` or more by
/// `now_ms` shows as Stuck.
pub fn volume_view(
    state: &State,
    record: &VolumeRecord,
    now_ms: u64,
    stuck_after_ms: u64,
) -> Volume {
    Volume {
        changes: changes(state, &super::audit::key("volume", &record.id)),
        id: record.id.clone(),
        owner: record.owner.clone(),
        tag: record.tag.clone(),
        size: record.size_gib,
        visibility: if record.public { "public" } else { "private" }.to_owned(),
        volume_type: record.volume_type,
        state: record.state,
        reason: record.reason.clone(),
        host: record.host.clone(),
        created: rfc3339_ms(record.created_ms),
        serial: stratus_common::volumes::serial(&record.id),
        users: record.attachments.len(),
        attachments: record
            .attachments
            .iter()
            .map(|a| VolumeAttachment {
                instance: a.instance,
                device: format!("/dev/{}", a.target),
                state: match a.state {
                    AttachmentState::Detaching
                        if now_ms.saturating_sub(a.since_ms) >= stuck_after_ms =>
                    {
                        AttachmentState::Stuck
                    }
                    state => state,
                },
                hotplug: a.hotplug,
                read_only: a.read_only,
                remote: a.export.is_some(),
                since: rfc3339_ms(a.since_ms),
            })
            .collect(),
    }
}

/// A site network with its address usage.
pub fn network_view(state: &State, record: &NetworkRecord) -> Network {
    let usage = state.ipam.usage(&record.name);
    Network {
        name: record.name.clone(),
        cidr: record.cidr.clone(),
        gateway: record.gateway.clone(),
        dns: record.dns.clone(),
        bridge: record.bridge.clone(),
        vlan: record.vlan,
        leases_used: usage.leased,
        leases_free: usage.free,
    }
}

pub fn image_view(record: &ImageRecord) -> Image {
    Image {
        name: record.name.clone(),
        format: record.format,
        disk: record.disk.clone(),
        kernel: record.kernel.clone(),
        initrd: record.initrd.clone(),
        cmdline: record.cmdline.clone(),
        owner: record.owner.clone(),
        created: rfc3339_ms(record.created_ms),
    }
}

/// A host with its usage; `last_seen_ms`, `up` and `unknown_domains` come from the agent's
/// recent contact, which is not replicated.
pub fn host_view(
    state: &State,
    record: &HostRecord,
    last_seen_ms: Option<u64>,
    unknown_domains: Vec<String>,
) -> Host {
    let usage = state.usage(&record.name);
    let life = state.host_life(&record.name);
    let profile = state.host_profile(&record.name);
    Host {
        name: record.name.clone(),
        vcpus: record.vcpus,
        memory_mib: record.memory_mib,
        disk_gib: record.disk_gib,
        domain_type: record.domain_type,
        arch: record.arch.clone(),
        hypervisor: record.hypervisor.clone(),
        used_vcpus: usage.vcpus,
        used_memory_mib: usage.memory_mib,
        used_disk_gib: usage.disk_gib,
        instances: usage.instances,
        status: if life.up { "up" } else { "down" }.to_owned(),
        status_since: (life.since_ms > 0).then(|| rfc3339_ms(life.since_ms)),
        drained: life.maintenance.is_some() && state.holdings(&record.name).instances == 0,
        maintenance: life
            .maintenance
            .map(|m| stratus_common::api::HostMaintenance {
                reason: m.reason,
                since: rfc3339_ms(m.since_ms),
            }),
        last_seen: last_seen_ms.map(rfc3339_ms),
        unknown_domains,
        images: Vec::new(),
        precache: Vec::new(),
        volume_pool_gib: record.volume_pool_gib,
        fenced: state.fenced_since(&record.name).map(rfc3339_ms),
        moved_away: state.moved_away(&record.name).into_iter().collect(),
        volume_pool_used_gib: state.pool_used_gib(&record.name),
        roles: [
            (profile.compute, HostRole::Compute),
            (profile.storage, HostRole::Storage),
        ]
        .into_iter()
        .filter_map(|(has, role)| has.then_some(role))
        .collect(),
        labels: profile.labels.iter().cloned().collect(),
        changes: changes(state, &super::audit::key("host", &record.name)),
    }
}

/// A Marketplace entry as the API shows it.
pub fn entry_view(stored: &StoredEntry) -> MarketplaceEntry {
    let entry = &stored.entry;
    MarketplaceEntry {
        seq: stored.seq,
        identifier: entry.metadata.identifier.clone(),
        endorser_email: entry.endorser_email.clone(),
        endorser_subject: entry.endorser_subject.clone(),
        cert_sha256: entry.cert_sha256.clone(),
        trusted_by: match entry.trust {
            TrustPath::CertificateAuthority { .. } => "ca",
            TrustPath::RegisteredEndorser => "endorser",
        }
        .to_owned(),
        uploaded: rfc3339_ms(stored.uploaded_ms),
        metadata: entry.metadata.clone(),
    }
}

pub fn endorser_view(record: &EndorserRecord) -> Endorser {
    Endorser {
        subject: record.subject.clone(),
        emails: record.emails.clone(),
        cert_sha256: record.cert_sha256.clone(),
        not_after: rfc3339_ms(record.not_after_ms),
        added: rfc3339_ms(record.added_ms),
        added_by: record.added_by.clone(),
    }
}

/// A server group as the API shows it: its members that still hold their place.
pub fn group_view(state: &State, group: &GroupRecord) -> Group {
    Group {
        name: group.name.clone(),
        owner: group.owner.clone(),
        policy: group.policy,
        created: rfc3339_ms(group.created_ms),
        members: group
            .members
            .iter()
            .filter_map(|id| state.instances.get(id))
            .filter(|i| i.holds_capacity())
            .map(|i| GroupMember {
                id: i.id,
                state: i.state,
                host: i.host.clone(),
            })
            .collect(),
    }
}
