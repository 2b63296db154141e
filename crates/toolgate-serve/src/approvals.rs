//! Calls a `require_approval` rule holds: asked of the client's user
//! (elicitation, or an input-required round in 2026-07-28), or held for an
//! approver, then run, refused or answered as pending; and the audit trail of
//! approval decisions made outside the gateway.

use crate::call::call_done;
use crate::forward::ClientLink;
use crate::forward::Gate;
use crate::forward::GateOutcome;
use crate::gateway::Context;
use crate::gateway::Gateway;
use crate::gateway::Reply;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate_approvals::{
    call_key, decide_by_client_user, ApprovalEvents, ApprovalRequest, ApprovalStore, NewRequest,
    Status,
};
use toolgate_audit::{AuditSink, Outcome, Record};
use toolgate_call::answer::{
    approval_input_required, approval_question, refusal, Era, HeldBack, APPROVAL_INPUT,
    APPROVAL_STATE,
};
use toolgate_jsonrpc::{args_sha256, result_response};
use toolgate_policy::{plan_layers, Call, Decision, Layer, Planned};
use toolgate_upstream::Downstream;

/// Where approval requests are kept, and who is told of them.
pub(crate) struct Approvals {
    pub(crate) store: Arc<dyn ApprovalStore>,
    pub(crate) events: Arc<dyn ApprovalEvents>,
}

/// What a held call needs to go ahead once approved.
pub(crate) struct Held {
    pub(crate) key: String,
    pub(crate) new: NewRequest,
    pub(crate) approval: toolgate_policy::Approval,
    pub(crate) plan: toolgate_policy::Plan,
    pub(crate) ask_client: bool,
    pub(crate) tool: String,
    pub(crate) arguments: Value,
    pub(crate) ctx: Context,
    pub(crate) received: Instant,
}

/// A refusal-like tool result (`isError`) with the facts for programs.
pub(crate) fn rfc3339(ms: u64) -> String {
    toolgate_clock::rfc3339(ms)
}

impl Gateway {
    /// A call a `require_approval` rule holds: run at once if an approval for
    /// the identical call is waiting; else ask the client's user (elicitation)
    /// or wait for an approver for the hold time, then run it, refuse it, or
    /// answer that approval is pending.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn held_call(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        server: usize,
        original: &str,
        name: &str,
        params: Value,
        arguments: Value,
        decision: Decision,
        received: Instant,
    ) -> Reply {
        let Decision::ApprovalRequired {
            rule,
            reason,
            approval,
            plan,
        } = decision
        else {
            unreachable!("only held calls come here")
        };
        let server_name = self.servers[server].name.clone();
        let key = call_key(&ctx.caller.grant.name, Some(&server_name), name, &arguments);
        let new = NewRequest {
            grant: ctx.caller.grant.name.clone(),
            server: Some(server_name),
            tool: name.to_string(),
            arguments: arguments.clone(),
            reason: reason.clone(),
            rule: rule.to_string(),
            expires_in_ms: approval.expires_ms,
        };
        let ask_client = approval.via_client
            && ctx.era == Era::Handshake
            && ctx.session.caps.get("elicitation").is_some();
        // 2026-07-28: no server-to-client requests; the question goes back as
        // an input-required result, and the answer comes with the retry.
        if approval.via_client
            && ctx.era == Era::Stateless
            && ctx.session.caps.get("elicitation").is_some()
        {
            return self
                .input_required_round(ctx, id, server, original, params, new, received)
                .await;
        }
        if !ask_client && !approval.via_admin {
            let held_back = HeldBack::Unaskable {
                rule: rule.as_str(),
                reason: &reason,
            };
            self.audit_approval(
                ctx,
                name,
                &arguments,
                "approval_required",
                rule.as_str(),
                Some(held_back.text(name)),
                received,
                new.server.as_deref(),
            );
            return Reply::Json(self.answer(
                ctx,
                id,
                "tools/call",
                Ok(held_back.tool_result(name)),
            ));
        }
        let held = Held {
            key,
            new,
            approval,
            plan,
            ask_client,
            tool: name.to_string(),
            arguments,
            ctx: ctx.clone(),
            received,
        };
        let gateway = self.clone();
        let gate: Gate =
            Box::new(move |link| Box::pin(async move { gateway.decide_held(link, held).await }));
        let mut upstream_params = params;
        upstream_params["name"] = Value::String(original.to_string());
        self.forward_gated(
            ctx,
            id,
            server,
            "tools/call",
            upstream_params,
            None,
            Some(gate),
        )
        .await
    }

    pub(crate) async fn decide_held(
        self: Arc<Self>,
        link: Arc<ClientLink>,
        held: Held,
    ) -> GateOutcome {
        let Held {
            key,
            new,
            approval,
            plan,
            ask_client,
            tool,
            arguments,
            ctx,
            received,
        } = held;
        let now = self.clock.now_ms();
        let unavailable = |e: toolgate_approvals::ApprovalError| {
            GateOutcome::Answer(
                HeldBack::StateUnavailable {
                    why: &e.to_string(),
                }
                .tool_result(&tool),
            )
        };
        // An approval given earlier for this very call (a retry).
        let mut approved = match self.approvals.store.consume(&key, now) {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        };
        if approved.is_none() {
            let request = match self.open_request(&ctx, &new, now, received) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            };
            let decided = if ask_client {
                self.ask_client(&link, &request, &new).await
            } else {
                None
            };
            let request = match decided {
                Some(approve) => match decide_by_client_user(
                    &*self.approvals.store,
                    &*self.approvals.events,
                    &request,
                    approve,
                    &new.grant,
                    self.clock.now_ms(),
                ) {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                },
                None if approval.via_admin => match self.hold(&request, approval.hold_ms).await {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                },
                None => request,
            };
            match &request.status {
                Status::Approved(_) => {
                    match self.approvals.store.consume(&key, self.clock.now_ms()) {
                        Ok(found) => approved = found,
                        Err(e) => return unavailable(e),
                    }
                }
                Status::Denied(d) => {
                    let held_back = HeldBack::Denied {
                        request_id: &request.id,
                        decided: d,
                    };
                    self.audit_approval(
                        &ctx,
                        &tool,
                        &arguments,
                        "approval_denied",
                        &new.rule,
                        Some(held_back.text(&tool)),
                        received,
                        new.server.as_deref(),
                    );
                    return GateOutcome::Answer(held_back.tool_result(&tool));
                }
                _ => {}
            }
            if approved.is_none() {
                let held_back = HeldBack::Pending {
                    request: &request,
                    reason: &new.reason,
                    rule: &new.rule,
                };
                self.audit_approval(
                    &ctx,
                    &tool,
                    &arguments,
                    "approval_pending",
                    &new.rule,
                    Some(held_back.text(&tool)),
                    received,
                    new.server.as_deref(),
                );
                return GateOutcome::Answer(held_back.tool_result(&tool));
            }
        }
        let approved = approved.expect("checked above");
        // Approved: the call runs now, and only now takes its quota.
        let draws = plan.draws.clone();
        let result = if draws.is_empty() {
            Ok(Default::default())
        } else {
            self.store.acquire_async(draws, self.clock.now_ms()).await
        };
        let decision = plan.conclude(result);
        let Decision::Allow { grant: taken, .. } = &decision else {
            self.audit_refusal(
                &ctx,
                &tool,
                &decision,
                &arguments,
                received,
                new.server.as_deref(),
            );
            let answer = refusal(&Value::Null, &tool, &decision, ctx.era).expect("not an allow");
            return GateOutcome::Answer(answer["result"].clone());
        };
        let taken = taken.clone();
        let mut record = self.record(
            &ctx,
            &tool,
            &decision,
            &arguments,
            received,
            new.server.as_deref(),
        );
        if let Some(record) = &mut record {
            record.reason = Some(match &approved.status {
                Status::Used { decided, .. } => format!(
                    "approved by {} via {} (approval request {})",
                    decided.by,
                    decided.via.as_str(),
                    approved.id
                ),
                _ => format!("approval request {}", approved.id),
            });
        }
        GateOutcome::Proceed(Some(call_done(self.clone(), taken, record, received)))
    }

    /// Asks the client's user through elicitation; `Some(true)` accept,
    /// `Some(false)` decline or cancel, `None` when the client could not be asked.
    pub(crate) async fn ask_client(
        &self,
        link: &Arc<ClientLink>,
        request: &ApprovalRequest,
        new: &NewRequest,
    ) -> Option<bool> {
        let params = approval_question(new, request);
        match link
            .request("elicitation/create".into(), Some(params))
            .await
        {
            Ok(result) => Some(result.get("action").and_then(Value::as_str) == Some("accept")),
            Err(_) => None,
        }
    }

    /// Waits up to `hold_ms` for an approver's decision.
    pub(crate) async fn hold(
        &self,
        request: &ApprovalRequest,
        hold_ms: u64,
    ) -> Result<ApprovalRequest, toolgate_approvals::ApprovalError> {
        let deadline = Instant::now() + Duration::from_millis(hold_ms);
        let mut current = request.clone();
        while current.status == Status::Pending && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(r) = self.approvals.store.get(&request.id)? {
                current = r;
            }
        }
        Ok(current)
    }

    /// The live approval request for a held call, or a new one: a new
    /// request is announced (webhook) and put in the audit trail.
    pub(crate) fn open_request(
        &self,
        ctx: &Context,
        new: &NewRequest,
        now: u64,
        received: Instant,
    ) -> Result<ApprovalRequest, toolgate_approvals::ApprovalError> {
        let request = self.approvals.store.request(new, now)?;
        if request.created_ms == now && request.status == Status::Pending {
            self.approvals.events.requested(&request);
            self.audit_approval(
                ctx,
                &new.tool,
                &new.arguments,
                "approval_requested",
                &new.rule,
                Some(format!(
                    "approval request {} (expires {})",
                    request.id,
                    rfc3339(request.expires_ms)
                )),
                received,
                new.server.as_deref(),
            );
        }
        Ok(request)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit_approval(
        &self,
        ctx: &Context,
        tool: &str,
        arguments: &Value,
        kind: &'static str,
        rule: &str,
        reason: Option<String>,
        received: Instant,
        server: Option<&str>,
    ) {
        if let Some(record) = self.call_record(ctx, tool, arguments, received, server) {
            self.audit.record(Record {
                decision: kind,
                rule: rule.to_string(),
                reason,
                ..record
            });
        }
    }
}

/// Puts approval decisions made outside the gateway (admin API, webhook) in
/// the audit trail: who decided, how, when.
pub struct AuditApprovals(pub AuditSink);

impl ApprovalEvents for AuditApprovals {
    fn requested(&self, _: &ApprovalRequest) {}

    fn decided(&self, request: &ApprovalRequest) {
        if !self.0.enabled() {
            return;
        }
        let (kind, decided) = match &request.status {
            Status::Approved(d) => ("approved", d),
            Status::Denied(d) => ("approval_denied", d),
            _ => return,
        };
        let reason = format!(
            "approval request {} {} by {} via {}{}",
            request.id,
            if kind == "approved" {
                "approved"
            } else {
                "denied"
            },
            decided.by,
            decided.via.as_str(),
            decided
                .reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        self.0.record(Record {
            time: decided.at_ms,
            grant: request.grant.clone(),
            session: String::new(),
            server: request.server.clone(),
            tool: request.tool.clone(),
            decision: kind,
            rule: request.rule.clone(),
            reason: Some(reason),
            counters: Vec::new(),
            decision_us: 0.0,
            latency_ms: None,
            outcome: Outcome::Refused,
            args_sha256: args_sha256(&request.arguments),
            args: None,
            trace: None,
            intent: None,
        });
    }
}

impl Gateway {
    /// The 2026-07-28 way to ask the client's user: the first call gets an
    /// input-required result carrying the elicitation; the retry carries the
    /// answer (and the approval request's id in `requestState`). The answer
    /// decides only the request of this very call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn input_required_round(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        server: usize,
        original: &str,
        mut params: Value,
        new: NewRequest,
        received: Instant,
    ) -> Reply {
        let now = self.clock.now_ms();
        let key = call_key(&new.grant, new.server.as_deref(), &new.tool, &new.arguments);
        let state = params
            .get("requestState")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix(APPROVAL_STATE))
            .map(str::to_string);
        let action = params
            .pointer(&format!("/inputResponses/{APPROVAL_INPUT}/action"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let answer_result =
            |result: Value| Reply::Json(self.answer(ctx, id, "tools/call", Ok(result)));
        if let (Some(request_id), Some(action)) = (state, action) {
            let request = match self.approvals.store.get(&request_id) {
                Ok(Some(r)) if r.key == key => r,
                Ok(_) => return answer_result(HeldBack::ForeignAnswer.tool_result(&new.tool)),
                Err(e) => {
                    return answer_result(
                        HeldBack::StateUnavailable {
                            why: &e.to_string(),
                        }
                        .tool_result(&new.tool),
                    )
                }
            };
            // Decided before (by an approver): that decision stands.
            let decided = decide_by_client_user(
                &*self.approvals.store,
                &*self.approvals.events,
                &request,
                action == "accept",
                &new.grant,
                now,
            )
            .unwrap_or(request);
            if let Status::Denied(d) = &decided.status {
                let held_back = HeldBack::Denied {
                    request_id: &decided.id,
                    decided: d,
                };
                self.audit_approval(
                    ctx,
                    &new.tool,
                    &new.arguments,
                    "approval_denied",
                    &new.rule,
                    Some(held_back.text(&new.tool)),
                    received,
                    new.server.as_deref(),
                );
                return answer_result(held_back.tool_result(&new.tool));
            }
            // Run (or refuse) as for any decided request; our fields do not go upstream.
            if let Value::Object(p) = &mut params {
                p.remove("requestState");
                if let Some(Value::Object(responses)) = p.get_mut("inputResponses") {
                    responses.remove(APPROVAL_INPUT);
                    if responses.is_empty() {
                        p.remove("inputResponses");
                    }
                }
            }
            let held = Held {
                key,
                new: new.clone(),
                approval: toolgate_policy::Approval {
                    via_client: false,
                    via_admin: false,
                    hold_ms: 0,
                    expires_ms: 0,
                },
                plan: match self.plan_of(ctx, server, &new) {
                    Some(plan) => plan,
                    None => return answer_result(HeldBack::NoLongerHeld.tool_result(&new.tool)),
                },
                ask_client: false,
                tool: new.tool.clone(),
                arguments: new.arguments.clone(),
                ctx: ctx.clone(),
                received,
            };
            let gateway = self.clone();
            let gate: Gate = Box::new(move |link| {
                Box::pin(async move { gateway.decide_held(link, held).await })
            });
            params["name"] = Value::String(original.to_string());
            return self
                .forward_gated(ctx, id, server, "tools/call", params, None, Some(gate))
                .await;
        }
        // First round: make (or find) the request and ask.
        let request = match self.open_request(ctx, &new, now, received) {
            Ok(r) => r,
            Err(e) => {
                return answer_result(
                    HeldBack::StateUnavailable {
                        why: &e.to_string(),
                    }
                    .tool_result(&new.tool),
                )
            }
        };
        Reply::Json(result_response(id, approval_input_required(&new, &request)))
    }

    /// The draws of a held call, planned again (for the retry of a round trip).
    pub(crate) fn plan_of(
        &self,
        ctx: &Context,
        server: usize,
        new: &NewRequest,
    ) -> Option<toolgate_policy::Plan> {
        let catalog = self.catalog();
        let entry = catalog.tool(&new.tool)?;
        let gateway_policy = self.gateway_policy(&ctx.caller);
        let server_policy = self.server_policy(server);
        let call = Call {
            tool: &new.tool,
            arguments: &new.arguments,
            arguments_text: None,
            grant: &ctx.caller.grant.name,
            session: &ctx.session.id,
        };
        let mut layers = Vec::with_capacity(2);
        if let Some(policy) = gateway_policy.as_deref() {
            layers.push(Layer {
                policy,
                call,
                key_prefix: "",
            });
        }
        if let Some(policy) = server_policy.as_deref() {
            layers.push(Layer {
                policy,
                call: Call {
                    tool: &entry.original,
                    ..call
                },
                key_prefix: &self.servers[server].key_prefix,
            });
        }
        match plan_layers(&layers) {
            Planned::Decided(Decision::ApprovalRequired { plan, .. }) => Some(plan),
            _ => None,
        }
    }
}
