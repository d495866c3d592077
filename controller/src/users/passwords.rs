//! Password hashing and checking on a small fixed pool of threads with a bounded queue.
//!
//! argon2 is slow and memory-hard on purpose (19 MiB per run with the default parameters). Run
//! on tokio's blocking pool, a burst of wrong passwords started a thread and a malloc arena per
//! concurrent check, and the memory stayed: about 600 wrong passwords took the controller from
//! 28 MB to 3.8 GB. Here at most `threads` runs happen at once, each on a thread of its own that
//! is reused with its argon2 memory (allocated once per thread, not once per check), and at
//! most `queue` wait; beyond that a check is refused at once as busy. A user
//! name that does not exist is checked against a hash of the same parameters, so it costs the
//! same time as a wrong password and names cannot be told apart by timing.

use std::cell::RefCell;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    #[error("the password checker stopped")]
    Stopped,
}

type Job = Box<dyn FnOnce() + Send>;

/// The pool; cheap to share behind an `Arc`.
pub struct PasswordPool {
    jobs: SyncSender<Job>,
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hash")
        .to_string()
}

/// The most argon2 memory a stored hash may ask for (256 MiB); ours use 19 MiB.
const MAX_BLOCKS: usize = 256 * 1024;

thread_local! {
    /// This thread's argon2 working memory, kept between checks.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Whether `password` matches the stored `hash` (a PHC string); a hash that does not parse,
/// or asks for more than [`MAX_BLOCKS`], matches nothing. The working memory is this thread's,
/// reused, so a thread checking passwords holds one block of memory however many it checks.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map(Version::try_from).transpose() else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let needed = params.block_count();
    if needed > MAX_BLOCKS {
        return false;
    }
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    let mut computed = vec![0u8; expected.len()];
    let hashed = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut computed,
                &mut blocks[..needed],
            )
            .is_ok()
    });
    // `Output`'s equality does not stop at the first differing byte.
    hashed && Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// A hash with the same parameters as every user's, to check unknown names against.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("no user has this password"))
}

impl PasswordPool {
    /// Starts `threads` worker threads (at least one) with room for `queue` waiting checks.
    pub fn start(threads: usize, queue: usize) -> Arc<Self> {
        let (jobs, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("password-{n}"))
                .spawn(move || loop {
                    // The lock is held only while taking a job, never while running one.
                    let job = match receiver.lock().expect("password queue").recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job();
                })
                .expect("spawn a password thread");
        }
        Arc::new(Self { jobs })
    }

    /// A pool sized for this machine: as many threads as cores, up to four.
    pub fn for_this_host() -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::start(cores.min(4), 64)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (sender, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sender.send(work());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Busy,
            TrySendError::Disconnected(_) => PoolError::Stopped,
        })?;
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: &str) -> Result<String, PoolError> {
        let password = password.to_owned();
        self.run(move || hash_password(&password)).await
    }

    /// Checks `password` against `hash`, or, when there is no such user (`None`), against a
    /// decoy at the same cost; the answer is then always false.
    pub async fn verify(&self, hash: Option<String>, password: &str) -> Result<bool, PoolError> {
        let password = password.to_owned();
        self.run(move || match hash {
            Some(hash) => verify_password(&hash, &password),
            None => {
                verify_password(decoy_hash(), &password);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let pool = PasswordPool::start(2, 8);
        let hash = pool.hash("correct horse").await.unwrap();
        assert_eq!(
            pool.verify(Some(hash.clone()), "correct horse").await,
            Ok(true)
        );
        assert_eq!(pool.verify(Some(hash), "wrong").await, Ok(false));
        assert_eq!(pool.verify(None, "correct horse").await, Ok(false));
        assert_eq!(pool.verify(Some("not a hash".into()), "x").await, Ok(false));
        // Hashes made elsewhere with other parameters verify too.
        let other = argon2::Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(8192, 3, 1, Some(24)).unwrap(),
        )
        .hash_password(b"tr0ub4dor", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert_eq!(
            pool.verify(Some(other.clone()), "tr0ub4dor").await,
            Ok(true)
        );
        assert_eq!(pool.verify(Some(other), "tr0ub4dor&3").await, Ok(false));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_instead_of_growing() {
        let pool = PasswordPool::start(1, 1);
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        // The only thread is busy with one job...
        pool.jobs
            .try_send(Box::new(move || {
                started.send(()).unwrap();
                held.recv().unwrap();
            }))
            .unwrap();
        running.recv().unwrap();
        // ... and the only queue slot is taken: the next check is refused, not queued.
        pool.jobs.try_send(Box::new(|| {})).unwrap();
        assert_eq!(pool.verify(None, "x").await, Err(PoolError::Busy));
        release.send(()).unwrap();
        // Once the thread is free again, checks run.
        let hash = loop {
            match pool.hash("again").await {
                Ok(hash) => break hash,
                Err(PoolError::Busy) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(pool.verify(Some(hash), "again").await, Ok(true));
    }
}
