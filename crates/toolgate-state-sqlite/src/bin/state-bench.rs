//! Decision latency and throughput of the embedded counter store alone
//! (the binary is `state-bench-sqlite`: `toolgate-bench`'s `state-bench`
//! compares every store).
//!
//! One draw per decision on keys spread over `--keys` counters (picked
//! pseudo-randomly), one thread. A limit under 16,384 is a transaction per
//! decision; a larger one is leased (a transaction per slice of `max /
//! 4096` while the key comes back within a slice's span, `window / 64`: with
//! the defaults a key comes back every second, so try `--keys 10`). The clock is
//! simulated: it advances `--ms-per-decision` per decision, so a long run
//! reaches the steady state where every key's log is full (about 65
//! entries). Prints p50/p99/p99.9/max latency and decisions per second, by
//! the wall clock and by the time the thread was on a CPU (which leaves out
//! other processes on a shared machine, not the store's own disk waits).
//!
//! ```text
//! cargo run --release -p toolgate-state-sqlite --bin state-bench-sqlite -- [--decisions N]
//!     [--warmup N] [--keys N] [--max UNITS] [--window-ms MS] [--ms-per-decision MS]
//!     [--dir DIR]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use toolgate_policy::{CounterStore, Draw, FailMode, RuleRef};
use toolgate_state_sqlite::SqliteStore;

struct Args {
    decisions: u64,
    warmup: u64,
    keys: u64,
    max: f64,
    window_ms: u64,
    ms_per_decision: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        decisions: 200_000,
        warmup: 100_000,
        keys: 1_000,
        max: 1_000.0,
        window_ms: 60_000,
        ms_per_decision: 1,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: {value:?} is not a whole number"))
        };
        match flag.as_str() {
            "--decisions" => args.decisions = number()?.max(1),
            "--warmup" => args.warmup = number()?,
            "--keys" => args.keys = number()?.max(1),
            "--max" => args.max = number()? as f64,
            "--window-ms" => args.window_ms = number()?.max(1),
            "--ms-per-decision" => args.ms_per_decision = number()?,
            "--dir" => args.dir = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("state-bench-sqlite: {message}");
            return ExitCode::from(2);
        }
    };
    let (dir, remove) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "toolgate-state-bench-sqlite-{}",
                std::process::id()
            )),
            true,
        ),
    };
    let result = run(&args, &dir);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("state-bench-sqlite: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, dir: &std::path::Path) -> Result<(), String> {
    let store = SqliteStore::open(dir, FailMode::Closed).map_err(|e| e.to_string())?;
    let draws: Vec<[Draw; 1]> = (0..args.keys)
        .map(|k| {
            [Draw {
                counter: "bench".into(),
                key: format!("bench\u{1f}grant\u{1f}g{k}"),
                window: args.window_ms,
                max: args.max,
                cost: 1.0,
                rule: RuleRef::from_static("tools[\"bench\"]"),
            }]
        })
        .collect();

    let mut now: u64 = 1_700_000_000_000;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_key = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % args.keys) as usize
    };

    let mut decide = |record: Option<&mut Vec<Duration>>, admitted: &mut u64| {
        let draw = &draws[next_key()];
        let start = toolgate_clock::monotonic_now();
        let result = store.acquire(draw, now);
        let took = start.elapsed();
        now += args.ms_per_decision;
        if let Some(latencies) = record {
            latencies.push(took);
        }
        match result {
            Ok(_) => *admitted += 1,
            Err(toolgate_policy::Refusal::Exhausted(_)) => {}
            Err(toolgate_policy::Refusal::Unavailable(why)) => {
                eprintln!("state-bench-sqlite: store unavailable: {why}");
                std::process::exit(1);
            }
        }
    };

    let mut warm_admitted = 0;
    for _ in 0..args.warmup {
        decide(None, &mut warm_admitted);
    }
    let mut latencies = Vec::with_capacity(args.decisions as usize);
    let mut admitted = 0;
    let cpu_before = thread_cpu();
    let started = toolgate_clock::monotonic_now();
    for _ in 0..args.decisions {
        decide(Some(&mut latencies), &mut admitted);
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "state-bench-sqlite: {} decisions after {} warm-up, {} keys, max {} per {} ms, clock +{} ms/decision",
        args.decisions, args.warmup, args.keys, args.max, args.window_ms, args.ms_per_decision
    );
    println!("| p50 µs | p99 µs | p99.9 µs | max µs | decisions/s (wall) | decisions/s (on CPU) | admitted |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {:.1}% |",
        micros(at(0.5)),
        micros(at(0.99)),
        micros(at(0.999)),
        micros(at(1.0)),
        args.decisions as f64 / elapsed.as_secs_f64(),
        cpu.map_or("n/a".to_string(), |cpu| format!(
            "{:.0}",
            args.decisions as f64 / cpu.as_secs_f64()
        )),
        100.0 * admitted as f64 / args.decisions as f64
    );
    Ok(())
}

/// Time this thread has spent on a CPU (Linux `schedstat`), which leaves
/// out the time other processes on a shared machine took.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
