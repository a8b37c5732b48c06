//! Which names clients ask for that no certificate covers: every handshake served the
//! server-wide certificate for a name (or refused by strict SNI) is counted by name and
//! listener, so that operators see which customers still lack a certificate.
//!
//! The handshake hands the name to a bounded queue ([`Recorder::record`], no lock, no
//! wait; a full queue drops it and counts the drop), and a task folds the queue into a
//! space-saving sketch of [`SLOTS`] names ([`TopNames`]): a name not yet there replaces the
//! least counted one and inherits its count, so memory stays bounded whatever a scanner
//! sends, and any name asked for more often than one handshake in [`SLOTS`] stays. Counts
//! halve every [`HALF_LIFE`], so that a past flood of random names does not hold the
//! slots (at its inflated counts) forever.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Names the report keeps.
pub const SLOTS: usize = 1_000;
/// Names queued between the handshakes and the task that counts them.
const QUEUE: usize = 4_096;
/// How often counts halve.
pub const HALF_LIFE: Duration = Duration::from_secs(3_600);

/// One handshake's name.
#[derive(Debug)]
struct Sighting {
    listener: Arc<str>,
    name: Box<str>,
    at: i64,
}

/// The handshakes' side: queues names for the report.
#[derive(Debug)]
pub struct Recorder {
    queue: mpsc::Sender<Sighting>,
    dropped: AtomicU64,
}

impl Recorder {
    /// A recorder, and the receiving end its [`TopNames`] task reads.
    pub fn new() -> (Self, Receiver) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let recorder = Self {
            queue,
            dropped: AtomicU64::new(0),
        };
        (recorder, Receiver(rx))
    }

    /// Counts `name` as asked for on `listener` and served the server-wide certificate
    /// (or refused). Never waits: when the queue is full the name is dropped and counted.
    pub fn record(&self, listener: &Arc<str>, name: &str) {
        let sighting = Sighting {
            listener: Arc::clone(listener),
            name: name.to_ascii_lowercase().into(),
            at: crate::certs::now(),
        };
        if self.queue.try_send(sighting).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Names dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The queue's receiving end.
#[derive(Debug)]
pub struct Receiver(mpsc::Receiver<Sighting>);

/// One name of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub name: String,
    pub listener: String,
    /// Handshakes counted (an overestimate by at most `error`).
    pub count: u64,
    /// How much of `count` may belong to the names it replaced.
    pub error: u64,
    /// Unix time of the last handshake.
    pub last_seen: i64,
}

#[derive(Debug)]
struct Slot {
    key: (Arc<str>, Box<str>),
    count: u64,
    error: u64,
    last_seen: i64,
}

/// The space-saving sketch: at most `capacity` names with their counts.
#[derive(Debug)]
pub struct TopNames {
    capacity: usize,
    slots: Vec<Slot>,
    index: HashMap<(Arc<str>, Box<str>), usize>,
    /// (count, slot) for every slot: the least counted first.
    order: BTreeSet<(u64, usize)>,
}

impl TopNames {
    /// An empty report of at most `capacity` names.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: Vec::new(),
            index: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    fn add(&mut self, s: Sighting) {
        let key = (s.listener, s.name);
        if let Some(&i) = self.index.get(&key) {
            let slot = &mut self.slots[i];
            self.order.remove(&(slot.count, i));
            slot.count += 1;
            slot.last_seen = slot.last_seen.max(s.at);
            self.order.insert((slot.count, i));
            return;
        }
        if self.slots.len() < self.capacity {
            let i = self.slots.len();
            self.index.insert(key.clone(), i);
            self.order.insert((1, i));
            self.slots.push(Slot {
                key,
                count: 1,
                error: 0,
                last_seen: s.at,
            });
            return;
        }
        let (min, i) = self.order.pop_first().expect("full, so not empty");
        let slot = &mut self.slots[i];
        self.index.remove(&slot.key);
        self.index.insert(key.clone(), i);
        *slot = Slot {
            key,
            count: min + 1,
            error: min,
            last_seen: s.at,
        };
        self.order.insert((min + 1, i));
    }

    /// Halves every count; names whose count falls to zero leave.
    fn decay(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.index.clear();
        self.order.clear();
        for mut slot in old {
            slot.count /= 2;
            slot.error /= 2;
            if slot.count > 0 {
                let i = self.slots.len();
                self.index.insert(slot.key.clone(), i);
                self.order.insert((slot.count, i));
                self.slots.push(slot);
            }
        }
    }

    /// The names, most counted first (then the most recent).
    pub fn top(&self) -> Vec<Seen> {
        let mut top: Vec<Seen> = self
            .slots
            .iter()
            .map(|s| Seen {
                name: s.key.1.to_string(),
                listener: s.key.0.to_string(),
                count: s.count,
                error: s.error,
                last_seen: s.last_seen,
            })
            .collect();
        top.sort_by(|a, b| {
            (b.count, b.last_seen, &a.name, &a.listener).cmp(&(
                a.count,
                a.last_seen,
                &b.name,
                &b.listener,
            ))
        });
        top
    }

    /// Names held now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds no name.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Folds the queue into `top` until `stop`, halving the counts every [`HALF_LIFE`].
pub async fn run(rx: Receiver, top: Arc<Mutex<TopNames>>, stop: CancellationToken) {
    let Receiver(mut rx) = rx;
    let mut halve = tokio::time::interval(HALF_LIFE);
    halve.tick().await;
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return;
                }
                let mut top = top.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for s in batch.drain(..) {
                    top.add(s);
                }
            }
            _ = halve.tick() => {
                top.lock().unwrap_or_else(std::sync::PoisonError::into_inner).decay();
            }
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(top: &mut TopNames, listener: &Arc<str>, name: &str, at: i64) {
        top.add(Sighting {
            listener: Arc::clone(listener),
            name: name.into(),
            at,
        });
    }

    /// A flood of random names a hundred times larger than the report keeps the names
    /// asked for often, and the report's size stays at its capacity.
    #[test]
    fn a_flood_of_random_names_keeps_the_real_ones() {
        let mut top = TopNames::new(100);
        let imaps: Arc<str> = "imaps".into();
        let mut t = 0;
        for round in 0..10_000u64 {
            t += 1;
            seen(&mut top, &imaps, &format!("r{round}.scan.example"), t);
            if round % 20 == 0 {
                seen(&mut top, &imaps, "mail.customer.example", t);
            }
            if round % 50 == 0 {
                seen(&mut top, &imaps, "imap.other.example", t);
            }
        }
        assert_eq!(top.len(), 100);
        let names: Vec<String> = top.top().into_iter().take(2).map(|s| s.name).collect();
        assert_eq!(names, ["mail.customer.example", "imap.other.example"]);
        let first = &top.top()[0];
        assert!(
            first.count - first.error <= 500 && first.count >= 500,
            "{first:?}"
        );

        // After the flood, halving lets real names that keep coming outrank its leftovers.
        for _ in 0..8 {
            top.decay();
        }
        for _ in 0..5 {
            t += 1;
            seen(&mut top, &imaps, "new.customer.example", t);
        }
        assert_eq!(
            top.top()[0].name,
            "new.customer.example",
            "{:?}",
            &top.top()[..3]
        );
    }

    #[test]
    fn names_are_counted_per_listener_and_case_folded() {
        let (recorder, Receiver(mut rx)) = Recorder::new();
        let (a, b): (Arc<str>, Arc<str>) = ("imaps".into(), "smtps".into());
        recorder.record(&a, "Mail.Example.COM");
        recorder.record(&a, "mail.example.com");
        recorder.record(&b, "mail.example.com");
        let mut top = TopNames::new(10);
        while let Ok(s) = rx.try_recv() {
            top.add(s);
        }
        let top = top.top();
        assert_eq!((top[0].listener.as_str(), top[0].count), ("imaps", 2));
        assert_eq!((top[1].listener.as_str(), top[1].count), ("smtps", 1));
        assert_eq!(top[0].name, "mail.example.com");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (recorder, _rx) = Recorder::new();
        let l: Arc<str> = "imaps".into();
        for i in 0..QUEUE + 10 {
            recorder.record(&l, &format!("n{i}.example"));
        }
        assert_eq!(recorder.dropped(), 10);
    }
}
