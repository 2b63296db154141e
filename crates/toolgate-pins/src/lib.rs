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

/// What a gateway makes of one observation of a listed tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// New, or the pinned definition: the tool is served.
    Clear,
    /// A changed definition: held back when the policies block changed
    /// tools; `first` when this change was not seen before (it is then
    /// logged and audited).
    Changed { first: bool, held_back: bool },
    /// The store could not be asked: held back unless the fail mode is open.
    Unavailable { error: PinError, held_back: bool },
}

impl Finding {
    /// The finding of `observed`; `block`: the policies that apply hold
    /// changed tools back; `fail_open`: an unreachable store holds nothing back.
    pub fn of(observed: Result<Observed, PinError>, block: bool, fail_open: bool) -> Finding {
        match observed {
            Ok(Observed::New | Observed::Same) => Finding::Clear,
            Ok(Observed::Changed { first }) => Finding::Changed {
                first,
                held_back: block,
            },
            Err(error) => Finding::Unavailable {
                error,
                held_back: !fail_open,
            },
        }
    }

    pub fn held_back(&self) -> bool {
        match self {
            Finding::Clear => false,
            Finding::Changed { held_back, .. } | Finding::Unavailable { held_back, .. } => {
                *held_back
            }
        }
    }

    /// The warning of a change seen for the first time (`diff`: the
    /// command that shows it).
    pub fn warning(&self, server: &str, tool: &str, diff: &str) -> Option<String> {
        let Finding::Changed {
            first: true,
            held_back,
        } = self
        else {
            return None;
        };
        let what = if *held_back {
            "held back until the change is accepted"
        } else {
            "allowed (pins.on_change: warn)"
        };
        Some(format!(
            "tool {tool:?} of server {server:?} changed its definition since it was pinned: {what} ({diff})"
        ))
    }

    /// The error of a definition that cannot be checked and is held back
    /// for it (fail closed).
    pub fn error(&self, tool: &str) -> Option<String> {
        match self {
            Finding::Unavailable {
                error,
                held_back: true,
            } => Some(format!("pins: {error}; tool {tool:?} is held back")),
            _ => None,
        }
    }

    /// The audit record's decision for a change seen for the first time:
    /// `pin_changed` when held back, `pin_changed_warn` when not.
    pub fn audit_kind(&self) -> Option<&'static str> {
        match self {
            Finding::Changed {
                first: true,
                held_back,
            } => Some(if *held_back {
                "pin_changed"
            } else {
                "pin_changed_warn"
            }),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_holds_back_what_the_policy_and_the_fail_mode_say() {
        let changed = |first| Ok(Observed::Changed { first });
        let down = || Err(PinError::Unavailable("down".into()));
        assert!(!Finding::of(Ok(Observed::New), true, false).held_back());
        let first = Finding::of(changed(true), true, false);
        assert!(first.held_back());
        assert_eq!(first.audit_kind(), Some("pin_changed"));
        assert_eq!(
            first.warning("s", "t", "toolgate pins diff").as_deref(),
            Some("tool \"t\" of server \"s\" changed its definition since it was pinned: held back until the change is accepted (toolgate pins diff)")
        );
        let warned = Finding::of(changed(true), false, false);
        assert!(!warned.held_back());
        assert_eq!(warned.audit_kind(), Some("pin_changed_warn"));
        let again = Finding::of(changed(false), true, false);
        assert!(again.held_back());
        assert_eq!(
            (again.warning("s", "t", "d"), again.audit_kind()),
            (None, None)
        );
        let closed = Finding::of(down(), true, false);
        assert!(closed.held_back());
        assert_eq!(
            closed.error("t").as_deref(),
            Some("pins: pin store unavailable: down; tool \"t\" is held back")
        );
        let open = Finding::of(down(), true, true);
        assert!(!open.held_back());
        assert_eq!(open.error("t"), None);
    }
}
