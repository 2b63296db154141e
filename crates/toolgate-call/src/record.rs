//! The audit record of a decision about a call, built in one place for both
//! gateways from the facts each knows about the call ([`CallFacts`]).

use serde_json::Value;
use std::time::Instant;
use toolgate_audit::{decision_facts, AuditSink, CallTrace, Outcome, Record};
use toolgate_clock::Clock;
use toolgate_jsonrpc::args_sha256;
use toolgate_policy::Decision;

/// Where a call's trace context comes from.
#[derive(Debug, Clone, Copy)]
pub enum TraceContext<'a> {
    /// The call's `_meta` as raw JSON text (`toolgate run`), read only as far
    /// as `traceparent` and `tracestate`, and only when a record is built.
    Meta(Option<&'a str>),
    /// Read already (`toolgate serve`: the HTTP headers, else `_meta`):
    /// `traceparent` and its `tracestate`.
    Known(Option<(&'a str, Option<&'a str>)>),
}

/// What a gateway knows about a call, for its audit records.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub received: Instant,
    /// The tool as the client named it.
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub grant: &'a str,
    pub session: &'a str,
    /// The upstream server's name (`None` in `toolgate run`, which has one).
    pub server: Option<&'a str>,
    pub trace: TraceContext<'a>,
    /// The call's MCP protocol version, when the gateway knows it.
    pub protocol_version: Option<&'a str>,
    /// The raw arguments go in the record (`--audit-args`).
    pub keep_args: bool,
}

impl<'a> CallFacts<'a> {
    /// A call by `grant` in `session`: no server named, no trace context or
    /// protocol version known, its raw arguments not kept.
    pub fn new(
        grant: &'a str,
        session: &'a str,
        tool: &'a str,
        arguments: &'a Value,
        received: Instant,
    ) -> Self {
        CallFacts {
            received,
            tool,
            arguments,
            grant,
            session,
            server: None,
            trace: TraceContext::Known(None),
            protocol_version: None,
            keep_args: false,
        }
    }
}

/// The audit record of a call under `kind`, `rule` and `reason`; `None` when
/// nothing would receive it (then neither the record is built nor the
/// arguments hashed).
pub fn call_record(
    sink: &AuditSink,
    clock: &dyn Clock,
    call: &CallFacts<'_>,
    kind: &'static str,
    rule: String,
    reason: Option<String>,
) -> Option<Record> {
    sink.enabled().then(|| Record {
        time: clock.now_ms(),
        grant: call.grant.to_owned(),
        session: call.session.to_owned(),
        server: call.server.map(str::to_owned),
        tool: call.tool.to_owned(),
        decision: kind,
        rule,
        reason,
        counters: Vec::new(),
        decision_us: call.received.elapsed().as_secs_f64() * 1e6,
        latency_ms: None,
        outcome: Outcome::Refused,
        // Only the audit trail reads the hash: metrics and traces alone skip it.
        args_sha256: if sink.keeps_records() {
            args_sha256(call.arguments)
        } else {
            String::new()
        },
        args: call.keep_args.then(|| call.arguments.clone()),
        trace: Some(Box::new(call_trace(call))),
        intent: None,
    })
}

/// [`call_record`] with the facts of a policy decision; an allowed call's
/// record names the counters it took.
pub fn decision_record(
    sink: &AuditSink,
    clock: &dyn Clock,
    call: &CallFacts<'_>,
    decision: &Decision,
) -> Option<Record> {
    let (kind, rule, reason) = decision_facts(decision);
    let mut record = call_record(sink, clock, call, kind, rule, reason)?;
    if let Decision::Allow { grant, .. } = decision {
        record.counters = grant.taken.clone();
    }
    Some(record)
}

/// Puts the record of a decision in the audit trail (a refusal: the record
/// of an allowed call is kept until the call is answered).
pub fn audit_decision(
    sink: &AuditSink,
    clock: &dyn Clock,
    call: &CallFacts<'_>,
    decision: &Decision,
) {
    if let Some(record) = decision_record(sink, clock, call, decision) {
        sink.record(record);
    }
}

/// The trace span facts of a call.
fn call_trace(call: &CallFacts<'_>) -> CallTrace {
    let (traceparent, tracestate) = match call.trace {
        TraceContext::Meta(meta) => trace_of_meta(meta),
        TraceContext::Known(known) => (
            known.map(|(tp, _)| tp.to_owned()),
            known.and_then(|(_, ts)| ts.map(str::to_owned)),
        ),
    };
    CallTrace {
        traceparent,
        tracestate,
        protocol_version: call.protocol_version.map(str::to_owned),
        ..CallTrace::received_at(call.received)
    }
}

/// `traceparent` and `tracestate` from a call's `_meta` (raw JSON).
fn trace_of_meta(meta: Option<&str>) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct TraceMeta {
        #[serde(default)]
        traceparent: Option<String>,
        #[serde(default)]
        tracestate: Option<String>,
    }
    let found = meta.and_then(|m| serde_json::from_str::<TraceMeta>(m).ok());
    (
        found.as_ref().and_then(|f| f.traceparent.clone()),
        found.and_then(|f| f.tracestate),
    )
}
