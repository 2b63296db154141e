//! `decide` and `evaluate` on policies of 10, 1,000 and 10,000 exact-name
//! tool rules drawing on 1,000 distinct counters (max large enough that every
//! call is admitted), with a MemoryStore and a fixed clock.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use toolgate_policy::{parse_policy, Call, Format, MemoryStore, Policy};

const NOW: u64 = 1_700_000_000_000;

fn policy(rules: usize) -> Policy {
    let mut tools = serde_json::Map::new();
    for i in 0..rules {
        tools.insert(
            format!("tool_{i}"),
            json!({"limits": [{"counter": format!("counter_{}", i % 1000), "window": "minute", "max": 1e15}]}),
        );
    }
    let text = json!({"version": "1", "default": "deny", "tools": tools}).to_string();
    parse_policy(&text, Format::Json, "bench.json").expect("bench policy is valid")
}

fn bench(c: &mut Criterion) {
    let arguments = json!({"to": "+15551234567", "text": "hello"});
    for rules in [10usize, 1_000, 10_000] {
        let policy = policy(rules);
        let names: Vec<String> = (0..rules).map(|i| format!("tool_{i}")).collect();
        let store = MemoryStore::new();

        let mut i = 0;
        c.bench_with_input(BenchmarkId::new("decide", rules), &rules, |b, _| {
            b.iter(|| {
                i = (i + 1) % names.len();
                let call = Call {
                    tool: &names[i],
                    arguments: &arguments,
                    arguments_text: None,
                    grant: "local",
                    session: "s1",
                };
                black_box(policy.decide(black_box(&call), &store, NOW))
            })
        });

        let mut i = 0;
        c.bench_with_input(BenchmarkId::new("evaluate", rules), &rules, |b, _| {
            b.iter(|| {
                i = (i + 1) % names.len();
                let call = Call {
                    tool: &names[i],
                    arguments: &arguments,
                    arguments_text: None,
                    grant: "local",
                    session: "s1",
                };
                black_box(policy.evaluate(black_box(&call)))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
