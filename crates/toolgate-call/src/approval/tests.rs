//! The approval flow, case by case, in process: a manual clock that the
//! fake timer moves on, the in-memory approval and counter stores, a fake
//! client's user, and an approver who decides in the store while a call is
//! held.

use super::*;
use crate::record::TraceContext;
use crate::trail::Trail;
use serde_json::json;
use std::sync::Arc;
use toolgate_approvals::{MemoryApprovals, NoEvents, Unreachable, Via};
use toolgate_clock::ManualClock;
use toolgate_policy::{Call, Format, MemoryStore};

const START: u64 = 1_800_000_000_000;

const CLIENT: &str = r#"{"version": "1", "default": "deny", "tools": {"pay": {"action": "require_approval", "reason": "money leaves", "approval": {"via": ["client"], "expires": "1h"}}}}"#;
const ADMIN: &str = r#"{"version": "1", "default": "deny", "tools": {"pay": {"action": "require_approval", "reason": "money leaves", "approval": {"via": ["admin"], "hold": "5s", "expires": "1h"}}}}"#;
const BOTH: &str = r#"{"version": "1", "default": "deny", "tools": {"pay": {"action": "require_approval", "reason": "money leaves", "approval": {"via": ["client", "admin"], "hold": "5s", "expires": "1h"}}}}"#;
const QUOTA: &str = r#"{"version": "1", "default": "deny", "tools": {"pay": {"action": "require_approval", "reason": "money leaves", "approval": {"via": ["client"], "expires": "1h"}, "limits": [{"counter": "pay_rate", "window": "minute", "max": 1, "scope": "grant"}]}}}"#;

/// What is in the stores before the call.
#[derive(Clone, Copy)]
enum Before {
    Nothing,
    /// A pending request for this call.
    Requested,
    /// A request for this call, approved by an admin.
    Approved,
    /// A request for this call, denied by an admin.
    Denied,
    /// A pending request for the same tool with other arguments.
    OtherCallRequested,
    /// The call's quota spent by an earlier call.
    QuotaSpent,
    /// The approval store cannot be reached.
    StoreDown,
}

/// How the client's user is reached.
#[derive(Clone, Copy)]
enum Asked {
    /// The client cannot be asked.
    Nobody,
    /// Elicitation, answered so (`None`: no answer).
    Elicit(Option<bool>),
    /// The first call of an input-required round.
    FirstRound,
    /// Its retry, with the user's action, for the request made before
    /// (`Before`); `serve`: only that answer approves (serve's retry).
    Retry { action: &'static str, serve: bool },
}

/// An approver who decides every pending request once `after_ms` have
/// passed while a call is held.
#[derive(Clone, Copy)]
enum Approver {
    Away,
    Approves { after_ms: u64 },
    Denies { after_ms: u64 },
}

struct Case {
    name: &'static str,
    policy: &'static str,
    before: Before,
    asked: Asked,
    approver: Approver,
    /// `run`, `input_required`, or the refusal's
    /// `structuredContent.toolgate.decision`.
    answer: &'static str,
    /// A text the answer (or the run's record reason) contains.
    says: &'static str,
    /// The kinds of the audit records written by the flow, in order.
    records: &'static [&'static str],
    /// The counters taken (a run's).
    counters: &'static [&'static str],
    /// How long the call was held (the clock's advance).
    held_ms: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "approved by the client's user",
        policy: CLIENT,
        before: Before::Nothing,
        asked: Asked::Elicit(Some(true)),
        approver: Approver::Away,
        answer: "run",
        says: "approved by the user of grant g via client (approval request apr_",
        records: &["approval_requested"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "declined by the client's user",
        policy: CLIENT,
        before: Before::Nothing,
        asked: Asked::Elicit(Some(false)),
        approver: Approver::Away,
        answer: "approval_denied",
        says: "denied by the user of grant g via client); it did not run",
        records: &["approval_requested", "approval_denied"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "the client did not answer: pending",
        policy: CLIENT,
        before: Before::Nothing,
        asked: Asked::Elicit(None),
        approver: Approver::Away,
        answer: "approval_pending",
        says: "send the identical call again and it will run once",
        records: &["approval_requested", "approval_pending"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "the client did not answer, an admin approved during the hold",
        policy: BOTH,
        before: Before::Nothing,
        asked: Asked::Elicit(None),
        approver: Approver::Approves { after_ms: 300 },
        answer: "run",
        says: "approved by admin via api (approval request apr_",
        records: &["approval_requested"],
        counters: &[],
        held_ms: 300,
    },
    Case {
        name: "approved by an admin during the hold",
        policy: ADMIN,
        before: Before::Nothing,
        asked: Asked::Nobody,
        approver: Approver::Approves { after_ms: 1_000 },
        answer: "run",
        says: "approved by admin via api (approval request apr_",
        records: &["approval_requested"],
        counters: &[],
        held_ms: 1_000,
    },
    Case {
        name: "denied by an admin during the hold",
        policy: ADMIN,
        before: Before::Nothing,
        asked: Asked::Nobody,
        approver: Approver::Denies { after_ms: 200 },
        answer: "approval_denied",
        says: "denied by admin via api); it did not run",
        records: &["approval_requested", "approval_denied"],
        counters: &[],
        held_ms: 200,
    },
    Case {
        name: "the hold expired: pending",
        policy: ADMIN,
        before: Before::Nothing,
        asked: Asked::Nobody,
        approver: Approver::Away,
        answer: "approval_pending",
        says: "is waiting for it: approval request apr_",
        records: &["approval_requested", "approval_pending"],
        counters: &[],
        held_ms: 5_000,
    },
    Case {
        name: "a retry with an approval given: it is used, nobody is asked",
        policy: CLIENT,
        before: Before::Approved,
        asked: Asked::Nobody,
        approver: Approver::Away,
        answer: "run",
        says: "approved by admin via api (approval request apr_",
        records: &[],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "no one to ask",
        policy: CLIENT,
        before: Before::Nothing,
        asked: Asked::Nobody,
        approver: Approver::Away,
        answer: "approval_required",
        says: "this client cannot be asked (it does not support elicitation) and the rule allows no other approvers (rule tools[\"pay\"])",
        records: &["approval_required"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "the approval store is unavailable",
        policy: ADMIN,
        before: Before::StoreDown,
        asked: Asked::Nobody,
        approver: Approver::Away,
        answer: "state_unavailable",
        says: "approval store unavailable: down; it did not run",
        records: &[],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "approved, and the quota is taken",
        policy: QUOTA,
        before: Before::Nothing,
        asked: Asked::Elicit(Some(true)),
        approver: Approver::Away,
        answer: "run",
        says: "approved by the user of grant g via client",
        records: &["approval_requested"],
        counters: &["pay_rate"],
        held_ms: 0,
    },
    Case {
        name: "approved, but the quota is spent",
        policy: QUOTA,
        before: Before::QuotaSpent,
        asked: Asked::Elicit(Some(true)),
        approver: Approver::Away,
        answer: "rate_limited",
        says: "toolgate rate-limited this call to \"pay\"",
        records: &["approval_requested", "rate_limited"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "input-required: the first round asks",
        policy: CLIENT,
        before: Before::Nothing,
        asked: Asked::FirstRound,
        approver: Approver::Away,
        answer: "input_required",
        says: "Approve this tool call?",
        records: &["approval_requested"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "input-required: the retry accepts",
        policy: CLIENT,
        before: Before::Requested,
        asked: Asked::Retry {
            action: "accept",
            serve: false,
        },
        approver: Approver::Away,
        answer: "run",
        says: "approved by the user of grant g via client",
        records: &[],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "input-required: the retry accepts (only the answer approves)",
        policy: QUOTA,
        before: Before::Requested,
        asked: Asked::Retry {
            action: "accept",
            serve: true,
        },
        approver: Approver::Away,
        answer: "run",
        says: "approved by the user of grant g via client",
        records: &[],
        counters: &["pay_rate"],
        held_ms: 0,
    },
    Case {
        name: "input-required: the retry declines",
        policy: CLIENT,
        before: Before::Requested,
        asked: Asked::Retry {
            action: "decline",
            serve: false,
        },
        approver: Approver::Away,
        answer: "approval_denied",
        says: "denied by the user of grant g via client",
        records: &["approval_denied"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "input-required: an admin's denial before the retry stands",
        policy: CLIENT,
        before: Before::Denied,
        asked: Asked::Retry {
            action: "accept",
            serve: true,
        },
        approver: Approver::Away,
        answer: "approval_denied",
        says: "denied by admin via api",
        records: &["approval_denied"],
        counters: &[],
        held_ms: 0,
    },
    Case {
        name: "input-required: an answer for another call",
        policy: CLIENT,
        before: Before::OtherCallRequested,
        asked: Asked::Retry {
            action: "accept",
            serve: false,
        },
        approver: Approver::Away,
        answer: "approval_required",
        says: "the approval answer does not belong to this call",
        records: &[],
        counters: &[],
        held_ms: 0,
    },
];

fn admin(now: u64) -> Decided {
    Decided {
        by: "admin".into(),
        via: Via::Api,
        at_ms: now,
        reason: None,
    }
}

/// A timer that does not wait: it moves the clock on, and lets the
/// approver look at the store.
struct Jump {
    clock: Arc<ManualClock>,
    store: Arc<dyn ApprovalStore>,
    approver: Approver,
    since: u64,
}

impl Sleep for Jump {
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(d.as_millis() as u64);
        let now = self.clock.now_ms();
        let decides = match self.approver {
            Approver::Away => None,
            Approver::Approves { after_ms } => (now >= self.since + after_ms).then_some(true),
            Approver::Denies { after_ms } => (now >= self.since + after_ms).then_some(false),
        };
        if let Some(approve) = decides {
            for r in self.store.list(true, now).expect("the store") {
                self.store
                    .decide(&r.id, approve, admin(now), now)
                    .expect("pending");
            }
        }
        Box::pin(std::future::ready(()))
    }
}

/// The client's user, answering so.
struct User(Option<bool>);

impl AskClient for User {
    fn ask<'a>(
        &'a self,
        request: &'a ApprovalRequest,
        question: Value,
    ) -> BoxFuture<'a, Option<bool>> {
        assert!(question["message"]
            .as_str()
            .is_some_and(|m| m.contains(&request.id)));
        Box::pin(std::future::ready(self.0))
    }
}

fn policy(text: &str) -> toolgate_policy::Policy {
    toolgate_policy::parse_policy(text, Format::Json, "policy.json").expect("a policy")
}

fn new_request(arguments: Value) -> NewRequest {
    NewRequest {
        grant: "g".into(),
        server: Some("srv".into()),
        tool: "pay".into(),
        arguments,
        reason: "money leaves".into(),
        rule: "tools.pay".into(),
        expires_in_ms: 3_600_000,
    }
}

/// Runs one case; returns what went wrong, if anything.
fn run(case: &Case) -> Result<(), String> {
    let clock = Arc::new(ManualClock::at(START));
    let memory = Arc::new(MemoryApprovals::new());
    let store: Arc<dyn ApprovalStore> = match case.before {
        Before::StoreDown => Arc::new(Unreachable("down".into())),
        _ => memory.clone(),
    };
    let counters = MemoryStore::new();
    let trail = Trail::default();
    let sink = trail.sink();
    let arguments = json!({"to": "bob", "cents": 500});
    let policy = policy(case.policy);
    let call = Call {
        tool: "pay",
        arguments: &arguments,
        arguments_text: None,
        grant: "g",
        session: "s",
    };
    let decision = policy.decide(&call, &counters, START);
    let Decision::ApprovalRequired {
        rule,
        reason,
        approval,
        plan,
    } = &decision
    else {
        return Err(format!("not held: {decision:?}"));
    };
    let mut made = None;
    match case.before {
        Before::Requested | Before::Approved | Before::Denied => {
            let r = memory
                .request(&new_request(arguments.clone()), START)
                .unwrap();
            if !matches!(case.before, Before::Requested) {
                let approve = matches!(case.before, Before::Approved);
                memory.decide(&r.id, approve, admin(START), START).unwrap();
            }
            made = Some(r.id);
        }
        Before::OtherCallRequested => {
            let other = new_request(json!({"to": "eve", "cents": 500}));
            made = Some(memory.request(&other, START).unwrap().id);
        }
        Before::QuotaSpent => {
            counters.acquire(&plan.draws, START).expect("room for one");
        }
        Before::Nothing | Before::StoreDown => {}
    }
    clock.advance(1);
    let since = clock.now_ms();
    let jump = Jump {
        clock: clock.clone(),
        store: store.clone(),
        approver: case.approver,
        since,
    };
    let flow = Flow {
        store: &*store,
        events: &NoEvents,
        clock: &*clock,
        sleep: &jump,
        counters: &counters,
        audit: &sink,
    };
    let held = Held {
        call: CallFacts {
            grant: "g",
            session: "s",
            server: Some("srv"),
            tool: "pay",
            arguments: &arguments,
            received: toolgate_clock::monotonic_now(),
            trace: TraceContext::Known(None),
            protocol_version: Some("2025-11-25"),
            keep_args: false,
        },
        server: Some("srv"),
        rule: rule.as_str(),
        reason,
        approval,
        plan,
    };
    let request_id = made.unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let outcome = runtime.block_on(async {
        match case.asked {
            Asked::Nobody => flow.decide(&held, None, None).await,
            Asked::Elicit(answer) => flow.decide(&held, None, Some(&User(answer))).await,
            Asked::FirstRound => flow.decide(&held, Some(Round::First), None).await,
            Asked::Retry { action, serve } => {
                let round = Round::Retry {
                    request_id: &request_id,
                    action,
                };
                if serve {
                    match flow.round(&held, round) {
                        Some(answered) => answered,
                        None => flow.hold(&held, None, Approvers::AnswerGiven).await,
                    }
                } else {
                    flow.decide(&held, Some(round), None).await
                }
            }
        }
    });
    let (answer, says, taken) = match &outcome {
        Outcome::Run { taken, record } => {
            let record = record.as_ref().ok_or("a run without its record")?;
            let names: Vec<&str> = record.counters.iter().map(|t| t.counter.as_str()).collect();
            let taken_names: Vec<&str> = taken.taken.iter().map(|t| t.counter.as_str()).collect();
            if names != taken_names {
                return Err(format!("record counters {names:?}, taken {taken_names:?}"));
            }
            (
                "run".to_string(),
                record.reason.clone().unwrap_or_default(),
                taken_names.iter().map(|s| s.to_string()).collect(),
            )
        }
        Outcome::InputRequired(result) => {
            let pending = memory.list(true, clock.now_ms()).unwrap();
            let state = format!("toolgate-approval:{}", pending[0].id);
            if result["requestState"] != json!(state) {
                return Err(format!(
                    "requestState {} for {state}",
                    result["requestState"]
                ));
            }
            (
                result["resultType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                result.to_string(),
                Vec::new(),
            )
        }
        Outcome::Refused(refused) => {
            let result = refused.result("pay", Era::Handshake);
            if result["isError"] != json!(true) {
                return Err(format!("a refusal that is no error: {result}"));
            }
            (
                result["structuredContent"]["toolgate"]["decision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                result["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                Vec::new(),
            )
        }
    };
    if answer != case.answer {
        return Err(format!(
            "answer {answer}, expected {}: {outcome:?}",
            case.answer
        ));
    }
    if !says.contains(case.says) {
        return Err(format!("{says:?} does not contain {:?}", case.says));
    }
    if taken != case.counters {
        return Err(format!("counters {taken:?}, expected {:?}", case.counters));
    }
    let kinds = trail.kinds(&sink);
    if kinds != case.records {
        return Err(format!("records {kinds:?}, expected {:?}", case.records));
    }
    let held_ms = clock.now_ms() - since;
    if held_ms != case.held_ms {
        return Err(format!("held {held_ms} ms, expected {}", case.held_ms));
    }
    Ok(())
}

#[test]
fn every_case_of_the_approval_flow() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| run(case).err().map(|e| format!("{}: {e}", case.name)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn within_gives_up_when_the_timer_fires_first() {
    let clock = Arc::new(ManualClock::at(START));
    let jump = Jump {
        clock: clock.clone(),
        store: Arc::new(MemoryApprovals::new()),
        approver: Approver::Away,
        since: START,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let never = runtime.block_on(within(
        &jump,
        Duration::from_secs(3),
        std::future::pending::<()>(),
    ));
    assert_eq!(never, None);
    assert_eq!(clock.now_ms(), START + 3_000);
    let ready = runtime.block_on(within(&jump, Duration::from_secs(3), std::future::ready(7)));
    assert_eq!(ready, Some(7));
}
