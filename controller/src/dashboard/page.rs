//! The dashboard's HTML, rendered with maud (every value escaped). The page carries its data
//! in elements the script (`assets/dashboard.js`) finds by ID and `data-` attributes, so it can
//! keep them current from the event stream; no inline script (the content security policy
//! allows scripts from this origin only).

use maud::{html, Markup, DOCTYPE};
use stratus_common::api::{Cluster, Host, Instance, InstanceState};
use stratus_common::events::EventEnvelope;

/// How many of the latest events the activity log shows.
pub const ACTIVITY: usize = 50;

/// What the overview shows, as this node knew it when the page was made.
pub struct Overview {
    pub cluster: Cluster,
    pub hosts: Vec<Host>,
    pub instances: Vec<Instance>,
    pub activity: Vec<EventEnvelope>,
    /// The event stream's position when the page was made: the script follows from there.
    pub position: u64,
    pub user: String,
}

const STATES: [InstanceState; 10] = [
    InstanceState::Pending,
    InstanceState::Booting,
    InstanceState::Running,
    InstanceState::Stopping,
    InstanceState::PoweringOff,
    InstanceState::Stopped,
    InstanceState::Starting,
    InstanceState::Rebooting,
    InstanceState::Done,
    InstanceState::Failed,
];

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · StratusLab" }
                link rel="stylesheet" href="/ui/dashboard.css";
            }
            body { (body) }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        html! {
            main.login {
                h1 { "StratusLab" }
                p { "The cloud's dashboard, for administrators." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                form method="post" action="/login" {
                    label { "User name " input name="username" autocomplete="username" required; }
                    label { "Password " input name="password" type="password" autocomplete="current-password" required; }
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

pub fn refused(user: &str) -> Markup {
    layout(
        "Refused",
        html! {
            main.login {
                h1 { "StratusLab" }
                p.error role="alert" {
                    "The dashboard is for administrators; " (user) " is not one."
                }
                form method="post" action="/logout" { button type="submit" { "Log out" } }
            }
        },
    )
}

pub fn overview(view: &Overview) -> Markup {
    let cluster = &view.cluster;
    let up = view.hosts.iter().filter(|h| h.status == "up").count();
    layout(
        "Dashboard",
        html! {
            header {
                h1 { "StratusLab" }
                span.cluster { "cluster " code { (cluster.cluster_id) } }
                span #connection data-state="connecting" { "connecting…" }
                form method="post" action="/logout" {
                    button type="submit" { "Log out " (view.user) }
                }
            }
            main #dashboard data-since=(view.position) {
                section #summary {
                    h2 { "At a glance" }
                    dl {
                        div { dt { "Leader" } dd #leader { (cluster.leader.map_or("none".to_owned(), |l| format!("node {l}"))) } }
                        div { dt { "Term" } dd #term { (cluster.term) } }
                        div { dt { "Hosts up" } dd #hosts-up { (up) " of " (view.hosts.len()) } }
                        @for state in STATES {
                            div {
                                dt { (state.as_str()) }
                                dd.count data-state=(state.as_str()) {
                                    (view.instances.iter().filter(|i| i.state == state).count())
                                }
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
                    h2 { "Hosts" }
                    table {
                        thead { tr { th { "host" } th { "status" } th { "instances" } th { "vCPUs used" } th { "memory used" } th { "last seen" } } }
                        tbody {
                            @for host in &view.hosts {
                                tr data-host=(host.name) data-status=(host.status) {
                                    td { (host.name) }
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
                section #instances {
                    h2 { "Instances" }
                    table {
                        thead { tr { th { "id" } th { "name" } th { "owner" } th { "host" } th { "state" } th { "since" } } }
                        tbody #instance-rows {
                            @for instance in view.instances.iter().rev() {
                                tr data-id=(instance.id) data-state=(instance.state.as_str()) {
                                    td { (instance.id) }
                                    td.name { (instance.name) }
                                    td.owner { (instance.owner) }
                                    td.host { (instance.host.as_deref().unwrap_or("–")) }
                                    td.state { (instance.state.as_str()) @if let Some(reason) = &instance.reason { " (" (reason) ")" } }
                                    td.since { (instance.created) }
                                }
                            }
                        }
                    }
                }
                section #activity {
                    h2 { "Activity" }
                    ol #activity-list reversed {
                        @for event in view.activity.iter().rev() {
                            (activity_item(event))
                        }
                    }
                }
            }
            script src="/ui/dashboard.js" {}
        },
    )
}

/// One line of the activity log (the script makes the same from live events).
fn activity_item(event: &EventEnvelope) -> Markup {
    html! {
        li data-seq=(event.seq) {
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
        let login = login(Some("a \"quoted\" <b>message</b>")).into_string();
        assert!(!login.contains("<b>"), "{login}");
    }
}
