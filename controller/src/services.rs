//! The controller's services, one per resource, wired to one [`Replica`]: users and
//! authentication, images and the Marketplace, networks, hosts and the agent protocol,
//! volumes, instances, and the view of the Raft cluster. The HTTP layer holds one
//! [`Services`] and calls into it; nothing else sees Raft.

use std::sync::Arc;
use std::time::Duration;

use crate::accounts::Accounts;
use crate::cluster::ClusterService;
use crate::events::EventHub;
use crate::groups::Groups;
use crate::hosts::Hosts;
use crate::images::{Images, MarketplaceSettings};
use crate::instances::Instances;
use crate::metrics::Metrics;
use crate::networks::Networks;
use crate::observed::Observed;
use crate::peer::Me;
use crate::replica::Replica;
use crate::users::throttle::FailureLimits;
use crate::users::Users;
use crate::volumes::{VolumeSettings, Volumes};

/// The site's settings the services need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The site CA, on a controller that signs host certificates.
    pub ca: Option<Arc<crate::pki::SiteCa>>,
    /// A host whose agent is silent this long gets no new work.
    pub host_timeout: Duration,
    /// A host's lease (`host_lease_secs`): `None` when hosts are fenced only by an administrator.
    pub host_lease: Option<Duration>,
    /// How placement orders the hosts that fit.
    pub placement: crate::scheduler::SitePlacement,
    pub marketplace: MarketplaceSettings,
    pub volumes: VolumeSettings,
    /// Who this node is to the other controllers.
    pub me: Me,
    /// How many failed logins an account and a source address may have before they wait.
    pub login_failures: FailureLimits,
    /// The TLS client configuration requests are passed to the leader with (this node's
    /// certificate, the site CA); `None` forwards over plain HTTP (tests only).
    pub forwarding_tls: Option<rustls::ClientConfig>,
}

pub struct Services {
    pub replica: Replica,
    pub forwarding_tls: Option<rustls::ClientConfig>,
    pub users: Users,
    /// Administrators' changes to existing accounts.
    pub accounts: Accounts,
    pub images: Arc<Images>,
    pub networks: Arc<Networks>,
    pub hosts: Arc<Hosts>,
    pub volumes: Arc<Volumes>,
    pub instances: Instances,
    /// Server groups (affinity, anti-affinity).
    pub groups: Groups,
    pub cluster: ClusterService,
    /// Console output and CPU use the hosts push (not replicated).
    pub observed: Arc<Observed>,
    /// Every applied change as a numbered event, for the event stream.
    pub events: Arc<EventHub>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

impl Services {
    /// Wires the services to `replica` (background tasks start on the current tokio runtime).
    pub fn start(replica: Replica, settings: Settings) -> Self {
        let images = Arc::new(Images::new(replica.clone(), settings.marketplace));
        let networks = Arc::new(Networks::new(replica.clone()));
        let hosts = Arc::new(Hosts::start(
            replica.clone(),
            images.clone(),
            settings.ca,
            settings.host_timeout,
            settings.host_lease,
            settings.placement,
        ));
        let events = EventHub::start(&replica, settings.volumes.detach_timeout);
        let volumes = Arc::new(Volumes::new(replica.clone(), settings.volumes));
        let observed = Arc::new(Observed::new(replica.clone()));
        let instances = Instances::new(
            replica.clone(),
            images.clone(),
            networks.clone(),
            volumes.clone(),
            hosts.clone(),
        )
        .with_observed(observed.clone());
        let users = Users::new(replica.clone(), settings.login_failures);
        let groups = Groups::new(replica.clone());
        let metrics = Metrics::start(&replica, instances.placement_seconds());
        Self {
            metrics,
            events,
            accounts: Accounts::new(replica.clone(), users.password_pool()),
            users,
            cluster: ClusterService::start(replica.clone(), settings.me),
            forwarding_tls: settings.forwarding_tls,
            replica,
            images,
            networks,
            hosts,
            volumes,
            instances,
            groups,
            observed,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use stratus_common::agent::RegisterHost;
    use stratus_common::api::{
        Artifact, CreateImage, CreateInstance, CreateNetwork, DiskFormat, DomainType,
    };

    use super::*;
    use crate::failure::{Failure, Kind};
    use crate::replica::Consistency;
    use crate::replica::ReplicaConfig;
    use crate::users::Caller;

    // One node applying its own proposals: every read sees every acknowledged change, so
    // the callers' reads need no index to wait for.
    fn admin() -> Caller {
        Caller {
            name: "admin".into(),
            admin: true,
            seen: 0,
            via: Default::default(),
        }
    }

    fn alice() -> Caller {
        Caller {
            name: "alice".into(),
            admin: false,
            seen: 0,
            via: Default::default(),
        }
    }

    fn network(name: &str, cidr: &str, gateway: &str) -> CreateNetwork {
        CreateNetwork {
            name: name.into(),
            cidr: cidr.into(),
            gateway: gateway.into(),
            dns: vec!["192.0.2.53".into()],
            bridge: format!("br-{name}"),
            vlan: None,
        }
    }

    fn run(image: &str, network: Option<&str>) -> CreateInstance {
        CreateInstance {
            image: image.into(),
            instance_type: None,
            name: None,
            network: network.map(Into::into),
            ssh_key: None,
            user_data: None,
            persistent_disks: Vec::new(),
            group: None,
            labels: Vec::new(),
            evacuate: false,
            restart: Default::default(),
        }
    }

    /// The kind and message of a failed call.
    fn failed<T: std::fmt::Debug, E: Failure>(result: Result<T, E>) -> (Kind, String) {
        let e = result.unwrap_err();
        (e.kind(), e.to_string())
    }

    /// A bootstrapped one-node cloud with a host and an image, and the given networks defined
    /// as from the configuration.
    pub(crate) async fn cloud(dir: &std::path::Path, networks: &[CreateNetwork]) -> Services {
        let replica =
            Replica::start(ReplicaConfig::single(1, dir.join("raft.redb"), 1000)).unwrap();
        assert!(replica.wait_for_leader(Duration::from_secs(5)).await);
        let cloud = Services::start(
            replica,
            Settings {
                ca: Some(Arc::new(
                    crate::pki::SiteCa::load_or_create(
                        &dir.join("ca.pem"),
                        &dir.join("ca.key"),
                        true,
                    )
                    .unwrap()
                    .0,
                )),
                host_timeout: Duration::from_secs(60),
                host_lease: None,
                placement: crate::scheduler::SitePlacement::default(),
                marketplace: MarketplaceSettings::default(),
                volumes: VolumeSettings::default(),
                me: crate::peer::Me {
                    node_id: 1,
                    address: "127.0.0.1:1".into(),
                    tls: None,
                },
                login_failures: FailureLimits::default(),
                forwarding_tls: None,
            },
        );
        cloud
            .users
            .bootstrap_if_needed("admin", "password1", 4.0, None, None)
            .await
            .unwrap();
        cloud.networks.define_configured(networks).await.unwrap();
        cloud
            .hosts
            .register(
                &crate::hosts::enrolment::HostIdentity {
                    name: "node-1".into(),
                    serial: "test".into(),
                },
                RegisterHost {
                    name: "node-1".into(),
                    vcpus: 64,
                    memory_mib: 65536,
                    disk_gib: 100,
                    domain_type: DomainType::Kvm,
                    arch: "x86_64".into(),
                    hypervisor: "QEMU".into(),
                    volume_pool_gib: None,
                },
            )
            .await
            .unwrap();
        let disk = Artifact {
            locations: vec!["file:///images/ttylinux.qcow2".into()],
            sha256: "ab".repeat(32),
            size: None,
            compression: Default::default(),
        };
        cloud
            .images
            .create(
                &admin(),
                CreateImage {
                    name: "ttylinux".into(),
                    format: DiskFormat::Qcow2,
                    disk,
                    kernel: None,
                    initrd: None,
                    cmdline: None,
                },
            )
            .await
            .unwrap();
        cloud
    }

    #[tokio::test]
    async fn instances_go_on_public_by_default_and_show_their_address() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(
            dir.path(),
            &[
                network("public", "192.0.2.0/24", "192.0.2.1"),
                network("private", "10.0.0.0/30", "10.0.0.1"),
            ],
        )
        .await;
        // Starting again with the same configuration changes nothing.
        cloud
            .networks
            .define_configured(&[network("public", "192.0.2.0/24", "192.0.2.1")])
            .await
            .unwrap();
        let mut request = run("ttylinux", None);
        request.ssh_key = Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host\n".into());
        request.user_data = Some("#!/bin/sh\n".into());
        let first = cloud
            .instances
            .create(&alice(), request, None)
            .await
            .unwrap();
        assert_eq!(first.ip.as_deref(), Some("192.0.2.2"));
        assert_eq!(first.nics[0].mac, "0a:53:c0:00:02:02");
        let private = cloud
            .instances
            .create(&alice(), run("ttylinux", Some("private")), None)
            .await
            .unwrap();
        assert_eq!(private.ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(cloud.networks.list().await.unwrap().len(), 2);
        let public = cloud.networks.get("public").await.unwrap();
        assert_eq!((public.leases_used, public.leases_free), (1, 252));
        assert_eq!(failed(cloud.networks.get("dmz").await).0, Kind::NotFound);
        let (key, nics) = cloud
            .replica
            .read(Consistency::Linearizable, |s| {
                let record = &s.instances[&first.id];
                (record.ssh_key.clone(), s.nic_specs(record))
            })
            .await
            .unwrap();
        assert_eq!(
            key.as_deref(),
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host"),
            "stored trimmed"
        );
        assert_eq!(nics[0].bridge, "br-public");
    }

    #[tokio::test]
    async fn an_exhausted_network_is_a_clear_conflict_and_makes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path(), &[network("private", "10.0.0.0/30", "10.0.0.1")]).await;
        cloud
            .instances
            .create(&alice(), run("ttylinux", Some("private")), None)
            .await
            .unwrap();
        let err = cloud
            .instances
            .create(&alice(), run("ttylinux", Some("private")), None)
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind(), err.code()),
            (Kind::Conflict, "network_exhausted")
        );
        assert_eq!(
            err.to_string(),
            "network private has no free address (2 in use, gateway included)"
        );
        assert_eq!(cloud.instances.list(&alice()).await.unwrap().len(), 1);
        // No `public` here: an instance asking for no network gets none.
        let plain = cloud
            .instances
            .create(&alice(), run("ttylinux", None), None)
            .await
            .unwrap();
        assert!(plain.nics.is_empty() && plain.ip.is_none());
    }

    #[tokio::test]
    async fn server_groups_and_host_labels_place_instances_and_bad_rules_are_refused() {
        use stratus_common::api::{CreateGroup, GroupPolicy, HostRole, InstanceState, UpdateHost};
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path(), &[]).await;
        let group = cloud
            .groups
            .create(
                &alice(),
                CreateGroup {
                    name: "web".into(),
                    policy: GroupPolicy::AntiAffinity,
                },
            )
            .await
            .unwrap();
        assert_eq!((group.owner.as_str(), group.members.len()), ("alice", 0));
        let in_web = || CreateInstance {
            group: Some("web".into()),
            ..run("ttylinux", None)
        };
        let first = cloud
            .instances
            .create(&alice(), in_web(), None)
            .await
            .unwrap();
        assert_eq!(first.host.as_deref(), Some("node-1"));
        // One host only: the second of the group has nowhere to go, and says why.
        let second = cloud
            .instances
            .create(&alice(), in_web(), None)
            .await
            .unwrap();
        assert_eq!(second.state, InstanceState::Failed);
        assert_eq!(
            second.reason.as_deref(),
            Some(
                "no host can take 1 vCPU and 256 MiB: of 1 host(s), 1 already runs an \
                 instance of anti-affinity group web (anti-affinity filter)"
            )
        );
        let shown = cloud.groups.get(&alice(), "web").await.unwrap();
        assert_eq!(shown.members.len(), 1, "the Failed one holds no place");
        assert_eq!(shown.members[0].host.as_deref(), Some("node-1"));
        // Another user has no group of that name.
        let (kind, message) = failed(cloud.instances.create(&admin(), in_web(), None).await);
        assert_eq!(kind, Kind::BadRequest);
        assert!(
            message.starts_with("group: you have no server group \"web\""),
            "{message}"
        );
        let (kind, message) = failed(
            cloud
                .instances
                .create(
                    &alice(),
                    CreateInstance {
                        labels: vec!["ssd!".into()],
                        ..run("ttylinux", None)
                    },
                    None,
                )
                .await,
        );
        assert_eq!(kind, Kind::BadRequest);
        assert!(message.starts_with("labels "), "{message}");
        let err = cloud.groups.delete(&alice(), "web").await.unwrap_err();
        assert_eq!((err.kind(), err.code()), (Kind::Conflict, "group_in_use"));
        // Labels an administrator sets; an instance requiring one goes only where it is.
        let host = cloud
            .hosts
            .update(
                &admin(),
                "node-1",
                UpdateHost {
                    labels: Some(vec!["ssd".into()]),
                    ..UpdateHost::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(host.labels, ["ssd"]);
        assert_eq!(host.roles, [HostRole::Compute, HostRole::Storage]);
        let ssd = cloud
            .instances
            .create(
                &alice(),
                CreateInstance {
                    labels: vec!["ssd".into()],
                    ..run("ttylinux", None)
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(ssd.host.as_deref(), Some("node-1"));
        let gpu = cloud
            .instances
            .create(
                &alice(),
                CreateInstance {
                    labels: vec!["gpu".into()],
                    ..run("ttylinux", None)
                },
                None,
            )
            .await
            .unwrap();
        assert!(
            gpu.reason
                .as_deref()
                .unwrap()
                .ends_with("1 lacks a required label (labels filter: gpu)"),
            "{:?}",
            gpu.reason
        );
        for (update, field) in [
            (UpdateHost::default(), "maintenance: nothing to change"),
            (
                UpdateHost {
                    roles: Some(Vec::new()),
                    ..UpdateHost::default()
                },
                "roles: at least one role",
            ),
        ] {
            let (kind, message) = failed(cloud.hosts.update(&admin(), "node-1", update).await);
            assert_eq!(kind, Kind::BadRequest);
            assert!(message.starts_with(field), "{message}");
        }
        let storage_only = cloud
            .hosts
            .update(
                &admin(),
                "node-1",
                UpdateHost {
                    roles: Some(vec![HostRole::Storage]),
                    ..UpdateHost::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(storage_only.roles, [HostRole::Storage]);
        let refused = cloud
            .instances
            .create(&alice(), run("ttylinux", None), None)
            .await
            .unwrap();
        assert!(
            refused
                .reason
                .as_deref()
                .unwrap()
                .ends_with("1 is not a compute host"),
            "{:?}",
            refused.reason
        );
    }

    #[tokio::test]
    async fn bad_requests_are_refused_before_anything_is_proposed() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path(), &[]).await;
        let before = cloud.replica.applied_index();
        let unknown = cloud
            .instances
            .create(&alice(), run("ttylinux", Some("public")), None)
            .await;
        assert_eq!(
            failed(unknown),
            (
                Kind::BadRequest,
                "network: unknown network \"public\"".into()
            )
        );
        let mut bad_key = run("ttylinux", None);
        bad_key.ssh_key = Some("-----BEGIN RSA PRIVATE KEY-----".into());
        let (kind, message) = failed(cloud.instances.create(&alice(), bad_key, None).await);
        assert_eq!(kind, Kind::BadRequest);
        assert!(
            message.starts_with("ssh_key: unknown key type"),
            "{message}"
        );
        let mut big = run("ttylinux", None);
        big.user_data = Some("x".repeat(64 * 1024 + 1));
        let (kind, message) = failed(cloud.instances.create(&alice(), big, None).await);
        assert_eq!(kind, Kind::BadRequest);
        assert!(message.starts_with("user_data:"), "{message}");
        let mut huge = run("ttylinux", None);
        huge.instance_type = Some("x9.huge".into());
        assert_eq!(
            failed(cloud.instances.create(&alice(), huge, None).await),
            (
                Kind::BadRequest,
                "type: unknown instance type \"x9.huge\"".into()
            )
        );
        for key in ["", "has space", &"k".repeat(256)] {
            let (kind, message) = failed(
                cloud
                    .instances
                    .create(&alice(), run("ttylinux", None), Some(key.to_owned()))
                    .await,
            );
            assert_eq!(kind, Kind::BadRequest);
            assert!(message.starts_with("Idempotency-Key: "), "{message}");
        }
        assert!(cloud.instances.list(&alice()).await.unwrap().is_empty());
        assert_eq!(
            cloud.replica.applied_index(),
            before,
            "nothing was proposed"
        );

        let public = network("public", "192.0.2.0/24", "192.0.2.1");
        let (kind, _) = failed(cloud.networks.create(&alice(), public.clone()).await);
        assert_eq!(kind, Kind::Forbidden);
        let mut bad = public.clone();
        bad.gateway = "198.51.100.1".into();
        let (kind, message) = failed(cloud.networks.create(&admin(), bad).await);
        assert_eq!(kind, Kind::BadRequest);
        assert!(message.starts_with("gateway:"), "{message}");
        let made = cloud
            .networks
            .create(&admin(), public.clone())
            .await
            .unwrap();
        assert_eq!((made.leases_used, made.leases_free), (0, 253));
        assert_eq!(
            failed(cloud.networks.create(&admin(), public).await),
            (Kind::Conflict, "network public already exists".into())
        );
        assert_eq!(
            failed(
                cloud
                    .networks
                    .create(&admin(), network("dmz", "192.0.2.0/25", "192.0.2.1"))
                    .await
            ),
            (
                Kind::Conflict,
                "network dmz overlaps network public (192.0.2.0/24)".into()
            )
        );
    }

    #[tokio::test]
    async fn a_creation_retried_with_its_idempotency_key_is_answered_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path(), &[]).await;
        let key = Some("5b1f5c3e-retry".to_owned());
        let first = cloud
            .instances
            .create(&alice(), run("ttylinux", None), key.clone())
            .await
            .unwrap();
        let applied = cloud.replica.applied_index();
        let again = cloud
            .instances
            .create(&alice(), run("ttylinux", None), key.clone())
            .await
            .unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(cloud.replica.applied_index(), applied, "nothing proposed");
        assert_eq!(cloud.instances.list(&alice()).await.unwrap().len(), 1);
        // The same key from another user is theirs.
        let bob = Caller {
            name: "bob".into(),
            admin: false,
            seen: 0,
            via: Default::default(),
        };
        let theirs = cloud
            .instances
            .create(&bob, run("ttylinux", None), key)
            .await
            .unwrap();
        assert_ne!(theirs.id, first.id);
    }
}
