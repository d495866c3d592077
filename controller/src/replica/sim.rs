//! An in-process network between replicas for tests, after raft-rs's `harness/network.rs`: it
//! delivers Raft messages between nodes of one process and can drop, delay (and so reorder),
//! duplicate them, and cut links to make partitions. Randomness comes from a seed, so a
//! failing run can be replayed.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use raft::prelude::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Replica, Transport};

/// Message faults applied to every link that is not cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message arrives twice.
    pub duplicate: f64,
    /// Each copy is delayed by up to this much (uniformly), which reorders messages.
    pub max_delay: Duration,
}

struct Links {
    nodes: HashMap<u64, Replica>,
    /// Directed links (from, to) that carry nothing.
    cut: HashSet<(u64, u64)>,
    faults: Faults,
    rng: StdRng,
}

pub struct SimNetwork {
    links: Mutex<Links>,
    delayed: Mutex<mpsc::Sender<Delayed>>,
}

struct Delayed {
    at: Instant,
    message: Message,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // The earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

impl SimNetwork {
    pub fn new(seed: u64) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Delayed>();
        let network = Arc::new(Self {
            links: Mutex::new(Links {
                nodes: HashMap::new(),
                cut: HashSet::new(),
                faults: Faults::default(),
                rng: StdRng::seed_from_u64(seed),
            }),
            delayed: Mutex::new(tx),
        });
        let weak = Arc::downgrade(&network);
        std::thread::spawn(move || {
            let mut heap = BinaryHeap::new();
            loop {
                let wait = heap
                    .peek()
                    .map(|d: &Delayed| d.at.saturating_duration_since(Instant::now()));
                let received = match wait {
                    Some(wait) => rx.recv_timeout(wait),
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                };
                match received {
                    Ok(delayed) => heap.push(delayed),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let Some(network) = weak.upgrade() else {
                    return;
                };
                while heap.peek().is_some_and(|d| d.at <= Instant::now()) {
                    let delayed = heap.pop().expect("peeked");
                    network.arrive(delayed.message);
                }
            }
        });
        network
    }

    /// The transport of node `id`.
    pub fn transport(self: &Arc<Self>, id: u64) -> Arc<dyn Transport> {
        Arc::new(SimLink {
            from: id,
            network: self.clone(),
        })
    }

    /// Makes node `id` reachable (again) as `replica`.
    pub fn attach(&self, id: u64, replica: Replica) {
        self.links.lock().unwrap().nodes.insert(id, replica);
    }

    /// Node `id` is gone (stopped): messages to it are lost.
    pub fn detach(&self, id: u64) {
        self.links.lock().unwrap().nodes.remove(&id);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.links.lock().unwrap().faults = faults;
    }

    /// Cuts every link between the groups (links inside a group keep working).
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut links = self.links.lock().unwrap();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a.iter() {
                        for &y in b.iter() {
                            links.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.links.lock().unwrap().cut.clear();
    }

    fn send(&self, message: Message) {
        let (from, to) = (message.from, message.to);
        let snapshot = message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot;
        let delays = {
            let mut links = self.links.lock().unwrap();
            let drop = links.faults.drop;
            let lost = links.cut.contains(&(from, to)) || (drop > 0.0 && links.rng.gen_bool(drop));
            if snapshot {
                // A real transport reports once the peer has the snapshot on disk.
                if let Some(sender) = links.nodes.get(&from) {
                    sender.report_snapshot(to, !lost && links.nodes.contains_key(&to));
                }
            }
            if lost {
                return;
            }
            let faults = links.faults;
            let copies = if faults.duplicate > 0.0 && links.rng.gen_bool(faults.duplicate) {
                2
            } else {
                1
            };
            let delays: Vec<Duration> = (0..copies)
                .map(|_| {
                    if faults.max_delay.is_zero() {
                        Duration::ZERO
                    } else {
                        faults.max_delay.mul_f64(links.rng.gen::<f64>())
                    }
                })
                .collect();
            delays
        };
        for delay in delays {
            let message = message.clone();
            if delay.is_zero() {
                self.arrive(message);
            } else {
                let _ = self.delayed.lock().unwrap().send(Delayed {
                    at: Instant::now() + delay,
                    message,
                });
            }
        }
    }

    /// Delivers a message that made it across, unless its link was cut meanwhile.
    fn arrive(&self, message: Message) {
        let target = {
            let links = self.links.lock().unwrap();
            if links.cut.contains(&(message.from, message.to)) {
                return;
            }
            links.nodes.get(&message.to).cloned()
        };
        if let Some(replica) = target {
            replica.step(message);
        }
    }
}

struct SimLink {
    from: u64,
    network: Arc<SimNetwork>,
}

impl Transport for SimLink {
    fn send(&self, mut message: Message) {
        message.from = self.from;
        self.network.send(message);
    }
}
