//! End-to-end benchmark of `toolgate run`: the same echo server direct and
//! behind the gateway, measured in one run, alternating, so that the ratio
//! holds on a noisy machine.
//!
//! Usage: stdio-bench [--rounds N] [--calls N] [--pipelined N] [--toolgate-args ARGS...]
//! (everything after `--toolgate-args` goes to `toolgate run`, e.g.
//! `--toolgate-args --state memory`; by default the embedded store and audit
//! trail are used, in a temporary directory)
//! (build first: `cargo build --release -p toolgate -p toolgate-bench`).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;
use toolgate_clock::monotonic_now;

const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "echo": { "limits": [ { "counter": "echo_rate", "window": "minute", "max": 100000000, "scope": "grant" } ] },
    "delete_*": { "action": "hide" },
    "send_*": { "limits": [ { "counter": "send_rate", "window": "minute", "max": 30, "scope": "grant" } ] }
  }
}"#;

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn start(cmd: &[PathBuf], args: &[String]) -> Peer {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd[0]));
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut p = Peer {
        child,
        stdin,
        stdout,
    };
    p.call(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}));
    writeln!(
        p.stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    p
}

impl Peer {
    fn call(&mut self, msg: &Value) -> Value {
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

fn call_line(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"hello {id}"}}}}}}"#
    )
}

/// Sequential calls: one in flight at a time. Returns per-call latencies.
fn latency(peer: &mut Peer, calls: u64) -> Vec<Duration> {
    let mut out = Vec::with_capacity(calls as usize);
    let mut line = String::new();
    for id in 1..=calls {
        let msg = call_line(id);
        let t = monotonic_now();
        peer.stdin.write_all(msg.as_bytes()).unwrap();
        peer.stdin.write_all(b"\n").unwrap();
        peer.stdin.flush().unwrap();
        line.clear();
        peer.stdout.read_line(&mut line).unwrap();
        out.push(t.elapsed());
        assert!(line.contains("\"result\""), "unexpected answer: {line}");
    }
    out
}

/// Pipelined calls: a writer thread sends them all while this thread reads. Returns calls/s.
fn throughput(peer: Peer, calls: u64) -> (f64, Peer) {
    let Peer {
        child,
        mut stdin,
        mut stdout,
    } = peer;
    let t = monotonic_now();
    let writer = std::thread::spawn(move || {
        let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut stdin);
        for id in 1..=calls {
            buf.write_all(call_line(id).as_bytes()).unwrap();
            buf.write_all(b"\n").unwrap();
        }
        buf.flush().unwrap();
        drop(buf);
        stdin
    });
    let mut line = String::new();
    for _ in 0..calls {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"result\""), "unexpected answer: {line}");
    }
    let rate = calls as f64 / t.elapsed().as_secs_f64();
    let stdin = writer.join().unwrap();
    (
        rate,
        Peer {
            child,
            stdin,
            stdout,
        },
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join(name);
    assert!(
        Path::new(&p).exists(),
        "{} not built: run cargo build --release -p toolgate -p toolgate-bench",
        p.display()
    );
    p
}

fn main() {
    let rounds = arg("--rounds", 5);
    let calls = arg("--calls", 20_000);
    let pipelined = arg("--pipelined", 200_000);
    let echo = sibling("echo-server");
    let toolgate = sibling("toolgate");
    let dir = std::env::temp_dir().join(format!("toolgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();

    let relay = sibling("relay");
    let direct_cmd = vec![echo.clone()];
    // `--state memory` (or any other `toolgate run` flags) after `--toolgate-args`;
    // by default the embedded store, in a directory of the bench's own.
    let mut gated_cmd = vec![
        toolgate,
        "run".into(),
        "--policy".into(),
        policy,
        "--data-dir".into(),
        dir.join("data"),
    ];
    let argv: Vec<String> = std::env::args().collect();
    if let Some(at) = argv.iter().position(|a| a == "--toolgate-args") {
        gated_cmd.extend(argv[at + 1..].iter().map(PathBuf::from));
    }
    gated_cmd.push("--".into());
    gated_cmd.push(echo.clone());
    let relay_cmd = vec![relay, echo];
    let mut lat = [Vec::new(), Vec::new(), Vec::new()];
    let mut tput = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, cmd) in [&direct_cmd, &gated_cmd, &relay_cmd]
            .into_iter()
            .enumerate()
        {
            let mut peer = start(cmd, &[]);
            // Check the gateway is really deciding: a hidden tool is unknown.
            if i == 1 && round == 0 {
                let r = peer.call(&json!({"jsonrpc":"2.0","id":"probe","method":"tools/call","params":{"name":"delete_all","arguments":{}}}));
                assert_eq!(
                    r["error"]["code"],
                    json!(-32602),
                    "the gateway did not refuse a hidden tool: {r}"
                );
            }
            latency(&mut peer, calls / 10); // warm-up
            lat[i].extend(latency(&mut peer, calls));
            let (rate, peer) = throughput(peer, pipelined);
            tput[i].push(rate);
            peer.stop();
        }
    }
    for l in &mut lat {
        l.sort();
    }
    let med = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (d50, g50) = (percentile(&lat[0], 0.5), percentile(&lat[1], 0.5));
    let (d99, g99) = (percentile(&lat[0], 0.99), percentile(&lat[1], 0.99));
    let (dt, gt) = (med(&tput[0]), med(&tput[1]));
    let (r50, r99, rt) = (
        percentile(&lat[2], 0.5),
        percentile(&lat[2], 0.99),
        med(&tput[2]),
    );
    println!("stdio-bench: {rounds} rounds, {calls} sequential + {pipelined} pipelined tools/call per round and side");
    let row = |name: &str, d: f64, g: f64, r: f64| {
        println!(
            "| {name} | {d:.1} µs | {g:.1} µs | +{:.1} µs | {r:.1} µs | +{:.1} µs |",
            g - d,
            r - d
        );
    };
    println!(
        "| measure | direct | through toolgate | toolgate adds | byte relay (floor) | relay adds |"
    );
    println!("|---|---|---|---|---|---|");
    row("p50 latency, sequential", d50, g50, r50);
    row("p99 latency, sequential", d99, g99, r99);
    println!(
        "| pipelined throughput (median of rounds) | {dt:.0} calls/s | {gt:.0} calls/s | {:.0}% of direct | {rt:.0} calls/s | {:.0}% of direct |",
        gt / dt * 100.0,
        rt / dt * 100.0
    );
}
