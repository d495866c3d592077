//! Idempotency keys of creations: per owner, the key a client sent with a creating request
//! (the `Idempotency-Key` header) and what that request made, so a client that retries after
//! a lost answer is answered with what was made instead of making it twice. Keys are forgotten
//! a day after their creation, by the commands' own times, so every replica forgets alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How long an idempotency key is remembered: a client retrying later than this makes anew.
pub const KEY_TTL_MS: u64 = 24 * 3600 * 1000;

/// What one key made, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keyed<T> {
    /// The instance ID or volume UUID (`instance` in the JSON of state-machine version 1).
    #[serde(alias = "instance")]
    pub made: T,
    pub at_ms: u64,
}

/// Owner -> key -> what it made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Keys<T>(BTreeMap<String, BTreeMap<String, Keyed<T>>>);

impl<T> Default for Keys<T> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<T> Keys<T> {
    /// What `owner` already made with `key`, if it is still remembered.
    pub fn get(&self, owner: &str, key: &str) -> Option<&T> {
        self.0.get(owner)?.get(key).map(|k| &k.made)
    }

    /// Records what `key` made, and forgets the owner's keys older than a day.
    pub(super) fn remember(&mut self, owner: String, key: String, made: T, at_ms: u64) {
        let keys = self.0.entry(owner).or_default();
        keys.retain(|_, k| k.at_ms + KEY_TTL_MS > at_ms);
        keys.insert(key, Keyed { made, at_ms });
    }

    /// Every owner's keys, as a snapshot stores them.
    pub(crate) fn entries(&self) -> &BTreeMap<String, BTreeMap<String, Keyed<T>>> {
        &self.0
    }

    /// The keys a snapshot stored.
    pub(crate) fn from_entries(entries: BTreeMap<String, BTreeMap<String, Keyed<T>>>) -> Self {
        Self(entries)
    }

    /// How many keys `owner` has remembered.
    #[cfg(test)]
    pub fn count(&self, owner: &str) -> usize {
        self.0.get(owner).map_or(0, BTreeMap::len)
    }
}
