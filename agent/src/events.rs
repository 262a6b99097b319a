//! The live event stream: what happened to which container, for `berth events` and the logs.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::status::EventRecord;

/// How many past events a new subscriber is shown first.
const RECENT: usize = 256;

pub struct EventLog {
    tx: broadcast::Sender<EventRecord>,
    recent: Mutex<VecDeque<EventRecord>>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            tx: broadcast::channel(1024).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl EventLog {
    /// Records an event, logs it, and hands it to every subscriber.
    pub fn emit(&self, container: Option<&str>, kind: &str, message: impl Into<String>) {
        let ev = EventRecord::now(container, kind, message);
        match &ev.container {
            Some(c) => tracing::info!(container = %c, kind = %ev.kind, "{}", ev.message),
            None => tracing::info!(kind = %ev.kind, "{}", ev.message),
        }
        let mut recent = self.recent.lock().expect("event log lock");
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// A receiver for what happens from now on (no past).
    pub fn live(&self) -> broadcast::Receiver<EventRecord> {
        self.tx.subscribe()
    }

    /// The recent past and a receiver for what follows, with nothing lost in between.
    pub fn subscribe(&self) -> (Vec<EventRecord>, broadcast::Receiver<EventRecord>) {
        let recent = self.recent.lock().expect("event log lock");
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_history_then_live() {
        let log = EventLog::default();
        log.emit(Some("web"), "started", "started");
        let (past, mut rx) = log.subscribe();
        assert_eq!(past.len(), 1);
        log.emit(None, "pass", "pass done");
        assert_eq!(rx.try_recv().unwrap().kind, "pass");
        for i in 0..300 {
            log.emit(None, "x", format!("{i}"));
        }
        let (past, _) = log.subscribe();
        assert_eq!(past.len(), RECENT);
        assert_eq!(past.last().unwrap().message, "299");
    }
}
