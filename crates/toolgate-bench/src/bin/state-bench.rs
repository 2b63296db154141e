//! state-bench: policy decisions per second, and their p50/p99 latency, with
//! each counter store, in one run: in-memory, embedded (SQLite in a temporary
//! data directory) and Redis (a redis-server of its own on a free port).
//!
//! Every decision is `Policy::decide` for a tool with one limit (`scope:
//! arg:user`, 1,000 distinct users, so 1,000 counters), as the gateway makes
//! it. "1 caller" runs on one thread (one core); "N callers" runs N threads
//! at once (Redis pipelines their requests on shared connections). Each
//! store is measured against every `--max` (per minute; by default
//! 1,000,000,000, which admits every call, and 30, which refuses most): the
//! cost of a decision should not depend on it.
//!
//!   cargo build --release -p toolgate-bench && target/release/state-bench
//!   target/release/state-bench --decisions 200000 --callers 16 --max 1000000000 --max 30

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
    /// The limit's maximum per minute (repeat for several; default
    /// 1,000,000,000 and 30).
    #[arg(long)]
    max: Vec<u64>,
}

fn policy(max: u64) -> Policy {
    let text = json!({
        "version": "1",
        "default": "deny",
        "tools": {"send": {"limits": [
            {"counter": format!("per_user_{max}"), "window": "minute", "max": max, "scope": "arg:user"}
        ]}}
    })
    .to_string();
    parse_policy(&text, Format::Json, "bench.json").expect("valid policy")
}

struct Measured {
    per_second: f64,
    admitted: usize,
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
                let mut admitted = 0;
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
                    match decision {
                        Decision::Allow { .. } => admitted += 1,
                        Decision::RateLimited { .. } => {}
                        other => panic!("{other:?}"),
                    }
                }
                (latencies, admitted)
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::with_capacity(decisions);
    let mut admitted = 0;
    for thread in threads {
        let (latencies, n) = thread.join().expect("caller");
        all.extend(latencies);
        admitted += n;
    }
    let elapsed = start.elapsed();
    all.sort();
    Measured {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        admitted,
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let maxes = if args.max.is_empty() {
        vec![1_000_000_000, 30]
    } else {
        args.max.clone()
    };
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
    println!("| store | max/minute | callers | decisions/s | p50 | p99 | admitted |");
    println!("|---|---|---|---|---|---|---|");
    for (name, store) in &stores {
        for &max in &maxes {
            let policy = Arc::new(policy(max));
            // Warm up (connections, prepared statements, pages).
            measure(&policy, store, args.decisions / 10, 1);
            for callers in [1, args.callers] {
                let m = measure(&policy, store, args.decisions, callers);
                println!(
                    "| {name} | {max} | {callers} | {:.0} | {} | {} | {:.1}% |",
                    m.per_second,
                    us(m.p50),
                    us(m.p99),
                    100.0 * m.admitted as f64 / args.decisions as f64
                );
            }
        }
    }
    Ok(())
}
