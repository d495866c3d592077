//! What this node last heard from each host's agent (soft state, not replicated), from which
//! the leader judges hosts up or down and proposes the change (see [`super::Hosts::start`]): the
//! replicated judgment is what placement and every view use. An agent is in touch while its
//! long-poll is open and for one timeout after its last call. Whenever this node becomes the
//! leader every host gets a fresh grace period of one timeout before it may be judged down, so a
//! leader change never makes a healthy host look down (its agent may have been talking to
//! another node).

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
    /// Its agent's long-polls open on this node now.
    pub polls: usize,
    /// Its agent holds the site's lease (it asked this node for desired state with the version
    /// of an answer it had, and every answer carries the lease): it fences itself when out of
    /// touch, so the host may be fenced by lease.
    pub leased: bool,
    /// The agent gave the lease up, having had desired state up to this version: only a
    /// long-poll from a later version (sent after) gives it back.
    pub released_at: Option<u64>,
}

/// What the leader should propose about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgment {
    Up,
    Down,
}

/// An open long-poll: the host counts as in touch until it is dropped.
pub struct Poll<'a> {
    liveness: &'a Liveness,
    host: String,
}

impl Drop for Poll<'_> {
    fn drop(&mut self) {
        let mut contacts = self.liveness.contacts.lock().expect("contacts lock");
        if let Some(contact) = contacts.get_mut(&self.host) {
            contact.polls = contact.polls.saturating_sub(1);
            contact.last_seen = Some(Instant::now());
            contact.last_seen_ms = Some(crate::decide::now_ms());
        }
    }
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

    /// Records that `host`'s agent opened a long-poll; it is in touch until the poll ends.
    pub fn poll(&self, host: &str) -> Poll<'_> {
        self.touch(host, None, None);
        let mut contacts = self.contacts.lock().expect("contacts lock");
        contacts.entry(host.to_owned()).or_default().polls += 1;
        Poll {
            liveness: self,
            host: host.to_owned(),
        }
    }

    /// Whether `host`'s agent is in touch now: a long-poll open, or a call within the timeout.
    pub fn in_touch(&self, host: &str) -> bool {
        self.in_touch_at(host, Instant::now())
    }

    fn in_touch_at(&self, host: &str, now: Instant) -> bool {
        self.contacts
            .lock()
            .expect("contacts lock")
            .get(host)
            .is_some_and(|c| {
                c.polls > 0
                    || c.last_seen
                        .is_some_and(|seen| now.saturating_duration_since(seen) < self.timeout)
            })
    }

    /// Records that `host`'s agent holds the site's lease: it long-polls from version `since`
    /// (of an answer it had), unless that is no later than where it gave the lease up.
    pub fn leased(&self, host: &str, since: u64) {
        let mut contacts = self.contacts.lock().expect("contacts lock");
        let contact = contacts.entry(host.to_owned()).or_default();
        if contact
            .released_at
            .is_some_and(|released| since <= released)
        {
            return;
        }
        contact.leased = true;
        contact.released_at = None;
    }

    /// Records that `host`'s agent gave up the lease (it stopped on purpose), having had
    /// desired state up to version `since`.
    pub fn unleased(&self, host: &str, since: u64) {
        let mut contacts = self.contacts.lock().expect("contacts lock");
        let contact = contacts.entry(host.to_owned()).or_default();
        contact.leased = false;
        contact.released_at = Some(since);
    }

    /// How long `host`'s agent has been silent as this node can vouch for: since its last call
    /// or the start of the grace period, whichever is later; `None` while a long-poll is open.
    pub fn silent_for(&self, host: &str) -> Option<Duration> {
        self.silent_for_at(host, Instant::now())
    }

    pub(super) fn silent_for_at(&self, host: &str, now: Instant) -> Option<Duration> {
        let grace_since = *self.grace_since.lock().expect("grace lock");
        let contacts = self.contacts.lock().expect("contacts lock");
        let contact = contacts.get(host);
        if contact.is_some_and(|c| c.polls > 0) {
            return None;
        }
        let since = contact
            .and_then(|c| c.last_seen)
            .map_or(grace_since, |seen| seen.max(grace_since));
        Some(now.saturating_duration_since(since))
    }

    /// What should change of `host`, judged `up` now in the replicated state: down once its
    /// agent is out of touch past the grace period, up again as soon as it is in touch.
    pub fn judge(&self, host: &str, up: bool) -> Option<Judgment> {
        self.judge_at(host, up, Instant::now())
    }

    fn judge_at(&self, host: &str, up: bool, now: Instant) -> Option<Judgment> {
        let in_touch = self.in_touch_at(host, now);
        let grace = now.saturating_duration_since(*self.grace_since.lock().expect("grace lock"))
            < self.timeout;
        match (up, in_touch) {
            (true, false) if !grace => Some(Judgment::Down),
            (false, true) => Some(Judgment::Up),
            _ => None,
        }
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
    fn a_silent_host_is_judged_down_after_the_grace_period_and_up_when_back() {
        let timeout = Duration::from_secs(60);
        let live = Liveness::new(timeout);
        let later = || Instant::now() + timeout + Duration::from_secs(1);
        assert_eq!(live.judge("never-seen", true), None, "in the grace period");
        assert_eq!(
            live.judge_at("never-seen", true, later()),
            Some(Judgment::Down),
            "grace over, never heard from"
        );
        live.touch("a", None, Some(vec!["ab".into()]));
        assert!(live.in_touch("a"));
        assert_eq!(live.judge("a", true), None);
        assert_eq!(live.judge("a", false), Some(Judgment::Up), "back in touch");
        assert_eq!(
            live.judge_at("a", true, later()),
            Some(Judgment::Down),
            "silent for longer than the timeout"
        );
        // An open long-poll keeps it in touch however long it lasts.
        {
            let _poll = live.poll("a");
            assert_eq!(live.judge_at("a", true, later()), None);
        }
        assert_eq!(live.contact("a").polls, 0);
        assert_eq!(
            live.contact("a").images.len(),
            1,
            "images kept when not reported"
        );
        assert_eq!(live.holding("ab"), HashSet::from(["a".to_owned()]));
        // A new leader gives every host a grace period before it may be judged down.
        *live.grace_since.lock().unwrap() = Instant::now()
            .checked_sub(timeout * 2)
            .expect("the clock goes back two timeouts");
        assert_eq!(live.judge("never-seen", true), Some(Judgment::Down));
        live.restart_grace();
        assert_eq!(live.judge("never-seen", true), None);
        assert_eq!(live.judge("never-seen", false), None, "down stays down");
    }

    #[test]
    fn a_lease_given_up_comes_back_only_with_a_poll_from_a_later_version() {
        let live = Liveness::new(Duration::from_secs(60));
        live.leased("a", 1);
        assert!(live.contact("a").leased);
        live.unleased("a", 7);
        assert!(!live.contact("a").leased);
        live.leased("a", 7);
        assert!(!live.contact("a").leased, "a poll sent before the release");
        live.leased("a", 8);
        assert!(live.contact("a").leased, "the agent is back");
        live.unleased("never-seen", 1);
        assert!(!live.contact("never-seen").leased);
    }

    #[test]
    fn silence_is_counted_from_the_last_call_or_the_grace_period_whichever_is_later() {
        let timeout = Duration::from_secs(60);
        let live = Liveness::new(timeout);
        let start = *live.grace_since.lock().unwrap();
        let later = start + Duration::from_secs(300);
        assert_eq!(
            live.silent_for_at("never-seen", later),
            Some(Duration::from_secs(300)),
            "counted from the grace period's start"
        );
        live.touch("a", None, None);
        let seen = live.contact("a").last_seen.unwrap();
        assert_eq!(live.silent_for_at("a", later), Some(later - seen));
        {
            let _poll = live.poll("a");
            assert_eq!(live.silent_for_at("a", later), None, "a long-poll is open");
        }
        // A new leader vouches only for what it heard itself.
        live.restart_grace();
        let grace = *live.grace_since.lock().unwrap();
        assert!(live.silent_for_at("never-seen", grace + timeout).unwrap() == timeout);
    }
}
