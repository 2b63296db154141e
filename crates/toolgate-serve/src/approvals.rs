//! `toolgate serve`'s side of a call a `require_approval` rule holds: the
//! flow itself is `toolgate_call::approval`; here the call is put through it
//! over HTTP (the question asked over the call's stream, or as an
//! input-required result in 2026-07-28), and approval decisions made outside
//! the gateway are put in the audit trail.

use crate::call::call_done;
use crate::forward::ClientLink;
use crate::forward::Gate;
use crate::forward::GateOutcome;
use crate::gateway::Context;
use crate::gateway::Gateway;
use crate::gateway::Reply;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use toolgate_approvals::{ApprovalEvents, ApprovalRequest, ApprovalStore, Status};
use toolgate_audit::{AuditSink, Outcome, Record};
use toolgate_call::answer::{Era, APPROVAL_INPUT, APPROVAL_STATE};
use toolgate_call::approval::{self, Approvers, AskClient, Flow, Refusal, Round, TokioSleep};
use toolgate_jsonrpc::{args_sha256, result_response};
use toolgate_policy::{plan_layers, BoxFuture, Call, Decision, Planned};
use toolgate_upstream::Downstream;

/// Where approval requests are kept, and who is told of them.
pub(crate) struct Approvals {
    pub(crate) store: Arc<dyn ApprovalStore>,
    pub(crate) events: Arc<dyn ApprovalEvents>,
}

/// A held call, with what it needs to go ahead once approved.
pub(crate) struct Held {
    pub(crate) server: String,
    pub(crate) rule: String,
    pub(crate) reason: String,
    pub(crate) approval: toolgate_policy::Approval,
    pub(crate) plan: toolgate_policy::Plan,
    pub(crate) approvers: Approvers,
    /// The client's user can be asked (elicitation over the call's stream).
    pub(crate) ask_client: bool,
    pub(crate) tool: String,
    pub(crate) arguments: Value,
    pub(crate) ctx: Context,
    pub(crate) received: Instant,
}

/// Asks the client's user over the call's stream.
struct Elicit(Arc<ClientLink>);

impl AskClient for Elicit {
    fn ask<'a>(&'a self, _: &'a ApprovalRequest, question: Value) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            let answer = self
                .0
                .request("elicitation/create".into(), Some(question))
                .await;
            answer
                .ok()
                .map(|r| r.get("action").and_then(Value::as_str) == Some("accept"))
        })
    }
}

impl Gateway {
    /// The approval flow, on this gateway's stores, clock and audit sink.
    fn flow(&self) -> Flow<'_> {
        Flow {
            store: &*self.approvals.store,
            events: &*self.approvals.events,
            clock: &*self.clock,
            sleep: &TokioSleep,
            counters: &*self.store,
            audit: &self.audit,
        }
    }

    /// `held` as the approval flow reads it.
    fn held<'a>(&'a self, held: &'a Held) -> approval::Held<'a> {
        approval::Held {
            call: self.call_facts(
                &held.ctx,
                &held.tool,
                &held.arguments,
                held.received,
                Some(&held.server),
            ),
            server: Some(&held.server),
            rule: &held.rule,
            reason: &held.reason,
            approval: &held.approval,
            plan: &held.plan,
        }
    }

    /// The answer to a held call the flow answered before it went upstream.
    fn answer_held(&self, held: &Held, id: &Value, outcome: approval::Outcome) -> Reply {
        let result = match outcome {
            approval::Outcome::InputRequired(result) => {
                return Reply::Json(result_response(id, result))
            }
            approval::Outcome::Refused(refused) => refused.result(&held.tool, held.ctx.era),
            approval::Outcome::Run { .. } => unreachable!("only answers come here"),
        };
        Reply::Json(self.answer(&held.ctx, id, "tools/call", Ok(result)))
    }

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
        let elicitation = ctx.session.caps.get("elicitation").is_some();
        let mut held = Held {
            server: self.servers[server].name.clone(),
            rule: rule.to_string(),
            reason,
            approval,
            plan,
            approvers: Approvers::OfTheRule,
            ask_client: approval.via_client && ctx.era == Era::Handshake && elicitation,
            tool: name.to_string(),
            arguments,
            ctx: ctx.clone(),
            received,
        };
        let mut upstream_params = params;
        // 2026-07-28: no server-to-client requests; the question goes back as
        // an input-required result, and the answer comes with the retry.
        if approval.via_client && ctx.era == Era::Stateless && elicitation {
            let state = upstream_params
                .get("requestState")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix(APPROVAL_STATE));
            let action = upstream_params
                .pointer(&format!("/inputResponses/{APPROVAL_INPUT}/action"))
                .and_then(Value::as_str);
            let round = match (state, action) {
                (Some(request_id), Some(action)) => Round::Retry { request_id, action },
                _ => Round::First,
            };
            if let Some(answered) = self.flow().round(&self.held(&held), round) {
                return self.answer_held(&held, id, answered);
            }
            // The answer approved: run as for any decided request, planned
            // again; our fields do not go upstream.
            strip_round_trip(&mut upstream_params);
            held.plan = match self.plan_of(ctx, server, &held.tool, &held.arguments) {
                Some(plan) => plan,
                None => {
                    let refused = approval::Outcome::Refused(Refusal::NoLongerHeld);
                    return self.answer_held(&held, id, refused);
                }
            };
            held.approvers = Approvers::AnswerGiven;
        } else if let Some(refused) = self.flow().unaskable(&self.held(&held), held.ask_client) {
            return self.answer_held(&held, id, refused);
        }
        let gateway = self.clone();
        let gate: Gate =
            Box::new(move |link| Box::pin(async move { gateway.decide_held(link, held).await }));
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

    /// The held call on its way upstream: approved (or not) through the
    /// flow, asking the client over the call's stream.
    pub(crate) async fn decide_held(
        self: Arc<Self>,
        link: Arc<ClientLink>,
        held: Held,
    ) -> GateOutcome {
        let elicit = Elicit(link);
        let ask = held.ask_client.then_some(&elicit as &dyn AskClient);
        let outcome = self
            .flow()
            .hold(&self.held(&held), ask, held.approvers)
            .await;
        match outcome {
            approval::Outcome::Run { taken, record } => {
                GateOutcome::Proceed(Some(call_done(self.clone(), taken, record, held.received)))
            }
            approval::Outcome::Refused(refused) => {
                GateOutcome::Answer(refused.result(&held.tool, held.ctx.era))
            }
            approval::Outcome::InputRequired(result) => GateOutcome::Answer(result),
        }
    }
}

/// The call of a round-trip retry, without toolgate's `requestState` and its
/// entry in `inputResponses`: the server sees the call as the client first made it.
fn strip_round_trip(params: &mut Value) {
    if let Value::Object(p) = params {
        p.remove("requestState");
        if let Some(Value::Object(responses)) = p.get_mut("inputResponses") {
            responses.remove(APPROVAL_INPUT);
            if responses.is_empty() {
                p.remove("inputResponses");
            }
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
    /// The draws of a held call, planned again (for the retry of a round trip).
    pub(crate) fn plan_of(
        &self,
        ctx: &Context,
        server: usize,
        tool: &str,
        arguments: &Value,
    ) -> Option<toolgate_policy::Plan> {
        let catalog = self.catalog_for(ctx.era);
        let entry = catalog.tool(tool)?;
        let gateway_policy = self.gateway_policy(&ctx.caller);
        let server_policy = self.server_policy(server);
        let call = Call {
            tool,
            arguments,
            arguments_text: None,
            grant: &ctx.caller.grant.name,
            session: &ctx.session.id,
        };
        let layers = crate::call::layers(
            gateway_policy.as_deref(),
            server_policy.as_deref(),
            call,
            &entry.original,
            &self.servers[server].key_prefix,
        );
        match plan_layers(&layers) {
            Planned::Decided(Decision::ApprovalRequired { plan, .. }) => Some(plan),
            _ => None,
        }
    }
}
