//! Checks of downloadable artifacts (image disks, kernels, initrds) before they are accepted
//! into the registry. Where a location may point (loopback, link-local...) is the host's call at
//! download time, after name resolution; this checks only the form.

use crate::api::Artifact;
use crate::names::is_sha256_hex;

/// Most locations one artifact may list.
pub const MAX_LOCATIONS: usize = 8;
/// Longest location accepted, in bytes.
pub const MAX_LOCATION_LEN: usize = 2048;

/// The schemes hosts can fetch from.
pub fn location_scheme(location: &str) -> Option<&'static str> {
    ["http://", "https://", "file://"]
        .into_iter()
        .find(|p| location.starts_with(p))
        .map(|p| &p[..p.len() - 3])
}

/// Checks one location: an `http(s)://` URL with a host, or a `file://` URL of an absolute path
/// without `..`; no whitespace or control characters.
pub fn validate_location(field: &str, location: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{field}: {why}: {location:?}"));
    if location.len() > MAX_LOCATION_LEN {
        return bad("location too long");
    }
    if location
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return bad("location has spaces or control characters");
    }
    match location_scheme(location) {
        Some("file") => {
            let path = &location["file://".len()..];
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return bad("a file:// location must be an absolute path without '..'");
            }
        }
        Some(_) => {
            let rest = location.split_once("://").map_or("", |(_, r)| r);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.is_empty() || authority.contains('@') {
                return bad("an http(s) location needs a host and no credentials");
            }
        }
        None => return bad("locations must be http://, https:// or file:// URLs"),
    }
    Ok(())
}

/// Checks an artifact's form: 1 to 8 valid locations, a SHA-256, a positive size if given.
pub fn validate_artifact(field: &str, artifact: &Artifact) -> Result<(), String> {
    if artifact.locations.is_empty() {
        return Err(format!(
            "{field}.locations: at least one location is needed"
        ));
    }
    if artifact.locations.len() > MAX_LOCATIONS {
        return Err(format!(
            "{field}.locations: at most {MAX_LOCATIONS} locations"
        ));
    }
    for location in &artifact.locations {
        validate_location(&format!("{field}.locations"), location)?;
    }
    if !is_sha256_hex(&artifact.sha256) {
        return Err(format!("{field}.sha256: must be 64 lowercase hex digits"));
    }
    if artifact.size == Some(0) {
        return Err(format!("{field}.size: must be positive"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Compression;

    fn artifact(locations: &[&str]) -> Artifact {
        Artifact {
            locations: locations.iter().map(|s| s.to_string()).collect(),
            sha256: "ab".repeat(32),
            size: Some(10),
            compression: Compression::None,
        }
    }

    #[test]
    fn accepts_http_https_and_absolute_file_urls() {
        for l in [
            "http://127.0.0.1:8080/a.qcow2",
            "https://images.example/x?y=1",
            "file:///var/lib/x.qcow2",
        ] {
            assert_eq!(validate_location("disk", l), Ok(()), "{l}");
        }
    }

    #[test]
    fn refuses_other_schemes_traversal_credentials_and_spaces() {
        for l in [
            "/var/lib/x.qcow2",
            "ftp://h/x",
            "file://relative/x",
            "file:///a/../etc/shadow",
            "http://user:pw@h/x",
            "http:///nohost",
            "http://h/a b",
        ] {
            assert!(validate_location("disk", l).is_err(), "{l}");
        }
    }

    #[test]
    fn artifacts_need_locations_and_a_checksum() {
        assert!(validate_artifact("disk", &artifact(&["http://h/x"])).is_ok());
        assert_eq!(
            validate_artifact("disk", &artifact(&[])).unwrap_err(),
            "disk.locations: at least one location is needed"
        );
        let mut a = artifact(&["http://h/x"]);
        a.sha256 = "XYZ".into();
        assert!(validate_artifact("kernel", &a)
            .unwrap_err()
            .starts_with("kernel.sha256"));
    }
}
