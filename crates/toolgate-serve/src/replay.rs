//! The messages of one streamed answer, kept so that a client whose
//! connection broke can resume it: every SSE event carries the id
//! `STREAM/INDEX`, and a GET with `Last-Event-ID: STREAM/INDEX` replays what
//! came after and follows the rest. A log lives in the gateway process that
//! made it, for `KEEP` after its answer is complete.

use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a finished stream can still be resumed.
pub const KEEP: Duration = Duration::from_secs(300);

pub struct EventLog {
    /// Random id of the stream (the part of event ids before the slash).
    pub id: String,
    /// The session that may resume it.
    pub session: String,
    inner: Mutex<Inner>,
    changed: Notify,
}

struct Inner {
    events: Vec<Value>,
    done: bool,
}

impl EventLog {
    pub fn new(id: String, session: String) -> EventLog {
        EventLog {
            id,
            session,
            inner: Mutex::new(Inner {
                events: Vec::new(),
                done: false,
            }),
            changed: Notify::new(),
        }
    }

    pub fn push(&self, message: Value) {
        self.inner.lock().expect("log lock").events.push(message);
        self.changed.notify_waiters();
    }

    /// The answer is complete: readers end after the last event.
    pub fn finish(&self) {
        self.inner.lock().expect("log lock").done = true;
        self.changed.notify_waiters();
    }

    /// The event at `index`, waiting for it; `None` once the log is finished
    /// and has no such event.
    pub async fn get(&self, index: usize) -> Option<Value> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.inner.lock().expect("log lock");
                if let Some(event) = inner.events.get(index) {
                    return Some(event.clone());
                }
                if inner.done {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// `STREAM/INDEX` → (stream, index).
    pub fn parse_event_id(id: &str) -> Option<(&str, usize)> {
        let (stream, index) = id.split_once('/')?;
        Some((stream, index.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_reader_gets_every_event_then_the_end() {
        let log = Arc::new(EventLog::new("s".into(), "x".into()));
        let reader = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = 0;
                while let Some(e) = log.get(i).await {
                    seen.push(e);
                    i += 1;
                }
                seen
            })
        };
        for n in 0..3 {
            tokio::task::yield_now().await;
            log.push(json!(n));
        }
        log.finish();
        assert_eq!(reader.await.unwrap(), vec![json!(0), json!(1), json!(2)]);
        // A late reader replays from where it left off.
        assert_eq!(log.get(2).await, Some(json!(2)));
        assert_eq!(log.get(3).await, None);
    }

    #[test]
    fn event_ids() {
        assert_eq!(EventLog::parse_event_id("abc/7"), Some(("abc", 7)));
        assert_eq!(EventLog::parse_event_id("abc"), None);
        assert_eq!(EventLog::parse_event_id("abc/x"), None);
    }
}
