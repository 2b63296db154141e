//! state-bench: policy decisions per second, and their p50/p99 latency, with
//! each counter store, in one run: in-memory, embedded (SQLite in a temporary
//! data directory) and Redis (a redis-server of its own on a free port).
//!
//! Every decision is `Policy::decide` for a tool with one limit (`scope:
//! arg:user`, 1,000 distinct users, so 1,000 counters), as the gateway makes
//! it. "1 caller" runs on one thread (one core); "N callers" runs N threads
//! at once (Redis pipelines their requests on shared connections).
//!
//!   cargo build --release -p toolgate-bench && target/release/state-bench
//!   target/release/state-bench --decisions 200000 --callers 16

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use toolgate_clock::monotonic_now;
use toolgate_policy::{
    parse_policy, Call, CounterStore, Decision, FailMode, Format, MemoryStore, Policy,
};

#[derive(Parser)]
struct Args {
    /// Decisions per measurement.
    #[arg(long, default_value_t = 100_000)]
    decisions: usize,
    /// Concurrent callers for the second measurement.
    #[arg(long, default_value_t = 8)]
    callers: usize,
    /// Skip Redis (no redis-server needed).
    #[arg(long)]
    no_redis: bool,
}

fn policy() -> Policy {
    let text = json!({
        "version": "1",
        "default": "deny",
        "tools": {"send": {"limits": [
            {"counter": "per_user", "window": "minute", "max": 1_000_000_000u64, "scope": "arg:user"}
        ]}}
    })
    .to_string();
    parse_policy(&text, Format::Json, "bench.json").expect("valid policy")
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// `callers` threads share `decisions` decisions.
fn measure(
    policy: &Arc<Policy>,
    store: &Arc<dyn CounterStore>,
    decisions: usize,
    callers: usize,
) -> Measured {
    let per_caller = decisions / callers;
    let start = monotonic_now();
    let threads: Vec<_> = (0..callers)
        .map(|c| {
            let policy = policy.clone();
            let store = store.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(per_caller);
                let base = 1_700_000_000_000u64;
                for i in 0..per_caller {
                    let arguments = json!({ "user": format!("u{}", (i * 7 + c) % 1000) });
                    let call = Call {
                        tool: "send",
                        arguments: &arguments,
                        arguments_text: None,
                        grant: "g",
                        session: "s",
                    };
                    let t = monotonic_now();
                    let decision = policy.decide(&call, store.as_ref(), base + (i as u64) / 100);
                    latencies.push(t.elapsed());
                    assert!(matches!(decision, Decision::Allow { .. }), "{decision:?}");
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("caller"))
        .collect();
    let elapsed = start.elapsed();
    all.sort();
    Measured {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let policy = Arc::new(policy());
    let dir = tempfile::tempdir().context("temporary data directory")?;
    let mut stores: Vec<(&str, Arc<dyn CounterStore>)> = vec![
        ("in-memory", Arc::new(MemoryStore::new())),
        (
            "embedded (SQLite)",
            Arc::new(toolgate_state_sqlite::SqliteStore::open(
                dir.path(),
                FailMode::Closed,
            )?),
        ),
    ];
    let _redis = if args.no_redis {
        None
    } else {
        let server = toolgate_state_redis::server::RedisServer::start()
            .context("starting redis-server (install it with ./scripts/setup.sh)")?;
        let store =
            toolgate_state_redis::RedisStore::connect(&server.url(), "bench", FailMode::Closed)?;
        stores.push(("Redis", Arc::new(store)));
        Some(server)
    };
    println!("state-bench: Policy::decide with one limit over 1,000 counters; {} decisions per measurement", args.decisions);
    println!("| store | callers | decisions/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (name, store) in &stores {
        // Warm up (connections, prepared statements, pages).
        measure(&policy, store, args.decisions / 10, 1);
        for callers in [1, args.callers] {
            let m = measure(&policy, store, args.decisions, callers);
            println!(
                "| {name} | {callers} | {:.0} | {} | {} |",
                m.per_second,
                us(m.p50),
                us(m.p99)
            );
        }
    }
    Ok(())
}
