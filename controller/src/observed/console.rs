//! The instances' serial console output as their hosts push it: for each instance the last
//! [`CONSOLE_KEEP_BYTES`] of its console log, by their offsets in the log, in memory only
//! (not replicated: a host pushes to the node it reaches, which the agent routes make the
//! leader, and refills a node that lacks history when that node asks). A budget over all
//! instances drops the consoles written to least recently first. Readers follow a console
//! through a watch of its end offset.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use stratus_common::observed::CONSOLE_KEEP_BYTES;
use tokio::sync::watch;

/// Console bytes kept over all instances before the least recently written are dropped.
pub const TOTAL_BUDGET_BYTES: u64 = 64 << 20;

/// One instance's kept output: the log's bytes `start..start + bytes.len()`.
struct Kept {
    start: u64,
    bytes: VecDeque<u8>,
    /// Advances with the end offset, for followers.
    end: watch::Sender<u64>,
    /// Order of the last write, for the budget.
    touched: u64,
}

impl Kept {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

/// What a reader gets: bytes of the log from `start` on, and where the log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleText {
    pub start: u64,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
pub struct Consoles {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    kept: HashMap<u64, Kept>,
    clock: u64,
    total: u64,
}

impl Consoles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `bytes` found at `offset` in instance `instance`'s log (empty: where the host's
    /// copy ends). Returns the offset the host should send the log again from, when this
    /// node lacks output the host has (it restarted, or became the one the host talks to).
    pub fn push(&self, instance: u64, offset: u64, bytes: &[u8]) -> Option<u64> {
        let mut inner = self.inner.lock().expect("consoles lock");
        inner.clock += 1;
        let clock = inner.clock;
        let host_end = offset + bytes.len() as u64;
        let before = inner
            .kept
            .get(&instance)
            .map_or(0, |k| k.bytes.len() as u64);
        let kept = inner.kept.entry(instance).or_insert_with(|| Kept {
            start: offset,
            bytes: VecDeque::new(),
            end: watch::channel(offset).0,
            touched: clock,
        });
        kept.touched = clock;
        if offset > kept.end() {
            // A gap: what lies between is lost to this node; keep what follows it.
            kept.start = offset;
            kept.bytes.clear();
        }
        if offset < kept.start && host_end >= kept.start {
            // Older output, sent again on request: it goes in front.
            let head = &bytes[..(kept.start - offset) as usize];
            for &b in head.iter().rev() {
                kept.bytes.push_front(b);
            }
            kept.start = offset;
        }
        let end = kept.end();
        if host_end > end && offset <= end {
            kept.bytes.extend(&bytes[(end - offset) as usize..]);
        }
        while kept.bytes.len() as u64 > CONSOLE_KEEP_BYTES {
            kept.bytes.pop_front();
            kept.start += 1;
        }
        let (start, end) = (kept.start, kept.end());
        kept.end.send_if_modified(|known| {
            let changed = *known != end;
            *known = end;
            changed
        });
        let after = kept.bytes.len() as u64;
        inner.total = inner.total + after - before;
        inner.enforce_budget(instance);
        // Everything the host still has within the kept window should be here.
        let wanted_from = host_end.saturating_sub(CONSOLE_KEEP_BYTES);
        (start > wanted_from && end >= host_end).then_some(wanted_from)
    }

    /// The kept output of `instance` from `from` on (from the oldest kept byte when `from` is
    /// older); `None` when nothing is kept.
    pub fn read(&self, instance: u64, from: u64) -> Option<ConsoleText> {
        let inner = self.inner.lock().expect("consoles lock");
        let kept = inner.kept.get(&instance)?;
        let from = from.clamp(kept.start, kept.end());
        Some(ConsoleText {
            start: from,
            bytes: kept
                .bytes
                .range((from - kept.start) as usize..)
                .copied()
                .collect(),
        })
    }

    /// A watch of the end offset of `instance`'s log as this node knows it (made empty at
    /// offset 0 if nothing is kept yet, so a follower hears the first bytes too).
    pub fn watch(&self, instance: u64) -> watch::Receiver<u64> {
        let mut inner = self.inner.lock().expect("consoles lock");
        inner.clock += 1;
        let clock = inner.clock;
        inner
            .kept
            .entry(instance)
            .or_insert_with(|| Kept {
                start: 0,
                bytes: VecDeque::new(),
                end: watch::channel(0).0,
                touched: clock,
            })
            .end
            .subscribe()
    }
}

impl Inner {
    /// Drops the least recently written consoles (never `keep`) while over the budget.
    fn enforce_budget(&mut self, keep: u64) {
        while self.total > TOTAL_BUDGET_BYTES {
            let oldest = self
                .kept
                .iter()
                .filter(|(id, k)| **id != keep && !k.bytes.is_empty())
                .min_by_key(|(_, k)| k.touched)
                .map(|(id, _)| *id);
            let Some(id) = oldest else { return };
            if let Some(kept) = self.kept.remove(&id) {
                self.total -= kept.bytes.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Consoles, id: u64) -> (u64, String) {
        let t = c.read(id, 0).unwrap();
        (t.start, String::from_utf8(t.bytes).unwrap())
    }

    #[test]
    fn output_is_appended_in_order_and_overlaps_are_kept_once() {
        let c = Consoles::new();
        assert_eq!(c.push(1, 0, b"hello "), None);
        assert_eq!(c.push(1, 6, b"world"), None);
        // A resend overlapping what is kept adds only what is new.
        assert_eq!(c.push(1, 3, b"lo world!"), None);
        assert_eq!(text(&c, 1), (0, "hello world!".into()));
        assert_eq!(c.read(1, 6).unwrap().bytes, b"world!");
        assert_eq!(c.read(2, 0), None);
    }

    #[test]
    fn a_node_missing_history_asks_for_it_and_takes_it_in_front() {
        let c = Consoles::new();
        // The host's log is 20 bytes long; this node hears of it from byte 15 only.
        assert_eq!(c.push(7, 15, b"12345"), Some(0));
        assert_eq!(c.push(7, 0, b"abcdefghijklmno12345"), None);
        assert_eq!(text(&c, 7), (0, "abcdefghijklmno12345".into()));
        // An empty push says where the host stands: nothing missing.
        assert_eq!(c.push(7, 20, b""), None);
        // An empty push from a node that knows nothing asks for the whole kept window.
        assert_eq!(c.push(8, 20, b""), Some(0));
    }

    #[test]
    fn only_the_last_window_is_kept() {
        let c = Consoles::new();
        let big = vec![b'x'; CONSOLE_KEEP_BYTES as usize + 10];
        assert_eq!(c.push(3, 0, &big), None);
        let t = c.read(3, 0).unwrap();
        assert_eq!(t.start, 10);
        assert_eq!(t.bytes.len() as u64, CONSOLE_KEEP_BYTES);
        // A gap (the host skipped output it could not send) starts afresh after it.
        let far = CONSOLE_KEEP_BYTES * 3;
        assert_eq!(c.push(3, far, b"late"), Some(far + 4 - CONSOLE_KEEP_BYTES));
        assert_eq!(c.read(3, 0).unwrap().start, far);
    }

    #[test]
    fn followers_hear_the_end_move() {
        let c = Consoles::new();
        let mut end = c.watch(4);
        assert_eq!(*end.borrow(), 0);
        c.push(4, 0, b"boot\n");
        assert!(end.has_changed().unwrap());
        assert_eq!(*end.borrow_and_update(), 5);
        c.push(4, 5, b"");
        assert!(!end.has_changed().unwrap(), "an empty push moves nothing");
    }

    #[test]
    fn the_least_recently_written_consoles_go_first_over_the_budget() {
        let c = Consoles::new();
        let chunk = vec![b'y'; CONSOLE_KEEP_BYTES as usize];
        let count = TOTAL_BUDGET_BYTES / CONSOLE_KEEP_BYTES;
        for id in 0..=count {
            c.push(id, 0, &chunk);
        }
        assert_eq!(c.read(0, 0), None, "the oldest went");
        assert!(c.read(1, 0).is_some());
        assert!(c.read(count, 0).is_some());
    }
}
