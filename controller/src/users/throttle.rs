//! Limits on failed password checks, per account and per source address: each has a budget
//! of failures that refills with time (a token bucket). A check that would need argon2 takes
//! one token from the account's bucket and one from the source's before it runs, and gives them
//! back if the password was right; with either bucket empty it is refused at once with the time
//! to wait. So a burst of wrong passwords costs at most a bucket's worth of argon2 runs, and
//! requests whose credentials were already verified (no argon2 needed) are never throttled.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bucket's shape: how many failures in a burst, and how often one more is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub burst: u32,
    pub refill_every: Duration,
}

/// The limits of a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    pub per_account: Budget,
    pub per_source: Budget,
}

impl Default for FailureLimits {
    /// Ten failures for an account and thirty for an address, then one more every six and
    /// every two seconds (ten and thirty a minute).
    fn default() -> Self {
        Self {
            per_account: Budget {
                burst: 10,
                refill_every: Duration::from_secs(6),
            },
            per_source: Budget {
                burst: 30,
                refill_every: Duration::from_secs(2),
            },
        }
    }
}

/// Most buckets kept per kind; beyond it full buckets are dropped first, then the oldest.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets<K> {
    budget: Budget,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(budget: Budget) -> Self {
        Self {
            budget,
            map: HashMap::new(),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let per_token = self.budget.refill_every.as_secs_f64().max(1e-9);
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() / per_token;
        Bucket {
            tokens: (bucket.tokens + gained).min(f64::from(self.budget.burst)),
            at: now,
        }
    }

    /// The wait until `key` has a token again, or `None` if it has one now.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let bucket = self.refilled(*self.map.get(key)?, now);
        (bucket.tokens < 1.0).then(|| self.budget.refill_every.mul_f64(1.0 - bucket.tokens))
    }

    fn take(&mut self, key: &K, now: Instant) {
        if !self.map.contains_key(key) && self.map.len() >= MAX_BUCKETS {
            self.shed(now);
        }
        let full = Bucket {
            tokens: f64::from(self.budget.burst),
            at: now,
        };
        let bucket = self.refilled(*self.map.get(key).unwrap_or(&full), now);
        self.map.insert(
            key.clone(),
            Bucket {
                tokens: (bucket.tokens - 1.0).max(0.0),
                at: now,
            },
        );
    }

    fn give_back(&mut self, key: &K, now: Instant) {
        if let Some(bucket) = self.map.get(key).copied() {
            let mut bucket = self.refilled(bucket, now);
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(self.budget.burst));
            self.map.insert(key.clone(), bucket);
        }
    }

    /// Makes room: buckets that refilled completely carry no information; if that is not
    /// enough, the half least recently touched go.
    fn shed(&mut self, now: Instant) {
        let burst = f64::from(self.budget.burst);
        let refilled: Vec<(K, Bucket)> = self
            .map
            .iter()
            .map(|(k, b)| (k.clone(), self.refilled(*b, now)))
            .collect();
        self.map = refilled
            .into_iter()
            .filter(|(_, b)| b.tokens < burst)
            .collect();
        if self.map.len() >= MAX_BUCKETS {
            let mut by_age: Vec<(Instant, K)> =
                self.map.iter().map(|(k, b)| (b.at, k.clone())).collect();
            by_age.sort_by_key(|(at, _)| *at);
            for (_, key) in by_age.into_iter().take(MAX_BUCKETS / 2) {
                self.map.remove(&key);
            }
        }
    }
}

/// Refused: too many failed checks lately for this account or from this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins {who}; try again in {} s", whole_secs(*.retry_after))]
pub struct Throttled {
    pub who: &'static str,
    pub retry_after: Duration,
}

/// Whole seconds, rounded up and at least one: a wait never invites a retry that is refused
/// again.
pub fn whole_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// What a caller holds while its password is being checked: give it back on success.
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    account: String,
    source: Option<IpAddr>,
}

pub struct Throttle {
    accounts: Mutex<Buckets<String>>,
    sources: Mutex<Buckets<IpAddr>>,
}

impl Throttle {
    pub fn new(limits: FailureLimits) -> Self {
        Self {
            accounts: Mutex::new(Buckets::new(limits.per_account)),
            sources: Mutex::new(Buckets::new(limits.per_source)),
        }
    }

    /// Takes a token for a password check of `account` from `source`, or says how long to wait.
    pub fn attempt(
        &self,
        account: &str,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Throttled> {
        let mut accounts = self.accounts.lock().expect("throttle lock");
        let mut sources = self.sources.lock().expect("throttle lock");
        let account = account.to_owned();
        if let Some(source) = &source {
            if let Some(retry_after) = sources.wait(source, now) {
                return Err(Throttled {
                    who: "from this address",
                    retry_after,
                });
            }
        }
        if let Some(retry_after) = accounts.wait(&account, now) {
            return Err(Throttled {
                who: "for this account",
                retry_after,
            });
        }
        accounts.take(&account, now);
        if let Some(source) = &source {
            sources.take(source, now);
        }
        Ok(Attempt { account, source })
    }

    /// The password was right: the attempt costs nothing.
    pub fn succeeded(&self, attempt: Attempt, now: Instant) {
        self.accounts
            .lock()
            .expect("throttle lock")
            .give_back(&attempt.account, now);
        if let Some(source) = &attempt.source {
            self.sources
                .lock()
                .expect("throttle lock")
                .give_back(source, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(account: u32, source: u32) -> FailureLimits {
        FailureLimits {
            per_account: Budget {
                burst: account,
                refill_every: Duration::from_secs(6),
            },
            per_source: Budget {
                burst: source,
                refill_every: Duration::from_secs(2),
            },
        }
    }

    #[test]
    fn an_account_is_refused_after_its_burst_and_allowed_again_with_time() {
        let throttle = Throttle::new(limits(3, 100));
        let (t0, ip) = (Instant::now(), Some("192.0.2.1".parse().unwrap()));
        for _ in 0..3 {
            let _failed = throttle.attempt("alice", ip, t0).unwrap();
        }
        let refused = throttle.attempt("alice", ip, t0).unwrap_err();
        assert_eq!(refused.who, "for this account");
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert_eq!(
            refused.to_string(),
            "too many failed logins for this account; try again in 6 s"
        );
        // Another account from the same address is not affected.
        let _ = throttle.attempt("bob", ip, t0).unwrap();
        // One refill period later, one more try.
        let t1 = t0 + Duration::from_secs(6);
        let _ = throttle.attempt("alice", ip, t1).unwrap();
        assert!(throttle.attempt("alice", ip, t1).is_err());
    }

    #[test]
    fn an_address_is_refused_after_its_burst_whatever_the_account() {
        let throttle = Throttle::new(limits(100, 4));
        let t0 = Instant::now();
        let ip = Some("198.51.100.7".parse().unwrap());
        for n in 0..4 {
            let _ = throttle.attempt(&format!("user{n}"), ip, t0).unwrap();
        }
        let refused = throttle.attempt("someone-else", ip, t0).unwrap_err();
        assert_eq!(refused.who, "from this address");
        // Another address is not affected.
        let other = Some("198.51.100.8".parse().unwrap());
        let _ = throttle.attempt("someone-else", other, t0).unwrap();
    }

    #[test]
    fn right_passwords_cost_nothing() {
        let throttle = Throttle::new(limits(2, 2));
        let (t0, ip) = (Instant::now(), Some("192.0.2.9".parse().unwrap()));
        for _ in 0..50 {
            let attempt = throttle.attempt("alice", ip, t0).unwrap();
            throttle.succeeded(attempt, t0);
        }
        assert!(throttle.attempt("alice", ip, t0).is_ok());
    }

    #[test]
    fn the_number_of_buckets_is_bounded() {
        let throttle = Throttle::new(limits(5, 1_000_000));
        let t0 = Instant::now();
        for n in 0..(MAX_BUCKETS * 2) {
            let _ = throttle.attempt(&format!("u{n}"), None, t0).unwrap();
        }
        assert!(throttle.accounts.lock().unwrap().map.len() <= MAX_BUCKETS);
    }
}
