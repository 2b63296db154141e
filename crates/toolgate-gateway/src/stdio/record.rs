//! The audit record of a decision about a call, and its trace context.

use super::*;

/// The audit record of a decision about a call; `None` when nothing would
/// receive it (then neither the record is built nor the arguments hashed).
#[allow(clippy::too_many_arguments)]
pub(super) fn call_record(
    shared: &Shared,
    tool: &str,
    arguments: &Value,
    kind: &'static str,
    rule: String,
    reason: Option<String>,
    received: Instant,
    meta: Option<&str>,
) -> Option<Record> {
    shared.audit.enabled().then(|| Record {
        time: shared.clock.now_ms(),
        grant: shared.grant.clone(),
        session: shared.session.clone(),
        server: None,
        tool: tool.to_owned(),
        decision: kind,
        rule,
        reason,
        counters: Vec::new(),
        decision_us: received.elapsed().as_secs_f64() * 1e6,
        latency_ms: None,
        outcome: Outcome::Refused,
        // Only the audit trail reads the hash: metrics and traces alone skip it.
        args_sha256: if shared.audit.keeps_records() {
            args_sha256(arguments)
        } else {
            String::new()
        },
        args: shared.audit_args.then(|| arguments.clone()),
        trace: Some(Box::new(call_trace(received, meta))),
        intent: None,
    })
}

/// The trace context in a call's `_meta` (raw JSON), read only as far as
/// `traceparent` and `tracestate`.
pub(super) fn call_trace(received: Instant, meta: Option<&str>) -> CallTrace {
    #[derive(serde::Deserialize)]
    struct TraceMeta {
        #[serde(default)]
        traceparent: Option<String>,
        #[serde(default)]
        tracestate: Option<String>,
    }
    let found = meta.and_then(|m| serde_json::from_str::<TraceMeta>(m).ok());
    CallTrace {
        traceparent: found.as_ref().and_then(|f| f.traceparent.clone()),
        tracestate: found.and_then(|f| f.tracestate),
        ..CallTrace::received_at(received)
    }
}

/// [`call_record`] with the facts of a policy decision.
pub(super) fn decision_record(
    shared: &Shared,
    tool: &str,
    arguments: &Value,
    decision: &Decision,
    received: Instant,
    meta: Option<&str>,
) -> Option<Record> {
    let (kind, rule, reason) = decision_facts(decision);
    call_record(shared, tool, arguments, kind, rule, reason, received, meta)
}
