//! Calls a `require_approval` rule holds, each decided on a thread of its
//! own by the approval flow of `toolgate_call::approval`, driven on a
//! current-thread runtime: the client's user is asked over stdio
//! (elicitation, or an input-required round for a 2026-07-28 client), then
//! the call is written to the server or answered.

use super::*;
use toolgate_approvals::ApprovalRequest;
use toolgate_call::approval::{self, within, AskClient, Flow, Round, TokioSleep};
use toolgate_policy::BoxFuture;

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
        .spawn(move || match run_held(&shared, &held) {
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

/// [`decide_held`] on a runtime of the held call's thread.
fn run_held(shared: &Shared, held: &HeldCall) -> HeldOutcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(decide_held(shared, held)),
        Err(e) => HeldOutcome::Answer(error_response(
            &Value::Null,
            INTERNAL_ERROR,
            &format!("cannot wait for the approval of this call ({e}); it did not run"),
            None,
        )),
    }
}

/// The approval flow, on this gateway's stores, clock and audit sink.
fn flow(shared: &Shared) -> Flow<'_> {
    Flow {
        store: &*shared.approvals,
        events: &*shared.approval_events,
        clock: &*shared.clock,
        sleep: &TokioSleep,
        counters: &*shared.store,
        audit: &shared.audit,
    }
}

pub(super) async fn decide_held(shared: &Shared, held: &HeldCall) -> HeldOutcome {
    let Decision::ApprovalRequired {
        rule,
        reason,
        approval,
        plan,
    } = &held.decision
    else {
        unreachable!("only held calls come here")
    };
    let view = approval::Held {
        call: CallFacts {
            trace: TraceContext::Meta(held.meta.as_deref()),
            keep_args: shared.audit_args,
            ..CallFacts::new(
                &shared.grant,
                &shared.session,
                &held.tool,
                &held.arguments,
                held.received,
            )
        },
        server: Some(&shared.server_name),
        rule: rule.as_str(),
        reason,
        approval,
        plan,
    };
    let round =
        (approval.via_client && held.era == Era::Stateless && held.elicitation_2026).then(|| {
            match &held.answer {
                Some((request_id, action)) => Round::Retry { request_id, action },
                None => Round::First,
            }
        });
    let ask_client = approval.via_client
        && held.era == Era::Handshake
        && shared
            .client_caps
            .lock()
            .expect("caps lock")
            .as_ref()
            .is_some_and(|caps| caps.get("elicitation").is_some());
    let elicit = Elicit(shared);
    let ask = ask_client.then_some(&elicit as &dyn AskClient);
    match flow(shared).decide(&view, round, ask).await {
        approval::Outcome::Run { taken, record } => HeldOutcome::Run(
            Box::new(CallInFlight {
                grant: taken,
                started: held.received,
                record: record.map(|r| shared.audit.intend(r)),
            }),
            // A round-trip retry goes upstream without toolgate's own fields.
            held.answer.is_some(),
        ),
        approval::Outcome::Refused(refused) => {
            HeldOutcome::Answer(refused.response(&Value::Null, &held.tool, held.era))
        }
        approval::Outcome::InputRequired(result) => {
            HeldOutcome::Answer(toolgate_jsonrpc::result_response(&Value::Null, result))
        }
    }
}

/// Asks the client's user through elicitation, over stdio.
struct Elicit<'a>(&'a Shared);

impl AskClient for Elicit<'_> {
    fn ask<'b>(
        &'b self,
        request: &'b ApprovalRequest,
        question: Value,
    ) -> BoxFuture<'b, Option<bool>> {
        let shared = self.0;
        Box::pin(async move {
            let n = shared
                .next_ask
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = Value::String(format!("toolgate-approval-{n}"));
            let key = Id::of(&id).expect("a string id");
            let (tx, rx) = tokio::sync::oneshot::channel();
            shared
                .asking
                .lock()
                .expect("asking lock")
                .insert(key.clone(), tx);
            shared.send(&json!({
                "jsonrpc": "2.0",
                "id": id,
                "method": "elicitation/create",
                "params": question,
            }));
            let wait = Duration::from_millis(
                request
                    .expires_ms
                    .saturating_sub(shared.clock.now_ms())
                    .min(600_000),
            );
            match within(&TokioSleep, wait, rx).await {
                Some(Ok(answer)) => answer
                    .get("result")
                    .map(|r| r.get("action").and_then(Value::as_str) == Some("accept")),
                _ => {
                    shared.asking.lock().expect("asking lock").remove(&key);
                    None
                }
            }
        })
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
