//! The hosts pages (administrators): `/hosts`, every host with its status, what is placed on
//! it and its latest measured use; and `/hosts/{name}`, one host with graphs of its CPU, load,
//! memory, disk, network and running guests over the last hour or day (`?range=day`), drawn
//! by `assets/hosts.js` with uPlot from `GET /api/v1/hosts/{name}/usage`, and its instances.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use stratus_common::api::{Host, Instance, InstanceState};
use stratus_common::usage::{HostSample, Range};

use super::instances::label;
use super::layout::{not_found, page, Section};
use super::{administrator, html, Page};
use crate::api::Shared;
use crate::failure::{Failure, Kind};
use crate::services::Services;
use crate::users::Caller;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/hosts", get(list))
        .route("/hosts/{name}", get(detail))
}

/// Bytes as a person reads them (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn share(used: u64, total: u64) -> String {
    if total == 0 {
        return "–".into();
    }
    format!(
        "{} of {} ({:.0} %)",
        bytes(used),
        bytes(total),
        used as f64 * 100.0 / total as f64
    )
}

async fn list(State(services): Shared, headers: HeaderMap) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let hosts = services.hosts.list(&caller).await?;
    let latest: HashMap<String, HostSample> =
        services.observed.hosts.latest().into_iter().collect();
    Ok(html(
        StatusCode::OK,
        render_list(&caller, &hosts, &latest, position).into_string(),
    ))
}

fn render_list(
    caller: &Caller,
    hosts: &[Host],
    latest: &HashMap<String, HostSample>,
    position: u64,
) -> Markup {
    page(
        caller,
        Section::Hosts,
        "Hosts",
        Some(position),
        &["hosts.js"],
        html! {
            section {
                h2 { "Hosts" }
                table #hosts {
                    thead { tr {
                        th { "host" } th { "status" } th { "service" } th { "roles" } th { "labels" }
                        th { "instances" } th { "vCPUs placed" }
                        th { "memory placed" } th { "CPU" } th { "load" } th { "memory used" }
                        th { "disk used" } th { "volume pool" } th { "last seen" } th { "unknown domains" }
                    } }
                    tbody {
                        @for host in hosts {
                            @let sample = latest.get(&host.name);
                            tr data-host=(host.name) data-status=(host.status) {
                                td { a href={ "/hosts/" (host.name) } { (host.name) } }
                                td.status { (host.status) }
                                td.service { (service(host)) }
                                td.roles { (roles(host)) }
                                td.labels { (host.labels.join(", ")) }
                                td.instances { (host.instances) }
                                td { (host.used_vcpus) " / " (host.vcpus) }
                                td { (host.used_memory_mib) " / " (host.memory_mib) " MiB" }
                                td.cpu { (sample.map_or("–".into(), |s| format!("{:.0} %", s.cpu_percent))) }
                                td { (sample.map_or("–".into(), |s| format!("{:.2}", s.load1))) }
                                td { (sample.map_or("–".into(), |s| share(s.memory_used_bytes, s.memory_total_bytes))) }
                                td { (sample.map_or("–".into(), |s| share(s.disk_used_bytes, s.disk_total_bytes))) }
                                td { (host.volume_pool_gib.map_or("–".into(), |g| format!("{} / {g} GiB", host.volume_pool_used_gib))) }
                                td { (host.last_seen.as_deref().unwrap_or("–")) }
                                td { (host.unknown_domains.join(", ")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the host is for: `compute, storage`.
fn roles(host: &Host) -> String {
    let roles: Vec<String> = host.roles.iter().map(ToString::to_string).collect();
    roles.join(", ")
}

/// Whether the host takes new instances: in service, or in maintenance (with its reason), or
/// drained (in maintenance and holding no instance any more); and whether it is fenced (its
/// instances that may be evacuated moved away) or still holds copies moved elsewhere.
fn service(host: &Host) -> String {
    let mut text = maintenance(host);
    if let Some(since) = &host.fenced {
        text.push_str(&format!("; fenced since {since}"));
    }
    if !host.moved_away.is_empty() {
        text.push_str(&format!(
            "; {} instance(s) moved away, copies to destroy",
            host.moved_away.len()
        ));
    }
    text
}

fn maintenance(host: &Host) -> String {
    match &host.maintenance {
        None => "in service".to_owned(),
        Some(m) => {
            let state = if host.drained {
                "drained"
            } else {
                "maintenance"
            };
            match &m.reason {
                Some(reason) => format!("{state}: {reason}"),
                None => state.to_owned(),
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Detail {
    range: Range,
}

async fn detail(
    State(services): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<Detail>,
) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let host = match services.hosts.show(&caller, &name).await {
        Ok(host) => host,
        Err(e) if e.kind() == Kind::NotFound => {
            return Ok(html(
                StatusCode::NOT_FOUND,
                not_found(
                    &caller,
                    Section::Hosts,
                    &format!("There is no host {name}."),
                )
                .into_string(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let instances: Vec<Instance> = services
        .instances
        .list(&caller)
        .await?
        .into_iter()
        .filter(|i| {
            i.host.as_deref() == Some(name.as_str())
                && !matches!(i.state, InstanceState::Done | InstanceState::Failed)
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        render_detail(&caller, &host, &instances, query.range, position).into_string(),
    ))
}

/// The graphs a host's page draws: (ID, title).
const GRAPHS: [(&str, &str); 6] = [
    ("cpu", "CPU (% of all CPUs)"),
    ("load", "Load (1 min)"),
    ("memory", "Memory used"),
    ("disk", "Disk used (state directory)"),
    ("network", "Network (physical interfaces)"),
    ("instances", "Running guests"),
];

fn render_detail(
    caller: &Caller,
    host: &Host,
    instances: &[Instance],
    range: Range,
    position: u64,
) -> Markup {
    page(
        caller,
        Section::Hosts,
        &format!("Host {}", host.name),
        Some(position),
        &["uplot.js", "hosts.js"],
        html! {
            div.grid #host data-host=(host.name) data-range=(label(&range)) data-status=(host.status) {
                section {
                    h2 { "Host " (host.name) }
                    dl.facts {
                        dt { "status" } dd #status { (host.status) (host.status_since.as_deref().map(|t| format!(" since {t}")).unwrap_or_default()) }
                        dt { "service" } dd #service { (service(host)) }
                        dt { "hypervisor" } dd { (host.hypervisor) " (" (label(&host.domain_type)) ", " (host.arch) ")" }
                        dt { "capacity" } dd { (host.vcpus) " vCPUs, " (host.memory_mib) " MiB, " (host.disk_gib) " GiB" }
                        dt { "placed" } dd { (host.used_vcpus) " vCPUs, " (host.used_memory_mib) " MiB, " (host.used_disk_gib) " GiB, " (host.instances) " instances" }
                        dt { "volume pool" } dd { (host.volume_pool_gib.map_or("none".into(), |g| format!("{} of {g} GiB used", host.volume_pool_used_gib))) }
                        dt { "cached images" } dd { (host.images.len()) }
                        dt { "last seen" } dd { (host.last_seen.as_deref().unwrap_or("–")) }
                    }
                }
                section {
                    h2 { "Instances on it" }
                    @if instances.is_empty() { p.muted { "None." } }
                    @else {
                        table {
                            thead { tr { th { "id" } th { "name" } th { "owner" } th { "state" } } }
                            tbody {
                                @for instance in instances {
                                    tr data-id=(instance.id) data-state=(instance.state.as_str()) {
                                        td { a href={ "/instances/" (instance.id) } { (instance.id) } }
                                        td { (instance.name) }
                                        td { (instance.owner) }
                                        td.state { (instance.state.as_str()) }
                                    }
                                }
                            }
                        }
                    }
                }
                section.wide {
                    h2 {
                        "Use over the last "
                        @match range {
                            Range::Hour => { "hour · " a href={ "/hosts/" (host.name) "?range=day" } { "day" } }
                            Range::Day => { "day · " a href={ "/hosts/" (host.name) } { "hour" } }
                        }
                        " " span.muted #graph-note {}
                    }
                    div.graphs {
                        @for (id, title) in GRAPHS {
                            figure.graph data-graph=(id) {
                                figcaption { (title) }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(share(1 << 30, 4 << 30), "1.0 GiB of 4.0 GiB (25 %)");
        assert_eq!(share(1, 0), "–");
    }

    #[test]
    fn a_hosts_service_says_maintenance_fencing_and_copies_to_destroy() {
        let mut host = Host {
            name: "node-1".into(),
            vcpus: 4,
            memory_mib: 4096,
            disk_gib: 100,
            domain_type: stratus_common::api::DomainType::Kvm,
            arch: "x86_64".into(),
            hypervisor: "QEMU".into(),
            used_vcpus: 0,
            used_memory_mib: 0,
            used_disk_gib: 0,
            instances: 0,
            status: "down".into(),
            status_since: None,
            drained: false,
            maintenance: None,
            last_seen: None,
            unknown_domains: Vec::new(),
            images: Vec::new(),
            precache: Vec::new(),
            volume_pool_gib: None,
            fenced: None,
            moved_away: Vec::new(),
            volume_pool_used_gib: 0,
            roles: stratus_common::api::HostRole::both(),
            labels: vec!["ssd".into(), "gpu".into()],
            changes: Vec::new(),
        };
        assert_eq!(service(&host), "in service");
        assert_eq!(roles(&host), "compute, storage");
        host.fenced = Some("2026-12-08T01:00:00Z".into());
        host.moved_away = vec![7, 9];
        assert_eq!(
            service(&host),
            "in service; fenced since 2026-12-08T01:00:00Z; 2 instance(s) moved away, copies to destroy"
        );
        let page = render_list(
            &Caller {
                name: "admin".into(),
                admin: true,
                seen: 0,
                via: Default::default(),
            },
            &[host],
            &HashMap::new(),
            0,
        )
        .into_string();
        assert!(
            page.contains("<td class=\"labels\">ssd, gpu</td>"),
            "{page}"
        );
        assert!(
            page.contains("<td class=\"roles\">compute, storage</td>"),
            "{page}"
        );
    }
}
