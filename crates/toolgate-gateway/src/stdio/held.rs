//! Calls a `require_approval` rule holds, each decided on a thread of its
//! own: approvals asked of the client (elicitation, or an input-required
//! round for a 2026-07-28 client) or of an approver, then run or refused.

use super::*;

/// A call a require_approval rule holds, with what it needs to go ahead.
pub(super) struct HeldCall {
    /// The call's `_meta`, as sent (for its trace context).
    pub(super) meta: Option<String>,
    /// The id the server sees (the call's entry in the table of requests in flight).
    pub(super) id: Id,
    /// The id as the client spelled it, for its answer.
    pub(super) client_id: Box<str>,
    pub(super) tool: String,
    pub(super) arguments: Value,
    pub(super) decision: Decision,
    pub(super) era: Era,
    pub(super) received: Instant,
    /// A 2026-07-28 client that can be asked with an input-required result.
    pub(super) elicitation_2026: bool,
    /// The retry of that round trip: (approval request id, the user's action).
    pub(super) answer: Option<(String, String)>,
}

/// What becomes of a held call.
pub(super) enum HeldOutcome {
    /// Approved and admitted: forward it (`true`: strip toolgate's own
    /// round-trip fields first).
    Run(Box<CallInFlight>, bool),
    /// Answer the client in the server's place.
    Answer(Value),
}

/// Decides a held call on a thread of its own, so the client's other
/// messages (including its answer to an elicitation) keep flowing. Its id is
/// reserved (`Pending::Held`) while it is held: a second request with it gets
/// "id in use", and cannot take the held call's place in the table.
pub(super) fn hold_call(shared: &Arc<Shared>, held: HeldCall, bytes: Vec<u8>) {
    let audit = shared.audit.clone();
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("toolgate-approval".into())
        .spawn(move || match decide_held(&shared, &held) {
            HeldOutcome::Answer(answer) => {
                shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .remove(&held.id);
                shared.answer(&held.client_id, &answer);
            }
            HeldOutcome::Run(flight, strip) => {
                let bytes = if strip {
                    strip_round_trip(&bytes)
                } else {
                    bytes
                };
                if let Some(entry) = shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .get_mut(&held.id)
                {
                    entry.what = Pending::Call(flight);
                }
                let mut guard = shared.to_server.lock().expect("server lock");
                let written = guard.as_mut().is_some_and(|server| {
                    server
                        .write_all(&bytes)
                        .and_then(|()| server.write_all(b"\n"))
                        .and_then(|()| server.flush())
                        .is_ok()
                });
                drop(guard);
                if !written {
                    shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .remove(&held.id);
                    shared.answer(
                        &held.client_id,
                        &error_response(
                            &Value::Null,
                            INTERNAL_ERROR,
                            "the server is gone; the approved call did not run",
                            None,
                        ),
                    );
                }
            }
        });
    if spawned.is_err() {
        audit.log(
            LogLevel::Error,
            "cannot start a thread for a held call; it is refused",
        );
    }
}

pub(super) fn held_answer(held: &HeldCall, held_back: HeldBack<'_>) -> HeldOutcome {
    HeldOutcome::Answer(toolgate_jsonrpc::result_response(
        &Value::Null,
        held_back.result(&held.tool, held.era),
    ))
}

pub(super) fn audit_approval(
    shared: &Shared,
    held: &HeldCall,
    kind: &'static str,
    rule: &str,
    reason: String,
) {
    let record = call_record(
        shared,
        &held.tool,
        &held.arguments,
        kind,
        rule.to_string(),
        Some(reason),
        held.received,
        held.meta.as_deref(),
    );
    if let Some(record) = record {
        shared.audit.record(record);
    }
}

/// A held call refused: the refusal in the audit trail (under `kind` and
/// `rule`), and the same refusal as the client's answer.
fn refuse(
    shared: &Shared,
    held: &HeldCall,
    kind: &'static str,
    rule: &str,
    held_back: HeldBack<'_>,
) -> HeldOutcome {
    audit_approval(shared, held, kind, rule, held_back.text(&held.tool));
    held_answer(held, held_back)
}

/// The live approval request for a held call, or a new one: a new request is
/// announced (webhook) and put in the audit trail.
pub(super) fn open_request(
    shared: &Shared,
    held: &HeldCall,
    new: &NewRequest,
    now: u64,
) -> Result<toolgate_approvals::ApprovalRequest, toolgate_approvals::ApprovalError> {
    let request = shared.approvals.request(new, now)?;
    if request.created_ms == now && request.status == Status::Pending {
        shared.approval_events.requested(&request);
        audit_approval(
            shared,
            held,
            "approval_requested",
            &new.rule,
            format!(
                "approval request {} (expires {})",
                request.id,
                toolgate_clock::rfc3339(request.expires_ms)
            ),
        );
    }
    Ok(request)
}

pub(super) fn decide_held(shared: &Shared, held: &HeldCall) -> HeldOutcome {
    let Decision::ApprovalRequired {
        rule,
        reason,
        approval,
        plan,
    } = &held.decision
    else {
        unreachable!("only held calls come here")
    };
    let tool = held.tool.as_str();
    let unavailable = |e: toolgate_approvals::ApprovalError| {
        held_answer(
            held,
            HeldBack::StateUnavailable {
                why: &e.to_string(),
            },
        )
    };
    let key = call_key(
        &shared.grant,
        Some(&shared.server_name),
        tool,
        &held.arguments,
    );
    let new = NewRequest {
        grant: shared.grant.clone(),
        server: Some(shared.server_name.clone()),
        tool: tool.to_string(),
        arguments: held.arguments.clone(),
        reason: reason.clone(),
        rule: rule.to_string(),
        expires_in_ms: approval.expires_ms,
    };
    let now = shared.clock.now_ms();
    if approval.via_client && held.era == Era::Stateless && held.elicitation_2026 {
        if let Some((request_id, action)) = &held.answer {
            // The retry: the answer decides the request of this very call only.
            match shared.approvals.get(request_id) {
                Ok(Some(r)) if r.key == key => {
                    let decided = decide_by_client_user(
                        &*shared.approvals,
                        &*shared.approval_events,
                        &r,
                        action == "accept",
                        &shared.grant,
                        now,
                    )
                    .unwrap_or(r);
                    if let Status::Denied(d) = &decided.status {
                        let held_back = HeldBack::Denied {
                            request_id: &decided.id,
                            decided: d,
                        };
                        return refuse(shared, held, "approval_denied", rule.as_str(), held_back);
                    }
                }
                Ok(_) => return held_answer(held, HeldBack::ForeignAnswer),
                Err(e) => return unavailable(e),
            }
        } else {
            // The first round: ask with an input-required result.
            let request = match open_request(shared, held, &new, now) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            };
            let result = approval_input_required(&new, &request);
            return HeldOutcome::Answer(toolgate_jsonrpc::result_response(&Value::Null, result));
        }
    }
    let mut approved = match shared.approvals.consume(&key, now) {
        Ok(found) => found,
        Err(e) => return unavailable(e),
    };
    if approved.is_none() {
        let ask_client = approval.via_client
            && held.era == Era::Handshake
            && shared
                .client_caps
                .lock()
                .expect("caps lock")
                .as_ref()
                .is_some_and(|caps| caps.get("elicitation").is_some());
        if !ask_client && !approval.via_admin {
            let held_back = HeldBack::Unaskable {
                rule: rule.as_str(),
                reason,
            };
            return refuse(shared, held, "approval_required", rule.as_str(), held_back);
        }
        let request = match open_request(shared, held, &new, now) {
            Ok(r) => r,
            Err(e) => return unavailable(e),
        };
        let decided = if ask_client {
            ask_client_user(shared, &request, &new)
        } else {
            None
        };
        let request = match decided {
            Some(approve) => match decide_by_client_user(
                &*shared.approvals,
                &*shared.approval_events,
                &request,
                approve,
                &shared.grant,
                shared.clock.now_ms(),
            ) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            },
            None if approval.via_admin => {
                let deadline = Instant::now() + Duration::from_millis(approval.hold_ms);
                let mut current = request;
                while current.status == Status::Pending && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    match shared.approvals.get(&current.id) {
                        Ok(Some(r)) => current = r,
                        Ok(None) => break,
                        Err(e) => return unavailable(e),
                    }
                }
                current
            }
            None => request,
        };
        match &request.status {
            Status::Approved(_) => match shared.approvals.consume(&key, shared.clock.now_ms()) {
                Ok(found) => approved = found,
                Err(e) => return unavailable(e),
            },
            Status::Denied(d) => {
                let held_back = HeldBack::Denied {
                    request_id: &request.id,
                    decided: d,
                };
                return refuse(shared, held, "approval_denied", rule.as_str(), held_back);
            }
            _ => {}
        }
        if approved.is_none() {
            let held_back = HeldBack::Pending {
                request: &request,
                reason,
                rule: rule.as_str(),
            };
            return refuse(shared, held, "approval_pending", rule.as_str(), held_back);
        }
    }
    let approved = approved.expect("checked above");
    // Approved: the call takes its quota only now that it runs.
    let result = if plan.draws.is_empty() {
        Ok(Grant::default())
    } else {
        shared.store.acquire(&plan.draws, shared.clock.now_ms())
    };
    let decision = plan.clone().conclude(result);
    let Decision::Allow { grant, .. } = decision.clone() else {
        if let Some(record) = decision_record(
            shared,
            &held.tool,
            &held.arguments,
            &decision,
            held.received,
            held.meta.as_deref(),
        ) {
            shared.audit.record(record);
        }
        let answer = refusal(&Value::Null, tool, &decision, held.era).expect("not an allow");
        return HeldOutcome::Answer(answer);
    };
    let record = decision_record(
        shared,
        &held.tool,
        &held.arguments,
        &decision,
        held.received,
        held.meta.as_deref(),
    )
    .map(|mut r| {
        r.counters = grant.taken.clone();
        if let Status::Used { decided, .. } = &approved.status {
            r.reason = Some(format!(
                "approved by {} via {} (approval request {})",
                decided.by,
                decided.via.as_str(),
                approved.id
            ));
        }
        shared.audit.intend(r)
    });
    // A round-trip retry goes upstream without toolgate's own fields.
    let strip = held.answer.is_some();
    HeldOutcome::Run(
        Box::new(CallInFlight {
            grant,
            started: held.received,
            record,
        }),
        strip,
    )
}

/// Asks the client's user through elicitation: `Some(true)` accept,
/// `Some(false)` decline or cancel, `None` when the client did not answer.
pub(super) fn ask_client_user(
    shared: &Shared,
    request: &toolgate_approvals::ApprovalRequest,
    new: &NewRequest,
) -> Option<bool> {
    let n = shared
        .next_ask
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = Value::String(format!("toolgate-approval-{n}"));
    let (tx, rx) = mpsc::channel();
    shared
        .asking
        .lock()
        .expect("asking lock")
        .insert(Id::of(&id).expect("a string id"), tx);
    shared.send(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "elicitation/create",
        "params": approval_question(new, request),
    }));
    let wait = Duration::from_millis(
        request
            .expires_ms
            .saturating_sub(shared.clock.now_ms())
            .min(600_000),
    );
    match rx.recv_timeout(wait) {
        Ok(answer) => answer
            .get("result")
            .map(|r| r.get("action").and_then(Value::as_str) == Some("accept")),
        Err(_) => {
            shared
                .asking
                .lock()
                .expect("asking lock")
                .remove(&Id::of(&id).expect("a string id"));
            None
        }
    }
}

/// The call of a round-trip retry, without toolgate's `requestState` and its
/// entry in `inputResponses`: the server sees the call as the client first made it.
pub(super) fn strip_round_trip(bytes: &[u8]) -> Vec<u8> {
    let Ok(mut message) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.to_vec();
    };
    if let Some(Value::Object(params)) = message.get_mut("params") {
        params.remove("requestState");
        if let Some(Value::Object(responses)) = params.get_mut("inputResponses") {
            responses.remove(APPROVAL_INPUT);
            if responses.is_empty() {
                params.remove("inputResponses");
            }
        }
    }
    serde_json::to_vec(&message).unwrap_or_else(|_| bytes.to_vec())
}
