//! A call a `require_approval` rule holds, decided once for both gateways:
//! an approval given earlier is used, else the client's user is asked
//! (elicitation, or an input-required round for a 2026-07-28 client) or an
//! approver is waited for, then the call takes its quota and runs, or is
//! refused. Every refusal is audited here, through [`crate::record`].
//!
//! What the flow needs from the outside comes in through [`Flow`]: the
//! approval store and its events, the clock, a [`Sleep`] (time passes only
//! through these two), the counter store, the audit sink, and an
//! [`AskClient`] for the transport's way of asking the client's user.

use crate::answer::{approval_input_required, approval_question, refusal, Era, HeldBack};
use crate::record::{audit_decision, call_record, decision_record, CallFacts};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use toolgate_approvals::{
    call_key, decide_by_client_user, ApprovalError, ApprovalEvents, ApprovalRequest, ApprovalStore,
    Decided, NewRequest, Status,
};
use toolgate_audit::{AuditSink, Record};
use toolgate_clock::Clock;
use toolgate_jsonrpc::result_response;
use toolgate_policy::{Approval, BoxFuture, CounterStore, Decision, Grant, Plan};

/// How often an approver's decision is looked for while a call is held.
pub const POLL: Duration = Duration::from_millis(100);

/// Waiting, passed in: tokio's timer in the gateways, a clock that jumps in tests.
pub trait Sleep: Send + Sync {
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;
}

/// [`Sleep`] on tokio's timer (a runtime with time enabled).
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// `future`'s output, or `None` once `d` has passed first.
pub async fn within<T>(
    sleep: &dyn Sleep,
    d: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut timer = sleep.sleep(d);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// How the client's user is asked to approve a call, over the session.
pub trait AskClient: Send + Sync {
    /// Asks `question` (the `elicitation/create` params) about `request`:
    /// `Some(true)` accept, `Some(false)` decline or cancel, `None` when the
    /// client did not answer.
    fn ask<'a>(
        &'a self,
        request: &'a ApprovalRequest,
        question: Value,
    ) -> BoxFuture<'a, Option<bool>>;
}

/// Who may still approve a call once no approval for it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approvers {
    /// The rule's: the client's user when it can be asked, approvers when
    /// the rule allows them; a call no one can approve is refused.
    OfTheRule,
    /// Nobody more: the retry of an input-required round (`toolgate serve`),
    /// whose answer was the approval; without one the call is pending.
    AnswerGiven,
}

/// What the flow uses, passed in.
#[derive(Clone, Copy)]
pub struct Flow<'a> {
    pub store: &'a dyn ApprovalStore,
    pub events: &'a dyn ApprovalEvents,
    pub clock: &'a dyn Clock,
    pub sleep: &'a dyn Sleep,
    pub counters: &'a dyn CounterStore,
    pub audit: &'a AuditSink,
}

/// A call a `require_approval` rule holds.
#[derive(Clone, Copy)]
pub struct Held<'a> {
    /// The call, for its audit records.
    pub call: CallFacts<'a>,
    /// The server's name in approval requests (`toolgate run` names its one
    /// server here, though its audit records name none).
    pub server: Option<&'a str>,
    pub rule: &'a str,
    pub reason: &'a str,
    pub approval: &'a Approval,
    /// The draws it takes once approved.
    pub plan: &'a Plan,
}

impl Held<'_> {
    /// The approval request the call asks for.
    pub fn new_request(&self) -> NewRequest {
        NewRequest {
            grant: self.call.grant.to_owned(),
            server: self.server.map(str::to_owned),
            tool: self.call.tool.to_owned(),
            arguments: self.call.arguments.clone(),
            reason: self.reason.to_owned(),
            rule: self.rule.to_owned(),
            expires_in_ms: self.approval.expires_ms,
        }
    }

    /// The key of its approval requests.
    pub fn key(&self) -> String {
        call_key(
            self.call.grant,
            self.server,
            self.call.tool,
            self.call.arguments,
        )
    }
}

/// How a 2026-07-28 client is asked: no requests to the client, the
/// question goes back as an input-required result and the answer comes with
/// the retry.
#[derive(Debug, Clone, Copy)]
pub enum Round<'a> {
    /// The first call: answer with the question.
    First,
    /// The retry: the approval request's id and the user's action.
    Retry {
        request_id: &'a str,
        action: &'a str,
    },
}

/// What becomes of a held call.
// Returned once per held call and taken apart at once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Approved, and its quota taken: forward it. `record` (when the audit
    /// sink is on) says who approved it, and is recorded once it is answered.
    Run {
        taken: Grant,
        record: Option<Record>,
    },
    /// Answer in the server's place with this refusal (audited already).
    Refused(Refusal),
    /// Answer with this input-required result (the first round).
    InputRequired(Value),
}

/// Why a held call did not run.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The approval store cannot be reached (fail closed).
    StateUnavailable(String),
    /// An approval answer that belongs to another call.
    ForeignAnswer,
    /// The retry of an approval round whose rule no longer holds the call.
    NoLongerHeld,
    /// No one can approve the call.
    Unaskable { rule: String, reason: String },
    /// A person refused it.
    Denied {
        request_id: String,
        decided: Decided,
    },
    /// It waits for a person.
    Pending {
        request: Box<ApprovalRequest>,
        reason: String,
        rule: String,
    },
    /// Refused by the policy once approved (its quota is spent).
    Decision(Decision),
}

impl Refusal {
    /// The refusal as [`HeldBack`], or the policy's decision.
    pub fn held_back(&self) -> Result<HeldBack<'_>, &Decision> {
        Ok(match self {
            Refusal::StateUnavailable(why) => HeldBack::StateUnavailable { why },
            Refusal::ForeignAnswer => HeldBack::ForeignAnswer,
            Refusal::NoLongerHeld => HeldBack::NoLongerHeld,
            Refusal::Unaskable { rule, reason } => HeldBack::Unaskable { rule, reason },
            Refusal::Denied {
                request_id,
                decided,
            } => HeldBack::Denied {
                request_id,
                decided,
            },
            Refusal::Pending {
                request,
                reason,
                rule,
            } => HeldBack::Pending {
                request,
                reason,
                rule,
            },
            Refusal::Decision(decision) => return Err(decision),
        })
    }

    /// The JSON-RPC answer, as the server's would be (`resultType` for a
    /// 2026-07-28 request).
    pub fn response(&self, id: &Value, tool: &str, era: Era) -> Value {
        match self.held_back() {
            Ok(held_back) => result_response(id, held_back.result(tool, era)),
            Err(decision) => refusal(id, tool, decision, era).expect("not an allow"),
        }
    }

    /// The tool result of [`Refusal::response`].
    pub fn result(&self, tool: &str, era: Era) -> Value {
        match self.held_back() {
            Ok(held_back) => held_back.result(tool, era),
            Err(decision) => {
                let mut answer = refusal(&Value::Null, tool, decision, era).expect("not an allow");
                answer["result"].take()
            }
        }
    }

    /// Its text for the model (the policy's refusals have theirs in
    /// [`refusal`]).
    fn text(&self, tool: &str) -> String {
        self.held_back()
            .map(|held_back| held_back.text(tool))
            .unwrap_or_default()
    }
}

fn unavailable(e: ApprovalError) -> Outcome {
    Outcome::Refused(Refusal::StateUnavailable(e.to_string()))
}

impl Flow<'_> {
    /// The whole flow of a held call: `round` for a 2026-07-28 client that
    /// can be asked, else `ask` (elicitation) when the client's user can be
    /// asked.
    pub async fn decide(
        &self,
        held: &Held<'_>,
        round: Option<Round<'_>>,
        ask: Option<&dyn AskClient>,
    ) -> Outcome {
        if let Some(round) = round {
            if let Some(answered) = self.round(held, round) {
                return answered;
            }
        }
        self.hold(held, ask, Approvers::OfTheRule).await
    }

    /// The input-required round: the first call is answered with the
    /// question; the retry's answer decides the request of this very call
    /// only. `None`: the retry goes on to [`Flow::hold`] (the answer approved,
    /// or someone decided first and that decision stands unless a denial).
    pub fn round(&self, held: &Held<'_>, round: Round<'_>) -> Option<Outcome> {
        let now = self.clock.now_ms();
        let new = held.new_request();
        let (request_id, action) = match round {
            Round::First => {
                return Some(match self.open_request(held, &new, now) {
                    Ok(request) => Outcome::InputRequired(approval_input_required(&new, &request)),
                    Err(e) => unavailable(e),
                })
            }
            Round::Retry { request_id, action } => (request_id, action),
        };
        let request = match self.store.get(request_id) {
            Ok(Some(r)) if r.key == held.key() => r,
            Ok(_) => return Some(Outcome::Refused(Refusal::ForeignAnswer)),
            Err(e) => return Some(unavailable(e)),
        };
        // Decided before (by an approver): that decision stands.
        let decided = decide_by_client_user(
            self.store,
            self.events,
            &request,
            action == "accept",
            held.call.grant,
            now,
        )
        .unwrap_or(request);
        match decided.status {
            Status::Denied(d) => Some(self.refuse(
                held,
                "approval_denied",
                Refusal::Denied {
                    request_id: decided.id,
                    decided: d,
                },
            )),
            _ => None,
        }
    }

    /// The refusal of a call no one can approve (`can_ask`: the client's
    /// user can be asked); `None` when someone can.
    pub fn unaskable(&self, held: &Held<'_>, can_ask: bool) -> Option<Outcome> {
        (!can_ask && !held.approval.via_admin).then(|| {
            let refused = Refusal::Unaskable {
                rule: held.rule.to_owned(),
                reason: held.reason.to_owned(),
            };
            self.refuse(held, "approval_required", refused)
        })
    }

    /// A held call once asked: an approval for it is used (given earlier, or
    /// now by the client's user through `ask`, or by an approver within the
    /// rule's hold time), then it takes its quota; else it is refused or
    /// answered as pending.
    pub async fn hold(
        &self,
        held: &Held<'_>,
        ask: Option<&dyn AskClient>,
        approvers: Approvers,
    ) -> Outcome {
        let (ask, via_admin) = match approvers {
            Approvers::OfTheRule => (ask, held.approval.via_admin),
            Approvers::AnswerGiven => (None, false),
        };
        let key = held.key();
        let new = held.new_request();
        let now = self.clock.now_ms();
        // An approval given earlier for this very call (a retry).
        let mut approved = match self.store.consume(&key, now) {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        };
        if approved.is_none() {
            if approvers == Approvers::OfTheRule {
                if let Some(refused) = self.unaskable(held, ask.is_some()) {
                    return refused;
                }
            }
            let request = match self.open_request(held, &new, now) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            };
            let decided = match ask {
                Some(ask) => ask.ask(&request, approval_question(&new, &request)).await,
                None => None,
            };
            let request = match decided {
                Some(approve) => match decide_by_client_user(
                    self.store,
                    self.events,
                    &request,
                    approve,
                    held.call.grant,
                    self.clock.now_ms(),
                ) {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                },
                None if via_admin => {
                    match self.wait_for_approver(request, held.approval.hold_ms).await {
                        Ok(r) => r,
                        Err(e) => return unavailable(e),
                    }
                }
                None => request,
            };
            match request.status {
                Status::Approved(_) => match self.store.consume(&key, self.clock.now_ms()) {
                    Ok(found) => approved = found,
                    Err(e) => return unavailable(e),
                },
                Status::Denied(d) => {
                    let refused = Refusal::Denied {
                        request_id: request.id,
                        decided: d,
                    };
                    return self.refuse(held, "approval_denied", refused);
                }
                _ => {}
            }
            if approved.is_none() {
                let refused = Refusal::Pending {
                    request: Box::new(request),
                    reason: held.reason.to_owned(),
                    rule: held.rule.to_owned(),
                };
                return self.refuse(held, "approval_pending", refused);
            }
        }
        let approved = approved.expect("checked above");
        self.admit(held, &approved).await
    }

    /// Approved: the call takes its quota only now that it runs.
    async fn admit(&self, held: &Held<'_>, approved: &ApprovalRequest) -> Outcome {
        let draws = held.plan.draws.clone();
        let result = if draws.is_empty() {
            Ok(Grant::default())
        } else {
            self.counters
                .acquire_async(draws, self.clock.now_ms())
                .await
        };
        let decision = held.plan.clone().conclude(result);
        let Decision::Allow { grant: taken, .. } = &decision else {
            audit_decision(self.audit, self.clock, &held.call, &decision);
            return Outcome::Refused(Refusal::Decision(decision));
        };
        let taken = taken.clone();
        let record = decision_record(self.audit, self.clock, &held.call, &decision).map(|mut r| {
            r.reason = Some(match &approved.status {
                Status::Used { decided, .. } => format!(
                    "approved by {} via {} (approval request {})",
                    decided.by,
                    decided.via.as_str(),
                    approved.id
                ),
                _ => format!("approval request {}", approved.id),
            });
            r
        });
        Outcome::Run { taken, record }
    }

    /// Waits up to `hold_ms` for an approver's decision.
    async fn wait_for_approver(
        &self,
        request: ApprovalRequest,
        hold_ms: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let deadline = self.clock.now_ms().saturating_add(hold_ms);
        let mut current = request;
        while current.status == Status::Pending && self.clock.now_ms() < deadline {
            self.sleep.sleep(POLL).await;
            match self.store.get(&current.id)? {
                Some(r) => current = r,
                None => break,
            }
        }
        Ok(current)
    }

    /// The live approval request for a held call, or a new one: a new request
    /// is announced (webhook) and put in the audit trail.
    fn open_request(
        &self,
        held: &Held<'_>,
        new: &NewRequest,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let request = self.store.request(new, now)?;
        if request.created_ms == now && request.status == Status::Pending {
            self.events.requested(&request);
            let reason = format!(
                "approval request {} (expires {})",
                request.id,
                toolgate_clock::rfc3339(request.expires_ms)
            );
            self.audit_held(held, "approval_requested", reason);
        }
        Ok(request)
    }

    /// A held call refused: the refusal in the audit trail, under `kind`.
    fn refuse(&self, held: &Held<'_>, kind: &'static str, refused: Refusal) -> Outcome {
        self.audit_held(held, kind, refused.text(held.call.tool));
        Outcome::Refused(refused)
    }

    fn audit_held(&self, held: &Held<'_>, kind: &'static str, reason: String) {
        let record = call_record(
            self.audit,
            self.clock,
            &held.call,
            kind,
            held.rule.to_owned(),
            Some(reason),
        );
        if let Some(record) = record {
            self.audit.record(record);
        }
    }
}

#[cfg(test)]
mod tests;
