//! What a gateway does with a call once the policy has decided it: forward
//! it with its audit record, hold it for approval ([`crate::approval`]), or
//! answer in the server's place with the refusal, audited.

use crate::answer::{refusal, Era};
use crate::record::{audit_decision, decision_record, CallFacts};
use serde_json::Value;
use toolgate_audit::{AuditSink, Record};
use toolgate_clock::Clock;
use toolgate_policy::{Decision, Grant};

/// What becomes of a decided call.
// Returned once per call and taken apart at once: an allowed call's record
// is not worth an allocation of its own.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Verdict {
    /// Forward it: the quota it took (given back if the server answers with
    /// a JSON-RPC error), and its record, closed once it is answered.
    Forward {
        taken: Grant,
        record: Option<Record>,
    },
    /// A `require_approval` rule holds it (the decision says how).
    Hold(Decision),
    /// Answer with this JSON-RPC response (a refusal, audited already).
    Answer(Value),
}

/// The verdict on `call`, decided `decision`; `era` (asked only for a
/// refusal) is that of the request answered, `id` its id.
pub fn verdict(
    audit: &AuditSink,
    clock: &dyn Clock,
    call: &CallFacts<'_>,
    decision: Decision,
    id: &Value,
    era: impl FnOnce() -> Era,
) -> Verdict {
    match decision {
        Decision::Allow { ref grant, .. } => Verdict::Forward {
            taken: grant.clone(),
            record: decision_record(audit, clock, call, &decision),
        },
        Decision::ApprovalRequired { .. } => Verdict::Hold(decision),
        refused => Verdict::Answer(refuse(audit, clock, call, &refused, id, era())),
    }
}

/// A refused call: its record in the audit trail, and the answer.
pub fn refuse(
    audit: &AuditSink,
    clock: &dyn Clock,
    call: &CallFacts<'_>,
    decision: &Decision,
    id: &Value,
    era: Era,
) -> Value {
    audit_decision(audit, clock, call, decision);
    refusal(id, call.tool, decision, era).expect("not an allow")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TraceContext;
    use crate::trail::Trail;
    use serde_json::json;
    use toolgate_clock::ManualClock;
    use toolgate_policy::{Call, Format, MemoryStore};

    const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
        "read": {"action": "allow", "limits": [{"counter": "reads", "window": "minute", "max": 1, "scope": "grant"}]},
        "wipe": {"action": "deny", "reason": "never"},
        "pay": {"action": "require_approval"}}}"#;

    #[test]
    fn each_decision_has_its_verdict_and_records() {
        // (tool, calls before, verdict, the answer's decision or error code, records)
        let cases: &[(&str, usize, &str, Value, &[&str])] = &[
            ("read", 0, "forward", Value::Null, &[]),
            (
                "read",
                1,
                "answer",
                json!("rate_limited"),
                &["rate_limited"],
            ),
            ("wipe", 0, "answer", json!("deny"), &["deny"]),
            ("pay", 0, "hold", Value::Null, &[]),
            ("other", 0, "answer", json!(-32602), &["unknown"]),
        ];
        let policy = toolgate_policy::parse_policy(POLICY, Format::Json, "p.json").unwrap();
        let clock = ManualClock::at(1_800_000_000_000);
        for (tool, before, expected, answer, records) in cases {
            let trail = Trail::default();
            let sink = trail.sink();
            let store = MemoryStore::new();
            let arguments = json!({});
            let call = Call {
                tool,
                arguments: &arguments,
                arguments_text: None,
                grant: "g",
                session: "s",
            };
            for _ in 0..*before {
                policy.decide(&call, &store, clock.now_ms());
            }
            let decision = policy.decide(&call, &store, clock.now_ms());
            let facts = CallFacts {
                trace: TraceContext::Meta(Some(r#"{"traceparent": "00-abc"}"#)),
                ..CallFacts::new("g", "s", tool, &arguments, toolgate_clock::monotonic_now())
            };
            let got = verdict(&sink, &clock, &facts, decision, &json!(7), || {
                Era::Stateless
            });
            let (kind, decided) = match &got {
                Verdict::Forward { taken, record } => {
                    let record = record.as_ref().expect("a record");
                    assert_eq!(record.counters.len(), taken.taken.len(), "{tool}");
                    assert_eq!(
                        record.trace.as_ref().unwrap().traceparent.as_deref(),
                        Some("00-abc")
                    );
                    ("forward", Value::Null)
                }
                Verdict::Hold(_) => ("hold", Value::Null),
                Verdict::Answer(answer) => {
                    assert_eq!(answer["id"], json!(7), "{tool}");
                    if let Some(error) = answer.get("error") {
                        ("answer", error["code"].clone())
                    } else {
                        assert_eq!(answer["result"]["resultType"], json!("complete"), "{tool}");
                        let facts = &answer["result"]["structuredContent"]["toolgate"];
                        ("answer", facts["decision"].clone())
                    }
                }
            };
            assert_eq!((kind, &decided), (*expected, answer), "{tool}");
            let kinds = trail.kinds(&sink);
            assert_eq!(kinds, *records, "{tool}");
        }
    }
}
