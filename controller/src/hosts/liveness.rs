//! Which hosts are up: what this node last heard from each host's agent (soft state, not
//! replicated). A host is up when its agent was in touch within the timeout. Whenever this node
//! becomes the leader every host gets a fresh grace period of one timeout, so a leader change
//! never makes a healthy host look down (its agent may have been talking to another node).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this node last heard from one host.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub last_seen: Option<Instant>,
    pub last_seen_ms: Option<u64>,
    /// Domains of this cluster the host runs but the controller does not know.
    pub unknown_domains: Vec<String>,
    /// SHA-256 of what the host's image cache holds.
    pub images: HashSet<String>,
}

pub struct Liveness {
    timeout: Duration,
    contacts: Mutex<HashMap<String, Contact>>,
    /// Since when every host counts as up whatever its contact: this node's start, then each
    /// time it becomes the leader.
    grace_since: Mutex<Instant>,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            contacts: Mutex::new(HashMap::new()),
            grace_since: Mutex::new(Instant::now()),
        }
    }

    /// Gives every host a fresh grace period (this node just became the leader).
    pub fn restart_grace(&self) {
        *self.grace_since.lock().expect("grace lock") = Instant::now();
    }

    /// Records that `host`'s agent is in touch now, with what it reported (`None`: unchanged).
    pub fn touch(
        &self,
        host: &str,
        unknown_domains: Option<Vec<String>>,
        images: Option<Vec<String>>,
    ) {
        let mut contacts = self.contacts.lock().expect("contacts lock");
        let contact = contacts.entry(host.to_owned()).or_default();
        contact.last_seen = Some(Instant::now());
        contact.last_seen_ms = Some(crate::decide::now_ms());
        if let Some(unknown) = unknown_domains {
            contact.unknown_domains = unknown;
        }
        if let Some(images) = images {
            contact.images = images.into_iter().collect();
        }
    }

    /// Whether `host` counts as up now.
    pub fn is_up(&self, host: &str) -> bool {
        self.is_up_at(host, Instant::now())
    }

    fn is_up_at(&self, host: &str, now: Instant) -> bool {
        let within = |since: Instant| now.saturating_duration_since(since) < self.timeout;
        within(*self.grace_since.lock().expect("grace lock"))
            || self
                .contacts
                .lock()
                .expect("contacts lock")
                .get(host)
                .and_then(|c| c.last_seen)
                .is_some_and(within)
    }

    /// Of `hosts`, those up now.
    pub fn up<'a>(&self, hosts: impl IntoIterator<Item = &'a String>) -> HashSet<String> {
        hosts
            .into_iter()
            .filter(|h| self.is_up(h))
            .cloned()
            .collect()
    }

    /// Hosts whose image cache holds the artifact with this SHA-256.
    pub fn holding(&self, sha256: &str) -> HashSet<String> {
        self.contacts
            .lock()
            .expect("contacts lock")
            .iter()
            .filter(|(_, c)| c.images.contains(sha256))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// What this node last heard from `host`.
    pub fn contact(&self, host: &str) -> Contact {
        self.contacts
            .lock()
            .expect("contacts lock")
            .get(host)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_up_in_the_grace_period_and_when_in_touch() {
        let timeout = Duration::from_secs(60);
        let live = Liveness::new(timeout);
        let later = || Instant::now() + timeout + Duration::from_secs(1);
        assert!(live.is_up("never-seen"), "in the grace period");
        live.touch("a", None, Some(vec!["ab".into()]));
        assert!(live.is_up("a"));
        assert!(
            !live.is_up_at("never-seen", later()),
            "grace over, never heard from"
        );
        assert!(
            !live.is_up_at("a", later()),
            "silent for longer than the timeout"
        );
        live.touch("a", None, None);
        assert_eq!(
            live.contact("a").images.len(),
            1,
            "images kept when not reported"
        );
        assert_eq!(live.holding("ab"), HashSet::from(["a".to_owned()]));
        // Long after the start, a never-seen host is down, until this node becomes leader.
        *live.grace_since.lock().unwrap() = Instant::now()
            .checked_sub(timeout * 2)
            .expect("the clock goes back two timeouts");
        assert!(!live.is_up("never-seen"));
        live.restart_grace();
        assert!(
            live.is_up("never-seen"),
            "a new leader gives every host a grace period"
        );
    }
}
