//! Pinned tool definitions: a defence against a server that changes what a
//! tool does after it was reviewed (a "rug pull").
//!
//! The first time the gateway sees a tool, it records a fingerprint of its
//! definition (name, title, description, input and output schemas,
//! annotations): the pin. When the server later lists a different
//! definition, [`PinStore::observe`] says so; the gateway then holds the
//! tool back (policy `pins.on_change: block`, the default) or only warns,
//! until an operator accepts the change (`toolgate pins accept`).
//!
//! This crate owns the [`PinStore`] interface, the rule every store applies
//! ([`apply`] on observing, [`accepted`] on accepting), the in-memory store
//! [`MemoryPins`] and the behavioural [`suite`] every store passes. The
//! shared stores live beside the other state: `SqlitePins` in
//! toolgate-state-sqlite (`pins.db` in the data directory, shared by the
//! gateway processes of a machine) and `RedisPins` in toolgate-state-redis
//! (shared by replicas). Every operation of a store is one atomic step.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// The parts of a definition that are pinned.
pub fn pinned_part(tool: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "name",
        "title",
        "description",
        "inputSchema",
        "outputSchema",
        "annotations",
    ] {
        if let Some(v) = tool.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// The name a definition lists (empty when it has none).
pub fn tool_name(tool: &Value) -> &str {
    tool.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// SHA-256 (hex) of the canonical JSON of the pinned part.
pub fn fingerprint(tool: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        toolgate_jsonrpc::canonical_json(&pinned_part(tool)).as_bytes(),
    ))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub server: String,
    pub tool: String,
    /// The accepted definition.
    pub pinned: Value,
    pub pinned_fingerprint: String,
    /// The definition last seen, when it differs from the pinned one.
    pub changed: Option<Value>,
    pub changed_fingerprint: Option<String>,
    pub first_seen_ms: u64,
    pub changed_at_ms: Option<u64>,
}

impl Pin {
    pub fn is_changed(&self) -> bool {
        self.changed_fingerprint.is_some()
    }
}

/// What one observation of a listed definition found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// First seen: pinned now.
    New,
    /// The pinned definition.
    Same,
    /// Different from the pin (`first`: this change was not seen before).
    Changed { first: bool },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PinError {
    #[error("no pin for tool {tool:?} of server {server:?}")]
    Unknown { server: String, tool: String },
    #[error("tool {tool:?} of server {server:?} has no change to accept")]
    NothingToAccept { server: String, tool: String },
    #[error("the changed definition of tool {tool:?} of server {server:?} is now {listed}, not the one given: review it again (toolgate pins diff)")]
    NotReviewed {
        server: String,
        tool: String,
        listed: String,
    },
    #[error("pin store unavailable: {0}")]
    Unavailable(String),
}

pub trait PinStore: Send + Sync {
    /// Records a listed definition: pins it if new, notes a change if it differs.
    fn observe(&self, server: &str, tool: &Value, now: u64) -> Result<Observed, PinError>;
    fn list(&self) -> Result<Vec<Pin>, PinError>;
    fn get(&self, server: &str, tool: &str) -> Result<Option<Pin>, PinError>;
    /// Makes the changed definition the pinned one; with `expected`, only if
    /// the changed definition is still the one with that fingerprint (the one
    /// the operator reviewed).
    fn accept(&self, server: &str, tool: &str, expected: Option<&str>) -> Result<Pin, PinError>;
}

/// The one rule every store applies: the pin after observing `tool` at `now`.
/// A store need not write the pin back when it is [`Observed::Same`].
pub fn apply(existing: Option<Pin>, server: &str, tool: &Value, now: u64) -> (Pin, Observed) {
    let name = tool_name(tool).to_string();
    let fp = fingerprint(tool);
    match existing {
        None => (
            Pin {
                server: server.to_string(),
                tool: name,
                pinned: pinned_part(tool),
                pinned_fingerprint: fp,
                changed: None,
                changed_fingerprint: None,
                first_seen_ms: now,
                changed_at_ms: None,
            },
            Observed::New,
        ),
        Some(pin) if pin.pinned_fingerprint == fp && !pin.is_changed() => (pin, Observed::Same),
        // The pinned definition listed again while a change is recorded (another
        // connection, or a server switching back and forth): the change stays
        // until someone accepts it.
        Some(pin) if pin.pinned_fingerprint == fp => (pin, Observed::Changed { first: false }),
        Some(pin) => {
            let first = pin.changed_fingerprint.as_deref() != Some(fp.as_str());
            let changed_at = if first {
                now
            } else {
                pin.changed_at_ms.unwrap_or(now)
            };
            (
                Pin {
                    changed: Some(pinned_part(tool)),
                    changed_fingerprint: Some(fp),
                    changed_at_ms: Some(changed_at),
                    ..pin
                },
                Observed::Changed { first },
            )
        }
    }
}

/// The pin once its change is accepted (see [`PinStore::accept`]).
pub fn accepted(pin: Pin, expected: Option<&str>) -> Result<Pin, PinError> {
    if let (Some(expected), Some(fp)) = (expected, pin.changed_fingerprint.as_deref()) {
        if !fp.starts_with(expected) || expected.len() < 8 {
            return Err(PinError::NotReviewed {
                server: pin.server.clone(),
                tool: pin.tool.clone(),
                listed: fp.to_string(),
            });
        }
    }
    match (pin.changed.clone(), pin.changed_fingerprint.clone()) {
        (Some(def), Some(fp)) => Ok(Pin {
            pinned: def,
            pinned_fingerprint: fp,
            changed: None,
            changed_fingerprint: None,
            changed_at_ms: None,
            ..pin
        }),
        _ => Err(PinError::NothingToAccept {
            server: pin.server,
            tool: pin.tool,
        }),
    }
}

/// Pins in this process only.
#[derive(Default)]
pub struct MemoryPins {
    pins: Mutex<HashMap<(String, String), Pin>>,
}

impl MemoryPins {
    pub fn new() -> Self {
        Self::default()
    }
}

impl PinStore for MemoryPins {
    fn observe(&self, server: &str, tool: &Value, now: u64) -> Result<Observed, PinError> {
        let mut pins = self.pins.lock().expect("pins lock");
        let key = (server.to_string(), tool_name(tool).to_string());
        let (pin, observed) = apply(pins.get(&key).cloned(), server, tool, now);
        pins.insert(key, pin);
        Ok(observed)
    }

    fn list(&self) -> Result<Vec<Pin>, PinError> {
        let mut out: Vec<Pin> = self
            .pins
            .lock()
            .expect("pins lock")
            .values()
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        Ok(out)
    }

    fn get(&self, server: &str, tool: &str) -> Result<Option<Pin>, PinError> {
        Ok(self
            .pins
            .lock()
            .expect("pins lock")
            .get(&(server.to_string(), tool.to_string()))
            .cloned())
    }

    fn accept(&self, server: &str, tool: &str, expected: Option<&str>) -> Result<Pin, PinError> {
        let mut pins = self.pins.lock().expect("pins lock");
        let key = (server.to_string(), tool.to_string());
        let pin = pins.get(&key).cloned().ok_or_else(|| PinError::Unknown {
            server: server.into(),
            tool: tool.into(),
        })?;
        let pin = accepted(pin, expected)?;
        pins.insert(key, pin.clone());
        Ok(pin)
    }
}

/// One suite for every pin store.
pub mod suite {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn tool(description: &str) -> Value {
        json!({"name": "send", "description": description, "inputSchema": {"type": "object"}})
    }

    pub fn run_all(make: &dyn Fn() -> Arc<dyn PinStore>) {
        let store = make();
        assert_eq!(
            store.observe("srv", &tool("Sends a message"), 1).unwrap(),
            Observed::New
        );
        assert_eq!(
            store.observe("srv", &tool("Sends a message"), 2).unwrap(),
            Observed::Same
        );
        // Key order and unpinned fields do not matter.
        let reordered = json!({"inputSchema": {"type": "object"}, "description": "Sends a message", "name": "send", "_meta": {"x": 1}});
        assert_eq!(store.observe("srv", &reordered, 3).unwrap(), Observed::Same);
        assert_eq!(
            store
                .observe("srv", &tool("Sends a message and your files"), 4)
                .unwrap(),
            Observed::Changed { first: true }
        );
        assert_eq!(
            store
                .observe("srv", &tool("Sends a message and your files"), 5)
                .unwrap(),
            Observed::Changed { first: false }
        );
        let pin = store.get("srv", "send").unwrap().unwrap();
        assert!(pin.is_changed());
        assert_eq!(pin.pinned["description"], "Sends a message");
        assert_eq!(
            pin.changed.as_ref().unwrap()["description"],
            "Sends a message and your files"
        );
        assert_eq!(pin.changed_at_ms, Some(4));
        // Another server's tool of the same name is its own pin.
        assert_eq!(
            store.observe("other", &tool("Something else"), 6).unwrap(),
            Observed::New
        );
        assert_eq!(store.list().unwrap().len(), 2);
        // Accepting with the fingerprint of another definition than the one
        // listed now is refused: the operator reviewed something else.
        assert!(matches!(
            store.accept("srv", "send", Some("0123456789abcdef")),
            Err(PinError::NotReviewed { .. })
        ));
        let reviewed = store
            .get("srv", "send")
            .unwrap()
            .unwrap()
            .changed_fingerprint
            .unwrap();
        let accepted = store.accept("srv", "send", Some(&reviewed[..16])).unwrap();
        assert_eq!(
            accepted.pinned["description"],
            "Sends a message and your files"
        );
        assert!(!accepted.is_changed());
        assert_eq!(
            store
                .observe("srv", &tool("Sends a message and your files"), 7)
                .unwrap(),
            Observed::Same
        );
        assert!(matches!(
            store.accept("srv", "send", None),
            Err(PinError::NothingToAccept { .. })
        ));
        assert!(matches!(
            store.accept("srv", "nope", None),
            Err(PinError::Unknown { .. })
        ));
        // Listing the pinned definition again does not clear a recorded
        // change: only accepting does.
        store.observe("srv", &tool("Changed again"), 8).unwrap();
        assert_eq!(
            store
                .observe("srv", &tool("Sends a message and your files"), 9)
                .unwrap(),
            Observed::Changed { first: false }
        );
        assert!(store.get("srv", "send").unwrap().unwrap().is_changed());
    }
}
