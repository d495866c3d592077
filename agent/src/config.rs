//! The agent's configuration file (`/etc/stratuslab/agent.toml`), every key optional.

use std::path::PathBuf;

use serde::Deserialize;

/// Which hypervisor domain type guests run with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeSetting {
    /// KVM only when a probe guest really runs under it; software emulation otherwise.
    #[default]
    Auto,
    Kvm,
    Qemu,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The controller's API endpoint, or a comma-separated list of the controller nodes'
    /// (`http://ctl1:8440,http://ctl2:8440,http://ctl3:8440`): the agent moves to the next one
    /// when one cannot be reached or has no leader.
    pub controller: String,
    /// The site CA's certificate (PEM), copied from a controller: `https://` controllers are
    /// checked against it.
    pub ca_certificate: PathBuf,
    /// A join token an administrator made for this host (`POST
    /// /api/v1/hosts/{name}/join-tokens`): the agent enrols with it when it has no certificate,
    /// or when the file holds a token it has not used yet. Its key and certificate are kept
    /// under `<state_dir>/tls/`.
    pub join_token_file: PathBuf,
    /// This host's name in the cloud; the system host name when absent.
    pub host_name: Option<String>,
    /// Where instance disks, console logs and the image cache live.
    pub state_dir: PathBuf,
    /// libvirt connection URI.
    pub libvirt_uri: String,
    pub domain_type: DomainTypeSetting,
    /// For `domain_type = "auto"`: a direct-boot kernel and initrd that print
    /// `probe_banner` on the serial console once up, booted under KVM to see that it works.
    pub probe_kernel: Option<PathBuf>,
    pub probe_initrd: Option<PathBuf>,
    pub probe_banner: String,
    /// Memory kept for the host itself, not offered to instances.
    pub reserved_memory_mib: u64,
    /// Bytes the image cache may hold before it evicts unused images (least recently used).
    /// A download that declares no size never writes more than this.
    pub image_cache_bytes: u64,
    /// The most bytes (after decompression) of an image artifact that declares no size; a
    /// download stops there and the instance fails.
    pub max_image_bytes: u64,
    /// Allow image locations that resolve to loopback addresses (tests, single-host sites).
    /// Link-local and cloud metadata addresses are always refused.
    pub allow_loopback_sources: bool,
    /// Directories that `file://` image locations may read from (none by default).
    pub file_location_roots: Vec<PathBuf>,
    /// A network namespace where the bridges' far side lives (joined to the host bridge by a
    /// veth pair); the taps stay in the host namespace, where QEMU opens them.
    pub network_netns: Option<String>,
    /// An interface to enslave to the bridges (the host's uplink), optionally through a VLAN
    /// sub-interface.
    pub uplink: Option<String>,
    pub uplink_vlan: Option<u16>,
    /// How long one long-poll for desired state may wait at the controller.
    pub poll_wait_secs: u64,
    /// How often libvirt is checked for domains that stopped on their own.
    pub resync_secs: u64,
    /// How long a stop or reboot waits for the guest to power off after the ACPI request
    /// before cutting its power.
    pub stop_timeout_secs: u64,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// A directory holding persistent disks: set on the hosts that store volumes.
    pub volume_pool: Option<PathBuf>,
    /// The address this host's NBD exports listen on, and other hosts connect to, for
    /// instances on other hosts using its volumes. Required with `volume_pool`.
    pub nbd_listen: Option<std::net::IpAddr>,
    /// libvirt's NBD certificate directory (`nbd_tls_x509_cert_dir` of `qemu.conf`, which
    /// falls back to `default_tls_x509_cert_dir`, `/etc/pki/qemu`): the agent installs the
    /// host's certificate there as QEMU's NBD client certificate, so this host's guests reach
    /// disks on other hosts over TLS. Empty: not installed (another agent sharing this
    /// libvirt installs it).
    pub nbd_client_tls_dir: PathBuf,
    /// The group QEMU runs as, which must read the client key there. Empty: `libvirt-qemu`
    /// or `qemu`, whichever the system has (else root only).
    pub nbd_client_key_group: String,
    /// Where the host's metrics are served (`GET /metrics`, Prometheus text format): HTTPS
    /// with the host's certificate (issued by the site CA, reloaded when renewed). Absent:
    /// not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the metrics over plain HTTP instead: only on a loopback `metrics_listen`.
    pub metrics_plain_http: bool,
    /// The bearer token every scrape must present (`Authorization: Bearer <token>`), in a
    /// file only root may read (mode 600); read at start.
    pub metrics_token_file: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            controller: format!("https://{}", stratus_common::DEFAULT_LISTEN),
            ca_certificate: PathBuf::from("/etc/stratuslab/ca.pem"),
            join_token_file: PathBuf::from("/etc/stratuslab/join-token"),
            host_name: None,
            state_dir: PathBuf::from("/var/lib/stratuslab"),
            libvirt_uri: "qemu:///system".to_owned(),
            domain_type: DomainTypeSetting::Auto,
            probe_kernel: None,
            probe_initrd: None,
            probe_banner: "STRATUSLAB-APPLIANCE-READY".to_owned(),
            reserved_memory_mib: 512,
            image_cache_bytes: 50 << 30,
            max_image_bytes: crate::images::download::DEFAULT_MAX_UNDECLARED_BYTES,
            allow_loopback_sources: false,
            file_location_roots: Vec::new(),
            network_netns: None,
            uplink: None,
            uplink_vlan: None,
            poll_wait_secs: 30,
            resync_secs: 5,
            stop_timeout_secs: 60,
            log_format: "text".to_owned(),
            volume_pool: None,
            nbd_listen: None,
            nbd_client_tls_dir: PathBuf::from("/etc/pki/qemu"),
            nbd_client_key_group: String::new(),
            metrics_listen: None,
            metrics_plain_http: false,
            metrics_token_file: PathBuf::from("/etc/stratuslab/metrics-token"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("controller must be an http:// or https:// URL, not {0:?}")]
    Controller(String),
    #[error("host_name: {0}")]
    HostName(#[from] stratus_common::names::NameError),
    #[error("state_dir must be an absolute path")]
    StateDir,
    #[error("poll_wait_secs must be between 1 and 60")]
    PollWait,
    #[error("resync_secs must be at least 1")]
    Resync,
    #[error("stop_timeout_secs must be at least 1")]
    StopTimeout,
    #[error("file_location_roots must be absolute paths")]
    FileRoots,
    #[error("probe_kernel and probe_initrd go together")]
    Probe,
    #[error("log_format must be text or json, not {0:?}")]
    LogFormat(String),
    #[error("volume_pool must be an absolute path")]
    VolumePool,
    #[error(
        "nbd_listen must be set with volume_pool (the address other hosts reach its disks at)"
    )]
    NbdListen,
    #[error("nbd_client_tls_dir must be an absolute path (or empty)")]
    NbdClientTlsDir,
    #[error(
        "metrics_plain_http: {0} is not a loopback address; plain HTTP would carry the token \
         and the metrics across the network (serve them over HTTPS, the default)"
    )]
    MetricsPlainHttp(std::net::SocketAddr),
    #[error("metrics_plain_http needs metrics_listen")]
    MetricsPlainWithoutListen,
    #[error("metrics_token_file must be an absolute path")]
    MetricsTokenFile,
}

impl AgentConfig {
    /// The controller endpoints, in the order given.
    pub fn controllers(&self) -> Vec<String> {
        self.controller
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let controllers = self.controllers();
        if controllers.is_empty() {
            return Err(ConfigError::Controller(self.controller.clone()));
        }
        if let Some(bad) = controllers
            .iter()
            .find(|c| !(c.starts_with("http://") || c.starts_with("https://")))
        {
            return Err(ConfigError::Controller(bad.clone()));
        }
        if let Some(name) = &self.host_name {
            stratus_common::names::validate_name("host_name", name)?;
        }
        if !self.state_dir.is_absolute() {
            return Err(ConfigError::StateDir);
        }
        if !(1..=60).contains(&self.poll_wait_secs) {
            return Err(ConfigError::PollWait);
        }
        if self.resync_secs == 0 {
            return Err(ConfigError::Resync);
        }
        if self.stop_timeout_secs == 0 {
            return Err(ConfigError::StopTimeout);
        }
        if self.file_location_roots.iter().any(|r| !r.is_absolute()) {
            return Err(ConfigError::FileRoots);
        }
        if self.probe_kernel.is_some() != self.probe_initrd.is_some() {
            return Err(ConfigError::Probe);
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::LogFormat(self.log_format.clone()));
        }
        if !(self.nbd_client_tls_dir.as_os_str().is_empty()
            || self.nbd_client_tls_dir.is_absolute())
        {
            return Err(ConfigError::NbdClientTlsDir);
        }
        match self.metrics_listen {
            Some(addr) if self.metrics_plain_http && !addr.ip().is_loopback() => {
                return Err(ConfigError::MetricsPlainHttp(addr));
            }
            None if self.metrics_plain_http => return Err(ConfigError::MetricsPlainWithoutListen),
            _ => {}
        }
        if !self.metrics_token_file.is_absolute() {
            return Err(ConfigError::MetricsTokenFile);
        }
        if let Some(pool) = &self.volume_pool {
            if !pool.is_absolute() {
                return Err(ConfigError::VolumePool);
            }
            if self.nbd_listen.is_none() {
                return Err(ConfigError::NbdListen);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_are_named() {
        assert_eq!(AgentConfig::default().validate(), Ok(()));
        let c: AgentConfig = toml::from_str("controller = '127.0.0.1:8440'").unwrap();
        assert_eq!(
            c.validate(),
            Err(ConfigError::Controller("127.0.0.1:8440".into()))
        );
        let c: AgentConfig =
            toml::from_str("controller = 'http://a:8440, http://b:8440 ,'").unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.controllers(), ["http://a:8440", "http://b:8440"]);
        let c: AgentConfig = toml::from_str("controller = 'http://a:8440,b:8440'").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Controller("b:8440".into())));
        let c: AgentConfig = toml::from_str("controller = ' , '").unwrap();
        assert!(c.validate().is_err());
        let c: AgentConfig =
            toml::from_str("domain_type = 'qemu'\nhost_name = 'bad/name'").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::HostName(_))));
        assert!(toml::from_str::<AgentConfig>("domain_type = 'xen'").is_err());
        assert!(toml::from_str::<AgentConfig>("unknown_key = 1").is_err());
        let c: AgentConfig = toml::from_str("volume_pool = '/srv/volumes'").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::NbdListen));
        let c: AgentConfig =
            toml::from_str("volume_pool = 'volumes'\nnbd_listen = '10.0.0.2'").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::VolumePool));
        let c: AgentConfig =
            toml::from_str("volume_pool = '/srv/volumes'\nnbd_listen = '10.0.0.2'").unwrap();
        assert_eq!(c.validate(), Ok(()));
        let c: AgentConfig = toml::from_str("nbd_client_tls_dir = 'pki'").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::NbdClientTlsDir));
        let c: AgentConfig = toml::from_str("nbd_client_tls_dir = ''").unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn metrics_go_over_plain_http_only_on_loopback() {
        let c: AgentConfig = toml::from_str("metrics_listen = '0.0.0.0:9464'").unwrap();
        assert_eq!(c.validate(), Ok(()));
        let c: AgentConfig =
            toml::from_str("metrics_listen = '10.0.0.2:9464'\nmetrics_plain_http = true").unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::MetricsPlainHttp("10.0.0.2:9464".parse().unwrap())
        );
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        let c: AgentConfig =
            toml::from_str("metrics_listen = '[::1]:9464'\nmetrics_plain_http = true").unwrap();
        assert_eq!(c.validate(), Ok(()));
        let c: AgentConfig = toml::from_str("metrics_plain_http = true").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::MetricsPlainWithoutListen));
        let c: AgentConfig = toml::from_str("metrics_token_file = 'token'").unwrap();
        assert_eq!(c.validate(), Err(ConfigError::MetricsTokenFile));
    }
}
