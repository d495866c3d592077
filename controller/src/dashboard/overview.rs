//! The overview (`/`, administrators): is the cloud healthy, and if not, why. The controller
//! group (members, leader, term, lag), hosts up and down, instances by state, how long guests
//! took to boot, and the latest activity. The counts are kept current by
//! `assets/overview.js` from the event stream: the page carries every unfinished instance's
//! state (a JSON data block), so a change moves one instance from one count to another.

use std::collections::BTreeMap;

use maud::{html, Markup, PreEscaped};
use stratus_common::api::{Cluster, Host, Instance, InstanceState};
use stratus_common::events::EventEnvelope;

use super::layout::{page, Section};
use crate::users::Caller;

/// How many of the latest events the activity log shows.
pub const ACTIVITY: usize = 50;
/// How many of the latest first boots the boot-time figures are taken from.
const BOOTS: usize = 100;

/// What the overview shows, as this node knew it when the page was made.
pub struct Overview {
    pub cluster: Cluster,
    pub hosts: Vec<Host>,
    pub instances: Vec<Instance>,
    pub activity: Vec<EventEnvelope>,
    /// The event stream's position when the page was made: the script follows from there.
    pub position: u64,
    /// The image caches' hits and misses, summed over the hosts that last pushed their use to
    /// this node (the leader); `None` when none did.
    pub cache: Option<(u64, u64)>,
}

pub const STATES: [InstanceState; 11] = InstanceState::ALL;

/// Time from acceptance to the first Running, over the latest first boots: (count, p50, p90)
/// in seconds.
pub fn boot_times(instances: &[Instance]) -> Option<(usize, f64, f64)> {
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    let mut boots: Vec<(String, f64)> = instances
        .iter()
        .filter_map(|i| {
            let running = i
                .history
                .iter()
                .find(|c| c.state == InstanceState::Running)?;
            let took = parse(&running.at)? - parse(&i.created)?;
            Some((running.at.clone(), took.as_seconds_f64().max(0.0)))
        })
        .collect();
    if boots.is_empty() {
        return None;
    }
    boots.sort_by(|a, b| b.0.cmp(&a.0));
    boots.truncate(BOOTS);
    let mut seconds: Vec<f64> = boots.into_iter().map(|(_, s)| s).collect();
    seconds.sort_by(f64::total_cmp);
    let at = |q: f64| seconds[((seconds.len() - 1) as f64 * q).round() as usize];
    Some((seconds.len(), at(0.5), at(0.9)))
}

pub fn render(caller: &Caller, view: &Overview) -> Markup {
    let cluster = &view.cluster;
    let up = view.hosts.iter().filter(|h| h.status == "up").count();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for instance in &view.instances {
        *counts.entry(instance.state.as_str()).or_default() += 1;
    }
    // Every instance's state and host, for the live counts (Done and Failed ones never change
    // again, but an event about one must not count it twice).
    let states: BTreeMap<String, (&str, Option<&str>)> = view
        .instances
        .iter()
        .map(|i| (i.id.to_string(), (i.state.as_str(), i.host.as_deref())))
        .collect();
    let states = serde_json::to_string(&states).expect("a map of strings");
    page(
        caller,
        Section::Overview,
        "Overview",
        Some(view.position),
        &["overview.js"],
        html! {
            div.grid {
                section #summary {
                    h2 { "At a glance" }
                    dl {
                        div { dt { "Leader" } dd #leader { (cluster.leader.map_or("none".to_owned(), |l| format!("node {l}"))) } }
                        div { dt { "Term" } dd #term { (cluster.term) } }
                        div { dt { "Hosts up" } dd #hosts-up data-up=(up) data-total=(view.hosts.len()) { (up) " of " (view.hosts.len()) } }
                        @for state in STATES {
                            div {
                                dt { a href={ "/instances?state=" (state.as_str()) } { (state.as_str()) } }
                                dd.count data-state=(state.as_str()) {
                                    (counts.get(state.as_str()).copied().unwrap_or(0))
                                }
                            }
                        }
                        @match boot_times(&view.instances) {
                            Some((n, p50, p90)) => {
                                div { dt { "Boot p50" } dd #boot-p50 title={ "over the latest " (n) " first boots" } { (format!("{p50:.1} s")) } }
                                div { dt { "Boot p90" } dd #boot-p90 { (format!("{p90:.1} s")) } }
                            }
                            None => {
                                div { dt { "Boot p50" } dd #boot-p50 { "–" } }
                            }
                        }
                        @match view.cache {
                            Some((hits, misses)) if hits + misses > 0 => {
                                div {
                                    dt { "Image cache hits" }
                                    dd #cache-hits title={ (hits) " hits, " (misses) " misses, since each agent started" } {
                                        (format!("{:.0} %", hits as f64 * 100.0 / (hits + misses) as f64))
                                    }
                                }
                            }
                            _ => {
                                div { dt { "Image cache hits" } dd #cache-hits { "–" } }
                            }
                        }
                    }
                }
                section #cluster {
                    h2 { "Controller nodes" }
                    table {
                        thead { tr { th { "node" } th { "role" } th { "API" } th { "lag" } th { "last contact" } } }
                        tbody {
                            @for member in &cluster.members {
                                tr data-member=(member.id) {
                                    td { (member.id) @if member.id == cluster.node_id { " (this one)" } }
                                    td.role { (serde_json::to_value(member.role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                                    td { (member.api_address) }
                                    td { (member.lag.map_or("–".to_owned(), |l| l.to_string())) }
                                    td { (member.last_contact_ms.map_or("–".to_owned(), |ms| format!("{ms} ms ago"))) }
                                }
                            }
                        }
                    }
                }
                section #hosts {
                    h2 { a href="/hosts" { "Hosts" } }
                    table {
                        thead { tr { th { "host" } th { "status" } th { "instances" } th { "vCPUs used" } th { "memory used" } th { "last seen" } } }
                        tbody {
                            @for host in &view.hosts {
                                tr data-host=(host.name) data-status=(host.status) {
                                    td { a href={ "/hosts/" (host.name) } { (host.name) } }
                                    td.status { (host.status) }
                                    td.instances { (host.instances) }
                                    td { (host.used_vcpus) " / " (host.vcpus) }
                                    td { (host.used_memory_mib) " / " (host.memory_mib) " MiB" }
                                    td { (host.last_seen.as_deref().unwrap_or("–")) }
                                }
                            }
                        }
                    }
                }
                section #activity {
                    h2 { a href="/events" { "Activity" } }
                    ol #activity-list reversed {
                        @for event in view.activity.iter().rev() {
                            (activity_item(event))
                        }
                    }
                }
            }
            script #instance-states type="application/json" { (PreEscaped(json_in_html(&states))) }
        },
    )
}

/// JSON made safe inside a `script` element: no `</script>` or comment opening can form.
pub fn json_in_html(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// One line of an activity log (`live.js` makes the same from live events).
pub fn activity_item(event: &EventEnvelope) -> Markup {
    html! {
        li data-seq=(event.seq) data-type=(event.kind) {
            time { (event.time) }
            " "
            span.type { (event.kind) }
            " "
            span.object { (event.object.key()) }
            @if let Some(owner) = &event.owner { " owner " (owner) }
            @if let Some(host) = &event.host { " on " (host) }
            @if let Some(reason) = event.details.get("reason").and_then(|r| r.as_str()) { ": " (reason) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_common::events::EventObject;

    #[test]
    fn values_are_escaped() {
        let event = EventEnvelope {
            seq: 1,
            time: "t".into(),
            kind: "instance-failed".into(),
            object: EventObject {
                kind: "instance".into(),
                id: "1".into(),
            },
            owner: Some("<script>alert(1)</script>".into()),
            host: None,
            details: Default::default(),
        };
        let text = activity_item(&event).into_string();
        assert!(!text.contains("<script>"), "{text}");
        assert!(text.contains("&lt;script&gt;"), "{text}");
        let json = json_in_html(r#"{"a":"</script><!--"}"#);
        assert!(!json.contains('<'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["a"], "</script><!--");
    }
}
