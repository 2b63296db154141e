//! What the client gets when the gateway answers in the server's place.
//!
//! A refusal by the policy (deny, rate limit, approval required) is a normal
//! tool result with `isError: true`, so the agent's model reads the reason and
//! can adjust; the same facts are in `structuredContent.toolgate` for
//! programs. A hidden tool is answered exactly as a tool that does not exist.

use serde_json::{json, Map, Value};
use toolgate_jsonrpc::{error_response, result_response, INVALID_PARAMS};
use toolgate_policy::Decision;

/// The era of the request being answered: 2026-07-28 results carry `resultType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Handshake,
    Stateless,
}

impl Era {
    /// 2026-07-28 requests name their protocol version in `params._meta`.
    pub fn of_meta(meta: Option<&Value>) -> Era {
        match meta.and_then(|m| m.get("io.modelcontextprotocol/protocolVersion")) {
            Some(_) => Era::Stateless,
            None => Era::Handshake,
        }
    }
}

/// The JSON-RPC answer for a decision that keeps the call from the server;
/// `None` for [`Decision::Allow`].
pub fn refusal(id: &Value, tool: &str, decision: &Decision, era: Era) -> Option<Value> {
    let (text, mut facts) = match decision {
        Decision::Allow { .. } => return None,
        Decision::Unknown { .. } => return Some(unknown_tool(id, tool)),
        Decision::Deny { rule, reason } => (
            format!("toolgate denied this call to \"{tool}\": {reason} (rule {rule})"),
            facts("deny", rule.as_str(), reason),
        ),
        Decision::ApprovalRequired { rule, reason, .. } => (
            format!("toolgate held back this call to \"{tool}\": {reason} (rule {rule})"),
            facts("approval_required", rule.as_str(), reason),
        ),
        Decision::Unavailable { rule, reason } => (
            format!("toolgate refused this call to \"{tool}\": {reason} (rule {rule})"),
            facts("state_unavailable", rule.as_str(), reason),
        ),
        Decision::RateLimited {
            rule,
            counter,
            retry_after_ms,
            reason,
        } => {
            let secs = (*retry_after_ms as f64 / 1000.0 * 10.0).ceil() / 10.0;
            let mut f = facts("rate_limited", rule.as_str(), reason);
            f.insert("counter".into(), json!(counter));
            f.insert("retry_after_seconds".into(), json!(secs));
            (
                format!(
                    "toolgate rate-limited this call to \"{tool}\": {reason} (rule {rule}, counter \"{counter}\"); the next call can succeed in {secs} s"
                ),
                f,
            )
        }
    };
    facts.insert("tool".into(), json!(tool));
    let mut result = json!({
        "content": [{ "type": "text", "text": text }],
        "isError": true,
        "structuredContent": { "toolgate": facts },
    });
    if era == Era::Stateless {
        result["resultType"] = json!("complete");
    }
    Some(result_response(id, result))
}

fn facts(decision: &str, rule: &str, reason: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("decision".into(), json!(decision));
    m.insert("rule".into(), json!(rule));
    m.insert("reason".into(), json!(reason));
    m
}

/// The error a server gives for a tool it does not have (MCP: invalid params).
pub fn unknown_tool(id: &Value, tool: &str) -> Value {
    error_response(id, INVALID_PARAMS, &format!("Unknown tool: {tool}"), None)
}

/// toolgate's own key in a 2026-07-28 `inputRequests` / `inputResponses`.
pub const APPROVAL_INPUT: &str = "toolgate_approval";
/// `requestState` of an approval round trip: this prefix and the request id.
pub const APPROVAL_STATE: &str = "toolgate-approval:";

/// What the agent reads when its held call was refused by a person: who, how,
/// and their reason when they gave one.
pub fn approval_denied_text(
    tool: &str,
    request_id: &str,
    d: &toolgate_approvals::Decided,
) -> String {
    let why = d
        .reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!(
        "toolgate: the call to \"{tool}\" was not approved (approval request {request_id} denied by {} via {}{why}); it did not run",
        d.by,
        d.via.as_str()
    )
}

/// What the agent reads while its held call waits for a person.
pub fn approval_pending_text(
    tool: &str,
    reason: &str,
    request: &toolgate_approvals::ApprovalRequest,
) -> String {
    format!(
        "toolgate: the call to \"{tool}\" needs approval ({reason}) and is waiting for it: approval request {} expires at {}. Once it is approved, send the identical call again and it will run once.",
        request.id,
        toolgate_clock::rfc3339(request.expires_ms)
    )
}

/// The `elicitation/create` params that ask a person to approve a held call:
/// the tool, the server, why, the arguments (long values shortened), and the
/// request's id and expiry. Accept approves; decline or cancel refuses.
pub fn approval_question(
    new: &toolgate_approvals::NewRequest,
    request: &toolgate_approvals::ApprovalRequest,
) -> Value {
    let message = format!(
        "Approve this tool call?\n\nTool: {}\nServer: {}\nWhy approval is needed: {}\nArguments:\n{}\n\nApproval request {} (expires {}).",
        new.tool,
        new.server.as_deref().unwrap_or("-"),
        new.reason,
        readable_arguments(&new.arguments),
        request.id,
        toolgate_clock::rfc3339(request.expires_ms),
    );
    json!({"mode": "form", "message": message, "requestedSchema": {"type": "object", "properties": {}}})
}

/// The 2026-07-28 way to ask: an input-required result carrying the question;
/// the client's retry brings the answer and `requestState` back.
pub fn approval_input_required(
    new: &toolgate_approvals::NewRequest,
    request: &toolgate_approvals::ApprovalRequest,
) -> Value {
    let mut input_requests = Map::new();
    input_requests.insert(
        APPROVAL_INPUT.into(),
        json!({"method": "elicitation/create", "params": approval_question(new, request)}),
    );
    json!({
        "resultType": "input_required",
        "inputRequests": input_requests,
        "requestState": format!("{APPROVAL_STATE}{}", request.id),
    })
}

/// Arguments for a person to read: pretty JSON with long strings shortened.
fn readable_arguments(arguments: &Value) -> String {
    fn shorten(v: &Value) -> Value {
        match v {
            Value::String(s) if s.chars().count() > 200 => Value::String(format!(
                "{}… ({} characters)",
                s.chars().take(200).collect::<String>(),
                s.chars().count()
            )),
            Value::Array(items) => Value::Array(items.iter().map(shorten).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), shorten(v))).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&shorten(arguments)).unwrap_or_default()
}

/// A call held back by something other than the policy's own decision: a
/// pin, or the approval of a `require_approval` rule. Both gateways answer
/// these through [`HeldBack::result`]: one place for each text and each
/// `structuredContent.toolgate` field.
#[derive(Debug)]
pub enum HeldBack<'a> {
    /// The server changed the tool's definition since it was pinned.
    PinChanged { server: &'a str, tool: &'a str },
    /// The pin store cannot be reached (fail closed).
    PinUnavailable { why: &'a str },
    /// The approval store cannot be reached (fail closed).
    StateUnavailable { why: &'a str },
    /// An approval answer that belongs to another call.
    ForeignAnswer,
    /// The retry of an approval round whose rule no longer holds the call.
    NoLongerHeld,
    /// No one can approve: the client cannot be asked and the rule allows
    /// no other approvers.
    Unaskable { rule: &'a str, reason: &'a str },
    /// A person refused the call.
    Denied {
        request_id: &'a str,
        decided: &'a toolgate_approvals::Decided,
    },
    /// The call waits for a person.
    Pending {
        request: &'a toolgate_approvals::ApprovalRequest,
        reason: &'a str,
        rule: &'a str,
    },
}

impl HeldBack<'_> {
    /// What the agent reads.
    pub fn text(&self, tool: &str) -> String {
        match self {
            HeldBack::PinChanged { server, tool: original } => format!(
                "toolgate held back this call to \"{tool}\": the server changed the tool's definition since it was pinned, and the change has not been accepted (toolgate pins diff {server}/{original}, then toolgate pins accept {server}/{original})"
            ),
            HeldBack::PinUnavailable { why } => format!(
                "toolgate refused this call to \"{tool}\": its pinned definition cannot be checked ({why}); calls are refused until the state store is back"
            ),
            HeldBack::StateUnavailable { why } => {
                format!("toolgate held back this call to \"{tool}\": {why}; it did not run")
            }
            HeldBack::ForeignAnswer => format!(
                "toolgate: the approval answer does not belong to this call to \"{tool}\"; it did not run"
            ),
            HeldBack::NoLongerHeld => {
                format!("toolgate: the call to \"{tool}\" is no longer held for approval")
            }
            HeldBack::Unaskable { rule, reason } => format!(
                "toolgate held back this call to \"{tool}\": {reason}; this client cannot be asked (it does not support elicitation) and the rule allows no other approvers (rule {rule})"
            ),
            HeldBack::Denied { request_id, decided } => {
                approval_denied_text(tool, request_id, decided)
            }
            HeldBack::Pending { request, reason, .. } => {
                approval_pending_text(tool, reason, request)
            }
        }
    }

    /// The facts for programs (`structuredContent.toolgate`).
    pub fn facts(&self, tool: &str) -> Value {
        match self {
            HeldBack::PinChanged { .. } => {
                json!({"decision": "pin_changed", "tool": tool, "reason": "the tool's definition changed since it was pinned"})
            }
            HeldBack::PinUnavailable { why } => {
                json!({"decision": "state_unavailable", "tool": tool, "reason": why})
            }
            HeldBack::StateUnavailable { why } => {
                json!({"decision": "state_unavailable", "reason": why, "tool": tool})
            }
            HeldBack::ForeignAnswer | HeldBack::NoLongerHeld => {
                json!({"decision": "approval_required", "tool": tool})
            }
            HeldBack::Unaskable { rule, reason } => {
                json!({"decision": "approval_required", "rule": rule, "reason": reason, "tool": tool})
            }
            HeldBack::Denied {
                request_id,
                decided,
            } => json!({
                "decision": "approval_denied",
                "approval_id": request_id,
                "by": decided.by,
                "via": decided.via.as_str(),
                "reason": decided.reason,
                "tool": tool,
            }),
            HeldBack::Pending {
                request,
                reason,
                rule,
            } => json!({
                "decision": "approval_pending",
                "approval_id": request.id,
                "expires_at": toolgate_clock::rfc3339(request.expires_ms),
                "reason": reason,
                "rule": rule,
                "tool": tool,
            }),
        }
    }

    /// The tool result the client gets: the text, `isError`, the facts;
    /// `resultType: complete` for a 2026-07-28 request.
    pub fn result(&self, tool: &str, era: Era) -> Value {
        let mut result = self.tool_result(tool);
        if era == Era::Stateless {
            result["resultType"] = json!("complete");
        }
        result
    }
}

impl HeldBack<'_> {
    /// [`HeldBack::result`] without `resultType` (for a caller that adds it
    /// with the rest of the answer).
    pub fn tool_result(&self, tool: &str) -> Value {
        held_result(self.text(tool), self.facts(tool))
    }
}

/// A refusal's tool result: `text` for the model, `facts` for programs.
pub fn held_result(text: String, facts: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "structuredContent": {"toolgate": facts},
    })
}
