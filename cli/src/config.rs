//! The user configuration of the user's guide (sections 4.4-4.10): the INI file
//! `~/.stratuslab/stratuslab-user.cfg` with a `[default]` section and named sections, the
//! `STRATUSLAB_*` environment variables and the command-line options, merged by one pure function
//! in the guide's order: command line > environment > file (selected section over `[default]`) >
//! built-in defaults.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Args;
use thiserror::Error;

use crate::endpoint::{EndpointError, Endpoints};

/// The section every file has (keys written before any section header land in it too).
pub const DEFAULT_SECTION: &str = "default";

/// The file's place under `$HOME`.
pub const USER_CONFIG_RELATIVE_PATH: &str = ".stratuslab/stratuslab-user.cfg";

/// The SSH public key pushed to instances unless configured otherwise, under `$HOME`.
pub const DEFAULT_PUBLIC_KEY_RELATIVE_PATH: &str = ".ssh/id_rsa.pub";

pub const ENV_CONFIG: &str = "STRATUSLAB_CONFIG";
pub const ENV_SECTION: &str = "STRATUSLAB_USER_CONFIG_SECTION";
pub const ENV_ENDPOINT: &str = "STRATUSLAB_ENDPOINT";
pub const ENV_MARKETPLACE_ENDPOINT: &str = "STRATUSLAB_MARKETPLACE_ENDPOINT";
pub const ENV_PDISK_ENDPOINT: &str = "STRATUSLAB_PDISK_ENDPOINT";
pub const ENV_PDISK_USERNAME: &str = "STRATUSLAB_PDISK_USERNAME";
pub const ENV_PDISK_PASSWORD: &str = "STRATUSLAB_PDISK_PASSWORD";
pub const ENV_USERNAME: &str = "STRATUSLAB_USERNAME";
pub const ENV_PASSWORD: &str = "STRATUSLAB_PASSWORD";
pub const ENV_KEY: &str = "STRATUSLAB_KEY";
pub const ENV_PEM_CERTIFICATE: &str = "STRATUSLAB_PEM_CERTIFICATE";
pub const ENV_PEM_KEY: &str = "STRATUSLAB_PEM_KEY";
pub const ENV_CA_CERTIFICATE: &str = "STRATUSLAB_CA_CERTIFICATE";
pub const ENV_P12_CERTIFICATE: &str = "STRATUSLAB_P12_CERTIFICATE";
pub const ENV_P12_PASSWORD: &str = "STRATUSLAB_P12_PASSWORD";

/// The guide's default grid credentials, under `$HOME` (section 4.9).
pub const DEFAULT_PEM_CERTIFICATE_RELATIVE_PATH: &str = ".globus/usercert.pem";
pub const DEFAULT_PEM_KEY_RELATIVE_PATH: &str = ".globus/userkey.pem";
pub const DEFAULT_P12_CERTIFICATE_RELATIVE_PATH: &str = ".globus/usercert.p12";

/// Keys of the configuration file this client reads. Any other key of the guide (`pdisk_port`,
/// ...) is accepted and ignored.
pub mod keys {
    pub const SELECTED_SECTION: &str = "selected_section";
    pub const ENDPOINT: &str = "endpoint";
    pub const MARKETPLACE_ENDPOINT: &str = "marketplace_endpoint";
    pub const PDISK_ENDPOINT: &str = "pdisk_endpoint";
    pub const PDISK_USERNAME: &str = "pdisk_username";
    pub const PDISK_PASSWORD: &str = "pdisk_password";
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const USER_PUBLIC_KEY_FILE: &str = "user_public_key_file";
    pub const PEM_CERTIFICATE: &str = "pem_certificate";
    pub const PEM_KEY: &str = "pem_key";
    pub const P12_CERTIFICATE: &str = "p12_certificate";
    pub const P12_PASSWORD: &str = "p12_password";
    pub const CA_CERTIFICATE: &str = "ca_certificate";
}

/// The environment as the resolution sees it: variable name to value. Only `HOME` and the
/// `STRATUSLAB_*` variables matter.
pub type Env = BTreeMap<String, String>;

/// Collects the variables configuration cares about from the process environment.
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k == "HOME" || k.starts_with("STRATUSLAB_"))
        .collect()
}

/// The options every command accepts (before or after the command name).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Configuration")]
pub struct CliOptions {
    /// Configuration file [env: STRATUSLAB_CONFIG] [default: ~/.stratuslab/stratuslab-user.cfg]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Section of the configuration file to use over [default]
    /// [env: STRATUSLAB_USER_CONFIG_SECTION]
    #[arg(
        short = 'S',
        long = "user-config-section",
        global = true,
        value_name = "SECTION"
    )]
    pub section: Option<String>,

    /// Cloud endpoint: host, host:port or URL (port 8440 unless given), or a comma-separated
    /// list of the cloud's controller nodes, tried in turn [env: STRATUSLAB_ENDPOINT]
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub endpoint: Option<String>,

    /// Marketplace endpoint, served by the cloud's controller: the cloud endpoint unless given
    /// [env: STRATUSLAB_MARKETPLACE_ENDPOINT]
    #[arg(long = "marketplace-endpoint", global = true, value_name = "ENDPOINT")]
    pub marketplace_endpoint: Option<String>,

    /// Persistent disk (volume) service, served by the cloud's controller: the cloud endpoint
    /// unless given [env: STRATUSLAB_PDISK_ENDPOINT]
    #[arg(long = "pdisk-endpoint", global = true, value_name = "ENDPOINT")]
    pub pdisk_endpoint: Option<String>,

    /// Username for the persistent disk service: the cloud username unless given
    /// [env: STRATUSLAB_PDISK_USERNAME]
    #[arg(long = "pdisk-username", global = true, value_name = "NAME")]
    pub pdisk_username: Option<String>,

    /// Password for the persistent disk service: the cloud password unless given
    /// [env: STRATUSLAB_PDISK_PASSWORD]
    #[arg(long = "pdisk-password", global = true, value_name = "PASSWORD")]
    pub pdisk_password: Option<String>,

    /// Cloud username [env: STRATUSLAB_USERNAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub username: Option<String>,

    /// Cloud password [env: STRATUSLAB_PASSWORD]
    #[arg(long, global = true, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// SSH public key file pushed to instances [env: STRATUSLAB_KEY] [default: ~/.ssh/id_rsa.pub]
    #[arg(long = "key", global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// The CA that signed the cloud's certificate (PEM), instead of the system's
    /// [env: STRATUSLAB_CA_CERTIFICATE]
    #[arg(long = "ca-certificate", global = true, value_name = "FILE")]
    pub ca_certificate: Option<PathBuf>,

    /// PEM certificate [env: STRATUSLAB_PEM_CERTIFICATE] [default: ~/.globus/usercert.pem]
    #[arg(long = "pem-cert", global = true, value_name = "FILE")]
    pub pem_cert: Option<PathBuf>,

    /// PEM private key, unencrypted [env: STRATUSLAB_PEM_KEY] [default: ~/.globus/userkey.pem]
    #[arg(long = "pem-key", global = true, value_name = "FILE")]
    pub pem_key: Option<PathBuf>,

    /// PKCS#12 certificate and key for signing image metadata [env: STRATUSLAB_P12_CERTIFICATE]
    /// [default: ~/.globus/usercert.p12]
    #[arg(long = "p12-cert", global = true, value_name = "FILE")]
    pub p12_cert: Option<PathBuf>,

    /// Password of the PKCS#12 file [env: STRATUSLAB_P12_PASSWORD]
    #[arg(long = "p12-password", global = true, value_name = "PASSWORD")]
    pub p12_password: Option<String>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("HOME is not set: name the configuration file with --config or {ENV_CONFIG}")]
    NoHome,
    #[error("configuration file {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read the configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse the configuration file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("section [{section}] not found in the configuration file {}", path.display())]
    SectionNotFound { section: String, path: PathBuf },
    #[error(
        "no cloud endpoint configured: run stratus-copy-config and set endpoint in {}, \
         or set {ENV_ENDPOINT}, or pass --endpoint",
        path.display()
    )]
    MissingEndpoint { path: PathBuf },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(
        "no signing credentials: {tried} not found; set p12_certificate (or pem_certificate and \
         pem_key) in {}, or pass --p12-cert (or --pem-cert and --pem-key)",
        path.display()
    )]
    NoSigningCredentials { tried: String, path: PathBuf },
}

/// Where the configuration file is, and whether the user named it (then it must exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLocation {
    pub path: PathBuf,
    pub explicit: bool,
}

/// `--config` > `STRATUSLAB_CONFIG` > `$HOME/.stratuslab/stratuslab-user.cfg`.
pub fn config_location(cli: &CliOptions, env: &Env) -> Result<ConfigLocation, ConfigError> {
    if let Some(path) = &cli.config {
        return Ok(ConfigLocation {
            path: path.clone(),
            explicit: true,
        });
    }
    if let Some(path) = env_value(env, ENV_CONFIG) {
        return Ok(ConfigLocation {
            path: PathBuf::from(path),
            explicit: true,
        });
    }
    let home = env_value(env, "HOME").ok_or(ConfigError::NoHome)?;
    Ok(ConfigLocation {
        path: Path::new(home).join(USER_CONFIG_RELATIVE_PATH),
        explicit: false,
    })
}

/// The parsed file: section name to (lower-case key to value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl ConfigFile {
    /// Parses INI text. Keys are case-insensitive (as Python's ConfigParser made them), section
    /// names are not; backslashes are kept as written (Windows paths).
    pub fn parse(text: &str) -> Result<Self, String> {
        let options = ini::ParseOption {
            enabled_escape: false,
            ..ini::ParseOption::default()
        };
        let ini = ini::Ini::load_from_str_opt(text, options).map_err(|e| e.to_string())?;
        let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (name, properties) in ini.iter() {
            let values = sections
                .entry(name.unwrap_or(DEFAULT_SECTION).to_string())
                .or_default();
            for (key, value) in properties.iter() {
                values.insert(key.to_ascii_lowercase(), value.trim().to_string());
            }
        }
        Ok(Self { sections })
    }

    /// Reads and parses the file; a missing file is an empty configuration unless the user named
    /// it explicitly.
    pub fn load(location: &ConfigLocation) -> Result<Self, ConfigError> {
        let path = &location.path;
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|message| ConfigError::Parse {
                path: path.clone(),
                message,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !location.explicit => {
                Ok(Self::default())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ConfigError::NotFound { path: path.clone() })
            }
            Err(source) => Err(ConfigError::Read {
                path: path.clone(),
                source,
            }),
        }
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .get(section)?
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Where a setting came from, in increasing precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The default built into the client.
    Default,
    /// The configuration file.
    File,
    /// A `STRATUSLAB_*` environment variable.
    Environment,
    /// A command-line option.
    CommandLine,
}

/// A resolved setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The credentials that sign image metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningCredentials {
    /// A PEM certificate (possibly followed by its chain) and an unencrypted PEM key.
    Pem { certificate: PathBuf, key: PathBuf },
    /// A PKCS#12 file and its password (empty when none is configured).
    Pkcs12 { file: PathBuf, password: String },
}

/// The settings a command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedConfig {
    /// The file the values were read from (named in messages even if it does not exist).
    pub config_path: PathBuf,
    /// The named section used over `[default]`, if any.
    pub section: Option<String>,
    /// Absent until configured; [`ResolvedConfig::endpoint`] turns that into an error.
    pub endpoint: Option<Endpoints>,
    /// The Marketplace's endpoint: `marketplace_endpoint` if configured (at any level), else
    /// `endpoint`, since the controller serves the Marketplace. Absent when neither is.
    pub marketplace_endpoint: Option<Endpoints>,
    /// The persistent disk service's endpoint: `pdisk_endpoint` if configured (at any level),
    /// else `endpoint`, since the controller serves volumes. Absent when neither is.
    pub pdisk_endpoint: Option<Endpoints>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The persistent disk service's username: `pdisk_username` if configured, else `username`.
    pub pdisk_username: Option<String>,
    /// The persistent disk service's password: `pdisk_password` if configured, else `password`.
    pub pdisk_password: Option<String>,
    /// The SSH public key file whose key `run-instance` sends for the instances' root login.
    pub user_public_key_file: Option<PathBuf>,
    /// Whether `user_public_key_file` is only the built-in default (`~/.ssh/id_rsa.pub`), which
    /// may well not exist; a file the user named must.
    pub user_public_key_is_default: bool,
    /// PEM certificate, configured or the guide's default (absent without HOME).
    pub pem_certificate: Option<Sourced<PathBuf>>,
    /// PEM key, configured or the guide's default (absent without HOME).
    pub pem_key: Option<Sourced<PathBuf>>,
    /// PKCS#12 file, configured or the guide's default (absent without HOME).
    pub p12_certificate: Option<Sourced<PathBuf>>,
    /// PKCS#12 password, if configured.
    pub p12_password: Option<Sourced<String>>,
    /// The CA the cloud's TLS certificate must chain to; the system's roots when absent.
    pub ca_certificate: Option<PathBuf>,
}

impl ResolvedConfig {
    /// The endpoint, or the error telling the user how to configure one.
    pub fn endpoint(&self) -> Result<&Endpoints, ConfigError> {
        self.endpoint
            .as_ref()
            .ok_or_else(|| ConfigError::MissingEndpoint {
                path: self.config_path.clone(),
            })
    }

    /// The Marketplace endpoint, or the error telling the user how to configure the cloud's.
    pub fn marketplace_endpoint(&self) -> Result<&Endpoints, ConfigError> {
        self.marketplace_endpoint
            .as_ref()
            .ok_or_else(|| ConfigError::MissingEndpoint {
                path: self.config_path.clone(),
            })
    }

    /// The persistent disk endpoint, or the error telling the user how to configure the cloud's.
    pub fn pdisk_endpoint(&self) -> Result<&Endpoints, ConfigError> {
        self.pdisk_endpoint
            .as_ref()
            .ok_or_else(|| ConfigError::MissingEndpoint {
                path: self.config_path.clone(),
            })
    }

    /// The credentials `stratus-sign-metadata` uses. Whichever of PKCS#12 and PEM is configured
    /// at the higher precedence wins (command line > environment > file); at the same level,
    /// PKCS#12, which the guide names for signing metadata. With neither configured, the default
    /// `~/.globus/usercert.p12` if it `exists`, else `~/.globus/usercert.pem` and `userkey.pem`.
    pub fn signing_credentials(
        &self,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<SigningCredentials, ConfigError> {
        let level = |settings: &[Option<Source>]| {
            settings
                .iter()
                .flatten()
                .copied()
                .filter(|s| *s != Source::Default)
                .max()
        };
        let source = |s: &Option<Sourced<PathBuf>>| s.as_ref().map(|s| s.source);
        let p12_level = level(&[
            source(&self.p12_certificate),
            self.p12_password.as_ref().map(|p| p.source),
        ]);
        let pem_level = level(&[source(&self.pem_certificate), source(&self.pem_key)]);
        let pkcs12 = |file: &Sourced<PathBuf>| SigningCredentials::Pkcs12 {
            file: file.value.clone(),
            password: self
                .p12_password
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default(),
        };
        let pem = || match (&self.pem_certificate, &self.pem_key) {
            (Some(certificate), Some(key)) => Some(SigningCredentials::Pem {
                certificate: certificate.value.clone(),
                key: key.value.clone(),
            }),
            _ => None,
        };
        let chosen = match (p12_level, pem_level) {
            (Some(p12), Some(pem_source)) if pem_source > p12 => pem(),
            (Some(_), _) => self.p12_certificate.as_ref().map(pkcs12),
            (None, Some(_)) => pem(),
            (None, None) => match &self.p12_certificate {
                Some(file) if exists(&file.value) => Some(pkcs12(file)),
                _ => pem().filter(|c| {
                    matches!(c, SigningCredentials::Pem { certificate, .. } if exists(certificate))
                }),
            },
        };
        chosen.ok_or_else(|| {
            let tried: Vec<String> = [&self.p12_certificate, &self.pem_certificate]
                .into_iter()
                .flatten()
                .map(|s| s.value.display().to_string())
                .collect();
            ConfigError::NoSigningCredentials {
                tried: if tried.is_empty() {
                    "no credentials configured and HOME is not set, so".to_string()
                } else {
                    tried.join(" and ")
                },
                path: self.config_path.clone(),
            }
        })
    }
}

/// Merges command line, environment and file. Pure: the caller reads the file and the
/// environment.
pub fn resolve(
    file: &ConfigFile,
    config_path: &Path,
    env: &Env,
    cli: &CliOptions,
) -> Result<ResolvedConfig, ConfigError> {
    let section = cli
        .section
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| env_value(env, ENV_SECTION).map(str::to_string))
        .or_else(|| {
            file.get(DEFAULT_SECTION, keys::SELECTED_SECTION)
                .map(str::to_string)
        })
        .filter(|s| s != DEFAULT_SECTION);
    if let Some(name) = &section {
        if !file.sections.contains_key(name) {
            return Err(ConfigError::SectionNotFound {
                section: name.clone(),
                path: config_path.to_path_buf(),
            });
        }
    }

    let from_file = |key: &str| {
        section
            .as_deref()
            .and_then(|s| file.get(s, key))
            .or_else(|| file.get(DEFAULT_SECTION, key))
    };
    let pick = |cli_value: Option<&str>, env_name: &str, key: &str| -> Option<String> {
        cli_value
            .or_else(|| env_value(env, env_name))
            .or_else(|| from_file(key))
            .map(str::to_string)
    };

    let endpoint = pick(cli.endpoint.as_deref(), ENV_ENDPOINT, keys::ENDPOINT)
        .map(|e| Endpoints::parse(&e))
        .transpose()?;
    let marketplace_endpoint = pick(
        cli.marketplace_endpoint.as_deref(),
        ENV_MARKETPLACE_ENDPOINT,
        keys::MARKETPLACE_ENDPOINT,
    )
    .map(|e| Endpoints::parse(&e))
    .transpose()?
    .or_else(|| endpoint.clone());
    let pdisk_endpoint = pick(
        cli.pdisk_endpoint.as_deref(),
        ENV_PDISK_ENDPOINT,
        keys::PDISK_ENDPOINT,
    )
    .map(|e| Endpoints::parse(&e))
    .transpose()?
    .or_else(|| endpoint.clone());
    let username = pick(cli.username.as_deref(), ENV_USERNAME, keys::USERNAME);
    let password = pick(cli.password.as_deref(), ENV_PASSWORD, keys::PASSWORD);
    // The guide: each of the pdisk credentials not given is the cloud's.
    let pdisk_username = pick(
        cli.pdisk_username.as_deref(),
        ENV_PDISK_USERNAME,
        keys::PDISK_USERNAME,
    )
    .or_else(|| username.clone());
    let pdisk_password = pick(
        cli.pdisk_password.as_deref(),
        ENV_PDISK_PASSWORD,
        keys::PDISK_PASSWORD,
    )
    .or_else(|| password.clone());
    let home = env_value(env, "HOME");
    let named_key_file = cli.key.clone().or_else(|| {
        env_value(env, ENV_KEY)
            .or_else(|| from_file(keys::USER_PUBLIC_KEY_FILE))
            .map(|p| expand_home(p, home))
    });
    let user_public_key_is_default = named_key_file.is_none();
    let user_public_key_file = named_key_file
        .or_else(|| home.map(|h| Path::new(h).join(DEFAULT_PUBLIC_KEY_RELATIVE_PATH)));

    let path_setting = |cli_value: &Option<PathBuf>, env_name: &str, key: &str, default: &str| {
        if let Some(path) = cli_value {
            return Some(Sourced {
                value: path.clone(),
                source: Source::CommandLine,
            });
        }
        if let Some(path) = env_value(env, env_name) {
            return Some(Sourced {
                value: expand_home(path, home),
                source: Source::Environment,
            });
        }
        if let Some(path) = from_file(key) {
            return Some(Sourced {
                value: expand_home(path, home),
                source: Source::File,
            });
        }
        home.map(|h| Sourced {
            value: Path::new(h).join(default),
            source: Source::Default,
        })
    };
    let pem_certificate = path_setting(
        &cli.pem_cert,
        ENV_PEM_CERTIFICATE,
        keys::PEM_CERTIFICATE,
        DEFAULT_PEM_CERTIFICATE_RELATIVE_PATH,
    );
    let pem_key = path_setting(
        &cli.pem_key,
        ENV_PEM_KEY,
        keys::PEM_KEY,
        DEFAULT_PEM_KEY_RELATIVE_PATH,
    );
    let p12_certificate = path_setting(
        &cli.p12_cert,
        ENV_P12_CERTIFICATE,
        keys::P12_CERTIFICATE,
        DEFAULT_P12_CERTIFICATE_RELATIVE_PATH,
    );
    let p12_password = if let Some(p) = &cli.p12_password {
        Some(Sourced {
            value: p.clone(),
            source: Source::CommandLine,
        })
    } else if let Some(p) = env_value(env, ENV_P12_PASSWORD) {
        Some(Sourced {
            value: p.to_string(),
            source: Source::Environment,
        })
    } else {
        from_file(keys::P12_PASSWORD).map(|p| Sourced {
            value: p.to_string(),
            source: Source::File,
        })
    };

    let ca_certificate = cli.ca_certificate.clone().or_else(|| {
        env_value(env, ENV_CA_CERTIFICATE)
            .or_else(|| from_file(keys::CA_CERTIFICATE))
            .map(|p| expand_home(p, home))
    });

    Ok(ResolvedConfig {
        config_path: config_path.to_path_buf(),
        ca_certificate,
        pem_certificate,
        pem_key,
        p12_certificate,
        p12_password,
        endpoint,
        marketplace_endpoint,
        pdisk_endpoint,
        username,
        password,
        pdisk_username,
        pdisk_password,
        user_public_key_file,
        user_public_key_is_default,
        section,
    })
}

/// An environment variable set to the empty string counts as unset.
fn env_value<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Expands a leading `~/` or the reference file's `<home>/` placeholder.
fn expand_home(path: &str, home: Option<&str>) -> PathBuf {
    let rest = path
        .strip_prefix("~/")
        .or_else(|| path.strip_prefix("<home>/"));
    match (rest, home) {
        (Some(rest), Some(home)) => Path::new(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# a comment
[default]
endpoint = default.example.org
username = alice
password = secret
pdisk_endpoint = pdisk.example.org
marketplace_endpoint = https://marketplace.stratuslab.eu
pem_key = <home>/.globus/userkey.pem
p12_certificate = <home>/.globus/usercert.p12

[fav-cloud]
endpoint = favorit-cloud.tld:9000
username = clouduser
user_public_key_file = /home/clouduser/.ssh/id_rsa-favcloud.pub

[other]
endpoint = other.tld
";

    fn file() -> ConfigFile {
        ConfigFile::parse(FILE).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve_with(file: &ConfigFile, env: &Env, cli: &CliOptions) -> ResolvedConfig {
        resolve(file, Path::new("/cfg"), env, cli).unwrap()
    }

    fn endpoint(r: &ResolvedConfig) -> String {
        r.endpoint().unwrap().primary().base_url()
    }

    #[test]
    fn default_section_alone() {
        let r = resolve_with(
            &file(),
            &env(&[("HOME", "/home/u")]),
            &CliOptions::default(),
        );
        assert_eq!(endpoint(&r), "https://default.example.org:8440");
        assert_eq!(r.username.as_deref(), Some("alice"));
        assert_eq!(r.password.as_deref(), Some("secret"));
        assert_eq!(r.section, None);
        assert_eq!(
            r.user_public_key_file,
            Some(PathBuf::from("/home/u/.ssh/id_rsa.pub"))
        );
    }

    #[test]
    fn selected_section_overrides_default_key_by_key() {
        let mut f = file();
        f.sections
            .get_mut(DEFAULT_SECTION)
            .unwrap()
            .insert("selected_section".into(), "fav-cloud".into());
        let r = resolve_with(&f, &env(&[("HOME", "/home/u")]), &CliOptions::default());
        assert_eq!(r.section.as_deref(), Some("fav-cloud"));
        assert_eq!(endpoint(&r), "https://favorit-cloud.tld:9000");
        assert_eq!(r.username.as_deref(), Some("clouduser"));
        // Not in the section: falls back to [default].
        assert_eq!(r.password.as_deref(), Some("secret"));
        assert_eq!(
            r.user_public_key_file,
            Some(PathBuf::from("/home/clouduser/.ssh/id_rsa-favcloud.pub"))
        );
    }

    #[test]
    fn section_choice_cli_over_env_over_file() {
        let mut f = file();
        f.sections
            .get_mut(DEFAULT_SECTION)
            .unwrap()
            .insert("selected_section".into(), "other".into());
        let e = env(&[(ENV_SECTION, "fav-cloud")]);
        let r = resolve_with(&f, &e, &CliOptions::default());
        assert_eq!(r.section.as_deref(), Some("fav-cloud"));

        let cli = CliOptions {
            section: Some("other".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &env(&[(ENV_SECTION, "fav-cloud")]), &cli);
        assert_eq!(r.section.as_deref(), Some("other"));
        assert_eq!(endpoint(&r), "https://other.tld:8440");

        // -S default means "no named section".
        let cli = CliOptions {
            section: Some("default".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &Env::new(), &cli);
        assert_eq!(r.section, None);
        assert_eq!(endpoint(&r), "https://default.example.org:8440");
    }

    #[test]
    fn unknown_section_is_an_error_naming_it_and_the_file() {
        let cli = CliOptions {
            section: Some("nope".into()),
            ..Default::default()
        };
        let err = resolve(&file(), Path::new("/cfg"), &Env::new(), &cli).unwrap_err();
        assert_eq!(
            err.to_string(),
            "section [nope] not found in the configuration file /cfg"
        );
    }

    #[test]
    fn env_overrides_file_and_cli_overrides_env() {
        let e = env(&[
            (ENV_ENDPOINT, "env.example.org:1"),
            (ENV_USERNAME, "env-user"),
            (ENV_PASSWORD, "env-pass"),
            (ENV_KEY, "/env/key.pub"),
        ]);
        let r = resolve_with(&file(), &e, &CliOptions::default());
        assert_eq!(endpoint(&r), "https://env.example.org:1");
        assert_eq!(r.username.as_deref(), Some("env-user"));
        assert_eq!(r.password.as_deref(), Some("env-pass"));
        assert_eq!(r.user_public_key_file, Some(PathBuf::from("/env/key.pub")));

        let cli = CliOptions {
            endpoint: Some("https://cli.example.org".into()),
            username: Some("cli-user".into()),
            password: Some("cli-pass".into()),
            key: Some(PathBuf::from("/cli/key.pub")),
            ..Default::default()
        };
        let r = resolve_with(&file(), &e, &cli);
        assert_eq!(endpoint(&r), "https://cli.example.org:8440");
        assert_eq!(r.username.as_deref(), Some("cli-user"));
        assert_eq!(r.password.as_deref(), Some("cli-pass"));
        assert_eq!(r.user_public_key_file, Some(PathBuf::from("/cli/key.pub")));
    }

    #[test]
    fn env_overrides_a_selected_section_too() {
        let e = env(&[(ENV_USERNAME, "env-user")]);
        let cli = CliOptions {
            section: Some("fav-cloud".into()),
            ..Default::default()
        };
        let r = resolve_with(&file(), &e, &cli);
        assert_eq!(r.username.as_deref(), Some("env-user"));
        assert_eq!(endpoint(&r), "https://favorit-cloud.tld:9000");
    }

    #[test]
    fn each_key_resolves_independently() {
        let e = env(&[(ENV_PASSWORD, "env-pass")]);
        let cli = CliOptions {
            username: Some("cli-user".into()),
            ..Default::default()
        };
        let r = resolve_with(&file(), &e, &cli);
        assert_eq!(endpoint(&r), "https://default.example.org:8440");
        assert_eq!(r.username.as_deref(), Some("cli-user"));
        assert_eq!(r.password.as_deref(), Some("env-pass"));
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let e = env(&[(ENV_ENDPOINT, ""), (ENV_SECTION, "")]);
        let r = resolve_with(&file(), &e, &CliOptions::default());
        assert_eq!(endpoint(&r), "https://default.example.org:8440");
    }

    #[test]
    fn missing_endpoint_tells_the_user_what_to_do() {
        let r = resolve_with(&ConfigFile::default(), &Env::new(), &CliOptions::default());
        assert_eq!(r.endpoint, None);
        assert_eq!(
            r.endpoint().unwrap_err().to_string(),
            "no cloud endpoint configured: run stratus-copy-config and set endpoint in /cfg, \
             or set STRATUSLAB_ENDPOINT, or pass --endpoint"
        );
    }

    #[test]
    fn invalid_endpoint_is_an_error() {
        let cli = CliOptions {
            endpoint: Some("ftp://x".into()),
            ..Default::default()
        };
        let err = resolve(&file(), Path::new("/cfg"), &Env::new(), &cli).unwrap_err();
        assert!(matches!(err, ConfigError::Endpoint(_)), "{err}");
    }

    fn marketplace(r: &ResolvedConfig) -> String {
        r.marketplace_endpoint().unwrap().primary().base_url()
    }

    #[test]
    fn marketplace_endpoint_is_the_cloud_endpoint_unless_configured() {
        // Not configured anywhere: the controller's endpoint, wherever that came from.
        let f = ConfigFile::parse("endpoint = cloud.example.org\n").unwrap();
        let r = resolve_with(&f, &Env::new(), &CliOptions::default());
        assert_eq!(marketplace(&r), "https://cloud.example.org:8440");
        let cli = CliOptions {
            endpoint: Some("https://cli.example.org:9443".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &env(&[(ENV_ENDPOINT, "env.example.org")]), &cli);
        assert_eq!(marketplace(&r), "https://cli.example.org:9443");
        let r = resolve_with(
            &f,
            &env(&[
                (ENV_ENDPOINT, "env.example.org"),
                (ENV_MARKETPLACE_ENDPOINT, ""),
            ]),
            &CliOptions::default(),
        );
        assert_eq!(marketplace(&r), "https://env.example.org:8440");

        // Neither: the cloud endpoint's message.
        let r = resolve_with(&ConfigFile::default(), &Env::new(), &CliOptions::default());
        assert_eq!(r.marketplace_endpoint, None);
        assert_eq!(
            r.marketplace_endpoint().unwrap_err().to_string(),
            r.endpoint().unwrap_err().to_string()
        );
    }

    #[test]
    fn marketplace_endpoint_resolves_cli_over_env_over_file() {
        // In [default], it applies to a selected section too (key by key, as every key).
        let cli = CliOptions {
            section: Some("fav-cloud".into()),
            ..Default::default()
        };
        let r = resolve_with(&file(), &Env::new(), &cli);
        assert_eq!(endpoint(&r), "https://favorit-cloud.tld:9000");
        assert_eq!(marketplace(&r), "https://marketplace.stratuslab.eu:8440");

        let mut f = file();
        f.sections
            .get_mut("fav-cloud")
            .unwrap()
            .insert("marketplace_endpoint".into(), "mp.favorit-cloud.tld".into());
        let r = resolve_with(&f, &Env::new(), &cli);
        assert_eq!(marketplace(&r), "https://mp.favorit-cloud.tld:8440");

        let e = env(&[(ENV_MARKETPLACE_ENDPOINT, "env-mp.example.org:1")]);
        let r = resolve_with(&f, &e, &cli);
        assert_eq!(marketplace(&r), "https://env-mp.example.org:1");

        let cli = CliOptions {
            section: Some("fav-cloud".into()),
            marketplace_endpoint: Some("http://cli-mp.example.org/prefix/".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &e, &cli);
        assert_eq!(marketplace(&r), "http://cli-mp.example.org:8440/prefix");
        // The cloud endpoint is unaffected.
        assert_eq!(endpoint(&r), "https://favorit-cloud.tld:9000");
    }

    #[test]
    fn invalid_marketplace_endpoint_is_an_error() {
        let e = env(&[(ENV_MARKETPLACE_ENDPOINT, "ftp://mp")]);
        let err = resolve(&file(), Path::new("/cfg"), &e, &CliOptions::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Endpoint(_)), "{err}");
    }

    fn pdisk(r: &ResolvedConfig) -> String {
        r.pdisk_endpoint().unwrap().primary().base_url()
    }

    #[test]
    fn pdisk_endpoint_is_the_cloud_endpoint_unless_configured() {
        let f = ConfigFile::parse("endpoint = cloud.example.org\n").unwrap();
        let r = resolve_with(&f, &Env::new(), &CliOptions::default());
        assert_eq!(pdisk(&r), "https://cloud.example.org:8440");
        let cli = CliOptions {
            endpoint: Some("https://cli.example.org:9443".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &env(&[(ENV_ENDPOINT, "env.example.org")]), &cli);
        assert_eq!(pdisk(&r), "https://cli.example.org:9443");
        let r = resolve_with(
            &f,
            &env(&[(ENV_ENDPOINT, "env.example.org"), (ENV_PDISK_ENDPOINT, "")]),
            &CliOptions::default(),
        );
        assert_eq!(pdisk(&r), "https://env.example.org:8440");

        // Neither: the cloud endpoint's message.
        let r = resolve_with(&ConfigFile::default(), &Env::new(), &CliOptions::default());
        assert_eq!(r.pdisk_endpoint, None);
        assert_eq!(
            r.pdisk_endpoint().unwrap_err().to_string(),
            r.endpoint().unwrap_err().to_string()
        );
    }

    #[test]
    fn pdisk_endpoint_resolves_cli_over_env_over_file() {
        // The test file's [default] has pdisk_endpoint, which applies to a selected section.
        let cli = CliOptions {
            section: Some("fav-cloud".into()),
            ..Default::default()
        };
        let r = resolve_with(&file(), &Env::new(), &cli);
        assert_eq!(endpoint(&r), "https://favorit-cloud.tld:9000");
        assert_eq!(pdisk(&r), "https://pdisk.example.org:8440");

        let mut f = file();
        f.sections.get_mut("fav-cloud").unwrap().insert(
            "pdisk_endpoint".into(),
            "https://pdisk.favorit-cloud.tld".into(),
        );
        let r = resolve_with(&f, &Env::new(), &cli);
        assert_eq!(pdisk(&r), "https://pdisk.favorit-cloud.tld:8440");

        let e = env(&[(ENV_PDISK_ENDPOINT, "env-pdisk.example.org:1")]);
        let r = resolve_with(&f, &e, &cli);
        assert_eq!(pdisk(&r), "https://env-pdisk.example.org:1");

        let cli = CliOptions {
            section: Some("fav-cloud".into()),
            pdisk_endpoint: Some("cli-pdisk.example.org:2".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &e, &cli);
        assert_eq!(pdisk(&r), "https://cli-pdisk.example.org:2");
        // The other endpoints are unaffected.
        assert_eq!(endpoint(&r), "https://favorit-cloud.tld:9000");
        assert_eq!(marketplace(&r), "https://marketplace.stratuslab.eu:8440");

        let e = env(&[(ENV_PDISK_ENDPOINT, "ftp://pdisk")]);
        let err = resolve(&file(), Path::new("/cfg"), &e, &CliOptions::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Endpoint(_)), "{err}");
    }

    #[test]
    fn pdisk_credentials_default_to_the_cloud_ones_each() {
        let r = resolve_with(&file(), &Env::new(), &CliOptions::default());
        assert_eq!(r.pdisk_username.as_deref(), Some("alice"));
        assert_eq!(r.pdisk_password.as_deref(), Some("secret"));

        // Only the username given: the cloud password goes with it.
        let mut f = file();
        f.sections
            .get_mut(DEFAULT_SECTION)
            .unwrap()
            .insert("pdisk_username".into(), "file-pdisk-user".into());
        let r = resolve_with(&f, &Env::new(), &CliOptions::default());
        assert_eq!(r.pdisk_username.as_deref(), Some("file-pdisk-user"));
        assert_eq!(r.pdisk_password.as_deref(), Some("secret"));

        let e = env(&[(ENV_PDISK_PASSWORD, "env-pdisk-pass")]);
        let r = resolve_with(&f, &e, &CliOptions::default());
        assert_eq!(r.pdisk_password.as_deref(), Some("env-pdisk-pass"));
        // The cloud credentials are unaffected.
        assert_eq!(r.username.as_deref(), Some("alice"));
        assert_eq!(r.password.as_deref(), Some("secret"));

        let cli = CliOptions {
            username: Some("cli-user".into()),
            pdisk_password: Some("cli-pdisk-pass".into()),
            ..Default::default()
        };
        let r = resolve_with(&file(), &e, &cli);
        assert_eq!(r.pdisk_username.as_deref(), Some("cli-user"));
        assert_eq!(r.pdisk_password.as_deref(), Some("cli-pdisk-pass"));
        let cli = CliOptions {
            pdisk_username: Some("cli-pdisk-user".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &e, &cli);
        assert_eq!(r.pdisk_username.as_deref(), Some("cli-pdisk-user"));
    }

    fn pem(certificate: &str, key: &str) -> SigningCredentials {
        SigningCredentials::Pem {
            certificate: certificate.into(),
            key: key.into(),
        }
    }

    fn p12(file: &str, password: &str) -> SigningCredentials {
        SigningCredentials::Pkcs12 {
            file: file.into(),
            password: password.into(),
        }
    }

    fn credentials(file: &ConfigFile, env: &Env, cli: &CliOptions) -> SigningCredentials {
        resolve_with(file, env, cli)
            .signing_credentials(|_| false)
            .unwrap()
    }

    #[test]
    fn credential_paths_resolve_cli_over_env_over_file_over_default() {
        let f = ConfigFile::parse(
            "[default]\npem_certificate = ~/file-cert.pem\npem_key = <home>/file-key.pem\n\
             p12_certificate = /file.p12\np12_password = file-pw\n",
        )
        .unwrap();
        let home = env(&[("HOME", "/h")]);
        let r = resolve_with(&f, &home, &CliOptions::default());
        let sourced = |value: &str, source| {
            Some(Sourced {
                value: PathBuf::from(value),
                source,
            })
        };
        assert_eq!(r.pem_certificate, sourced("/h/file-cert.pem", Source::File));
        assert_eq!(r.pem_key, sourced("/h/file-key.pem", Source::File));
        assert_eq!(r.p12_certificate, sourced("/file.p12", Source::File));
        assert_eq!(r.p12_password.as_ref().unwrap().value, "file-pw");

        let e = env(&[
            ("HOME", "/h"),
            (ENV_PEM_CERTIFICATE, "/env-cert.pem"),
            (ENV_P12_PASSWORD, "env-pw"),
        ]);
        let r = resolve_with(&f, &e, &CliOptions::default());
        assert_eq!(
            r.pem_certificate,
            sourced("/env-cert.pem", Source::Environment)
        );
        assert_eq!(r.pem_key, sourced("/h/file-key.pem", Source::File));
        assert_eq!(r.p12_password.as_ref().unwrap().value, "env-pw");

        let cli = CliOptions {
            pem_cert: Some("/cli-cert.pem".into()),
            p12_password: Some("cli-pw".into()),
            ..Default::default()
        };
        let r = resolve_with(&f, &e, &cli);
        assert_eq!(
            r.pem_certificate,
            sourced("/cli-cert.pem", Source::CommandLine)
        );
        assert_eq!(r.p12_password.as_ref().unwrap().value, "cli-pw");

        // Nothing configured: the guide's defaults under HOME.
        let r = resolve_with(&ConfigFile::default(), &home, &CliOptions::default());
        assert_eq!(
            r.pem_certificate,
            sourced("/h/.globus/usercert.pem", Source::Default)
        );
        assert_eq!(
            r.pem_key,
            sourced("/h/.globus/userkey.pem", Source::Default)
        );
        assert_eq!(
            r.p12_certificate,
            sourced("/h/.globus/usercert.p12", Source::Default)
        );
        assert_eq!(r.p12_password, None);
    }

    #[test]
    fn signing_credentials_follow_the_higher_precedence() {
        let home = env(&[("HOME", "/h")]);
        let none = CliOptions::default();
        // Both in the file: PKCS#12, the guide's credential for metadata.
        let both = ConfigFile::parse(
            "pem_certificate = /c.pem\npem_key = /k.pem\np12_certificate = /u.p12\n",
        )
        .unwrap();
        assert_eq!(credentials(&both, &home, &none), p12("/u.p12", ""));
        // PEM on the command line beats PKCS#12 in the file...
        let cli = CliOptions {
            pem_cert: Some("/cli.pem".into()),
            pem_key: Some("/cli.key".into()),
            ..Default::default()
        };
        assert_eq!(credentials(&both, &home, &cli), pem("/cli.pem", "/cli.key"));
        // ...and PEM in the environment does too, with the file's key.
        let e = env(&[("HOME", "/h"), (ENV_PEM_CERTIFICATE, "/env.pem")]);
        assert_eq!(credentials(&both, &e, &none), pem("/env.pem", "/k.pem"));
        // A PKCS#12 password from the environment brings PKCS#12 back.
        let e = env(&[
            ("HOME", "/h"),
            (ENV_PEM_CERTIFICATE, "/env.pem"),
            (ENV_P12_PASSWORD, "pw"),
        ]);
        assert_eq!(credentials(&both, &e, &none), p12("/u.p12", "pw"));
        // Only PEM configured.
        let only_pem = ConfigFile::parse("pem_certificate = /c.pem\n").unwrap();
        assert_eq!(
            credentials(&only_pem, &home, &none),
            pem("/c.pem", "/h/.globus/userkey.pem")
        );
    }

    #[test]
    fn signing_credentials_default_to_whichever_file_exists() {
        let r = resolve_with(
            &ConfigFile::default(),
            &env(&[("HOME", "/h")]),
            &CliOptions::default(),
        );
        let p12_exists = |p: &Path| p == Path::new("/h/.globus/usercert.p12");
        assert_eq!(
            r.signing_credentials(p12_exists).unwrap(),
            p12("/h/.globus/usercert.p12", "")
        );
        let pem_exists = |p: &Path| p == Path::new("/h/.globus/usercert.pem");
        assert_eq!(
            r.signing_credentials(pem_exists).unwrap(),
            pem("/h/.globus/usercert.pem", "/h/.globus/userkey.pem")
        );
        let err = r.signing_credentials(|_| false).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "no signing credentials: /h/.globus/usercert.p12 and /h/.globus/usercert.pem \
                 not found"
            ),
            "{err}"
        );
        let r = resolve_with(&ConfigFile::default(), &Env::new(), &CliOptions::default());
        assert!(matches!(
            r.signing_credentials(|_| true),
            Err(ConfigError::NoSigningCredentials { .. })
        ));
    }

    #[test]
    fn key_file_expands_home_and_has_no_default_without_home() {
        let f = ConfigFile::parse("[default]\nuser_public_key_file = ~/.ssh/k.pub\n").unwrap();
        let r = resolve_with(&f, &env(&[("HOME", "/h")]), &CliOptions::default());
        assert_eq!(r.user_public_key_file, Some(PathBuf::from("/h/.ssh/k.pub")));
        let f = ConfigFile::parse("[default]\nuser_public_key_file = <home>/k.pub\n").unwrap();
        let r = resolve_with(&f, &env(&[("HOME", "/h")]), &CliOptions::default());
        assert_eq!(r.user_public_key_file, Some(PathBuf::from("/h/k.pub")));
        assert!(!r.user_public_key_is_default);
        let r = resolve_with(&ConfigFile::default(), &Env::new(), &CliOptions::default());
        assert_eq!(r.user_public_key_file, None);
        let r = resolve_with(
            &ConfigFile::default(),
            &env(&[("HOME", "/h")]),
            &CliOptions::default(),
        );
        assert_eq!(
            r.user_public_key_file,
            Some(PathBuf::from("/h/.ssh/id_rsa.pub"))
        );
        assert!(r.user_public_key_is_default);
    }

    #[test]
    fn parse_tolerates_keys_without_section_colons_and_case() {
        // The guide's 4.4.2 example has no section header at all.
        let f = ConfigFile::parse(
            "endpoint = cloud.lal.stratuslab.eu\nUserName: clouduser\n\
             pem_certificate = C:\\Users\\me\\cert.pem\n; semicolon comment\n",
        )
        .unwrap();
        let d = &f.sections[DEFAULT_SECTION];
        assert_eq!(d["endpoint"], "cloud.lal.stratuslab.eu");
        assert_eq!(d["username"], "clouduser");
        assert_eq!(d["pem_certificate"], "C:\\Users\\me\\cert.pem");
    }

    #[test]
    fn parse_reports_bad_syntax() {
        assert!(ConfigFile::parse("[default\nendpoint = x\n").is_err());
    }

    #[test]
    fn reference_file_parses_and_configures_nothing_until_edited() {
        let f = ConfigFile::parse(crate::commands::copy_config::REFERENCE_CONFIG).unwrap();
        let r = resolve_with(&f, &env(&[("HOME", "/h")]), &CliOptions::default());
        assert!(r.endpoint.is_none(), "the endpoint is commented out");
        assert_eq!(
            (r.username, r.password),
            (None, None),
            "no placeholder credentials"
        );
        assert_eq!(r.section, None);
        // Uncommenting the example endpoint gives the local controller.
        let edited = crate::commands::copy_config::REFERENCE_CONFIG
            .replace("#endpoint = 127.0.0.1:8440", "endpoint = 127.0.0.1:8440");
        let f = ConfigFile::parse(&edited).unwrap();
        let r = resolve_with(&f, &env(&[("HOME", "/h")]), &CliOptions::default());
        assert_eq!(endpoint(&r), "https://127.0.0.1:8440");
    }

    #[test]
    fn config_location_precedence() {
        let cli = CliOptions {
            config: Some("/cli.cfg".into()),
            ..Default::default()
        };
        let e = env(&[("HOME", "/h"), (ENV_CONFIG, "/env.cfg")]);
        assert_eq!(
            config_location(&cli, &e).unwrap(),
            ConfigLocation {
                path: "/cli.cfg".into(),
                explicit: true
            }
        );
        assert_eq!(
            config_location(&CliOptions::default(), &e).unwrap(),
            ConfigLocation {
                path: "/env.cfg".into(),
                explicit: true
            }
        );
        assert_eq!(
            config_location(&CliOptions::default(), &env(&[("HOME", "/h")])).unwrap(),
            ConfigLocation {
                path: "/h/.stratuslab/stratuslab-user.cfg".into(),
                explicit: false
            }
        );
        assert!(matches!(
            config_location(&CliOptions::default(), &Env::new()),
            Err(ConfigError::NoHome)
        ));
    }

    #[test]
    fn load_missing_default_file_is_empty_but_explicit_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.cfg");
        let implicit = ConfigLocation {
            path: path.clone(),
            explicit: false,
        };
        assert_eq!(ConfigFile::load(&implicit).unwrap(), ConfigFile::default());
        let explicit = ConfigLocation {
            path,
            explicit: true,
        };
        assert!(matches!(
            ConfigFile::load(&explicit),
            Err(ConfigError::NotFound { .. })
        ));
    }
}
