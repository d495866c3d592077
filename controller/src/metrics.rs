//! The controller's metrics, in the Prometheus text format (version 0.0.4, [`CONTENT_TYPE`];
//! `GET /metrics`, administrators):
//! this node's Raft (role, term, commit and applied index, leader changes, proposal latency,
//! snapshot size), the API's request latency by route, method and status, the cloud's
//! instances by state, hosts up and down, volumes by state, and placement latency.
//!
//! Latencies are histograms observed where the work happens (the replica's proposals, the
//! instances service's placement, a route layer around every API handler); the rest is read
//! at scrape time from this node's state, so a scrape shows this node's view (a follower's
//! may lag the leader's by a few entries).

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use stratus_common::api::InstanceState;
use stratus_common::volumes::VolumeState;

use crate::replica::{Consistency, Replica, ReplicaError};
use crate::services::Services;
use crate::state::Event;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The buckets of every latency histogram: 0.5 ms to about 16 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Clone)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        latency_histogram()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route's template (`/api/v1/instances/{id}`), never the raw path.
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram, LatencyHistogram>,
    leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    snapshot_bytes: Gauge,
    voters: Gauge,
    instances: Family<StateLabel, Gauge>,
    hosts: Family<StatusLabel, Gauge>,
    volumes: Family<StateLabel, Gauge>,
}

const VOLUME_STATES: [(VolumeState, &str); 4] = [
    (VolumeState::Creating, "creating"),
    (VolumeState::Available, "available"),
    (VolumeState::Failed, "failed"),
    (VolumeState::Deleting, "deleting"),
];

impl Metrics {
    /// Registers every metric; `placement` is the instances service's placement histogram.
    /// Counts leader changes from now on (on the current tokio runtime).
    pub fn start(replica: &Replica, placement: Histogram) -> Arc<Self> {
        let mut registry = Registry::with_prefix("stratus");
        let leader_changes = Counter::<u64>::default();
        let mut this = Self {
            requests: Family::new_with_constructor(LatencyHistogram),
            leader: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            voters: Gauge::default(),
            instances: Family::default(),
            hosts: Family::default(),
            volumes: Family::default(),
            registry: Registry::default(),
        };
        let raft = registry.sub_registry_with_prefix("raft");
        raft.register(
            "leader",
            "1 if this node leads the controller group, else 0",
            this.leader.clone(),
        );
        raft.register("term", "The Raft term this node is in", this.term.clone());
        raft.register(
            "commit_index",
            "The highest log index this node knows committed",
            this.commit_index.clone(),
        );
        raft.register(
            "applied_index",
            "The highest log index this node applied",
            this.applied_index.clone(),
        );
        raft.register(
            "last_index",
            "The index of the last entry in this node's log",
            this.last_index.clone(),
        );
        raft.register(
            "snapshot_bytes",
            "The size of this node's latest state-machine snapshot",
            this.snapshot_bytes.clone(),
        );
        raft.register(
            "voters",
            "Voting members of the controller group",
            this.voters.clone(),
        );
        raft.register(
            "leader_changes",
            "Leader changes this node saw since it started",
            leader_changes.clone(),
        );
        raft.register(
            "proposal_seconds",
            "Time from proposing a command to its being committed and applied on this node",
            replica.proposal_seconds(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API requests served by this node, by route template, method and status",
            this.requests.clone(),
        );
        registry.register(
            "instances",
            "Instances by state, as this node's state holds them",
            this.instances.clone(),
        );
        registry.register(
            "hosts",
            "Registered hosts by status (up: heard from within the host timeout)",
            this.hosts.clone(),
        );
        registry.register("volumes", "Persistent disks by state", this.volumes.clone());
        registry.register(
            "placement_seconds",
            "Time to choose a host for a new instance",
            placement,
        );
        let mut rounds = replica.subscribe();
        tokio::spawn(async move {
            while let Ok(round) = rounds.recv().await {
                for (_, event) in &round.events {
                    if matches!(event, Event::LeaderChanged { .. }) {
                        leader_changes.inc();
                    }
                }
            }
        });
        this.registry = registry;
        Arc::new(this)
    }

    /// Records one API request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .observe(seconds);
    }

    /// Every metric as this node sees it now, in the Prometheus text format.
    pub async fn render(&self, services: &Services) -> Result<String, ReplicaError> {
        let status = services.replica.status();
        let set = |gauge: &Gauge, value: u64| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(
            &self.leader,
            u64::from(status.leader == Some(status.node_id)),
        );
        set(&self.term, status.term);
        set(&self.commit_index, status.commit_index);
        set(&self.applied_index, status.applied_index);
        set(&self.last_index, status.last_index);
        set(&self.snapshot_bytes, status.snapshot_bytes);
        set(&self.voters, status.voters.len() as u64);
        let (instances, volumes, hosts, up) = services
            .replica
            .read(Consistency::Stale, |s| {
                let mut instances: BTreeMap<&'static str, u64> = BTreeMap::new();
                for instance in s.instances.values() {
                    *instances.entry(instance.state.as_str()).or_default() += 1;
                }
                let volumes: Vec<VolumeState> = s.volumes.values().map(|v| v.state).collect();
                let up = s.hosts.keys().filter(|h| s.host_life(h).up).count() as u64;
                (instances, volumes, s.hosts.len() as u64, up)
            })
            .await?;
        for state in InstanceState::ALL {
            let count = instances.get(state.as_str()).copied().unwrap_or(0);
            set(
                &self.instances.get_or_create(&StateLabel {
                    state: state.as_str().to_owned(),
                }),
                count,
            );
        }
        for (state, name) in VOLUME_STATES {
            set(
                &self.volumes.get_or_create(&StateLabel {
                    state: name.to_owned(),
                }),
                volumes.iter().filter(|v| **v == state).count() as u64,
            );
        }
        for (name, count) in [("up", up), ("down", hosts.saturating_sub(up))] {
            set(
                &self.hosts.get_or_create(&StatusLabel {
                    status: name.to_owned(),
                }),
                count,
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        Ok(text)
    }
}
