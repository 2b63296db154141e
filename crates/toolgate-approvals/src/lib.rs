//! Approval requests: a tool call that a policy rule holds for a person's
//! decision (`"action": "require_approval"`).
//!
//! CONTRACT (shared by the gateways, the stores, the CLI and the admin API):
//! - A request is identified by `id` (`apr_` + 16 hex digits) and keyed by
//!   `key` = SHA-256 of (grant, server, tool, canonical arguments): the same
//!   call by the same grant maps to the same key ([`call_key`]).
//! - [`ApprovalStore::request`] returns the live request for a key (pending,
//!   or approved and not yet used, and not expired), or creates a pending one.
//! - [`ApprovalStore::decide`] approves or denies a *pending, unexpired*
//!   request exactly once; anything else is an [`ApprovalError`].
//! - [`ApprovalStore::consume`] atomically turns the approved, unused,
//!   unexpired request of a key into `Used` and returns it: an approved call
//!   runs exactly once.
//! - Every operation is one atomic step in the store (no read-then-write).
//! - Times are milliseconds since the Unix epoch, passed in (`now`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

pub mod suite;

/// How a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The agent's own user, asked through MCP elicitation.
    Client,
    /// `toolgate approvals approve|deny`.
    Cli,
    /// The admin HTTP API.
    Api,
    /// A signed webhook callback.
    Webhook,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Client => "client",
            Via::Cli => "cli",
            Via::Api => "api",
            Via::Webhook => "webhook",
        }
    }
}

/// Who decided, how, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// A person or credential name ("admin", the OS user, "client").
    pub by: String,
    pub via: Via,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved(Decided),
    Denied(Decided),
    /// Approved, and the call has run (`used_at_ms`).
    Used {
        decided: Decided,
        used_at_ms: u64,
    },
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved(_) => "approved",
            Status::Denied(_) => "denied",
            Status::Used { .. } => "used",
        }
    }
}

/// What a gateway asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRequest {
    pub grant: String,
    /// The upstream server's name (`None` in `toolgate run`).
    pub server: Option<String>,
    pub tool: String,
    /// The call's arguments (canonical JSON is computed from them).
    pub arguments: Value,
    /// Why approval is needed (the rule's reason).
    pub reason: String,
    /// The rule that requires it.
    pub rule: String,
    /// How long the request can be decided, and an approval used.
    pub expires_in_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub key: String,
    pub grant: String,
    pub server: Option<String>,
    pub tool: String,
    pub arguments: Value,
    pub reason: String,
    pub rule: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Nested, not flattened: a decision's `reason` must not collide with the
    /// request's own.
    pub status: Status,
}

impl ApprovalRequest {
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_ms
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval request {0:?}")]
    Unknown(String),
    #[error("approval request {0} has expired")]
    Expired(String),
    #[error("approval request {id} was already {status}")]
    AlreadyDecided { id: String, status: &'static str },
    /// The store could not be reached or failed.
    #[error("approval store unavailable: {0}")]
    Unavailable(String),
}

/// The approval state interface; every operation is atomic in the store.
pub trait ApprovalStore: Send + Sync {
    /// The live request for `new`'s key, or a new pending one.
    fn request(&self, new: &NewRequest, now: u64) -> Result<ApprovalRequest, ApprovalError>;
    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalError>;
    /// Requests, newest first; `pending_only`: pending and unexpired only.
    fn list(&self, pending_only: bool, now: u64) -> Result<Vec<ApprovalRequest>, ApprovalError>;
    /// Approves (`approve`) or denies a pending, unexpired request.
    fn decide(
        &self,
        id: &str,
        approve: bool,
        decided: Decided,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError>;
    /// Marks the approved, unused, unexpired request of `key` used and returns it.
    fn consume(&self, key: &str, now: u64) -> Result<Option<ApprovalRequest>, ApprovalError>;
}

/// The key of a call: SHA-256 (hex) of grant, server, tool and canonical arguments.
pub fn call_key(grant: &str, server: Option<&str>, tool: &str, arguments: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [grant, server.unwrap_or(""), tool] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(toolgate_jsonrpc::canonical_json(arguments).as_bytes());
    hex::encode(h.finalize())
}

pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("system randomness");
    format!("apr_{}", hex::encode(bytes))
}

/// Builds the pending request for `new` (used by every store).
pub fn pending(new: &NewRequest, now: u64) -> ApprovalRequest {
    ApprovalRequest {
        id: new_id(),
        key: call_key(&new.grant, new.server.as_deref(), &new.tool, &new.arguments),
        grant: new.grant.clone(),
        server: new.server.clone(),
        tool: new.tool.clone(),
        arguments: new.arguments.clone(),
        reason: new.reason.clone(),
        rule: new.rule.clone(),
        created_ms: now,
        expires_ms: now.saturating_add(new.expires_in_ms),
        status: Status::Pending,
    }
}

/// Whether a request is the live one for its key: pending, or approved and
/// unused, and not expired.
pub fn is_live(r: &ApprovalRequest, now: u64) -> bool {
    !r.is_expired(now) && matches!(r.status, Status::Pending | Status::Approved(_))
}

/// Whether a request is waiting for a decision: pending and not expired
/// (what `list` with `pending_only` shows).
pub fn is_open(r: &ApprovalRequest, now: u64) -> bool {
    r.status == Status::Pending && !r.is_expired(now)
}

/// The order of `list`: newest first (ties by id, highest first).
pub fn sort_newest_first(requests: &mut [ApprovalRequest]) {
    requests.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
}

/// The rule of `consume`, shared by every store: the status of an approved,
/// unexpired request once its call runs at `now` (`None` for any other
/// request).
pub fn apply_consume(r: &ApprovalRequest, now: u64) -> Option<Status> {
    match &r.status {
        Status::Approved(decided) if !r.is_expired(now) => Some(Status::Used {
            decided: decided.clone(),
            used_at_ms: now,
        }),
        _ => None,
    }
}

/// What was asked, the part of a request that never changes: its JSON
/// object without `expires_ms` and `status` (the other fields in their
/// order), as stores keep it beside the expiry and status they track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Asked(serde_json::Map<String, Value>);

impl Asked {
    pub fn of(r: &ApprovalRequest) -> Asked {
        let mut fields = match serde_json::to_value(r) {
            Ok(Value::Object(fields)) => fields,
            _ => unreachable!("a request serializes as a JSON object"),
        };
        // The last two fields: removing them keeps the others' order.
        fields.remove("status");
        fields.remove("expires_ms");
        Asked(fields)
    }

    /// The request with this expiry and status; an error names what a
    /// stored request lacks.
    pub fn into_request(self, expires_ms: u64, status: Status) -> Result<ApprovalRequest, String> {
        let mut fields = self.0;
        fields.insert("expires_ms".into(), expires_ms.into());
        let status = serde_json::to_value(status).map_err(|e| e.to_string())?;
        fields.insert("status".into(), status);
        serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
    }
}

/// The rules of `decide`, shared by every store: the new status or the error.
pub fn apply_decision(
    r: &ApprovalRequest,
    approve: bool,
    decided: Decided,
    now: u64,
) -> Result<Status, ApprovalError> {
    match &r.status {
        Status::Pending if r.is_expired(now) => Err(ApprovalError::Expired(r.id.clone())),
        Status::Pending if approve => Ok(Status::Approved(decided)),
        Status::Pending => Ok(Status::Denied(decided)),
        other => Err(ApprovalError::AlreadyDecided {
            id: r.id.clone(),
            status: other.name(),
        }),
    }
}

/// Approval requests in memory (`--state memory`, and tests).
#[derive(Default)]
pub struct MemoryApprovals {
    requests: Mutex<HashMap<String, ApprovalRequest>>,
}

impl MemoryApprovals {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ApprovalStore for MemoryApprovals {
    fn request(&self, new: &NewRequest, now: u64) -> Result<ApprovalRequest, ApprovalError> {
        let mut requests = self.requests.lock().expect("approvals lock");
        let key = call_key(&new.grant, new.server.as_deref(), &new.tool, &new.arguments);
        if let Some(live) = requests.values().find(|r| r.key == key && is_live(r, now)) {
            return Ok(live.clone());
        }
        let r = pending(new, now);
        requests.insert(r.id.clone(), r.clone());
        Ok(r)
    }

    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalError> {
        Ok(self
            .requests
            .lock()
            .expect("approvals lock")
            .get(id)
            .cloned())
    }

    fn list(&self, pending_only: bool, now: u64) -> Result<Vec<ApprovalRequest>, ApprovalError> {
        let requests = self.requests.lock().expect("approvals lock");
        let mut out: Vec<_> = requests
            .values()
            .filter(|r| !pending_only || is_open(r, now))
            .cloned()
            .collect();
        sort_newest_first(&mut out);
        Ok(out)
    }

    fn decide(
        &self,
        id: &str,
        approve: bool,
        decided: Decided,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let mut requests = self.requests.lock().expect("approvals lock");
        let r = requests
            .get_mut(id)
            .ok_or_else(|| ApprovalError::Unknown(id.to_string()))?;
        r.status = apply_decision(r, approve, decided, now)?;
        Ok(r.clone())
    }

    fn consume(&self, key: &str, now: u64) -> Result<Option<ApprovalRequest>, ApprovalError> {
        let mut requests = self.requests.lock().expect("approvals lock");
        for r in requests.values_mut().filter(|r| r.key == key) {
            if let Some(used) = apply_consume(r, now) {
                r.status = used;
                return Ok(Some(r.clone()));
            }
        }
        Ok(None)
    }
}

/// A store that cannot be reached: every operation fails with
/// [`ApprovalError::Unavailable`] and this message (tests of fail-closed paths).
pub struct Unreachable(pub String);

impl Unreachable {
    fn fail<T>(&self) -> Result<T, ApprovalError> {
        Err(ApprovalError::Unavailable(self.0.clone()))
    }
}

impl ApprovalStore for Unreachable {
    fn request(&self, _: &NewRequest, _: u64) -> Result<ApprovalRequest, ApprovalError> {
        self.fail()
    }
    fn get(&self, _: &str) -> Result<Option<ApprovalRequest>, ApprovalError> {
        self.fail()
    }
    fn list(&self, _: bool, _: u64) -> Result<Vec<ApprovalRequest>, ApprovalError> {
        self.fail()
    }
    fn decide(
        &self,
        _: &str,
        _: bool,
        _: Decided,
        _: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        self.fail()
    }
    fn consume(&self, _: &str, _: u64) -> Result<Option<ApprovalRequest>, ApprovalError> {
        self.fail()
    }
}

/// Told about every new approval request and every decision (the webhook,
/// the audit trail). Must not block: queue and return.
pub trait ApprovalEvents: Send + Sync {
    fn requested(&self, request: &ApprovalRequest);
    fn decided(&self, request: &ApprovalRequest);
}

/// Records the answer of the agent's own user (asked in the client) to
/// `request`, and announces it. When someone decided first (an approver, or
/// the request expired), that state stands: the request as the store now
/// holds it (or `request` itself if the store no longer has it).
pub fn decide_by_client_user(
    store: &dyn ApprovalStore,
    events: &dyn ApprovalEvents,
    request: &ApprovalRequest,
    approve: bool,
    grant: &str,
    now: u64,
) -> Result<ApprovalRequest, ApprovalError> {
    let by = Decided {
        by: format!("the user of grant {grant}"),
        via: Via::Client,
        at_ms: now,
        reason: None,
    };
    match store.decide(&request.id, approve, by, now) {
        Ok(decided) => {
            events.decided(&decided);
            Ok(decided)
        }
        Err(_) => Ok(store.get(&request.id)?.unwrap_or_else(|| request.clone())),
    }
}

/// Nobody listening.
pub struct NoEvents;

impl ApprovalEvents for NoEvents {
    fn requested(&self, _: &ApprovalRequest) {}
    fn decided(&self, _: &ApprovalRequest) {}
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn a_decided_request_round_trips_through_json() {
        let mut r = pending(
            &NewRequest {
                grant: "g".into(),
                server: None,
                tool: "t".into(),
                arguments: serde_json::json!({"a": 1}),
                reason: "the rule's reason".into(),
                rule: "tools[\"t\"]".into(),
                expires_in_ms: 10,
            },
            1,
        );
        r.status = Status::Denied(Decided {
            by: "carol".into(),
            via: Via::Api,
            at_ms: 2,
            reason: Some("the decision's reason".into()),
        });
        let text = serde_json::to_string(&r).unwrap();
        let back: ApprovalRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.reason, "the rule's reason");
    }
}
