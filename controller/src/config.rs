//! The controller's configuration file (`/etc/stratuslab/controller.toml`), every key optional.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use stratus_common::api::CreateNetwork;

use crate::state::{Ipam, NetworkRecord};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Where the Raft store and generated secrets live.
    pub state_dir: PathBuf,
    /// This node's Raft ID (1 for a single-node controller). Unique in the cluster and never
    /// reused for a node with a new disk.
    pub node_id: u64,
    /// Address of the peer (gRPC) listener other controllers send Raft messages to.
    pub peer_listen: SocketAddr,
    /// Where other controllers reach this node's HTTP API (forwarded writes); defaults to
    /// `listen`. Required when `listen` is a wildcard address.
    pub advertise: Option<SocketAddr>,
    /// Where other controllers reach this node's peer listener; defaults to `peer_listen`.
    /// Required when `peer_listen` is a wildcard address.
    pub peer_advertise: Option<SocketAddr>,
    /// Start without creating a cluster: the node waits until a member adds it
    /// (`POST /api/v1/cluster/members`). Without it, a node whose store is empty starts a new
    /// one-node cluster.
    pub join: bool,
    /// Name of the first administrator, created when the cluster is bootstrapped.
    pub admin_user: String,
    /// The first administrator's password. When absent, one is generated and written to
    /// `admin_password_file` (mode 0600).
    pub admin_password: Option<String>,
    /// Defaults to `<state_dir>/admin-password`.
    pub admin_password_file: Option<PathBuf>,
    /// vCPU overcommit placement allows (memory is never overcommitted).
    pub cpu_allocation_ratio: f64,
    /// A host whose agent has not been in touch for this long is `down` and gets no new
    /// instances.
    pub host_timeout_secs: u64,
    /// How placement orders the hosts that can all take an instance: `spread` (the most free
    /// memory first) or `pack` (the least, filling hosts one by one).
    pub placement: crate::scheduler::Strategy,
    /// Every instance created while this is set may be evacuated (started elsewhere from its
    /// image once its host is down and fenced), as if each was run with `evacuate`; the choice
    /// is recorded with the instance, so changing this later leaves existing instances as they
    /// are. Give every controller of a cluster the same value.
    pub evacuate: bool,
    /// A host's lease: an agent out of touch with the controller for this long destroys its
    /// guests that may be evacuated (it fences itself), and the leader fences a host silent
    /// for this long plus a margin (half of it, between 10 and 60 seconds), so that those
    /// instances start elsewhere with no second copy running. An agent that stops on purpose
    /// gives its lease back first (or, unable to, fences itself); one that crashes must be
    /// started again (systemd does) within the lease. 0 (the default): hosts are fenced only
    /// by an administrator (`POST /hosts/{name}/fence`). At least `host_timeout_secs`.
    pub host_lease_secs: u64,
    /// Take a state-machine snapshot after this many Raft entries.
    pub snapshot_every: u64,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// The Marketplace: whom the site trusts to sign image metadata, and its policy.
    pub marketplace: MarketplaceConfig,
    /// `[[networks]]`: site networks instances are attached to, defined at start-up when the
    /// replicated state does not have them yet (administrators can add more through
    /// `POST /api/v1/networks`). Instances go on `public` unless they ask for another.
    pub networks: Vec<CreateNetwork>,
    /// `[volumes]`: persistent disk quotas and limits.
    pub volumes: VolumesConfig,
    /// `[tls]`: the site CA, this node's certificate names, and plain HTTP.
    pub tls: TlsConfig,
    /// `[logins]`: how many failed logins an account and an address may have before they wait.
    pub logins: LoginsConfig,
}

/// `[logins]`: failed logins allowed in a burst for one account and for one source address,
/// and how fast each allowance comes back (one failure every so many seconds). Beyond them a
/// login is answered 429 with `Retry-After`, without checking the password.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoginsConfig {
    pub failures_per_account: u32,
    pub account_refill_secs: u64,
    pub failures_per_source: u32,
    pub source_refill_secs: u64,
}

impl Default for LoginsConfig {
    fn default() -> Self {
        let d = crate::users::throttle::FailureLimits::default();
        Self {
            failures_per_account: d.per_account.burst,
            account_refill_secs: d.per_account.refill_every.as_secs(),
            failures_per_source: d.per_source.burst,
            source_refill_secs: d.per_source.refill_every.as_secs(),
        }
    }
}

impl LoginsConfig {
    pub fn limits(&self) -> crate::users::throttle::FailureLimits {
        use crate::users::throttle::{Budget, FailureLimits};
        // `validate` refused zeros.
        let budget = |burst: u32, secs: u64| Budget {
            burst,
            refill_every: std::time::Duration::from_secs(secs),
        };
        FailureLimits {
            per_account: budget(self.failures_per_account, self.account_refill_secs),
            per_source: budget(self.failures_per_source, self.source_refill_secs),
        }
    }
}

/// `[tls]`: the API and the peer links are TLS, with certificates of the site CA every
/// controller of a cluster shares.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The site CA's certificate (PEM); `<state_dir>/ca.pem` when absent. A new cluster's
    /// first node makes the CA when neither it nor its key exists; a joining node needs the
    /// first node's (copied, same paths).
    pub ca_certificate: Option<PathBuf>,
    /// The CA's private key (PEM, readable by the controller only); `<state_dir>/ca.key`.
    pub ca_key: Option<PathBuf>,
    /// More names (DNS names or IP addresses) clients reach this node by, for its certificate;
    /// its listen and advertised addresses, `localhost` and `127.0.0.1` are always in it.
    pub names: Vec<String>,
    /// PEM bundle of the CAs whose client certificates users may log in with (e.g. a grid's
    /// IGTF bundle), besides the site CA; an administrator maps each subject to a user.
    pub user_ca_file: Option<PathBuf>,
    /// Also serve the API over plain HTTP on this address (users only: agents need TLS).
    pub plain_listen: Option<SocketAddr>,
    /// Allow `plain_listen` on an address other than loopback (passwords then cross the
    /// network in clear).
    pub allow_plain_http: bool,
}

/// `[volumes]`: per-user quotas, the largest disk, and how long a guest may take to release a
/// disk before its attachment shows as stuck.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VolumesConfig {
    pub max_per_user: u32,
    pub max_gib_per_user: u64,
    pub max_size_gib: u64,
    pub detach_timeout_secs: u64,
}

impl Default for VolumesConfig {
    fn default() -> Self {
        let d = crate::volumes::VolumeSettings::default();
        Self {
            max_per_user: d.quota.max_volumes,
            max_gib_per_user: d.quota.max_gib,
            max_size_gib: d.max_size_gib,
            detach_timeout_secs: d.detach_timeout.as_secs(),
        }
    }
}

impl VolumesConfig {
    pub fn settings(&self) -> crate::volumes::VolumeSettings {
        crate::volumes::VolumeSettings {
            quota: crate::state::Quota {
                max_volumes: self.max_per_user,
                max_gib: self.max_gib_per_user,
            },
            max_size_gib: self.max_size_gib,
            detach_timeout: std::time::Duration::from_secs(self.detach_timeout_secs),
        }
    }
}

/// `[marketplace]`: trust and policy for signed image metadata.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketplaceConfig {
    /// PEM bundle of the CAs whose endorser certificates are trusted (e.g. the IGTF bundle).
    /// Endorsers can also be registered one by one through `/api/v1/endorsers`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `[marketplace.policy]`: endorser allow-list, deny-lists, size limit.
    pub policy: crate::marketplace::SitePolicy,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            listen: stratus_common::DEFAULT_LISTEN
                .parse()
                .expect("valid default address"),
            state_dir: PathBuf::from("/var/lib/stratuslab/controller"),
            node_id: 1,
            peer_listen: DEFAULT_PEER_LISTEN.parse().expect("valid default address"),
            advertise: None,
            peer_advertise: None,
            join: false,
            admin_user: "admin".to_owned(),
            admin_password: None,
            admin_password_file: None,
            cpu_allocation_ratio: 4.0,
            host_timeout_secs: 60,
            placement: crate::scheduler::Strategy::Spread,
            evacuate: false,
            host_lease_secs: 0,
            snapshot_every: 1000,
            log_format: "text".to_owned(),
            marketplace: MarketplaceConfig::default(),
            networks: Vec::new(),
            volumes: VolumesConfig::default(),
            tls: TlsConfig::default(),
            logins: LoginsConfig::default(),
        }
    }
}

/// The peer listener's default address.
pub const DEFAULT_PEER_LISTEN: &str = "127.0.0.1:8450";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("node_id must be at least 1")]
    NodeId,
    #[error("{field} is required when {listen} is a wildcard address ({address})")]
    Advertise {
        field: &'static str,
        listen: &'static str,
        address: SocketAddr,
    },
    #[error("peer_listen must differ from listen ({0})")]
    SameListen(SocketAddr),
    #[error("cpu_allocation_ratio must be between 1 and 64, not {0}")]
    CpuRatio(f64),
    #[error("host_timeout_secs must be at least 5")]
    HostTimeout,
    #[error("host_lease_secs must be 0 (no self-fencing) or at least host_timeout_secs ({timeout}), not {lease}")]
    HostLease { lease: u64, timeout: u64 },
    #[error("log_format must be text or json, not {0:?}")]
    LogFormat(String),
    #[error("admin_user: {0}")]
    AdminUser(#[from] stratus_common::names::NameError),
    #[error("marketplace.policy: {0}")]
    Policy(#[from] crate::marketplace::PolicyConfigError),
    #[error("networks[{index}]: {message}")]
    Network { index: usize, message: String },
    #[error("volumes.{0} must be at least 1")]
    Volumes(&'static str),
    #[error("logins.{0} must be at least 1")]
    Logins(&'static str),
    #[error(
        "tls.plain_listen {0} is not a loopback address: passwords would cross the network in \
         clear (set tls.allow_plain_http = true to allow it anyway)"
    )]
    PlainHttp(SocketAddr),
    #[error("tls.plain_listen must differ from listen and peer_listen ({0})")]
    PlainSameListen(SocketAddr),
}

impl ControllerConfig {
    /// Where other controllers reach this node's HTTP API.
    pub fn api_address(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Where other controllers reach this node's peer listener.
    pub fn peer_address(&self) -> SocketAddr {
        self.peer_advertise.unwrap_or(self.peer_listen)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::NodeId);
        }
        if self.peer_listen == self.listen {
            return Err(ConfigError::SameListen(self.listen));
        }
        if self.advertise.is_none() && self.listen.ip().is_unspecified() {
            return Err(ConfigError::Advertise {
                field: "advertise",
                listen: "listen",
                address: self.listen,
            });
        }
        if self.peer_advertise.is_none() && self.peer_listen.ip().is_unspecified() {
            return Err(ConfigError::Advertise {
                field: "peer_advertise",
                listen: "peer_listen",
                address: self.peer_listen,
            });
        }
        if !(1.0..=64.0).contains(&self.cpu_allocation_ratio) {
            return Err(ConfigError::CpuRatio(self.cpu_allocation_ratio));
        }
        if self.host_timeout_secs < 5 {
            return Err(ConfigError::HostTimeout);
        }
        if self.host_lease_secs != 0 && self.host_lease_secs < self.host_timeout_secs {
            return Err(ConfigError::HostLease {
                lease: self.host_lease_secs,
                timeout: self.host_timeout_secs,
            });
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::LogFormat(self.log_format.clone()));
        }
        stratus_common::names::validate_name("admin_user", &self.admin_user)?;
        self.marketplace.policy.validate()?;
        for (key, value) in [
            ("max_size_gib", self.volumes.max_size_gib),
            ("detach_timeout_secs", self.volumes.detach_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Volumes(key));
            }
        }
        for (key, value) in [
            (
                "failures_per_account",
                u64::from(self.logins.failures_per_account),
            ),
            ("account_refill_secs", self.logins.account_refill_secs),
            (
                "failures_per_source",
                u64::from(self.logins.failures_per_source),
            ),
            ("source_refill_secs", self.logins.source_refill_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Logins(key));
            }
        }
        if let Some(plain) = self.tls.plain_listen {
            if plain == self.listen || plain == self.peer_listen {
                return Err(ConfigError::PlainSameListen(plain));
            }
            if !plain.ip().is_loopback() && !self.tls.allow_plain_http {
                return Err(ConfigError::PlainHttp(plain));
            }
        }
        // Defining them on a scratch pool finds bad, duplicate and overlapping networks alike.
        let mut scratch = Ipam::default();
        for (index, definition) in self.networks.iter().enumerate() {
            let defined =
                NetworkRecord::from_definition(definition).and_then(|record| {
                    match scratch.define(record)? {
                        true => Ok(()),
                        false => Err(crate::state::IpamError::NetworkExists(
                            definition.name.clone(),
                        )),
                    }
                });
            defined.map_err(|e| ConfigError::Network {
                index,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The site CA's certificate file.
    pub fn ca_certificate(&self) -> PathBuf {
        self.tls
            .ca_certificate
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ca.pem"))
    }

    /// The site CA's key file.
    pub fn ca_key(&self) -> PathBuf {
        self.tls
            .ca_key
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ca.key"))
    }

    /// The names this node's certificate carries: its addresses as others reach them,
    /// `localhost`, loopback, and `tls.names`.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        for address in [
            self.listen,
            self.api_address(),
            self.peer_listen,
            self.peer_address(),
        ] {
            if !address.ip().is_unspecified() {
                names.push(address.ip().to_string());
            }
        }
        names.extend(self.tls.names.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    pub fn admin_password_file(&self) -> PathBuf {
        self.admin_password_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("admin-password"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(ControllerConfig::default().validate(), Ok(()));
        let c: ControllerConfig = toml::from_str("cpu_allocation_ratio = 0.5").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::CpuRatio(0.5)));
        let c: ControllerConfig = toml::from_str("[logins]\nfailures_per_source = 0").unwrap();
        assert_eq!(
            c.validate(),
            Err(ConfigError::Logins("failures_per_source"))
        );
        let c: ControllerConfig =
            toml::from_str("[logins]\nfailures_per_account = 100000").unwrap();
        assert_eq!(c.logins.limits().per_account.burst, 100_000);
        let err = toml::from_str::<ControllerConfig>("listen_addr = 'x'").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `listen_addr`"),
            "{err}"
        );
        let c: ControllerConfig = toml::from_str("placement = 'pack'\nevacuate = true").unwrap();
        assert_eq!(c.placement, crate::scheduler::Strategy::Pack);
        assert!(c.evacuate);
        let c: ControllerConfig = toml::from_str("host_lease_secs = 30").unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::HostLease {
                lease: 30,
                timeout: 60
            }
        );
        assert!(
            err.to_string().starts_with("host_lease_secs must be 0"),
            "{err}"
        );
        let c: ControllerConfig = toml::from_str("host_lease_secs = 0").unwrap();
        assert_eq!(c.validate(), Ok(()));
        let err = toml::from_str::<ControllerConfig>("placement = 'random'").unwrap_err();
        assert!(err.to_string().contains("spread"), "{err}");
        let c: ControllerConfig = toml::from_str("listen = '127.0.0.1:9000'\nnode_id = 1").unwrap();
        assert_eq!(c.listen.port(), 9000);
        let c: ControllerConfig = toml::from_str("[tls]\nplain_listen = '192.0.2.1:8080'").unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::PlainHttp("192.0.2.1:8080".parse().unwrap())
        );
        assert!(err.to_string().contains("allow_plain_http"), "{err}");
        let c: ControllerConfig =
            toml::from_str("[tls]\nplain_listen = '192.0.2.1:8080'\nallow_plain_http = true")
                .unwrap();
        assert_eq!(c.validate(), Ok(()));
        let c: ControllerConfig =
            toml::from_str("[tls]\nplain_listen = '127.0.0.1:8438'\nnames = ['ctl1.example.org']")
                .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.certificate_names(),
            ["localhost", "127.0.0.1", "ctl1.example.org"]
        );
    }

    const NETWORKS: &str = r#"
[[networks]]
name = "public"
cidr = "192.0.2.0/24"
gateway = "192.0.2.1"
dns = ["192.0.2.53"]
bridge = "br-public"

[[networks]]
name = "private"
cidr = "10.10.0.0/16"
gateway = "10.10.0.1"
bridge = "br-private"
vlan = 42
"#;

    #[test]
    fn networks_are_read_and_checked() {
        let c: ControllerConfig = toml::from_str(NETWORKS).unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.networks.len(), 2);
        assert_eq!(c.networks[1].vlan, Some(42));
        assert!(c.networks[1].dns.is_empty());

        let duplicate = NETWORKS.replace("\"private\"", "\"public\"");
        let c: ControllerConfig = toml::from_str(&duplicate).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "networks[1]: network public already exists"
        );
        let overlapping = NETWORKS
            .replace("10.10.0.0/16", "192.0.0.0/16")
            .replace("10.10.0.1", "192.0.0.1");
        let c: ControllerConfig = toml::from_str(&overlapping).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "networks[1]: network private overlaps network public (192.0.2.0/24)"
        );
        let bad = NETWORKS.replace("vlan = 42", "vlan = 5000");
        let c: ControllerConfig = toml::from_str(&bad).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "networks[1]: vlan: 5000 is outside 1..4094"
        );
        let typo = NETWORKS.replace("bridge = \"br-public\"", "brige = \"br-public\"");
        assert!(toml::from_str::<ControllerConfig>(&typo).is_err());
    }
}
