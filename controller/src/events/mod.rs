//! The event stream's source on this node: every change the state machine applies, as a
//! numbered event ([`envelope`]), kept in a window of the latest [`WINDOW`] for clients that
//! reconnect, and passed on live to whoever follows.
//!
//! - **Numbering.** The `k`-th event of Raft entry `index` is `index * EVENTS_PER_ENTRY + k`:
//!   every node applies the same entries into the same events, so a client that reconnects
//!   to another node with its last sequence number misses nothing and sees nothing twice.
//!   `leader-changed` and `volume-stuck` (a disk's detach not confirmed by its guest within
//!   the detach timeout, which no entry marks) are each node's own observations, numbered
//!   after the events of the entry the node had applied when it saw them.
//! - **What is not known.** Events of entries this node applied before it started following
//!   (the replay of its log at start), events of entries covered by a snapshot it was sent,
//!   and events pushed out of the window are not known here: the *horizon* is the highest
//!   sequence number that may have been one of them, and a client asking for events from
//!   before it is told so (`events-lost`) and reads the state again.
//! - Each node keeps its own window in memory; nothing here is replicated or stored.

pub mod envelope;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use stratus_common::events::EVENTS_PER_ENTRY;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::replica::{Applied, Consistency, Replica};
use crate::state::{Event, State};
use envelope::Published;

/// How many events a node keeps for clients that reconnect.
pub const WINDOW: usize = 10_000;
/// How many events a live follower may fall behind before it is sent on from the window.
const LIVE_BUFFER: usize = 4096;
/// How often detaching disks are looked at for ones now stuck.
const STUCK_CHECK: Duration = Duration::from_secs(2);

/// What followers receive live.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Arc<Published>),
    /// Events through this sequence number cannot be told (a snapshot replaced the state).
    Lost(u64),
}

/// What a reconnecting client is sent before it follows live.
#[derive(Debug, Default)]
pub struct Replay {
    /// Some events after the client's last one are not known: through this one.
    pub lost_through: Option<u64>,
    pub events: Vec<Arc<Published>>,
}

pub struct EventHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Item>,
}

struct Ring {
    events: VecDeque<Arc<Published>>,
    /// Every event numbered up to this one may be unknown here.
    horizon: u64,
    /// The entry numbered last, and how many of its events were numbered.
    last: (u64, u64),
}

/// The sequence number of the `k`-th event of entry `index`.
fn seq(index: u64, k: u64) -> u64 {
    index.saturating_mul(EVENTS_PER_ENTRY).saturating_add(k)
}

/// The last sequence number entry `index` can have.
fn last_of(index: u64) -> u64 {
    seq(index, EVENTS_PER_ENTRY - 1)
}

impl EventHub {
    /// A hub knowing nothing through entry `applied`.
    fn new(applied: u64) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                horizon: last_of(applied),
                last: (applied, EVENTS_PER_ENTRY),
            }),
            live,
        }
    }

    /// Follows `replica`'s applied rounds from now on (on the current tokio runtime), and
    /// tells of a detach that is still not confirmed `stuck_after` after it was asked for.
    pub fn start(replica: &Replica, stuck_after: Duration) -> Arc<Self> {
        let mut rounds = replica.subscribe();
        let hub = Arc::new(Self::new(replica.applied_index()));
        tokio::spawn(watch_stuck(
            Arc::downgrade(&hub),
            replica.clone(),
            stuck_after,
        ));
        let weak = Arc::downgrade(&hub);
        let replica = replica.clone();
        tokio::spawn(async move {
            loop {
                let round = rounds.recv().await;
                let Some(hub) = weak.upgrade() else { return };
                match round {
                    Ok(round) => hub.accept(&round, now_ms()),
                    // Rounds were missed: their events are not known.
                    Err(RecvError::Lagged(_)) => hub.lose_through(replica.applied_index()),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers and keeps the events of one applied round, and passes them on.
    fn accept(&self, round: &Applied, now_ms: u64) {
        if round.reset {
            self.lose_through(round.index);
        }
        let mut published = Vec::with_capacity(round.events.len());
        {
            let mut ring = self.lock();
            for (index, event) in &round.events {
                // A node's own observation comes after the entry it had applied then.
                let index = (*index).max(ring.last.0);
                let k = if index == ring.last.0 { ring.last.1 } else { 0 };
                let number = seq(index, k);
                if k >= EVENTS_PER_ENTRY || number <= ring.horizon {
                    continue;
                }
                ring.last = (index, k + 1);
                // When it was asked for, if the entry says; else when this node saw it.
                let at_ms = round.times.get(&index).copied().unwrap_or(now_ms);
                let event = Arc::new(envelope::publish(number, at_ms, event));
                ring.events.push_back(event.clone());
                if ring.events.len() > WINDOW {
                    if let Some(old) = ring.events.pop_front() {
                        ring.horizon = ring.horizon.max(old.envelope.seq);
                    }
                }
                published.push(event);
            }
        }
        for event in published {
            // Nobody following is fine.
            let _ = self.live.send(Item::Event(event));
        }
    }

    /// Events through entry `index` cannot be told any more.
    fn lose_through(&self, index: u64) {
        let horizon = {
            let mut ring = self.lock();
            ring.horizon = ring.horizon.max(last_of(index));
            if ring.last.0 < index {
                ring.last = (index, EVENTS_PER_ENTRY);
            }
            ring.horizon
        };
        let _ = self.live.send(Item::Lost(horizon));
    }

    /// Live events from now on; call before [`Self::replay`] so none falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<Item> {
        self.live.subscribe()
    }

    /// The kept events after `since`, and whether some after it are not known.
    pub fn replay(&self, since: u64) -> Replay {
        let ring = self.lock();
        let from = since.max(ring.horizon);
        let start = ring.events.partition_point(|e| e.envelope.seq <= from);
        Replay {
            lost_through: (since < ring.horizon).then_some(ring.horizon),
            events: ring.events.range(start..).cloned().collect(),
        }
    }

    /// The latest kept events that `keep` accepts, at most `count`, oldest first.
    pub fn latest(&self, count: usize, keep: impl Fn(&Published) -> bool) -> Vec<Arc<Published>> {
        let ring = self.lock();
        let mut latest: Vec<Arc<Published>> = ring
            .events
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(count)
            .cloned()
            .collect();
        latest.reverse();
        latest
    }

    /// The sequence number through which events may be unknown here.
    pub fn horizon(&self) -> u64 {
        self.lock().horizon
    }

    /// Where the stream stands now: a client that starts from here gets every later event.
    pub fn position(&self) -> u64 {
        let ring = self.lock();
        ring.events
            .back()
            .map_or(ring.horizon, |e| e.envelope.seq.max(ring.horizon))
    }
}

/// Every [`STUCK_CHECK`], the attachments `detaching` for `stuck_after` or longer that were
/// not told of yet become `volume-stuck` events (as the volume views show them `stuck`).
async fn watch_stuck(hub: std::sync::Weak<EventHub>, replica: Replica, stuck_after: Duration) {
    // (volume, instance, since): one event per detach.
    let mut told: BTreeSet<(String, u64, u64)> = BTreeSet::new();
    let mut tick = tokio::time::interval(STUCK_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let now = now_ms();
        let limit = stuck_after.as_millis() as u64;
        let Ok(stuck) = replica
            .read(Consistency::Stale, |s| stuck_attachments(s, now, limit))
            .await
        else {
            continue;
        };
        let index = replica.applied_index();
        let still: BTreeSet<(String, u64, u64)> =
            stuck.iter().map(|(key, _)| key.clone()).collect();
        let mut events = Vec::new();
        for (key, event) in stuck {
            if told.insert(key) {
                events.push((index, event));
            }
        }
        // A detach that ended (or was forced) may get stuck again some day: forget it.
        told.retain(|key| still.contains(key));
        if !events.is_empty() {
            hub.accept(
                &Applied {
                    index,
                    events,
                    ..Applied::default()
                },
                now,
            );
        }
    }
}

/// The attachments `detaching` for `limit_ms` or longer at `now`, with their events.
fn stuck_attachments(state: &State, now: u64, limit_ms: u64) -> Vec<((String, u64, u64), Event)> {
    use stratus_common::volumes::AttachmentState;
    state
        .volumes
        .values()
        .flat_map(|v| v.attachments.iter().map(move |a| (v, a)))
        .filter(|(_, a)| {
            a.state == AttachmentState::Detaching && now.saturating_sub(a.since_ms) >= limit_ms
        })
        .map(|(v, a)| {
            (
                (v.id.clone(), a.instance, a.since_ms),
                Event::VolumeAttachment {
                    volume: v.id.clone(),
                    owner: v.owner.clone(),
                    instance: a.instance,
                    instance_owner: state.instances.get(&a.instance).map(|i| i.owner.clone()),
                    target: a.target.clone(),
                    state: Some(AttachmentState::Stuck),
                },
            )
        })
        .collect()
}

pub use stratus_common::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Event;

    fn user(name: &str) -> Event {
        Event::UserCreated { name: name.into() }
    }

    fn round(index: u64, events: Vec<(u64, Event)>) -> Applied {
        Applied {
            index,
            events,
            ..Applied::default()
        }
    }

    fn seqs(events: &[Arc<Published>]) -> Vec<u64> {
        events.iter().map(|e| e.envelope.seq).collect()
    }

    #[test]
    fn events_are_numbered_by_entry_and_replayed_after_the_last_seen() {
        let hub = EventHub::new(4);
        assert_eq!(hub.horizon(), 49_999);
        let mut live = hub.subscribe();
        // An event of an entry the node applied before it followed is not numbered.
        hub.accept(
            &round(5, vec![(4, user("old")), (5, user("a")), (5, user("b"))]),
            1,
        );
        hub.accept(&round(7, vec![(7, user("c"))]), 1);
        // A leader change seen after entry 7: numbered after its events.
        hub.accept(
            &round(
                7,
                vec![(
                    7,
                    Event::LeaderChanged {
                        leader: Some(1),
                        term: 2,
                    },
                )],
            ),
            1,
        );
        assert_eq!(
            seqs(&hub.replay(49_999).events),
            [50_000, 50_001, 70_000, 70_001]
        );
        assert_eq!(hub.replay(49_999).lost_through, None);
        // A client that saw 50 000 gets the rest, nothing twice.
        assert_eq!(seqs(&hub.replay(50_000).events), [50_001, 70_000, 70_001]);
        // One from before the node followed is told some are lost.
        let replay = hub.replay(10);
        assert_eq!(replay.lost_through, Some(49_999));
        assert_eq!(replay.events.len(), 4);
        let mut live_seqs = Vec::new();
        while let Ok(Item::Event(e)) = live.try_recv() {
            live_seqs.push(e.envelope.seq);
        }
        assert_eq!(live_seqs, [50_000, 50_001, 70_000, 70_001]);
        assert_eq!(
            seqs(&hub.latest(2, |e| e.envelope.kind == "user-created")),
            [50_001, 70_000]
        );
        // An entry that says when it was asked for gives its events that time, on every node.
        hub.accept(
            &Applied {
                index: 8,
                events: vec![(8, user("d"))],
                times: [(8, 1_500)].into(),
                ..Applied::default()
            },
            99_000,
        );
        let last = hub.latest(1, |_| true);
        assert_eq!(last[0].envelope.time, "1970-01-01T00:00:01.500Z");
        assert_eq!(
            hub.replay(70_001).events[0].envelope.time,
            last[0].envelope.time
        );
    }

    #[test]
    fn a_snapshot_and_the_window_move_the_horizon() {
        let hub = EventHub::new(0);
        let mut live = hub.subscribe();
        hub.accept(&round(1, vec![(1, user("a"))]), 1);
        hub.accept(
            &Applied {
                index: 9,
                reset: true,
                ..Applied::default()
            },
            1,
        );
        assert!(matches!(live.try_recv(), Ok(Item::Event(_))));
        assert!(matches!(live.try_recv(), Ok(Item::Lost(99_999))));
        let replay = hub.replay(10_000);
        assert_eq!(replay.lost_through, Some(99_999));
        assert!(replay.events.is_empty());
        // Events of entries a snapshot covered are not numbered again.
        hub.accept(&round(10, vec![(9, user("x")), (10, user("b"))]), 1);
        assert_eq!(seqs(&hub.replay(99_999).events), [100_000]);

        for index in 11..(11 + WINDOW as u64) {
            hub.accept(&round(index, vec![(index, user("u"))]), 1);
        }
        // The oldest kept event went out of the window.
        assert_eq!(hub.horizon(), 100_000);
        let replay = hub.replay(99_999);
        assert_eq!(replay.lost_through, Some(100_000));
        assert_eq!(replay.events.len(), WINDOW);
        assert_eq!(replay.events[0].envelope.seq, 110_000);
        assert_eq!(hub.replay(100_000).lost_through, None);
    }
}
