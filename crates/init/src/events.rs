//! The node's event log: boot phases, service transitions, configs
//! applied, shutdown started. A bounded ring of recent events (replayed to a
//! new `Events` subscriber) plus a broadcast of every new one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

/// How many past events are kept for replay.
const RING: usize = 512;

/// One event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When it happened (ms since the Unix epoch).
    pub unix_ms: u64,
    /// `boot-phase`, `service`, `config-applied`, `config-reverted`,
    /// `shutdown-started`, `apid`.
    pub kind: String,
    /// The human line.
    pub message: String,
    /// Structured details.
    pub fields: BTreeMap<String, String>,
}

impl From<&Event> for api::v1::Event {
    fn from(e: &Event) -> Self {
        api::v1::Event {
            unix_ms: e.unix_ms,
            kind: e.kind.clone(),
            message: e.message.clone(),
            fields: e.fields.clone().into_iter().collect(),
        }
    }
}

/// The shared event log; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    ring: Arc<Mutex<VecDeque<Event>>>,
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(RING);
        EventBus {
            ring: Arc::new(Mutex::new(VecDeque::with_capacity(RING))),
            tx,
        }
    }
}

impl EventBus {
    /// Records and broadcasts an event.
    pub fn emit(&self, kind: &str, message: impl Into<String>, fields: &[(&str, String)]) {
        let event = Event {
            unix_ms: now_ms(),
            kind: kind.to_string(),
            message: message.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        // Sent under the ring lock, so `subscribe` sees each event exactly
        // once: either in its replay or on its receiver.
        let _ = self.tx.send(event);
    }

    /// The last `tail` events and a receiver of every later one, with no
    /// gap or duplicate between them.
    pub fn subscribe(&self, tail: usize) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let skip = ring.len().saturating_sub(tail);
        (ring.iter().skip(skip).cloned().collect(), rx)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch of a `SystemTime`.
pub fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_subscriber_sees_the_tail_then_every_new_event_once() {
        let bus = EventBus::default();
        for i in 0..5 {
            bus.emit("boot-phase", format!("phase {i}"), &[]);
        }
        let (past, mut rx) = bus.subscribe(2);
        assert_eq!(
            past.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["phase 3", "phase 4"]
        );
        bus.emit(
            "service",
            "kubelet running",
            &[("service", "kubelet".into())],
        );
        let next = rx.recv().await.unwrap();
        assert_eq!(next.kind, "service");
        assert_eq!(next.fields["service"], "kubelet");
        for i in 0..(RING + 10) {
            bus.emit("x", format!("{i}"), &[]);
        }
        let (past, _) = bus.subscribe(usize::MAX);
        assert_eq!(past.len(), RING, "the ring is bounded");
    }
}
