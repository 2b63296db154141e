//! Input-required rounds with a server spoken to statelessly (2026-07-28).
//! Such a server cannot ask its client mid-call: it answers a call with
//! `resultType: "input_required"` (`inputRequests`, `requestState`) and
//! expects the call again with `inputResponses` and the same state.
//!
//! - A client of the handshake era has no such answer: the gateway asks it
//!   each request over its session (as a 2025 server would have) and sends
//!   the call again with the answers ([`ask_rounds`]), until it completes.
//! - A 2026-07-28 client retries by itself. For `tools/call` the server's
//!   `requestState` goes to the client sealed with what the call was
//!   ([`Relayed`]): the grant, the server, the tool and a hash of the
//!   arguments. The retry that brings it back is the same call going on:
//!   still checked against the policy (a tool now denied or hidden stays
//!   refused), but not counted or audited a second time. A sealed state
//!   is taken once: replaying it (which would reach the server again,
//!   uncounted) is refused.

use crate::session::SessionKey;
use crate::upstreams::Upstream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use toolgate_upstream::{Answer, CallError, Downstream, RpcError};

/// `requestState` of a server's input-required answer, sealed by the
/// gateway: this prefix and the sealed [`Relayed`].
pub const UPSTREAM_STATE: &str = "toolgate-state:";

/// What a sealed state is authenticated for (so a session token is never
/// taken for one, nor one for a session token).
const PURPOSE: &[u8] = b"toolgate upstream requestState";

/// How many input-required answers one call may have in a row.
pub const MAX_ROUNDS: usize = 8;

/// The call a sealed `requestState` belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayed {
    pub grant: String,
    /// The server's name in the config.
    pub server: String,
    /// The tool's name on the server.
    pub tool: String,
    /// SHA-256 of the canonical arguments.
    pub args: String,
    /// The server's own `requestState`, when it sent one.
    pub state: Option<String>,
    /// Milliseconds (the gateway's clock) after which the state is refused.
    pub expires: u64,
    /// Fresh for each seal: a state is taken once ([`Spent`]).
    #[serde(default)]
    pub nonce: String,
}

/// The sealed states already taken (by nonce, with their expiry), so a
/// retry cannot be replayed past the counters. Kept by this process: a
/// replay to another gateway process sharing the key is not caught.
#[derive(Default)]
pub struct Spent(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl Spent {
    /// Takes `relayed`'s state: false if it was taken before (or has no
    /// nonce). Expired entries are dropped on the way.
    pub fn take(&self, relayed: &Relayed, now_ms: u64) -> bool {
        if relayed.nonce.is_empty() {
            return false;
        }
        let mut spent = self.0.lock().expect("spent states lock");
        if spent.len() >= 1024 {
            spent.retain(|_, expires| *expires >= now_ms);
        }
        spent
            .insert(relayed.nonce.clone(), relayed.expires)
            .is_none()
    }
}

impl Relayed {
    pub fn seal(&self, key: &SessionKey) -> String {
        let plain = serde_json::to_vec(self).expect("serialisable");
        format!("{UPSTREAM_STATE}{}", key.seal_for(PURPOSE, &plain))
    }

    /// The call behind a `requestState` the gateway sealed (without its
    /// prefix); `None` for anything else.
    pub fn open(key: &SessionKey, sealed: &str) -> Option<Relayed> {
        serde_json::from_slice(&key.open_for(PURPOSE, sealed)?).ok()
    }
}

/// Whether a result is an input-required one.
pub fn is_input_required(result: &Value) -> bool {
    result.get("resultType").and_then(Value::as_str) == Some("input_required")
}

/// Whether an answer kept as text could be an input-required result (a
/// cheap look before parsing it).
fn may_need_input(answer: &Answer) -> bool {
    match answer {
        Answer::Parsed(value) => is_input_required(value),
        Answer::Raw(raw) => raw.get().contains("input_required"),
    }
}

/// For a 2026-07-28 client: an input-required answer to `tools/call` goes
/// on with its `requestState` sealed as `relayed` (the server's own state
/// inside); every other answer as it came.
pub fn relay(
    result: Result<Answer, CallError>,
    relayed: Relayed,
    key: &SessionKey,
) -> Result<Answer, CallError> {
    let answer = result?;
    if !may_need_input(&answer) {
        return Ok(answer);
    }
    let mut value = answer.into_value()?;
    if !is_input_required(&value) {
        return Ok(Answer::Parsed(value));
    }
    let state = value
        .get("requestState")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let nonce = crate::session::random_id();
    value["requestState"] = Value::String(
        Relayed {
            state,
            nonce,
            ..relayed
        }
        .seal(key),
    );
    Ok(Answer::Parsed(value))
}

/// For a client of the handshake era: while the server answers
/// input-required, asks the client each of its requests (over `client`,
/// its session) and sends the call again with the answers and the
/// server's state. A request the client refuses ends the call with the
/// client's error.
pub async fn ask_rounds(
    upstream: &impl Upstream,
    method: &str,
    params: Value,
    client: Arc<dyn Downstream>,
    mut result: Result<Answer, CallError>,
) -> Result<Answer, CallError> {
    for _ in 0..MAX_ROUNDS {
        let answer = result?;
        if !may_need_input(&answer) {
            return Ok(answer);
        }
        let value = answer.into_value()?;
        if !is_input_required(&value) {
            return Ok(Answer::Parsed(value));
        }
        let mut responses = Map::new();
        let requests = value.get("inputRequests").and_then(Value::as_object);
        for (key, request) in requests.into_iter().flatten() {
            let Some(asked) = request.get("method").and_then(Value::as_str) else {
                return Err(CallError::Rpc(invalid("an input request without a method")));
            };
            let response = client
                .request(asked.to_owned(), request.get("params").cloned())
                .await
                .map_err(CallError::Rpc)?;
            responses.insert(key.clone(), response);
        }
        let mut retry = params.clone();
        if let Value::Object(p) = &mut retry {
            p.insert("inputResponses".into(), Value::Object(responses));
            match value.get("requestState") {
                Some(state) => p.insert("requestState".into(), state.clone()),
                None => p.remove("requestState"),
            };
        }
        result = upstream
            .request_answer(method, Some(retry), Some(client.clone()))
            .await;
    }
    Err(CallError::Rpc(invalid(&format!(
        "the server asked for input more than {MAX_ROUNDS} times in one call"
    ))))
}

fn invalid(message: &str) -> RpcError {
    RpcError {
        code: toolgate_jsonrpc::INTERNAL_ERROR,
        message: message.to_owned(),
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relayed() -> Relayed {
        Relayed {
            grant: "alice".into(),
            server: "modern".into(),
            tool: "ask".into(),
            args: "ab".repeat(32),
            state: None,
            expires: 1_000,
            nonce: "n1".into(),
        }
    }

    #[test]
    fn a_sealed_state_is_taken_once() {
        let spent = Spent::default();
        assert!(spent.take(&relayed(), 10));
        assert!(
            !spent.take(&relayed(), 10),
            "a replayed state was taken again"
        );
        let other = Relayed {
            nonce: "n2".into(),
            ..relayed()
        };
        assert!(spent.take(&other, 10));
        let unmarked = Relayed {
            nonce: String::new(),
            ..relayed()
        };
        assert!(!spent.take(&unmarked, 10));
    }

    #[test]
    fn a_sealed_state_opens_to_the_call_it_belongs_to() {
        let key = SessionKey::new([3; 32]);
        let sealed = relayed().seal(&key);
        let token = sealed.strip_prefix(UPSTREAM_STATE).unwrap();
        assert_eq!(Relayed::open(&key, token), Some(relayed()));
        assert_eq!(Relayed::open(&SessionKey::new([4; 32]), token), None);
        assert_eq!(Relayed::open(&key, "forged"), None);
    }

    #[test]
    fn only_an_input_required_answer_has_its_state_sealed() {
        let key = SessionKey::new([3; 32]);
        let complete = json!({"content": [], "resultType": "complete"});
        let kept = relay(Ok(Answer::Parsed(complete.clone())), relayed(), &key).unwrap();
        assert!(matches!(kept, Answer::Parsed(v) if v == complete));
        let raw = serde_json::value::RawValue::from_string(complete.to_string()).unwrap();
        assert!(matches!(
            relay(Ok(Answer::Raw(raw)), relayed(), &key).unwrap(),
            Answer::Raw(_)
        ));
        let asked = json!({
            "resultType": "input_required",
            "inputRequests": {"a": {"method": "elicitation/create", "params": {}}},
            "requestState": "server-state",
        });
        let Answer::Parsed(out) = relay(Ok(Answer::Parsed(asked)), relayed(), &key).unwrap() else {
            panic!("parsed")
        };
        assert_eq!(out["inputRequests"]["a"]["method"], "elicitation/create");
        let sealed = out["requestState"].as_str().unwrap();
        let opened = Relayed::open(&key, sealed.strip_prefix(UPSTREAM_STATE).unwrap()).unwrap();
        assert_eq!(opened.state.as_deref(), Some("server-state"));
        assert_eq!(opened.tool, "ask");
        let failed = relay(
            Err(CallError::Timeout(std::time::Duration::ZERO)),
            relayed(),
            &key,
        );
        assert!(failed.is_err());
    }
}
