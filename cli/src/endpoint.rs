//! The cloud endpoint as users write it (`host`, `host:port`, or an `http://` / `https://` URL)
//! turned into one normal form the HTTP client can put URLs together from. Without a scheme it
//! is `https`: the controller's API is TLS (plain HTTP only where a site enabled it, on
//! loopback, and then only when the URL says `http://`).

use std::fmt;
use std::net::Ipv6Addr;

use thiserror::Error;

/// The controller's API port, used whenever the endpoint does not name one (also in a URL: the
/// controller serves plain and TLS on the same port, so `https://host` means `https://host:8440`).
pub const DEFAULT_PORT: u16 = 8440;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("the endpoint is empty")]
    Empty,
    #[error("endpoint {endpoint:?}: unsupported scheme {scheme:?} (use http or https)")]
    UnsupportedScheme { endpoint: String, scheme: String },
    #[error("endpoint {endpoint:?}: put credentials in username and password, not in the URL")]
    UserInfo { endpoint: String },
    #[error("endpoint {endpoint:?}: a query or fragment is not allowed")]
    QueryOrFragment { endpoint: String },
    #[error("endpoint {endpoint:?}: invalid host name")]
    BadHost { endpoint: String },
    #[error("endpoint {endpoint:?}: invalid port {port:?}")]
    BadPort { endpoint: String, port: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// A normalised endpoint: scheme, host (IPv6 literals keep their brackets), port and an optional
/// path prefix (for a controller behind a reverse proxy), without trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// Parses what a user wrote in `endpoint`, `STRATUSLAB_ENDPOINT` or `--endpoint`.
    pub fn parse(input: &str) -> Result<Self, EndpointError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        let endpoint = || text.to_string();

        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Scheme::Http, rest),
                "https" => (Scheme::Https, rest),
                _ => {
                    return Err(EndpointError::UnsupportedScheme {
                        endpoint: endpoint(),
                        scheme: scheme.to_string(),
                    })
                }
            },
            None => (Scheme::Https, text),
        };
        if rest.contains(['?', '#']) {
            return Err(EndpointError::QueryOrFragment {
                endpoint: endpoint(),
            });
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(EndpointError::UserInfo {
                endpoint: endpoint(),
            });
        }

        let (host, port) = split_host_port(authority).ok_or_else(|| EndpointError::BadHost {
            endpoint: endpoint(),
        })?;
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => {
                    return Err(EndpointError::BadPort {
                        endpoint: endpoint(),
                        port: p.to_string(),
                    })
                }
            },
        };

        Ok(Self {
            scheme,
            host,
            port,
            path: normalise_path(path),
        })
    }

    /// `scheme://host:port[/prefix]`, the form shown to users in messages.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.host,
            self.port,
            self.path
        )
    }

    /// The full URL of an API route, e.g. `api_url("/instances")`.
    pub fn api_url(&self, route: &str) -> String {
        format!("{}{}{}", self.base_url(), stratus_common::API_PREFIX, route)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// One cloud's endpoints: its controller nodes, written as a comma-separated list
/// (`ctl1,ctl2:8440,https://ctl3`). The client starts with the one that answered last and moves
/// to the next when one cannot be reached or has no leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<Endpoint>);

impl Endpoints {
    /// Parses a comma-separated list of endpoints (one is fine).
    pub fn parse(input: &str) -> Result<Self, EndpointError> {
        let list = input
            .split(',')
            .filter(|piece| !piece.trim().is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(EndpointError::Empty);
        }
        Ok(Self(list))
    }

    /// The first endpoint listed: URLs are built on it and moved to another one when needed.
    pub fn primary(&self) -> &Endpoint {
        &self.0[0]
    }

    pub fn all(&self) -> &[Endpoint] {
        &self.0
    }
}

impl From<Endpoint> for Endpoints {
    fn from(endpoint: Endpoint) -> Self {
        Self(vec![endpoint])
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, endpoint) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{endpoint}")?;
        }
        Ok(())
    }
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal; `None` when the host
/// is not a plausible DNS name or IP literal.
fn split_host_port(authority: &str) -> Option<(String, Option<&str>)> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (addr, after) = inner.split_once(']')?;
        addr.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        return Some((format!("[{addr}]"), port));
    }
    if authority.matches(':').count() > 1 {
        // A bare IPv6 literal cannot carry a port: the last group would be ambiguous.
        authority.parse::<Ipv6Addr>().ok()?;
        return Some((format!("[{authority}]"), None));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let valid = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// Drops trailing slashes and a pasted `/api/v1` suffix, which the client adds itself.
fn normalise_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let trimmed = trimmed
        .strip_suffix(stratus_common::API_PREFIX)
        .unwrap_or(trimmed);
    trimmed.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(input: &str) -> String {
        Endpoint::parse(input).unwrap().base_url()
    }

    #[test]
    fn bare_host_gets_http_and_the_default_port() {
        assert_eq!(base("cloud.example.org"), "https://cloud.example.org:8440");
        assert_eq!(base("127.0.0.1"), "https://127.0.0.1:8440");
        assert_eq!(base("  localhost  "), "https://localhost:8440");
    }

    #[test]
    fn host_and_port() {
        assert_eq!(base("127.0.0.1:9000"), "https://127.0.0.1:9000");
        assert_eq!(base("Cloud.Example.org:80"), "https://cloud.example.org:80");
    }

    #[test]
    fn full_urls_keep_their_scheme_and_default_to_port_8440() {
        assert_eq!(base("http://10.1.2.3"), "http://10.1.2.3:8440");
        assert_eq!(
            base("https://cloud.example.org"),
            "https://cloud.example.org:8440"
        );
        assert_eq!(
            base("HTTPS://cloud.example.org:443/"),
            "https://cloud.example.org:443"
        );
    }

    #[test]
    fn a_path_prefix_is_kept_without_trailing_slash_or_api_suffix() {
        assert_eq!(
            base("https://proxy.example.org/stratus/"),
            "https://proxy.example.org:8440/stratus"
        );
        assert_eq!(base("http://h:1/api/v1"), "http://h:1");
        assert_eq!(base("h:1/p/api/v1/"), "https://h:1/p");
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(base("[::1]"), "https://[::1]:8440");
        assert_eq!(base("[::1]:9000"), "https://[::1]:9000");
        assert_eq!(base("::1"), "https://[::1]:8440");
        assert_eq!(base("https://[fe80::1]:443"), "https://[fe80::1]:443");
    }

    #[test]
    fn api_url_appends_the_version_prefix() {
        let ep = Endpoint::parse("127.0.0.1").unwrap();
        assert_eq!(
            ep.api_url("/instances/7"),
            "https://127.0.0.1:8440/api/v1/instances/7"
        );
        let ep = Endpoint::parse("https://p.example/x").unwrap();
        assert_eq!(
            ep.api_url("/types"),
            "https://p.example:8440/x/api/v1/types"
        );
    }

    #[test]
    fn a_list_names_every_controller_node() {
        let list = Endpoints::parse(" ctl1, ctl2:9000 ,http://ctl3/ ,").unwrap();
        let urls: Vec<String> = list.all().iter().map(Endpoint::base_url).collect();
        assert_eq!(
            urls,
            ["https://ctl1:8440", "https://ctl2:9000", "http://ctl3:8440"]
        );
        assert_eq!(list.primary().host, "ctl1");
        assert_eq!(
            list.to_string(),
            "https://ctl1:8440, https://ctl2:9000, http://ctl3:8440"
        );
        assert_eq!(Endpoints::parse(" , "), Err(EndpointError::Empty));
        assert!(matches!(
            Endpoints::parse("ctl1,ftp://x"),
            Err(EndpointError::UnsupportedScheme { .. })
        ));
    }

    #[test]
    fn refuses_what_is_not_an_endpoint() {
        assert_eq!(Endpoint::parse("  "), Err(EndpointError::Empty));
        assert!(matches!(
            Endpoint::parse("ftp://h"),
            Err(EndpointError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://u:p@h"),
            Err(EndpointError::UserInfo { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://h/?a=1"),
            Err(EndpointError::QueryOrFragment { .. })
        ));
        for bad in ["h:0", "h:70000", "h:x", "h:", "[::1]x", "[::1]:"] {
            assert!(
                matches!(
                    Endpoint::parse(bad),
                    Err(EndpointError::BadPort { .. }) | Err(EndpointError::BadHost { .. })
                ),
                "{bad}"
            );
        }
        for bad in ["http://", ":8440", "a b", "-h", "[zz]", "1:2:3:x"] {
            assert!(
                matches!(Endpoint::parse(bad), Err(EndpointError::BadHost { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_messages_name_the_input() {
        assert_eq!(
            Endpoint::parse("h:x").unwrap_err().to_string(),
            "endpoint \"h:x\": invalid port \"x\""
        );
    }
}
