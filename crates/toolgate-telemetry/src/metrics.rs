//! The metrics a gateway exposes, built from its audit records (on the
//! writer thread) and, at scrape time, from what is live (pending
//! approvals, upstream health, the exporter's counts).
//!
//! Label values come from the config and the policy (servers, grants,
//! counters, decisions) except the tool name, which a client chooses: a
//! call the gateway answered as an unknown tool is labelled `(unknown)`,
//! and past [`MAX_TOOLS`] distinct names further ones are `(other)` (and
//! counted in `toolgate_metrics_tools_folded_total`).

use crate::exposition::{Exposition, Kind};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use toolgate_audit::{Outcome, Record};

/// Distinct tool label values, at most.
pub const MAX_TOOLS: usize = 1000;
/// The tool label of a call answered as an unknown tool.
pub const UNKNOWN_TOOL: &str = "(unknown)";
/// The tool label past [`MAX_TOOLS`].
pub const OTHER_TOOL: &str = "(other)";

/// Buckets of the decision time (seconds): 5 µs to 100 ms.
pub const DECISION_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.1,
];
/// Buckets of the upstream time (seconds): 1 ms to 60 s.
pub const UPSTREAM_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    overflow: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            counts: vec![0; bounds.len()],
            overflow: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, bounds: &[f64], value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        match bounds.iter().position(|b| value <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.overflow += 1,
        }
        self.sum += value;
    }
}

#[derive(Debug, Default)]
struct State {
    /// (server, tool, grant, decision) → calls.
    calls: BTreeMap<[String; 4], u64>,
    /// (server, outcome) → forwarded calls.
    outcomes: BTreeMap<[String; 2], u64>,
    /// decision → decision time.
    decision: BTreeMap<String, Histogram>,
    /// server → upstream time.
    upstream: BTreeMap<String, Histogram>,
    /// (counter, grant) → (used, max) after the last admitted call.
    counters: BTreeMap<[String; 2], (f64, f64)>,
    tools: HashSet<String>,
    tools_folded: u64,
}

/// What is read at scrape time rather than from records.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Approval requests waiting for a decision (`None`: unknown, the
    /// store could not be read).
    pub approvals_pending: Option<u64>,
    /// Each upstream server and whether it is connected.
    pub upstreams: Vec<(String, bool)>,
    /// Spans: exported, dropped (queue full), lost to failed exports.
    pub spans: Option<(u64, u64, u64)>,
    /// Audit records dropped because the writer's queue stayed full
    /// (`--audit-when-full wait`); `None` when there is no audit trail.
    pub audit_dropped: Option<u64>,
}

/// The metrics of one gateway process.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
    /// The server label of records that name none (`toolgate run`).
    default_server: String,
}

impl Metrics {
    /// `default_server`: the server label of records that name no server
    /// (`toolgate run`'s one server).
    pub fn new(default_server: impl Into<String>) -> Metrics {
        Metrics {
            state: Mutex::default(),
            default_server: default_server.into(),
        }
    }

    /// The server label of records that name no server.
    pub fn default_server(&self) -> &str {
        &self.default_server
    }

    /// Counts one call record (records of calls only: see `Record::trace`).
    pub fn observe(&self, record: &Record) {
        let mut state = self.state.lock().expect("metrics lock");
        let server = record
            .server
            .clone()
            .unwrap_or_else(|| self.default_server.clone());
        let tool = tool_label(&mut state, record);
        *state
            .calls
            .entry([
                server.clone(),
                tool,
                record.grant.clone(),
                record.decision.to_string(),
            ])
            .or_default() += 1;
        state
            .decision
            .entry(record.decision.to_string())
            .or_insert_with(|| Histogram::new(DECISION_BUCKETS))
            .observe(DECISION_BUCKETS, record.decision_us / 1e6);
        if let Some(latency_ms) = record.latency_ms {
            let outcome = match record.outcome {
                Outcome::Ok => "ok",
                Outcome::Error => "error",
                Outcome::NoResponse => "no_response",
                Outcome::Refused => "refused",
            };
            *state
                .outcomes
                .entry([server.clone(), outcome.to_string()])
                .or_default() += 1;
            let upstream_s = latency_ms / 1e3 - record.decision_us / 1e6;
            state
                .upstream
                .entry(server)
                .or_insert_with(|| Histogram::new(UPSTREAM_BUCKETS))
                .observe(UPSTREAM_BUCKETS, upstream_s);
        }
        for taken in &record.counters {
            state.counters.insert(
                [taken.counter.clone(), record.grant.clone()],
                (taken.used, taken.max),
            );
        }
    }

    /// The exposition: every family, in a fixed order.
    pub fn render(&self, live: &Live) -> String {
        let state = self.state.lock().expect("metrics lock");
        let mut e = Exposition::new();
        family(
            &mut e,
            (
                "toolgate_build_info",
                "The toolgate version serving; always 1.",
            ),
            Kind::Gauge,
            ["version"],
            [([env!("CARGO_PKG_VERSION")], 1.0)],
        );
        family(
            &mut e,
            (
                "toolgate_tool_calls_total",
                "tools/call requests answered, by server, tool, grant and decision.",
            ),
            Kind::Counter,
            ["server", "tool", "grant", "decision"],
            state
                .calls
                .iter()
                .map(|(labels, n)| (labels.each_ref().map(String::as_str), *n as f64)),
        );
        family(
            &mut e,
            (
                "toolgate_upstream_calls_total",
                "Allowed calls forwarded to a server, by server and outcome (ok, error, no_response).",
            ),
            Kind::Counter,
            ["server", "outcome"],
            state
                .outcomes
                .iter()
                .map(|(labels, n)| (labels.each_ref().map(String::as_str), *n as f64)),
        );
        histograms(
            &mut e,
            (
                "toolgate_decision_duration_seconds",
                "Time from receiving a tools/call to its decision (policy, counters), by decision.",
            ),
            "decision",
            DECISION_BUCKETS,
            &state.decision,
        );
        histograms(
            &mut e,
            (
                "toolgate_upstream_duration_seconds",
                "Time from the decision to the server's answer, for forwarded calls, by server.",
            ),
            "server",
            UPSTREAM_BUCKETS,
            &state.upstream,
        );
        family(
            &mut e,
            (
                "toolgate_counter_used",
                "Units in a policy counter's window after the last call admitted, by counter and grant.",
            ),
            Kind::Gauge,
            ["counter", "grant"],
            state
                .counters
                .iter()
                .map(|(labels, (used, _))| (labels.each_ref().map(String::as_str), *used)),
        );
        family(
            &mut e,
            (
                "toolgate_counter_limit",
                "A policy counter's max per window, by counter and grant.",
            ),
            Kind::Gauge,
            ["counter", "grant"],
            state
                .counters
                .iter()
                .map(|(labels, (_, max))| (labels.each_ref().map(String::as_str), *max)),
        );
        if let Some(pending) = live.approvals_pending {
            family(
                &mut e,
                (
                    "toolgate_approvals_pending",
                    "Approval requests waiting for a decision.",
                ),
                Kind::Gauge,
                [],
                [([], pending as f64)],
            );
        }
        family(
            &mut e,
            (
                "toolgate_upstream_up",
                "Whether an upstream server is connected (1) or not (0).",
            ),
            Kind::Gauge,
            ["server"],
            live.upstreams
                .iter()
                .map(|(server, up)| ([server.as_str()], f64::from(u8::from(*up)))),
        );
        family(
            &mut e,
            (
                "toolgate_metrics_tools_folded_total",
                "Calls whose tool label was folded into \"(other)\" (more distinct tool names than the cap).",
            ),
            Kind::Counter,
            [],
            [([], state.tools_folded as f64)],
        );

        let (exported, dropped, failed) = live.spans.unwrap_or_default();
        for (name, help, value) in [
            (
                "toolgate_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
                exported,
            ),
            (
                "toolgate_trace_spans_dropped_total",
                "Spans dropped because the export queue was full.",
                dropped,
            ),
            (
                "toolgate_trace_spans_failed_total",
                "Spans lost to failed exports (collector unreachable or refusing).",
                failed,
            ),
        ] {
            e.family(name, help, Kind::Counter);
            e.sample(name, &[], value as f64);
        }
        if let Some(dropped) = live.audit_dropped {
            let name = "toolgate_audit_records_dropped_total";
            e.family(
                name,
                "Audit records dropped because the audit writer's queue stayed full (--audit-when-full wait).",
                Kind::Counter,
            );
            e.sample(name, &[], dropped as f64);
        }
        e.finish()
    }
}

/// A family (`name`, `help`) of `kind` and its samples: each the values of
/// `labels`, in order, and the sample's value.
fn family<'a, const N: usize>(
    e: &mut Exposition,
    (name, help): (&str, &str),
    kind: Kind,
    labels: [&str; N],
    samples: impl IntoIterator<Item = ([&'a str; N], f64)>,
) {
    e.family(name, help, kind);
    for (values, value) in samples {
        let pairs: [(&str, &str); N] = std::array::from_fn(|i| (labels[i], values[i]));
        e.sample(name, &pairs, value);
    }
}

/// A histogram family (`name`, `help`): one series per value of `label`.
fn histograms(
    e: &mut Exposition,
    (name, help): (&str, &str),
    label: &str,
    bounds: &[f64],
    series: &BTreeMap<String, Histogram>,
) {
    e.family(name, help, Kind::Histogram);
    for (value, h) in series {
        e.histogram(
            name,
            &[(label, value)],
            bounds,
            &h.counts,
            h.overflow,
            h.sum,
        );
    }
}

/// The tool label of a record: `(unknown)` for calls answered as unknown
/// tools, the name while fewer than [`MAX_TOOLS`] names have been seen,
/// else `(other)`.
fn tool_label(state: &mut State, record: &Record) -> String {
    if record.decision == "unknown" {
        return UNKNOWN_TOOL.to_string();
    }
    if state.tools.contains(&record.tool) {
        return record.tool.clone();
    }
    if state.tools.len() < MAX_TOOLS {
        state.tools.insert(record.tool.clone());
        return record.tool.clone();
    }
    state.tools_folded += 1;
    OTHER_TOOL.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_policy::Taken;

    fn record(tool: &str, decision: &'static str) -> Record {
        Record {
            grant: "g".into(),
            session: "s".into(),
            server: Some("srv".into()),
            rule: "r".into(),
            decision_us: 12.0,
            ..Record::new(tool, decision, Outcome::Refused)
        }
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn calls_histograms_and_counters() {
        let m = Metrics::new("one");
        m.observe(&record("a", "deny"));
        let mut allowed = Record {
            latency_ms: Some(2.012),
            outcome: Outcome::Ok,
            counters: vec![Taken {
                key: "k".into(),
                counter: "c".into(),
                at: 0,
                cost: 1.0,
                used: 3.0,
                max: 5.0,
                window: Default::default(),
            }],
            ..record("a", "allow")
        };
        m.observe(&allowed);
        allowed.server = None;
        m.observe(&allowed);
        let text = m.render(&Live::default());
        assert_eq!(
            lines(&text, "toolgate_tool_calls_total{"),
            [
                "toolgate_tool_calls_total{server=\"one\",tool=\"a\",grant=\"g\",decision=\"allow\"} 1",
                "toolgate_tool_calls_total{server=\"srv\",tool=\"a\",grant=\"g\",decision=\"allow\"} 1",
                "toolgate_tool_calls_total{server=\"srv\",tool=\"a\",grant=\"g\",decision=\"deny\"} 1",
            ]
        );
        // 12 µs: in the 25 µs bucket, not the 10 µs one.
        assert!(text.contains(
            "toolgate_decision_duration_seconds_bucket{decision=\"deny\",le=\"0.00001\"} 0\n\
             toolgate_decision_duration_seconds_bucket{decision=\"deny\",le=\"0.000025\"} 1\n"
        ));
        // 2.012 ms less 12 µs: 2 ms, in the 2.5 ms bucket.
        assert!(text.contains(
            "toolgate_upstream_duration_seconds_bucket{server=\"srv\",le=\"0.001\"} 0\n\
             toolgate_upstream_duration_seconds_bucket{server=\"srv\",le=\"0.0025\"} 1\n"
        ));
        assert!(text.contains("toolgate_upstream_calls_total{server=\"srv\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("toolgate_counter_used{counter=\"c\",grant=\"g\"} 3\n"));
        assert!(text.contains("toolgate_counter_limit{counter=\"c\",grant=\"g\"} 5\n"));
    }

    #[test]
    fn tool_names_are_bounded() {
        let m = Metrics::new("one");
        m.observe(&record("no-such-tool", "unknown"));
        for i in 0..MAX_TOOLS + 5 {
            m.observe(&record(&format!("t{i}"), "deny"));
        }
        // A name seen before the cap keeps its label.
        m.observe(&record("t0", "deny"));
        let text = m.render(&Live::default());
        let calls = lines(&text, "toolgate_tool_calls_total{");
        assert_eq!(calls.len(), MAX_TOOLS + 2, "the cap, (other) and (unknown)");
        assert!(calls.contains(
            &"toolgate_tool_calls_total{server=\"srv\",tool=\"(other)\",grant=\"g\",decision=\"deny\"} 5"
                .to_string()
        ));
        assert!(calls.contains(
            &"toolgate_tool_calls_total{server=\"srv\",tool=\"(unknown)\",grant=\"g\",decision=\"unknown\"} 1"
                .to_string()
        ));
        assert!(calls.contains(
            &"toolgate_tool_calls_total{server=\"srv\",tool=\"t0\",grant=\"g\",decision=\"deny\"} 2"
                .to_string()
        ));
        assert!(text.contains("\ntoolgate_metrics_tools_folded_total 5\n"));
    }

    #[test]
    fn live_values() {
        let text = Metrics::new("one").render(&Live {
            approvals_pending: Some(2),
            upstreams: vec![("a".into(), true), ("b".into(), false)],
            spans: Some((7, 1, 3)),
            audit_dropped: Some(4),
        });
        assert!(text.contains("\ntoolgate_audit_records_dropped_total 4\n"));
        assert!(text.contains("\ntoolgate_approvals_pending 2\n"));
        assert!(text.contains(
            "\ntoolgate_upstream_up{server=\"a\"} 1\ntoolgate_upstream_up{server=\"b\"} 0\n"
        ));
        assert!(text.contains("\ntoolgate_trace_spans_exported_total 7\n"));
        assert!(text.contains("\ntoolgate_trace_spans_dropped_total 1\n"));
        assert!(text.contains("\ntoolgate_trace_spans_failed_total 3\n"));
        assert!(text.starts_with("# HELP toolgate_build_info "));
        // Without an approval store, no approvals gauge.
        assert!(!Metrics::new("x")
            .render(&Live::default())
            .contains("toolgate_approvals_pending"));
        // Without an audit trail, no dropped-records counter.
        assert!(!Metrics::new("x")
            .render(&Live::default())
            .contains("toolgate_audit_records_dropped_total"));
    }
}
