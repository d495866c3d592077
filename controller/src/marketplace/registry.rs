//! The registry of verified entries: append-only, so the complete history stays available, as
//! the Marketplace promised. An image may be endorsed by several endorsers; for each endorser
//! only their latest entry (by `created`, then upload order) counts, so deprecating an image is
//! uploading a newer entry with `deprecated` set, and replaying an older entry changes nothing.
//!
//! Pure and deterministic (it lives in the replicated state): no clock, times come in as
//! arguments. Look-ups scan the entries; a site's registry holds thousands of entries, not
//! millions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stratus_common::marketplace::{format_timestamp, ImageKind};
use thiserror::Error;

use super::policy::{evaluate, PolicyRefusal, SitePolicy};
use super::verify::VerifiedEntry;

/// Entries per page when the query does not say.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// Most entries one page may hold.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// One entry as the registry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position in the registry, from 1, in upload order; never reused.
    pub seq: u64,
    /// When the controller accepted the upload, epoch milliseconds.
    pub uploaded_ms: u64,
    /// The entry as verified at upload.
    pub entry: VerifiedEntry,
}

impl StoredEntry {
    pub fn identifier(&self) -> &str {
        &self.entry.metadata.identifier
    }

    /// Newer entries sort greater: by `created`, then by upload order.
    fn recency(&self) -> (u64, u64) {
        (self.entry.created_ms, self.seq)
    }

    /// The (identifier, endorser) an entry speaks for; emails compare without ASCII case.
    fn endorsement_key(&self) -> (String, String) {
        (
            self.identifier().to_string(),
            self.entry.endorser_email.to_ascii_lowercase(),
        )
    }
}

/// A registry query. Every filter given must match; text filters ignore ASCII case.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// Only entries of this image.
    pub identifier: Option<String>,
    /// Only entries with this `os`.
    pub os: Option<String>,
    /// Only entries by this endorser email.
    pub endorser: Option<String>,
    /// Only machine or only disk images.
    pub kind: Option<ImageKind>,
    /// Only entries created at or after this time, epoch milliseconds.
    pub created_from: Option<u64>,
    /// Only entries created at or before this time, epoch milliseconds.
    pub created_to: Option<u64>,
    /// Every entry, not only the latest per image and endorser.
    pub history: bool,
    /// Page size: [`DEFAULT_PAGE_LIMIT`] when absent, at most [`MAX_PAGE_LIMIT`].
    pub limit: Option<usize>,
    /// Entries to skip before the page.
    pub offset: usize,
}

impl Query {
    fn matches(&self, stored: &StoredEntry) -> bool {
        let entry = &stored.entry;
        let metadata = &entry.metadata;
        let same = |wanted: &Option<String>, value: &str| {
            wanted
                .as_ref()
                .is_none_or(|w| w.eq_ignore_ascii_case(value))
        };
        self.identifier
            .as_ref()
            .is_none_or(|i| *i == metadata.identifier)
            && same(&self.os, &metadata.os)
            && same(&self.endorser, &entry.endorser_email)
            && self.kind.is_none_or(|k| k == metadata.kind)
            && self
                .created_from
                .is_none_or(|from| entry.created_ms >= from)
            && self.created_to.is_none_or(|to| entry.created_ms <= to)
    }

    /// The page size this query gets.
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE_LIMIT).min(MAX_PAGE_LIMIT)
    }
}

/// One page of query results, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<StoredEntry>,
    /// How many entries match in all.
    pub total: usize,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error(
        "{email} already has an entry for image {identifier} created {created} (entry {seq}); \
         a new entry needs a later created time"
    )]
    Duplicate {
        seq: u64,
        identifier: String,
        email: String,
        created: String,
    },
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no Marketplace entry for image {identifier}")]
    NotFound { identifier: String },
    #[error(transparent)]
    Refused(#[from] PolicyRefusal),
}

/// The registry: every entry ever accepted, in upload order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registry {
    entries: Vec<StoredEntry>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry a snapshot stored, its entries in upload order.
    pub(crate) fn from_entries(entries: Vec<StoredEntry>) -> Self {
        Self { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in upload order.
    pub fn entries(&self) -> &[StoredEntry] {
        &self.entries
    }

    /// The entry with sequence number `seq`.
    pub fn get(&self, seq: u64) -> Option<&StoredEntry> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.entries.get(index)
    }

    /// Appends a verified entry accepted at `uploaded_ms`; returns its sequence number. An entry
    /// by the same endorser for the same image with the same `created` is refused: it would be
    /// a re-upload, or two statements with no order between them.
    pub fn append(&mut self, entry: VerifiedEntry, uploaded_ms: u64) -> Result<u64, RegistryError> {
        if let Some(existing) = self.entries.iter().find(|e| {
            e.entry.created_ms == entry.created_ms
                && e.identifier() == entry.metadata.identifier
                && e.entry
                    .endorser_email
                    .eq_ignore_ascii_case(&entry.endorser_email)
        }) {
            return Err(RegistryError::Duplicate {
                seq: existing.seq,
                identifier: entry.metadata.identifier,
                email: entry.endorser_email,
                created: format_timestamp(entry.created_ms),
            });
        }
        let seq = self.entries.len() as u64 + 1;
        self.entries.push(StoredEntry {
            seq,
            uploaded_ms,
            entry,
        });
        Ok(seq)
    }

    /// Every entry of an image, newest first.
    pub fn history(&self, identifier: &str) -> Vec<&StoredEntry> {
        let mut entries: Vec<&StoredEntry> = self
            .entries
            .iter()
            .filter(|e| e.identifier() == identifier)
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.recency()));
        entries
    }

    /// Each endorser's latest entry for an image, newest first: the endorsements that count.
    pub fn latest_per_endorser(&self, identifier: &str) -> Vec<&StoredEntry> {
        latest(self.entries.iter().filter(|e| e.identifier() == identifier))
    }

    /// The identifiers of all images, sorted.
    pub fn identifiers(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.entries.iter().map(StoredEntry::identifier).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The endorser emails with entries, lowercase, sorted.
    pub fn endorsers(&self) -> Vec<String> {
        let mut emails: Vec<String> = self
            .entries
            .iter()
            .map(|e| e.entry.endorser_email.to_ascii_lowercase())
            .collect();
        emails.sort_unstable();
        emails.dedup();
        emails
    }

    /// The entries matching `query`, newest first, one page of them. Without `history`, only
    /// the latest entry per image and endorser is considered, before filtering, so a date range
    /// never brings back an entry its endorser has since replaced.
    pub fn query(&self, query: &Query) -> Page {
        let mut candidates = if query.history {
            self.entries.iter().collect()
        } else {
            latest(self.entries.iter())
        };
        candidates.retain(|e| query.matches(e));
        candidates.sort_by_key(|e| std::cmp::Reverse(e.recency()));
        let total = candidates.len();
        let items = candidates
            .into_iter()
            .skip(query.offset)
            .take(query.effective_limit())
            .cloned()
            .collect();
        Page { items, total }
    }

    /// The entry an instance of `identifier` should use at `now_ms`: the newest of the
    /// endorsers' latest entries that the policy accepts. When none does, the most relevant
    /// refusal: the newest entry's, preferring one about the image itself (deny-listed,
    /// deprecated, expired, too large) over an endorser the site does not allow.
    pub fn resolve(
        &self,
        identifier: &str,
        policy: &SitePolicy,
        now_ms: u64,
    ) -> Result<&StoredEntry, ResolveError> {
        let candidates = self.latest_per_endorser(identifier);
        let mut refusals = Vec::new();
        for candidate in candidates {
            match evaluate(policy, &candidate.entry, now_ms) {
                Ok(()) => return Ok(candidate),
                Err(refusal) => refusals.push(refusal),
            }
        }
        let about_the_image = refusals
            .iter()
            .position(|r| !matches!(r, PolicyRefusal::EndorserNotAllowed { .. }));
        match about_the_image.or(if refusals.is_empty() { None } else { Some(0) }) {
            Some(index) => Err(ResolveError::Refused(refusals.swap_remove(index))),
            None => Err(ResolveError::NotFound {
                identifier: identifier.to_string(),
            }),
        }
    }
}

/// The latest entry of each (identifier, endorser) among `entries`, newest first.
fn latest<'a>(entries: impl Iterator<Item = &'a StoredEntry>) -> Vec<&'a StoredEntry> {
    let mut by_key: BTreeMap<(String, String), &StoredEntry> = BTreeMap::new();
    for entry in entries {
        by_key
            .entry(entry.endorsement_key())
            .and_modify(|kept| {
                if entry.recency() > kept.recency() {
                    *kept = entry;
                }
            })
            .or_insert(entry);
    }
    let mut latest: Vec<&StoredEntry> = by_key.into_values().collect();
    latest.sort_by_key(|e| std::cmp::Reverse(e.recency()));
    latest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplace::testing::{verified, DAY_MS, NOW_MS, SHA256};

    const OTHER_SHA256: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn id(sha256: &str) -> String {
        stratus_common::marketplace::identifier_from_sha256(sha256).unwrap()
    }

    fn deprecated(sha256: &str, email: &str, created_ms: u64, reason: &str) -> VerifiedEntry {
        let mut e = verified(sha256, email, created_ms);
        e.metadata.deprecated = Some(reason.into());
        e
    }

    /// jane: two entries for SHA256; bob: one for SHA256; jane: one for OTHER (a disk, debian).
    fn registry() -> Registry {
        let mut r = Registry::new();
        r.append(
            verified(SHA256, "jane@example.org", NOW_MS - 30 * DAY_MS),
            1,
        )
        .unwrap();
        r.append(verified(SHA256, "bob@example.org", NOW_MS - 20 * DAY_MS), 2)
            .unwrap();
        r.append(
            verified(SHA256, "jane@example.org", NOW_MS - 10 * DAY_MS),
            3,
        )
        .unwrap();
        let mut disk = verified(OTHER_SHA256, "jane@example.org", NOW_MS - 5 * DAY_MS);
        disk.metadata.kind = ImageKind::Disk;
        disk.metadata.os = "Debian".into();
        r.append(disk, 4).unwrap();
        r
    }

    fn seqs(entries: &[&StoredEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn page_seqs(page: &Page) -> Vec<u64> {
        page.items.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn append_numbers_entries_and_refuses_duplicates() {
        let mut r = registry();
        assert_eq!(r.len(), 4);
        assert_eq!(r.get(1).unwrap().uploaded_ms, 1);
        assert_eq!(r.get(0), None);
        assert_eq!(r.get(5), None);
        let err = r
            .append(
                verified(SHA256, "JANE@example.org", NOW_MS - 10 * DAY_MS),
                9,
            )
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Duplicate { seq: 3, .. }),
            "{err}"
        );
        assert_eq!(r.len(), 4, "nothing appended");
        // Another endorser at the same time is another endorsement.
        assert_eq!(
            r.append(verified(SHA256, "eve@example.org", NOW_MS - 10 * DAY_MS), 9),
            Ok(5)
        );
    }

    #[test]
    fn latest_per_endorser_and_history() {
        let r = registry();
        assert_eq!(seqs(&r.latest_per_endorser(&id(SHA256))), [3, 2]);
        assert_eq!(seqs(&r.history(&id(SHA256))), [3, 2, 1]);
        assert_eq!(seqs(&r.latest_per_endorser("nope")), Vec::<u64>::new());
        assert_eq!(r.identifiers().len(), 2);
        assert_eq!(r.endorsers(), ["bob@example.org", "jane@example.org"]);
    }

    #[test]
    fn an_older_entry_uploaded_later_does_not_replace_the_latest() {
        let mut r = registry();
        let seq = r
            .append(
                verified(SHA256, "jane@example.org", NOW_MS - 40 * DAY_MS),
                5,
            )
            .unwrap();
        assert_eq!(seqs(&r.latest_per_endorser(&id(SHA256))), [3, 2]);
        assert_eq!(r.history(&id(SHA256)).last().unwrap().seq, seq);
    }

    #[test]
    fn query_shows_latest_by_default_and_everything_with_history() {
        let r = registry();
        assert_eq!(page_seqs(&r.query(&Query::default())), [4, 3, 2]);
        let all = r.query(&Query {
            history: true,
            ..Default::default()
        });
        assert_eq!(page_seqs(&all), [4, 3, 2, 1]);
        assert_eq!(all.total, 4);
    }

    #[test]
    fn query_filters() {
        let r = registry();
        let q = |query: Query| page_seqs(&r.query(&query));
        assert_eq!(
            q(Query {
                identifier: Some(id(SHA256)),
                ..Default::default()
            }),
            [3, 2]
        );
        assert_eq!(
            q(Query {
                os: Some("debian".into()),
                ..Default::default()
            }),
            [4]
        );
        assert_eq!(
            q(Query {
                endorser: Some("Bob@Example.org".into()),
                ..Default::default()
            }),
            [2]
        );
        assert_eq!(
            q(Query {
                kind: Some(ImageKind::Machine),
                ..Default::default()
            }),
            [3, 2]
        );
        // The range holds jane's first entry, but it is no longer her latest...
        let range = Query {
            created_from: Some(NOW_MS - 35 * DAY_MS),
            created_to: Some(NOW_MS - 25 * DAY_MS),
            ..Default::default()
        };
        assert_eq!(q(range.clone()), Vec::<u64>::new());
        // ...except in the history.
        assert_eq!(
            q(Query {
                history: true,
                ..range
            }),
            [1]
        );
        assert_eq!(
            q(Query {
                endorser: Some("jane@example.org".into()),
                kind: Some(ImageKind::Disk),
                history: true,
                ..Default::default()
            }),
            [4]
        );
    }

    #[test]
    fn query_pages() {
        let r = registry();
        let page = |offset, limit| {
            r.query(&Query {
                history: true,
                offset,
                limit: Some(limit),
                ..Default::default()
            })
        };
        assert_eq!(page_seqs(&page(0, 2)), [4, 3]);
        assert_eq!(page_seqs(&page(2, 2)), [2, 1]);
        let past_the_end = page(10, 2);
        assert!(past_the_end.items.is_empty());
        assert_eq!(past_the_end.total, 4);
        assert_eq!(
            Query {
                limit: Some(1_000_000),
                ..Default::default()
            }
            .effective_limit(),
            MAX_PAGE_LIMIT
        );
    }

    #[test]
    fn resolve_picks_the_newest_accepted_endorsement() {
        let r = registry();
        let policy = SitePolicy::default();
        assert_eq!(r.resolve(&id(SHA256), &policy, NOW_MS).unwrap().seq, 3);
        let only_bob = SitePolicy {
            endorsers_allowed: Some(vec!["bob@example.org".into()]),
            ..Default::default()
        };
        assert_eq!(r.resolve(&id(SHA256), &only_bob, NOW_MS).unwrap().seq, 2);
        assert_eq!(
            r.resolve("AAAAAAAAAAAAAAAAAAAAAAAAAAB", &policy, NOW_MS)
                .unwrap_err()
                .to_string(),
            "no Marketplace entry for image AAAAAAAAAAAAAAAAAAAAAAAAAAB"
        );
    }

    #[test]
    fn deprecation_withdraws_only_that_endorsers_endorsement() {
        let mut r = registry();
        r.append(
            deprecated(SHA256, "jane@example.org", NOW_MS - DAY_MS, "security hole"),
            5,
        )
        .unwrap();
        let policy = SitePolicy::default();
        // Jane withdrew hers; Bob's still stands.
        assert_eq!(r.resolve(&id(SHA256), &policy, NOW_MS).unwrap().seq, 2);
        // Once Bob deprecates too, the image cannot be used, and the user is told why.
        r.append(
            deprecated(SHA256, "bob@example.org", NOW_MS - DAY_MS / 2, "use 9.4"),
            6,
        )
        .unwrap();
        let err = r.resolve(&id(SHA256), &policy, NOW_MS).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "image {} is deprecated: use 9.4 (endorser bob@example.org)",
                id(SHA256)
            )
        );
        // A newer, undeprecated entry from Jane reinstates her endorsement.
        r.append(verified(SHA256, "jane@example.org", NOW_MS - DAY_MS / 4), 7)
            .unwrap();
        assert_eq!(r.resolve(&id(SHA256), &policy, NOW_MS).unwrap().seq, 7);
    }

    #[test]
    fn resolve_prefers_refusals_about_the_image() {
        let mut r = Registry::new();
        r.append(verified(SHA256, "eve@example.org", NOW_MS - DAY_MS), 1)
            .unwrap();
        r.append(
            deprecated(SHA256, "jane@example.org", NOW_MS - 2 * DAY_MS, "broken"),
            2,
        )
        .unwrap();
        let policy = SitePolicy {
            endorsers_allowed: Some(vec!["jane@example.org".into()]),
            ..Default::default()
        };
        let err = r.resolve(&id(SHA256), &policy, NOW_MS).unwrap_err();
        assert!(
            matches!(err, ResolveError::Refused(PolicyRefusal::Deprecated { .. })),
            "{err}"
        );
        // Only an unallowed endorser: that is the reason given.
        let mut r = Registry::new();
        r.append(verified(SHA256, "eve@example.org", NOW_MS - DAY_MS), 1)
            .unwrap();
        assert!(matches!(
            r.resolve(&id(SHA256), &policy, NOW_MS),
            Err(ResolveError::Refused(
                PolicyRefusal::EndorserNotAllowed { .. }
            ))
        ));
        // Expired entries are refused at resolve time even though they verified at upload.
        assert!(matches!(
            r.resolve(&id(SHA256), &SitePolicy::default(), NOW_MS + 400 * DAY_MS),
            Err(ResolveError::Refused(PolicyRefusal::Expired { .. }))
        ));
    }

    #[test]
    fn registry_round_trips_through_json() {
        let r = registry();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<Registry>(&json).unwrap(), r);
    }
}
