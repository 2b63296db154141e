//! Property tests of the sliding-window limit through the public API
//! (`Policy::decide` on a `MemoryStore`), against a brute-force exact log.

use proptest::prelude::*;
use serde_json::json;
use toolgate_policy::{parse_policy, Call, Decision, Format, MemoryStore, Policy};

const WINDOW: u64 = 60_000;
/// Admissions this close together may be merged into one log entry.
const MERGE: u64 = WINDOW / 64;
const T0: u64 = 1_700_000_000_000;

fn policy(max: u32) -> Policy {
    let text = json!({
        "version": "1",
        "default": "deny",
        "tools": {"t": {"limits": [
            {"counter": "c", "window": WINDOW / 1000, "max": max, "cost": "args.cost"}
        ]}}
    })
    .to_string();
    parse_policy(&text, Format::Json, "p.json").unwrap()
}

/// Units admitted in the half-open interval (from, to].
fn units_in(admitted: &[(u64, u32)], from: u64, to: u64) -> u64 {
    admitted
        .iter()
        .filter(|(t, _)| *t > from && *t <= to)
        .map(|(_, c)| u64::from(*c))
        .sum()
}

/// Runs the calls (gap since the previous call, cost) and returns, for each,
/// its time and whether it was admitted.
fn run(max: u32, calls: &[(u64, u32)]) -> Vec<(u64, u32, bool)> {
    let policy = policy(max);
    let store = MemoryStore::new();
    let mut now = T0;
    let mut out = Vec::new();
    for &(gap, cost) in calls {
        now += gap;
        let arguments = json!({ "cost": cost });
        let call = Call {
            tool: "t",
            arguments: &arguments,
            arguments_text: None,
            grant: "g",
            session: "s",
        };
        let decision = policy.decide(&call, &store, now);
        match &decision {
            Decision::Allow { .. } => out.push((now, cost, true)),
            Decision::RateLimited { retry_after_ms, .. } => {
                assert!(
                    *retry_after_ms >= 1 && *retry_after_ms <= WINDOW,
                    "{decision:?}"
                );
                out.push((now, cost, false))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn gaps() -> impl Strategy<Value = u64> {
    prop_oneof![0..50u64, 0..2 * MERGE, 0..WINDOW / 4, 0..2 * WINDOW]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never over-admits: every interval of length WINDOW holds ≤ max units,
    /// and a refusal only happens when the exact log stretched by the merge
    /// bound has no room.
    #[test]
    fn never_over_admits_and_is_conservative_only_within_the_merge_bound(
        max in 1u32..12,
        calls in prop::collection::vec((gaps(), 0u32..4), 1..300),
    ) {
        let results = run(max, &calls);
        let admitted: Vec<(u64, u32)> =
            results.iter().filter(|r| r.2).map(|&(t, c, _)| (t, c)).collect();
        for &(t, _) in &admitted {
            let used = units_in(&admitted, t - WINDOW, t);
            prop_assert!(used <= u64::from(max), "{used} units in the window ending at {t}");
        }
        for (i, &(t, cost, ok)) in results.iter().enumerate() {
            let before: Vec<(u64, u32)> =
                results[..i].iter().filter(|r| r.2).map(|&(t, c, _)| (t, c)).collect();
            let exact_room = units_in(&before, t - WINDOW, t) + u64::from(cost) <= u64::from(max);
            let stretched_room =
                units_in(&before, t - WINDOW - MERGE, t) + u64::from(cost) <= u64::from(max);
            if ok {
                prop_assert!(exact_room, "admitted at {t} without room");
            } else {
                prop_assert!(!stretched_room, "refused at {t} although the stretched log has room");
            }
        }
    }

    /// Calls more than WINDOW/64 apart are admitted exactly as the brute-force
    /// sliding log says.
    #[test]
    fn sparse_calls_are_exact(
        max in 1u32..8,
        calls in prop::collection::vec((MERGE..WINDOW / 2, 0u32..3), 1..200),
    ) {
        let results = run(max, &calls);
        for (i, &(t, cost, ok)) in results.iter().enumerate() {
            let before: Vec<(u64, u32)> =
                results[..i].iter().filter(|r| r.2).map(|&(t, c, _)| (t, c)).collect();
            let exact_room = units_in(&before, t - WINDOW, t) + u64::from(cost) <= u64::from(max);
            prop_assert_eq!(ok, exact_room, "call {} at {}", i, t);
        }
    }
}

#[test]
fn memory_per_key_and_key_count_stay_bounded() {
    // 100,000 distinct arg: buckets over a long time: expired keys are swept.
    let text = json!({"version": "1", "default": "deny", "tools": {"t": {"limits": [
        {"counter": "c", "window": "second", "max": 1, "scope": "arg:id"}]}}})
    .to_string();
    let policy = parse_policy(&text, Format::Json, "p.json").unwrap();
    let store = MemoryStore::new();
    for i in 0..100_000u64 {
        let arguments = json!({ "id": i });
        let call = Call {
            tool: "t",
            arguments: &arguments,
            arguments_text: None,
            grant: "g",
            session: "s",
        };
        assert_eq!(policy.decide(&call, &store, T0 + i).kind(), "allow");
    }
    assert!(store.key_count() <= 4096, "{} keys", store.key_count());
}
