//! End-to-end benchmark of `toolgate serve`: the same Streamable HTTP echo
//! server (`http-echo`) direct, behind the gateway, and behind a plain TCP
//! relay (`tcp-relay`, the floor for any extra hop), measured in one run, in
//! rotating order, so that the ratios hold on a noisy machine.
//!
//! Build first: `cargo build --release -p toolgate -p toolgate-bench`.
//!
//! - Load: `http-bench [--concurrency 1,8,32] [--rounds 3] [--duration 3]
//!   [--mode handshake|2026] [--target direct,toolgate,relay]`. For each
//!   concurrency C and each round, each target gets C clients, each on its
//!   own keep-alive HTTP/1.1 connection with its own session, sending
//!   tools/call echo back to back: first unmeasured for `--warmup` seconds,
//!   then measured for `--duration` seconds (or `--calls N` each). Each
//!   round rotates which target goes first. Prints a Markdown table of the
//!   medians of the rounds.
//! - Memory: `http-bench --sessions [N]` (N = 10000) opens N sessions on
//!   toolgate and prints its RSS before and after.
//!
//! `toolgate serve` gets `--policy P --listen 127.0.0.1:0 --upstream URL`,
//! then every `--toolgate-arg`, with a policy that allows `echo` and denies
//! everything else; the bench checks it really refuses another tool before
//! measuring.

mod client;
mod load;
mod server;
mod sessions;

use anyhow::{bail, Context, Result};
use clap::Parser;
use client::{Client, Mode};
use load::{Load, Round, Stop};
use server::Server;
use std::path::{Path, PathBuf};
use std::time::Duration;

const POLICY: &str = r#"{"version":"1","default":"deny","tools":{"echo":{}}}"#;

#[derive(Debug, Parser)]
#[command(
    name = "http-bench",
    about = "toolgate serve versus direct versus a TCP relay, over Streamable HTTP"
)]
struct Args {
    /// Client counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Rounds per concurrency and target; the table shows their medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds each client measures for, per round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Measure this many calls per client instead of --duration.
    #[arg(long)]
    calls: Option<u64>,
    /// Seconds of unmeasured calls per client before measuring (with --calls: a tenth of the calls).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// The protocol era: handshake (2025-11-25 sessions) or 2026 (stateless 2026-07-28).
    #[arg(long, value_enum, default_value_t = Mode::Handshake)]
    mode: Mode,
    /// Which targets to measure, comma-separated or repeated (only `direct`
    /// and `relay` need no toolgate).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,toolgate,relay"
    )]
    target: Vec<Target>,
    /// An argument passed on to `toolgate serve`, after the bench's own
    /// (repeatable): `--toolgate-arg=--workers --toolgate-arg=2`.
    #[arg(long = "toolgate-arg", value_name = "ARG", allow_hyphen_values = true)]
    toolgate_args: Vec<String>,
    /// The toolgate binary (default: `toolgate` beside this one).
    #[arg(long)]
    toolgate: Option<PathBuf>,
    /// The echo server binary (default: `http-echo` beside this one).
    #[arg(long)]
    echo: Option<PathBuf>,
    /// The relay binary (default: `tcp-relay` beside this one).
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Memory mode: open this many sessions and report the RSS they cost.
    #[arg(long, num_args = 0..=1, default_missing_value = "10000")]
    sessions: Option<usize>,
    /// Memory mode: connections the sessions are opened over.
    #[arg(long, default_value_t = 8)]
    pool: usize,
    /// Memory mode: sessions that must still answer tools/call afterwards.
    #[arg(long, default_value_t = 100)]
    sample: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// The echo server itself.
    #[value(alias = "direct-only")]
    Direct,
    /// `toolgate serve` in front of it.
    Toolgate,
    /// `tcp-relay` in front of it: an extra hop that does nothing.
    Relay,
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("http-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(args: Args) -> Result<bool> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs client counts of 1 or more");
    }
    if args.rounds == 0 {
        bail!("--rounds must be 1 or more");
    }
    let want = |t: Target| args.target.contains(&t);
    // Memory mode measures toolgate, or the echo server without toolgate.
    let memory = match args.sessions {
        None => None,
        Some(_) if want(Target::Toolgate) => Some(Target::Toolgate),
        Some(_) if want(Target::Direct) => Some(Target::Direct),
        Some(_) => bail!("--sessions measures toolgate or direct, not the relay"),
    };
    let (start_gate, start_relay) = match memory {
        Some(target) => (target == Target::Toolgate, false),
        None => (want(Target::Toolgate), want(Target::Relay)),
    };
    let echo_exe = args.echo.clone().unwrap_or_else(|| sibling("http-echo"));
    let toolgate_exe = args.toolgate.clone().unwrap_or_else(|| sibling("toolgate"));
    let relay_exe = args.relay.clone().unwrap_or_else(|| sibling("tcp-relay"));
    let runtime = tokio::runtime::Runtime::new()?;

    // One echo server: measured directly, and the upstream of toolgate and the relay.
    let mut echo = Server::start_echo(&echo_exe)?;
    let dir = std::env::temp_dir().join(format!("toolgate-http-bench-{}", std::process::id()));
    let _dir = RemoveOnDrop(dir.clone());
    let mut gate = None;
    if start_gate {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let policy = dir.join("policy.json");
        std::fs::write(&policy, POLICY)?;
        let server = Server::start_toolgate(
            &toolgate_exe,
            &policy,
            &echo.endpoint.url(),
            &args.toolgate_args,
        )?;
        runtime.block_on(probe(&server, args.mode))?;
        gate = Some(server);
    }
    let mut relay = None;
    if start_relay {
        relay = Some(Server::start_relay(&relay_exe, &echo.endpoint)?);
    }

    if let Some(count) = args.sessions {
        let server = gate.as_ref().unwrap_or(&echo);
        let spec = sessions::Sessions {
            count,
            pool: args.pool.max(1),
            sample: args.sample,
        };
        return runtime.block_on(sessions::run(server, spec));
    }

    // In the table's order, whatever the order on the command line.
    let mut targets = Vec::new();
    if want(Target::Direct) {
        targets.push(&mut echo);
    }
    targets.extend(gate.as_mut());
    targets.extend(relay.as_mut());

    let (warmup, measure) = match args.calls {
        Some(calls) => (Stop::Calls(calls / 10), Stop::Calls(calls.max(1))),
        None => (
            Stop::After(Duration::from_secs_f64(args.warmup)),
            Stop::After(Duration::from_secs_f64(args.duration)),
        ),
    };
    // rows[c][target] holds one Round per round.
    let mut rows: Vec<Vec<Vec<Round>>> = Vec::new();
    for &concurrency in &args.concurrency {
        let load = Load {
            concurrency,
            mode: args.mode,
            warmup,
            measure,
        };
        let mut per_target: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            // Rotate which target goes first, so none always gets the warmer machine.
            let n = targets.len();
            for i in (0..n).map(|k| (k + round) % n) {
                let server = &mut targets[i];
                let result = runtime
                    .block_on(load::round(server.endpoint.clone(), load))
                    .with_context(|| {
                        format!(
                            "{} at {} clients, round {}",
                            server.name,
                            concurrency,
                            round + 1
                        )
                    })?;
                server.check_alive()?;
                eprintln!(
                    "c={concurrency} round {}/{} {}: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs",
                    round + 1,
                    args.rounds,
                    server.name,
                    result.rate,
                    result.percentile_us(0.5),
                    result.percentile_us(0.99)
                );
                per_target[i].push(result);
            }
        }
        rows.push(per_target);
    }
    let names: Vec<&str> = targets.iter().map(|s| s.name).collect();
    let measured = match args.calls {
        Some(calls) => format!("{calls} calls per client"),
        None => format!(
            "{} s per round (after {} s warm-up)",
            args.duration, args.warmup
        ),
    };
    let mode = match args.mode {
        Mode::Handshake => "handshake (2025-11-25 sessions)",
        Mode::Stateless => "stateless (2026-07-28)",
    };
    let extra = if gate.is_some() && !args.toolgate_args.is_empty() {
        format!("; toolgate serve … {}", args.toolgate_args.join(" "))
    } else {
        String::new()
    };
    println!(
        "http-bench: {mode}, {} rounds, {measured}, medians of rounds; one keep-alive connection per client{extra}",
        args.rounds
    );
    print_table(&args.concurrency, &names, &rows);
    Ok(true)
}

/// Before measuring toolgate, check it is really deciding: the echo server
/// answers any tool, so a tool the policy denies must come back refused.
async fn probe(gate: &Server, mode: Mode) -> Result<()> {
    let mut client = Client::connect(&gate.endpoint).await?;
    let session = match mode {
        Mode::Handshake => Some(client.initialize().await.context("toolgate: initialize")?),
        Mode::Stateless => None,
    };
    client
        .echo(mode, session.as_ref(), 1, "probe")
        .await
        .context("toolgate: the allowed tool `echo`")?;
    let answer = client
        .call_tool(mode, session.as_ref(), 2, "delete_all", "probe")
        .await
        .context("toolgate: the denied tool `delete_all`")?;
    let refused = answer.get("error").is_some()
        || answer.pointer("/result/isError") == Some(&serde_json::Value::Bool(true));
    if !refused {
        bail!("toolgate did not refuse a tool its policy denies: {answer}");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() % 2 {
        1 => v[mid],
        _ => (v[mid - 1] + v[mid]) / 2.0,
    }
}

struct Summary {
    rate: f64,
    p50: f64,
    p99: f64,
}

fn summarize(rounds: &[Round]) -> Summary {
    Summary {
        rate: median(rounds.iter().map(|r| r.rate).collect()),
        p50: median(rounds.iter().map(|r| r.percentile_us(0.5)).collect()),
        p99: median(rounds.iter().map(|r| r.percentile_us(0.99)).collect()),
    }
}

fn print_table(concurrency: &[usize], names: &[&str], rows: &[Vec<Vec<Round>>]) {
    let find = |row: &[Vec<Round>], name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| summarize(&row[i]))
    };
    let dash = || "–".to_string();
    println!(
        "| clients | direct calls/s | toolgate calls/s | % of direct | relay calls/s | relay % of direct \
         | p50 direct | p50 toolgate | added p50 | relay added p50 \
         | p99 direct | p99 toolgate | added p99 | relay added p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, row) in concurrency.iter().zip(rows) {
        let (d, g, r) = (
            find(row, "direct"),
            find(row, "toolgate"),
            find(row, "relay"),
        );
        let rate = |s: &Option<Summary>| s.as_ref().map_or_else(dash, |s| format!("{:.0}", s.rate));
        let us = |s: &Option<Summary>, f: fn(&Summary) -> f64| {
            s.as_ref().map_or_else(dash, |s| format!("{:.1} µs", f(s)))
        };
        // What `other` gives beside direct: a share of its rate, or added time.
        let share = |other: &Option<Summary>| match (&d, other) {
            (Some(d), Some(o)) => format!("{:.0}%", o.rate / d.rate * 100.0),
            _ => dash(),
        };
        let added = |other: &Option<Summary>, f: fn(&Summary) -> f64| match (&d, other) {
            (Some(d), Some(o)) => format!("{:+.1} µs", f(o) - f(d)),
            _ => dash(),
        };
        println!(
            "| {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate(&d),
            rate(&g),
            share(&g),
            rate(&r),
            share(&r),
            us(&d, |s| s.p50),
            us(&g, |s| s.p50),
            added(&g, |s| s.p50),
            added(&r, |s| s.p50),
            us(&d, |s| s.p99),
            us(&g, |s| s.p99),
            added(&g, |s| s.p99),
            added(&r, |s| s.p99),
        );
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    exe.parent().unwrap_or(Path::new(".")).join(name)
}

/// The policy's temporary directory, removed at the end of the run.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
