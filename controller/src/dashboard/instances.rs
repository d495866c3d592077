//! The instances pages (administrators): `/instances`, every instance, filtered by state,
//! owner and host (`?state=&owner=&host=`), kept current from the event stream; and
//! `/instances/{id}`, one instance with its state history, disks, addresses and the tail of
//! its serial console (followed live by `assets/instances.js` through the API's console
//! stream, which the session cookie opens).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use stratus_common::api::Instance;

use super::layout::{not_found, page, Section};
use super::overview::STATES;
use super::{administrator, html, Page};
use crate::api::Shared;
use crate::services::Services;
use crate::users::Caller;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/instances", get(list))
        .route("/instances/{id}", get(detail))
}

/// The list's filters; an empty one is no filter.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub state: String,
    pub owner: String,
    pub host: String,
}

impl Filter {
    fn admits(&self, instance: &Instance) -> bool {
        (self.state.is_empty() || instance.state.as_str() == self.state)
            && (self.owner.is_empty() || instance.owner == self.owner)
            && (self.host.is_empty() || instance.host.as_deref() == Some(self.host.as_str()))
    }
}

/// A value's name as the API writes it (an enum's serde name).
pub fn label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

async fn list(State(services): Shared, headers: HeaderMap, Query(filter): Query<Filter>) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let position = services.events.position();
    let instances = services.instances.list(&caller).await?;
    Ok(html(
        StatusCode::OK,
        render_list(&caller, &instances, &filter, position).into_string(),
    ))
}

fn render_list(caller: &Caller, instances: &[Instance], filter: &Filter, position: u64) -> Markup {
    let mut owners: Vec<&str> = instances.iter().map(|i| i.owner.as_str()).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut hosts: Vec<&str> = instances.iter().filter_map(|i| i.host.as_deref()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let shown: Vec<&Instance> = instances
        .iter()
        .rev()
        .filter(|i| filter.admits(i))
        .collect();
    page(
        caller,
        Section::Instances,
        "Instances",
        Some(position),
        &["instances.js"],
        html! {
            section {
                h2 { "Instances" }
                form.filter method="get" action="/instances" {
                    label { "state "
                        select name="state" {
                            option value="" { "any" }
                            @for state in STATES {
                                option value=(state.as_str()) selected[filter.state == state.as_str()] { (state.as_str()) }
                            }
                        }
                    }
                    label { "owner "
                        select name="owner" {
                            option value="" { "any" }
                            @for owner in &owners {
                                option value=(owner) selected[filter.owner == *owner] { (owner) }
                            }
                        }
                    }
                    label { "host "
                        select name="host" {
                            option value="" { "any" }
                            @for host in &hosts {
                                option value=(host) selected[filter.host == *host] { (host) }
                            }
                        }
                    }
                    button type="submit" { "Filter" }
                    span #shown { (shown.len()) " shown" }
                }
                table #instances data-state=(filter.state) data-owner=(filter.owner) data-host=(filter.host) {
                    thead { tr { th { "id" } th { "name" } th { "owner" } th { "host" } th { "state" } th { "address" } th { "created" } } }
                    tbody #instance-rows {
                        @for instance in shown {
                            tr data-id=(instance.id) data-state=(instance.state.as_str()) {
                                td { a href={ "/instances/" (instance.id) } { (instance.id) } }
                                td.name { (instance.name) }
                                td.owner { (instance.owner) }
                                td.host { (instance.host.as_deref().unwrap_or("–")) }
                                td.state { (instance.state.as_str()) @if let Some(reason) = &instance.reason { " (" (reason) ")" } }
                                td.ip { (instance.ip.as_deref().unwrap_or("–")) }
                                td.since { (instance.created) }
                            }
                        }
                    }
                }
            }
        },
    )
}

async fn detail(State(services): Shared, headers: HeaderMap, Path(id): Path<String>) -> Page {
    let caller = match administrator(&services, &headers).await {
        Ok(caller) => caller,
        Err(answer) => return Ok(answer),
    };
    let missing = || {
        html(
            StatusCode::NOT_FOUND,
            not_found(
                &caller,
                Section::Instances,
                &format!("There is no instance {id}."),
            )
            .into_string(),
        )
    };
    let Ok(number) = id.parse::<u64>() else {
        return Ok(missing());
    };
    let position = services.events.position();
    let instance = match services.instances.get(&caller, number).await {
        Ok(instance) => instance,
        Err(e) if crate::failure::Failure::kind(&e) == crate::failure::Kind::NotFound => {
            return Ok(missing())
        }
        Err(e) => return Err(e.into()),
    };
    Ok(html(
        StatusCode::OK,
        render_detail(&caller, &instance, position).into_string(),
    ))
}

fn render_detail(caller: &Caller, instance: &Instance, position: u64) -> Markup {
    page(
        caller,
        Section::Instances,
        &format!("Instance {}", instance.id),
        Some(position),
        &["instances.js"],
        html! {
            div.grid #instance data-id=(instance.id) data-state=(instance.state.as_str()) {
                section {
                    h2 { "Instance " (instance.id) " · " (instance.name) }
                    dl.facts {
                        dt { "state" } dd #state { (instance.state.as_str()) @if let Some(reason) = &instance.reason { " (" (reason) ")" } }
                        dt { "owner" } dd { (instance.owner) }
                        dt { "host" } dd #host { @if let Some(host) = &instance.host { a href={ "/hosts/" (host) } { (host) } } @else { "–" } }
                        dt { "image" } dd { code { (instance.image) } }
                        dt { "type" } dd { (instance.instance_type) " (" (instance.vcpus) " vCPU, " (instance.memory_mib) " MiB)" }
                        dt { "domain" } dd { code { (instance.domain) } }
                        dt { "created" } dd { (instance.created) }
                        dt { "CPU" } dd { (instance.cpu_percent.map_or("–".to_owned(), |p| format!("{p} %"))) }
                    }
                }
                section {
                    h2 { "Addresses" }
                    @if instance.nics.is_empty() { p.muted { "None held." } }
                    @else {
                        table {
                            thead { tr { th { "network" } th { "address" } th { "MAC" } } }
                            tbody { @for nic in &instance.nics { tr { td { (nic.network) } td { (nic.ip) } td { code { (nic.mac) } } } } }
                        }
                    }
                }
                section {
                    h2 { "Disks" }
                    @if instance.disks.is_empty() { p.muted #no-disks { "No persistent disks." } }
                    @else {
                        table #disks {
                            thead { tr { th { "volume" } th { "device" } th { "state" } } }
                            tbody {
                                @for disk in &instance.disks {
                                    tr data-volume=(disk.volume) {
                                        td { a href={ "/volumes#" (disk.volume) } { (disk.volume) } }
                                        td { (disk.device) }
                                        td.state { (label(&disk.state)) }
                                    }
                                }
                            }
                        }
                    }
                }
                section #history {
                    h2 { "State history" }
                    table {
                        thead { tr { th { "time" } th { "state" } th { "reason" } } }
                        tbody #history-rows {
                            @for change in &instance.history {
                                tr data-state=(change.state.as_str()) {
                                    td { (change.at) }
                                    td.state { (change.state.as_str()) }
                                    td { (change.reason.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
                section.wide #console-section {
                    h2 { "Serial console " span.muted { "(the latest lines, as the host sends them)" } }
                    pre #console data-instance=(instance.id) {}
                }
            }
        },
    )
}
