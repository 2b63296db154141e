//! `kill -9` of a process in the middle of appending a batch: the batch is
//! one transaction, so the store holds whole batches only, the chain still
//! verifies, and the next append goes on from its head.

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use toolgate_audit_store::AuditStore;

const CHILD_DIR: &str = "TOOLGATE_AUDIT_TEST_KILLED_DIR";
const BATCH: u64 = 300;

/// 2026-11-21T23:00:00.000Z
const T0: u64 = 1_795_302_000_000;

fn record(i: u64) -> Value {
    json!({
        "time": format!("2026-11-21T23:{:02}:{:02}.{:03}Z", i / 60_000 % 60, i / 1000 % 60, i % 1000),
        "grant": "local",
        "session": format!("{:032x}", i / 100),
        "tool": "echo",
        "decision": "allow",
        "rule": "tools.echo",
        "counters": [{"counter": "calls", "used": (i % 1000) as f64, "max": 1e9}],
        "decision_us": 3.5,
        "latency_ms": 0.25,
        "outcome": "ok",
        "args_sha256": format!("{:064x}", i),
    })
}

/// Not a test on its own: the process killed by
/// `kill_9_mid_batch_leaves_whole_batches_and_a_chain_that_verifies`.
/// Appends batches until killed, saying in `progress` how many are in.
#[test]
fn child_batch_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut store = AuditStore::open(dir).unwrap();
    for n in 0u64.. {
        let batch: Vec<Value> = (n * BATCH..(n + 1) * BATCH).map(record).collect();
        store.append_all(&batch).unwrap();
        std::fs::write(dir.join("progress"), (n + 1).to_string()).unwrap();
    }
}

#[test]
fn kill_9_mid_batch_leaves_whole_batches_and_a_chain_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_batch_appender",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = dir.path().join("progress");
    let deadline = toolgate_clock::monotonic_now() + Duration::from_secs(60);
    while std::fs::read_to_string(&progress)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0)
        < 3
    {
        assert!(
            toolgate_clock::monotonic_now() < deadline,
            "the child appends"
        );
        toolgate_clock::sleep(Duration::from_millis(5));
    }
    // SIGKILL, most likely inside a batch's transaction (that is where the
    // child spends its time).
    child.kill().unwrap();
    child.wait().unwrap();
    let mut store = AuditStore::open(dir.path()).unwrap();
    let report = store.verify().unwrap();
    assert!(report.records >= 3 * BATCH, "{report:?}");
    assert_eq!(report.records % BATCH, 0, "whole batches only: {report:?}");
    let next = store.append(&record(T0)).unwrap();
    assert_eq!(next, report.records + 1);
    assert_eq!(store.verify().unwrap().records, report.records + 1);
}
