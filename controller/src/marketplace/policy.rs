//! The site policy for Marketplace images (the original `stratus-policy-image`): which verified
//! entries a site lets instances start from. Applied before an instance starts, to the entry the
//! registry resolves, so a policy change takes effect at once, also for images uploaded earlier.

use serde::{Deserialize, Serialize};
use stratus_common::marketplace::{format_timestamp, is_identifier, validate_email};
use stratus_common::names::is_sha256_hex;
use thiserror::Error;

use super::verify::VerifiedEntry;

/// The policy, as the controller's configuration gives it (`[marketplace.policy]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SitePolicy {
    /// Endorser emails whose entries may be used; absent: any endorser whose signature verified
    /// (that is, trusted by the site's CAs or registered).
    pub endorsers_allowed: Option<Vec<String>>,
    /// SHA-256 checksums (lowercase hex) of images never to run, whoever endorses them.
    pub checksum_deny: Vec<String>,
    /// Image identifiers never to run.
    pub identifier_deny: Vec<String>,
    /// Largest image accepted, in bytes after decompression; absent: no limit.
    pub max_image_bytes: Option<u64>,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PolicyConfigError {
    #[error("marketplace policy: endorsers_allowed: {0}")]
    Endorser(String),
    #[error("marketplace policy: checksum_deny: {0:?} is not 64 lowercase hex digits")]
    Checksum(String),
    #[error("marketplace policy: identifier_deny: {0:?} is not a 27-character image identifier")]
    Identifier(String),
    #[error("marketplace policy: max_image_bytes must be positive")]
    MaxImageBytes,
}

impl SitePolicy {
    /// Checks the configured values, naming the first bad one.
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        for email in self.endorsers_allowed.iter().flatten() {
            validate_email("endorsers_allowed", email)
                .map_err(|e| PolicyConfigError::Endorser(e.to_string()))?;
        }
        if let Some(bad) = self.checksum_deny.iter().find(|c| !is_sha256_hex(c)) {
            return Err(PolicyConfigError::Checksum(bad.clone()));
        }
        if let Some(bad) = self.identifier_deny.iter().find(|i| !is_identifier(i)) {
            return Err(PolicyConfigError::Identifier(bad.clone()));
        }
        if self.max_image_bytes == Some(0) {
            return Err(PolicyConfigError::MaxImageBytes);
        }
        Ok(())
    }

    /// Whether entries by `email` may be used.
    pub fn allows_endorser(&self, email: &str) -> bool {
        self.endorsers_allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a.eq_ignore_ascii_case(email)))
    }
}

/// Why the policy refuses an entry; the messages are shown to the user who asked for an instance.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PolicyRefusal {
    #[error("image {identifier} is deny-listed by the site")]
    IdentifierDenied { identifier: String },
    #[error("image {identifier} is deny-listed by the site (checksum {sha256})")]
    ChecksumDenied { identifier: String, sha256: String },
    #[error("image {identifier}: endorser {email} is not allowed by the site policy")]
    EndorserNotAllowed { identifier: String, email: String },
    #[error("image {identifier} is deprecated: {reason} (endorser {email})")]
    Deprecated {
        identifier: String,
        email: String,
        reason: String,
    },
    #[error("image {identifier}: the endorsement by {email} expired on {valid_until}")]
    Expired {
        identifier: String,
        email: String,
        valid_until: String,
    },
    #[error("image {identifier} is {size} bytes, more than the site's limit of {max} bytes")]
    TooLarge {
        identifier: String,
        size: u64,
        max: u64,
    },
}

impl PolicyRefusal {
    /// A stable machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IdentifierDenied { .. } | Self::ChecksumDenied { .. } => "image_denied",
            Self::EndorserNotAllowed { .. } => "endorser_not_allowed",
            Self::Deprecated { .. } => "image_deprecated",
            Self::Expired { .. } => "image_expired",
            Self::TooLarge { .. } => "image_too_large",
        }
    }
}

/// Whether the site lets instances use `entry` at `now_ms`. Deny lists come first (they are the
/// site's own verdict on the content), then the endorser, then the endorser's own statements.
pub fn evaluate(
    policy: &SitePolicy,
    entry: &VerifiedEntry,
    now_ms: u64,
) -> Result<(), PolicyRefusal> {
    let metadata = &entry.metadata;
    let identifier = || metadata.identifier.clone();
    if policy.identifier_deny.contains(&metadata.identifier) {
        return Err(PolicyRefusal::IdentifierDenied {
            identifier: identifier(),
        });
    }
    if policy
        .checksum_deny
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&metadata.checksums.sha256))
    {
        return Err(PolicyRefusal::ChecksumDenied {
            identifier: identifier(),
            sha256: metadata.checksums.sha256.clone(),
        });
    }
    if !policy.allows_endorser(&entry.endorser_email) {
        return Err(PolicyRefusal::EndorserNotAllowed {
            identifier: identifier(),
            email: entry.endorser_email.clone(),
        });
    }
    if let Some(reason) = &metadata.deprecated {
        return Err(PolicyRefusal::Deprecated {
            identifier: identifier(),
            email: entry.endorser_email.clone(),
            reason: reason.clone(),
        });
    }
    if entry.valid_until_ms <= now_ms {
        return Err(PolicyRefusal::Expired {
            identifier: identifier(),
            email: entry.endorser_email.clone(),
            valid_until: format_timestamp(entry.valid_until_ms),
        });
    }
    if let Some(max) = policy.max_image_bytes {
        if metadata.size > max {
            return Err(PolicyRefusal::TooLarge {
                identifier: identifier(),
                size: metadata.size,
                max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplace::testing::{verified, DAY_MS, NOW_MS, SHA256};

    fn entry() -> VerifiedEntry {
        verified(SHA256, "jane@example.org", NOW_MS - DAY_MS)
    }

    #[test]
    fn the_default_policy_accepts_a_current_entry() {
        assert_eq!(evaluate(&SitePolicy::default(), &entry(), NOW_MS), Ok(()));
    }

    #[test]
    fn deny_lists_refuse_by_identifier_and_checksum() {
        let e = entry();
        let policy = SitePolicy {
            identifier_deny: vec![e.metadata.identifier.clone()],
            ..Default::default()
        };
        let refusal = evaluate(&policy, &e, NOW_MS).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            format!("image {} is deny-listed by the site", e.metadata.identifier)
        );
        assert_eq!(refusal.code(), "image_denied");
        let policy = SitePolicy {
            checksum_deny: vec![SHA256.into()],
            ..Default::default()
        };
        assert!(matches!(
            evaluate(&policy, &e, NOW_MS),
            Err(PolicyRefusal::ChecksumDenied { .. })
        ));
    }

    #[test]
    fn endorser_allow_list_is_case_insensitive() {
        let mut policy = SitePolicy {
            endorsers_allowed: Some(vec!["JANE@example.org".into()]),
            ..Default::default()
        };
        assert_eq!(evaluate(&policy, &entry(), NOW_MS), Ok(()));
        policy.endorsers_allowed = Some(vec!["boss@example.org".into()]);
        let refusal = evaluate(&policy, &entry(), NOW_MS).unwrap_err();
        assert!(
            refusal
                .to_string()
                .ends_with("endorser jane@example.org is not allowed by the site policy"),
            "{refusal}"
        );
        policy.endorsers_allowed = Some(vec![]);
        assert!(
            evaluate(&policy, &entry(), NOW_MS).is_err(),
            "an empty list allows nobody"
        );
    }

    #[test]
    fn deprecated_expired_and_too_large_entries_are_refused() {
        let mut e = entry();
        e.metadata.deprecated = Some("security hole, use 9.4".into());
        let refusal = evaluate(&SitePolicy::default(), &e, NOW_MS).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            format!(
                "image {} is deprecated: security hole, use 9.4 (endorser jane@example.org)",
                e.metadata.identifier
            )
        );

        let e = entry();
        let refusal = evaluate(&SitePolicy::default(), &e, e.valid_until_ms).unwrap_err();
        assert_eq!(refusal.code(), "image_expired");

        let policy = SitePolicy {
            max_image_bytes: Some(1000),
            ..Default::default()
        };
        let refusal = evaluate(&policy, &e, NOW_MS).unwrap_err();
        assert_eq!(
            refusal,
            PolicyRefusal::TooLarge {
                identifier: e.metadata.identifier.clone(),
                size: 1 << 20,
                max: 1000
            }
        );
    }

    #[test]
    fn configuration_parses_and_validates() {
        let policy: SitePolicy = toml::from_str(
            r#"
            endorsers_allowed = ["jane@example.org"]
            checksum_deny = ["63579492ebcb6247443c86c2d0892110b9ab7b8aceb30ea2b567b3ce7e0a3f58"]
            identifier_deny = ["Y1eUkuvLYkdEPIbC0IkhELmre4o"]
            max_image_bytes = 10737418240
            "#,
        )
        .unwrap();
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.max_image_bytes, Some(10 << 30));
        assert_eq!(
            toml::from_str::<SitePolicy>("").unwrap(),
            SitePolicy::default()
        );
        assert!(toml::from_str::<SitePolicy>("endorsers = []").is_err());

        let bad = |p: SitePolicy| p.validate().unwrap_err().to_string();
        assert!(bad(SitePolicy {
            checksum_deny: vec!["abc".into()],
            ..Default::default()
        })
        .contains("checksum_deny"));
        assert!(bad(SitePolicy {
            identifier_deny: vec!["../x".into()],
            ..Default::default()
        })
        .contains("identifier_deny"));
        assert!(bad(SitePolicy {
            endorsers_allowed: Some(vec!["nobody".into()]),
            ..Default::default()
        })
        .contains("endorsers_allowed"));
        assert!(bad(SitePolicy {
            max_image_bytes: Some(0),
            ..Default::default()
        })
        .contains("max_image_bytes"));
    }
}
