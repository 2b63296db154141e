//! `tools/call`: the decision against every policy that applies (the
//! grant's or the gateway's over gateway names, the server's own over its
//! names), the quota it takes and gives back, and its audit record.

use crate::forward::OnDone;
use crate::gateway::Context;
use crate::gateway::Gateway;
use crate::gateway::Reply;
use crate::rounds::Relayed;
use crate::router::foreign_state;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use toolgate_audit::{Outcome, Record};
use toolgate_call::answer::HeldBack;
use toolgate_call::record::{CallFacts, TraceContext};
use toolgate_call::verdict::{refuse, verdict, Verdict};
use toolgate_jsonrpc::{args_sha256, error_response, INVALID_PARAMS};
use toolgate_policy::{plan_layers, Call, Decision, Grant, Layer, Planned};
use toolgate_upstream::{Answer, CallError};

impl Gateway {
    /// `relayed`: the call a retry continues (its sealed `requestState`).
    pub(crate) async fn call_tool(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        params: Value,
        relayed: Option<Box<Relayed>>,
    ) -> Reply {
        let received = toolgate_clock::monotonic_now();
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Reply::Json(error_response(
                id,
                INVALID_PARAMS,
                "Invalid params: tools/call needs a name",
                None,
            ));
        };
        // Borrowed, not copied: the call's params go upstream as they are.
        let arguments = params.get("arguments").unwrap_or(&Value::Null);
        if !(arguments.is_object() || arguments.is_null()) {
            return Reply::Json(error_response(
                id,
                INVALID_PARAMS,
                "Invalid params: params.arguments must be an object",
                None,
            ));
        }
        let catalog = self.catalog_for(ctx.era);
        let Some(entry) = catalog
            .tool(name)
            .filter(|e| self.may_reach(&ctx.caller, e.server))
        else {
            let unknown = Decision::Unknown {
                rule: unknown_rule(),
            };
            let call = self.call_facts(ctx, name, arguments, received, None);
            return Reply::Json(refuse(
                &self.audit,
                &*self.clock,
                &call,
                &unknown,
                id,
                ctx.era,
            ));
        };
        let server = &self.servers[entry.server];
        if let Some(relayed) = &relayed {
            let same_call = relayed.grant == ctx.caller.grant.name
                && relayed.server == server.name
                && relayed.tool == entry.original
                && relayed.args == args_sha256(arguments)
                && relayed.expires >= self.clock.now_ms();
            // Taken once: a replay would reach the server again, uncounted.
            if !same_call || !self.calls.spent.take(relayed, self.clock.now_ms()) {
                return Reply::Json(foreign_state(id));
            }
        }
        if self.is_held_back(entry.server, &entry.original) {
            let held_back = HeldBack::PinChanged {
                server: &server.name,
                tool: &entry.original,
            };
            return Reply::Json(self.answer(
                ctx,
                id,
                "tools/call",
                Ok(held_back.tool_result(name)),
            ));
        }
        let now = self.clock.now_ms();
        let gateway_policy = self.gateway_policy(&ctx.caller);
        let server_policy = self.server_policy(entry.server);
        let gateway_call = Call {
            tool: name,
            arguments,
            arguments_text: ctx.arguments_text.as_deref(),
            grant: &ctx.caller.grant.name,
            session: &ctx.session.id,
        };
        let layers = layers(
            gateway_policy.as_deref(),
            server_policy.as_deref(),
            gateway_call,
            &entry.original,
            &server.key_prefix,
        );
        let decision = if layers.is_empty() {
            // Configuration guarantees a policy for every server; fail closed anyway.
            Decision::Unknown {
                rule: unknown_rule(),
            }
        } else {
            match plan_layers(&layers) {
                Planned::Decided(decision) => decision,
                // A retry was counted when the call began.
                Planned::Draw(plan) if plan.draws.is_empty() || relayed.is_some() => {
                    plan.conclude(Ok(Default::default()))
                }
                Planned::Draw(plan) => {
                    let draws = plan.draws.clone();
                    let result = self.store.acquire_async(draws, now).await;
                    plan.conclude(result)
                }
            }
        };
        if let Some(relayed) = relayed {
            // Checked again (a tool denied or hidden since stays refused), but
            // neither counted nor audited again; an approval was given when
            // the call began.
            if !matches!(
                decision,
                Decision::Allow { .. } | Decision::ApprovalRequired { .. }
            ) {
                return self.refuse(ctx, id, name, &decision, arguments, received, &server.name);
            }
            let mut upstream_params = params;
            upstream_params["name"] = Value::String(entry.original.clone());
            if let Value::Object(p) = &mut upstream_params {
                match relayed.state {
                    Some(state) => p.insert("requestState".into(), Value::String(state)),
                    None => p.remove("requestState"),
                };
            }
            return self
                .forward(ctx, id, entry.server, "tools/call", upstream_params, None)
                .await;
        }
        let call = self.call_facts(ctx, name, arguments, received, Some(&server.name));
        let (taken, record) =
            match verdict(&self.audit, &*self.clock, &call, decision, id, || ctx.era) {
                Verdict::Forward { taken, record } => (taken, record),
                Verdict::Answer(answer) => return Reply::Json(answer),
                Verdict::Hold(decision) => {
                    return self
                        .held_call(
                            ctx,
                            id,
                            entry.server,
                            &entry.original,
                            name,
                            params.clone(),
                            arguments.clone(),
                            decision,
                            received,
                        )
                        .await
                }
            };
        let mut upstream_params = params;
        upstream_params["name"] = Value::String(entry.original.clone());
        let on_done = call_done(self.clone(), taken, record, received);
        self.forward(
            ctx,
            id,
            entry.server,
            "tools/call",
            upstream_params,
            Some(on_done),
        )
        .await
    }

    /// What the audit record of a call needs to know about it.
    pub(crate) fn call_facts<'a>(
        &self,
        ctx: &'a Context,
        tool: &'a str,
        arguments: &'a Value,
        received: Instant,
        server: Option<&'a str>,
    ) -> CallFacts<'a> {
        CallFacts {
            server,
            trace: TraceContext::Known(
                ctx.trace
                    .as_ref()
                    .map(|(traceparent, tracestate)| (traceparent.as_str(), tracestate.as_deref())),
            ),
            protocol_version: Some(&ctx.session.version),
            keep_args: self.audit_args,
            ..CallFacts::new(
                &ctx.caller.grant.name,
                &ctx.session.id,
                tool,
                arguments,
                received,
            )
        }
    }

    /// Audits a refused call and answers it with the refusal.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn refuse(
        &self,
        ctx: &Context,
        id: &Value,
        name: &str,
        decision: &Decision,
        arguments: &Value,
        received: Instant,
        server: &str,
    ) -> Reply {
        let call = self.call_facts(ctx, name, arguments, received, Some(server));
        Reply::Json(refuse(
            &self.audit,
            &*self.clock,
            &call,
            decision,
            id,
            ctx.era,
        ))
    }
}

/// The policies that decide a call: the grant's (or the gateway's) over the
/// gateway's name for the tool, and the server's own over its `original`
/// name, its counters under `key_prefix`.
pub(crate) fn layers<'a>(
    gateway_policy: Option<&'a toolgate_policy::Policy>,
    server_policy: Option<&'a toolgate_policy::Policy>,
    call: Call<'a>,
    original: &'a str,
    key_prefix: &'a str,
) -> Vec<Layer<'a>> {
    let mut layers = Vec::with_capacity(2);
    if let Some(policy) = gateway_policy {
        layers.push(Layer {
            policy,
            call,
            key_prefix: "",
        });
    }
    if let Some(policy) = server_policy {
        layers.push(Layer {
            policy,
            call: Call {
                tool: original,
                ..call
            },
            key_prefix,
        });
    }
    layers
}

pub(crate) fn unknown_rule() -> toolgate_policy::RuleRef {
    // The rule named for calls to tools no server offers.
    toolgate_policy::RuleRef::from_static("unknown")
}

/// What happens when a forwarded `tools/call` is answered: only a JSON-RPC
/// error says the call did not happen, so only then does its quota go back (a
/// lost connection may have lost only the answer: fail closed); the audit
/// record gets the outcome and the latency.
pub(crate) fn call_done(
    gateway: Arc<Gateway>,
    taken: Grant,
    record: Option<Record>,
    received: Instant,
) -> OnDone {
    // Durable before the call is forwarded (it is, once this returns).
    let record = record.map(|r| gateway.audit.intend(r));
    Box::new(move |result: &Result<Answer, CallError>| {
        if matches!(result, Err(CallError::Rpc(_))) {
            gateway.store.release(&taken);
        }
        if let Some(mut record) = record {
            record.outcome = match result {
                Ok(_) => Outcome::Ok,
                Err(CallError::Rpc(_)) => Outcome::Error,
                Err(_) => Outcome::NoResponse,
            };
            record.latency_ms = Some(received.elapsed().as_secs_f64() * 1e3);
            gateway.audit.record(record);
        }
    })
}
