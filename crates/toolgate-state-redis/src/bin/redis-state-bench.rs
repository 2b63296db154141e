//! redis-state-bench: decisions per second and latency of `RedisStore`
//! with many concurrent callers. Starts its own redis-server on a free
//! loopback port, then for each number of callers runs them for a while,
//! first as tasks calling `acquire_async` on a 2-thread tokio runtime, then
//! as OS threads calling the blocking `acquire`.
//!
//! ```text
//! redis-state-bench [--callers 1,16,64,256] [--seconds 3] [--keys 100]
//!                   [--mode async|threads|both]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use toolgate_policy::{CounterStore, Draw, FailMode, Refusal, RuleRef};
use toolgate_state_redis::server::RedisServer;
use toolgate_state_redis::RedisStore;

struct Args {
    callers: Vec<usize>,
    seconds: f64,
    keys: usize,
    modes: Vec<Mode>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Async,
    Threads,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Async => "acquire_async (tasks)",
            Mode::Threads => "acquire (threads)",
        }
    }
}

/// What one run measured.
struct Run {
    decisions: usize,
    unavailable: usize,
    elapsed: Duration,
    /// Per decision, in microseconds.
    latencies: Vec<u32>,
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("redis-state-bench: {e}");
            eprintln!(
                "usage: redis-state-bench [--callers 1,16,64,256] [--seconds 3] [--keys 100] [--mode async|threads|both]"
            );
            std::process::exit(2);
        }
    };
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("redis-state-bench: {e}");
            std::process::exit(1);
        }
    };
    let store = match RedisStore::connect(&server.url(), "bench", FailMode::Closed) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("redis-state-bench: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "redis-server on port {}; {} keys; {} s per run; one RedisStore (one multiplexed connection)",
        server.port(),
        args.keys,
        args.seconds
    );
    println!(
        "{:<22} {:>8} {:>13} {:>10} {:>10} {:>12}",
        "mode", "callers", "decisions/s", "p50 us", "p99 us", "unavailable"
    );
    let duration = Duration::from_secs_f64(args.seconds);
    for &mode in &args.modes {
        for &callers in &args.callers {
            let run = match mode {
                Mode::Async => run_async(&store, callers, args.keys, duration),
                Mode::Threads => run_threads(&store, callers, args.keys, duration),
            };
            report(mode, callers, run);
        }
    }
}

fn report(mode: Mode, callers: usize, mut run: Run) {
    run.latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((run.latencies.len() as f64 - 1.0) * q).round() as usize;
        run.latencies.get(i).copied().unwrap_or(0)
    };
    println!(
        "{:<22} {:>8} {:>13.0} {:>10} {:>10} {:>12}",
        mode.name(),
        callers,
        run.decisions as f64 / run.elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        run.unavailable
    );
}

/// One draw per caller, spread over `keys` counter keys, with a maximum no
/// run reaches (so every decision takes quota and writes the log).
fn draws_for(caller: usize, keys: usize) -> Vec<Draw> {
    let counter = format!("bench{}", caller % keys.max(1));
    vec![Draw {
        key: format!("{counter}\u{1f}grant\u{1f}bench"),
        counter,
        window: 60_000,
        max: 1e12,
        cost: 1.0,
        rule: RuleRef::from_static("all_tools"),
    }]
}

fn now_ms() -> u64 {
    toolgate_clock::unix_now().as_millis() as u64
}

/// Tallies one caller's decisions.
#[derive(Default)]
struct Tally {
    decisions: usize,
    unavailable: usize,
    latencies: Vec<u32>,
}

impl Tally {
    fn record(&mut self, started: Instant, result: &Result<toolgate_policy::Grant, Refusal>) {
        self.latencies
            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        self.decisions += 1;
        if matches!(result, Err(Refusal::Unavailable(_))) {
            self.unavailable += 1;
        }
    }
}

fn merge(tallies: Vec<Tally>, elapsed: Duration) -> Run {
    let mut run = Run {
        decisions: 0,
        unavailable: 0,
        elapsed,
        latencies: Vec::new(),
    };
    for t in tallies {
        run.decisions += t.decisions;
        run.unavailable += t.unavailable;
        run.latencies.extend(t.latencies);
    }
    run
}

fn run_async(store: &Arc<RedisStore>, callers: usize, keys: usize, duration: Duration) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = toolgate_clock::monotonic_now();
    let deadline = started + duration;
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let store = store.clone();
                tokio::spawn(async move {
                    let draws = draws_for(caller, keys);
                    let mut tally = Tally::default();
                    while toolgate_clock::monotonic_now() < deadline {
                        let t = toolgate_clock::monotonic_now();
                        let result = store.acquire_async(draws.clone(), now_ms()).await;
                        tally.record(t, &result);
                    }
                    tally
                })
            })
            .collect();
        let mut tallies = Vec::with_capacity(callers);
        for task in tasks {
            tallies.push(task.await.expect("caller task"));
        }
        tallies
    });
    merge(tallies, started.elapsed())
}

fn run_threads(store: &Arc<RedisStore>, callers: usize, keys: usize, duration: Duration) -> Run {
    let started = toolgate_clock::monotonic_now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..callers)
        .map(|caller| {
            let store = store.clone();
            std::thread::spawn(move || {
                let draws = draws_for(caller, keys);
                let mut tally = Tally::default();
                while toolgate_clock::monotonic_now() < deadline {
                    let t = toolgate_clock::monotonic_now();
                    let result = store.acquire(&draws, now_ms());
                    tally.record(t, &result);
                }
                tally
            })
        })
        .collect();
    let tallies = threads
        .into_iter()
        .map(|t| t.join().expect("caller thread"))
        .collect();
    merge(tallies, started.elapsed())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        callers: vec![1, 16, 64, 256],
        seconds: 3.0,
        keys: 100,
        modes: vec![Mode::Async, Mode::Threads],
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--callers" => {
                parsed.callers = value
                    .split(',')
                    .map(|n| match n.trim().parse::<usize>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!("--callers: `{n}` is not a positive number")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => {
                parsed.seconds = match value.parse::<f64>() {
                    Ok(s) if s > 0.0 && s.is_finite() => s,
                    _ => return Err(format!("--seconds: `{value}` is not a positive number")),
                }
            }
            "--keys" => {
                parsed.keys = match value.parse::<usize>() {
                    Ok(k) if k > 0 => k,
                    _ => return Err(format!("--keys: `{value}` is not a positive number")),
                }
            }
            "--mode" => {
                parsed.modes = match value.as_str() {
                    "async" => vec![Mode::Async],
                    "threads" => vec![Mode::Threads],
                    "both" => vec![Mode::Async, Mode::Threads],
                    _ => return Err(format!("--mode: `{value}` is not async, threads or both")),
                }
            }
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    Ok(parsed)
}
