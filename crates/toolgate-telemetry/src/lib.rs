//! toolgate's telemetry: Prometheus metrics and OpenTelemetry traces of
//! every `tools/call`, both built from the audit records on the audit
//! writer thread, never on the decision path.
//!
//! A tour of the crate:
//!
//! - `exposition`: the Prometheus text format 0.0.4 ([`Exposition`]).
//! - `metrics`: [`Metrics`], the families the gateway exposes, fed by
//!   records and rendered with what is live at scrape time ([`Live`]);
//!   the tool label is bounded.
//! - `trace_context`: the W3C `traceparent` ([`TraceParent`]), read
//!   strictly, and random span ids.
//! - `otlp`: [`Span`] and the OTLP `ExportTraceServiceRequest` built from
//!   opentelemetry-proto's messages, in protobuf (prost) and OTLP/JSON.
//! - `exporter`: [`Exporter`], a thread behind a bounded queue that POSTs
//!   batches to the collector (http or https); a full queue drops (and
//!   counts).
//! - `settings`: the OTLP settings and the standard `OTEL_*` variables.
//! - here: [`Observer`], the audit sink's `RecordObserver` that feeds the
//!   metrics and turns each call record into the gateway's span.
//!
//! Invariants: no async runtime and no IO but the exporter thread's
//! requests; nothing here blocks the thread that hands it a record (metrics
//! are a short lock, spans a `try_send`); a client's trace context is
//! trusted only when it is a valid version-00 `traceparent`.

#![forbid(unsafe_code)]

pub mod exporter;
pub mod exposition;
pub mod metrics;
pub mod otlp;
pub mod settings;
pub mod trace_context;

use std::sync::Arc;

pub use exporter::{ExportStats, Exporter};
pub use exposition::{Exposition, Kind, CONTENT_TYPE};
pub use metrics::{Live, Metrics};
pub use otlp::{AttrValue, Span, StatusCode};
pub use settings::{HttpUrl, OtlpSettings, Protocol};
pub use trace_context::TraceParent;

use toolgate_audit::{Outcome, Record, RecordObserver};

/// The longest tool name put in a span's name and attributes.
const MAX_TOOL_CHARS: usize = 256;

/// Feeds the metrics and the exporter from the audit records.
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub exporter: Option<Exporter>,
    pub ids: trace_context::Ids,
}

impl RecordObserver for Observer {
    fn observe(&mut self, record: &Record) {
        if !is_answer(record) {
            return;
        }
        self.metrics.observe(record);
        if let Some(exporter) = &self.exporter {
            if let Some(span) = span_of(record, self.metrics.default_server(), &mut self.ids) {
                exporter.send(span);
            }
        }
    }
}

/// Whether a record is the answer to a client's call: not an admin's
/// decision on an approval request (no trace), and not the event of an
/// approval request being opened (the same call has its own answer record,
/// `approval_pending`).
pub fn is_answer(record: &Record) -> bool {
    record.trace.is_some() && record.decision != "approval_requested"
}

/// The gateway's span of a call: its parent is the client's span when a
/// valid `traceparent` came, else it starts a trace. `None` when the
/// client's trace is not sampled (the parent decides, as OpenTelemetry's
/// default sampler does), or the record is not a call's.
pub fn span_of(
    record: &Record,
    default_server: &str,
    ids: &mut trace_context::Ids,
) -> Option<Span> {
    let trace = record.trace.as_deref()?;
    let parent = trace.traceparent.as_deref().and_then(TraceParent::parse);
    if parent.is_some_and(|p| !p.sampled()) {
        return None;
    }
    let tool: String = record.tool.chars().take(MAX_TOOL_CHARS).collect();
    let duration_ns = match record.latency_ms {
        Some(ms) => ms * 1e6,
        None => record.decision_us * 1e3,
    };
    let end = trace
        .start_unix_ns
        .saturating_add(duration_ns.max(0.0) as u64);
    let s = |v: &str| AttrValue::Str(v.to_string());
    let mut attributes = vec![
        ("mcp.method.name", s("tools/call")),
        ("gen_ai.operation.name", s("execute_tool")),
        ("gen_ai.tool.name", s(&tool)),
    ];
    if !record.session.is_empty() {
        attributes.push(("mcp.session.id", s(&record.session)));
    }
    if let Some(version) = &trace.protocol_version {
        attributes.push(("mcp.protocol.version", s(version)));
    }
    attributes.push(("toolgate.grant", s(&record.grant)));
    attributes.push((
        "toolgate.server",
        s(record.server.as_deref().unwrap_or(default_server)),
    ));
    attributes.push(("toolgate.decision", s(record.decision)));
    attributes.push(("toolgate.rule", s(&record.rule)));
    let outcome = match record.outcome {
        Outcome::Refused => "refused",
        Outcome::Ok => "ok",
        Outcome::Error => "error",
        Outcome::NoResponse => "no_response",
    };
    attributes.push(("toolgate.outcome", s(outcome)));
    attributes.push((
        "toolgate.decision_us",
        AttrValue::Double((record.decision_us * 1000.0).round() / 1000.0),
    ));
    let (status, message) = match record.outcome {
        Outcome::Error => {
            attributes.push(("error.type", s("tool_error")));
            (
                StatusCode::Error,
                Some("the server answered with an error".to_string()),
            )
        }
        Outcome::NoResponse => {
            attributes.push(("error.type", s("no_response")));
            (
                StatusCode::Error,
                Some("the server did not answer".to_string()),
            )
        }
        Outcome::Ok | Outcome::Refused => (StatusCode::Unset, None),
    };
    Some(Span {
        trace_id: parent.map_or_else(|| ids.trace_id(), |p| p.trace_id),
        span_id: ids.span_id(),
        parent_span_id: parent.map(|p| p.parent_id),
        trace_state: parent
            .and(trace.tracestate.as_deref())
            .and_then(trace_context::tracestate),
        name: format!("tools/call {tool}"),
        kind: otlp::KIND_SERVER,
        start_unix_ns: trace.start_unix_ns,
        end_unix_ns: end,
        attributes,
        status,
        status_message: message,
        flags: parent.map_or(trace_context::SAMPLED, |p| p.flags),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_context::Ids;
    use toolgate_audit::CallTrace;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn record(traceparent: Option<&str>, outcome: Outcome) -> Record {
        Record {
            grant: "g".into(),
            session: "s1".into(),
            rule: "tools.echo".into(),
            decision_us: 4.0,
            latency_ms: Some(2.0),
            trace: Some(Box::new(CallTrace {
                traceparent: traceparent.map(str::to_string),
                tracestate: Some("k=v".into()),
                start_unix_ns: 1_000,
                protocol_version: Some("2025-11-25".into()),
            })),
            ..Record::new("echo", "allow", outcome)
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AttrValue> {
        span.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    #[test]
    fn a_valid_parent_is_joined() {
        let span = span_of(&record(Some(PARENT), Outcome::Ok), "srv", &mut Ids::new()).unwrap();
        let parent = TraceParent::parse(PARENT).unwrap();
        assert_eq!(span.trace_id, parent.trace_id);
        assert_eq!(span.parent_span_id, Some(parent.parent_id));
        assert_ne!(span.span_id, parent.parent_id);
        assert_eq!(span.trace_state.as_deref(), Some("k=v"));
        assert_eq!(span.name, "tools/call echo");
        assert_eq!((span.start_unix_ns, span.end_unix_ns), (1_000, 2_001_000));
        assert_eq!(span.status, StatusCode::Unset);
        assert_eq!(
            attr(&span, "toolgate.server"),
            Some(&AttrValue::Str("srv".into()))
        );
        assert_eq!(
            attr(&span, "mcp.session.id"),
            Some(&AttrValue::Str("s1".into()))
        );
        assert_eq!(
            attr(&span, "mcp.protocol.version"),
            Some(&AttrValue::Str("2025-11-25".into()))
        );
    }

    #[test]
    fn no_or_a_bad_parent_starts_a_trace() {
        for tp in [
            None,
            Some("00-zz"),
            Some(&PARENT.replace("4bf9", "4BF9")[..]),
        ] {
            let span = span_of(&record(tp, Outcome::Ok), "srv", &mut Ids::new()).unwrap();
            assert_eq!(span.parent_span_id, None, "{tp:?}");
            assert_ne!(span.trace_id, TraceParent::parse(PARENT).unwrap().trace_id);
            assert_eq!(span.trace_state, None, "no tracestate without a parent");
        }
    }

    #[test]
    fn an_unsampled_parent_is_respected() {
        let unsampled = PARENT.replace("-01", "-00");
        assert!(span_of(
            &record(Some(&unsampled), Outcome::Ok),
            "srv",
            &mut Ids::new()
        )
        .is_none());
    }

    #[test]
    fn upstream_failures_are_errors() {
        for outcome in [Outcome::Error, Outcome::NoResponse] {
            let span = span_of(&record(None, outcome), "srv", &mut Ids::new()).unwrap();
            assert_eq!(span.status, StatusCode::Error);
        }
        let refused = Record {
            latency_ms: None,
            decision: "deny",
            ..record(None, Outcome::Refused)
        };
        let span = span_of(&refused, "srv", &mut Ids::new()).unwrap();
        assert_eq!(span.status, StatusCode::Unset);
        assert_eq!(span.end_unix_ns, 5_000);
        assert!(span_of(
            &Record {
                trace: None,
                ..refused.clone()
            },
            "srv",
            &mut Ids::new()
        )
        .is_none());
        assert!(is_answer(&refused));
        assert!(!is_answer(&Record {
            trace: None,
            ..refused.clone()
        }));
        assert!(!is_answer(&Record {
            decision: "approval_requested",
            ..refused
        }));
    }
}
