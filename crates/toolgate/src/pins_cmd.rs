//! `toolgate pins list | diff SERVER/TOOL | accept SERVER/TOOL`: the tool
//! definitions the gateway pinned, the ones a server changed since, and
//! accepting a change (against the same `--data-dir` or `--state` as the
//! gateway).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use toolgate_pins::{Pin, PinStore};

#[derive(Debug, Args)]
pub struct PinsArgs {
    #[command(subcommand)]
    command: PinsCommand,
}

#[derive(Debug, Subcommand)]
enum PinsCommand {
    /// Every pinned tool; changed ones first.
    List {
        /// Only the tools whose definition changed.
        #[arg(long)]
        changed: bool,
        #[command(flatten)]
        state: crate::flags::StateArgs,
    },
    /// The pinned definition against the changed one, line by line.
    Diff {
        /// SERVER/TOOL, as `list` shows it.
        target: String,
        #[command(flatten)]
        state: crate::flags::StateArgs,
    },
    /// Accept a changed definition: the tool is no longer held back.
    Accept {
        /// SERVER/TOOL, as `list` shows it.
        target: String,
        /// The fingerprint `diff` showed (at least 8 hex digits): the accept is
        /// refused if the server has changed the definition again since.
        #[arg(long)]
        fingerprint: Option<String>,
        #[command(flatten)]
        state: crate::flags::StateArgs,
    },
}

fn split(target: &str) -> Result<(&str, &str)> {
    // Server names may contain '/' (a `toolgate run` command line): the tool is after the last one.
    target
        .rsplit_once('/')
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
        .ok_or_else(|| {
            anyhow!("{target:?}: expected SERVER/TOOL, as `toolgate pins list` shows it")
        })
}

fn open(state: &crate::flags::StateArgs) -> Result<std::sync::Arc<dyn PinStore>> {
    let state = state.resolve(None)?;
    if state.store == toolgate_config::StateStore::Memory {
        bail!("--state memory has no pins to show: use the gateway's --data-dir or --state");
    }
    toolgate_host::stores::open_pins(&state)
}

fn get(store: &dyn PinStore, target: &str) -> Result<Pin> {
    let (server, tool) = split(target)?;
    store
        .get(server, tool)
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no pinned tool {target:?} (see toolgate pins list)"))
}

pub fn run(args: PinsArgs) -> Result<u8> {
    match args.command {
        PinsCommand::List { changed, state } => {
            let store = open(&state)?;
            let mut pins = store.list().map_err(|e| anyhow!("{e}"))?;
            pins.sort_by_key(|p| !p.is_changed());
            println!("{:<9} {:<40} FINGERPRINT", "STATUS", "SERVER/TOOL");
            for pin in pins.iter().filter(|p| !changed || p.is_changed()) {
                let status = if pin.is_changed() {
                    "changed"
                } else {
                    "pinned"
                };
                println!(
                    "{:<9} {:<40} {}",
                    status,
                    format!("{}/{}", pin.server, pin.tool),
                    &pin.pinned_fingerprint[..16]
                );
            }
            Ok(0)
        }
        PinsCommand::Diff { target, state } => {
            let store = open(&state)?;
            let pin = get(store.as_ref(), &target)?;
            let Some(changed) = &pin.changed else {
                println!("{target}: no change (the listed definition is the pinned one)");
                return Ok(0);
            };
            print!("{}", diff(&pin.pinned, changed));
            if let Some(fp) = &pin.changed_fingerprint {
                println!(
                    "\nto accept exactly this definition: toolgate pins accept {target} --fingerprint {}",
                    &fp[..16]
                );
            }
            Ok(1)
        }
        PinsCommand::Accept {
            target,
            fingerprint,
            state,
        } => {
            let store = open(&state)?;
            let (server, tool) = split(&target)?;
            let pin = store
                .accept(server, tool, fingerprint.as_deref())
                .map_err(|e| anyhow!("{e}"))?;
            if let Some(dir) = toolgate_host::stores::audit_dir(&state.resolve(None)?) {
                let sink = toolgate_host::audit::open_sink(
                    None,
                    toolgate_audit::LogLevel::Warn,
                    Some(&dir),
                )?;
                sink.record(toolgate_audit::Record {
                    time: toolgate_clock::Clock::now_ms(&toolgate_clock::SystemClock),
                    grant: String::new(),
                    session: String::new(),
                    server: Some(pin.server.clone()),
                    tool: pin.tool.clone(),
                    decision: "pin_accepted",
                    rule: "pins".into(),
                    reason: Some(format!(
                        "definition {} accepted by {} via cli",
                        &pin.pinned_fingerprint[..16],
                        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                    )),
                    counters: Vec::new(),
                    decision_us: 0.0,
                    latency_ms: None,
                    outcome: toolgate_audit::Outcome::Refused,
                    args_sha256: String::new(),
                    args: None,
                    trace: None,
                    intent: None,
                });
                sink.flush();
            }
            println!("accepted the new definition of {target}; the gateway lists it again at its next tools/list");
            Ok(0)
        }
    }
}

/// A line diff of two pretty-printed definitions (`-` pinned, `+` changed).
fn diff(pinned: &Value, changed: &Value) -> String {
    let a: Vec<String> = serde_json::to_string_pretty(pinned)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let b: Vec<String> = serde_json::to_string_pretty(changed)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    // Longest common subsequence, fine for definitions of a few hundred lines.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::from("--- pinned\n+++ listed now\n");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", a[i]);
            i += 1;
        }
    }
    out
}
