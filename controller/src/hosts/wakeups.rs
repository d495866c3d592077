//! Per-host versions of the desired state, so an agent's long-poll wakes only when something
//! its host must do changed, not on every commit. A task follows the replica's applied rounds:
//! each names the hosts whose desired state may have changed, and their versions become that
//! round's index. A host first asked about starts at the applied index of that moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::replica::Replica;

pub struct Wakeups {
    replica: Replica,
    versions: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Wakeups {
    /// Starts following `replica`'s applied rounds (on the current tokio runtime).
    pub fn start(replica: Replica) -> Arc<Self> {
        let wakeups = Arc::new(Self {
            replica: replica.clone(),
            versions: Mutex::new(HashMap::new()),
        });
        let mut applied = replica.subscribe();
        let weak = Arc::downgrade(&wakeups);
        tokio::spawn(async move {
            loop {
                let round = applied.recv().await;
                let Some(wakeups) = weak.upgrade() else {
                    return;
                };
                match round {
                    Ok(round) => {
                        let versions = wakeups.versions.lock().expect("versions lock");
                        for host in &round.hosts {
                            if let Some(version) = versions.get(host) {
                                version.send_replace(round.index);
                            }
                        }
                    }
                    // Rounds were missed: any host may have changed.
                    Err(RecvError::Lagged(_)) => {
                        let index = wakeups.replica.applied_index();
                        for version in wakeups.versions.lock().expect("versions lock").values() {
                            version.send_replace(index);
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        wakeups
    }

    /// A receiver of `host`'s desired-state version.
    pub fn watch(&self, host: &str) -> watch::Receiver<u64> {
        self.versions
            .lock()
            .expect("versions lock")
            .entry(host.to_owned())
            .or_insert_with(|| watch::channel(self.replica.applied_index()).0)
            .subscribe()
    }
}
