//! Bytes on disk per record of a typical call: N records shaped like the
//! gateway's (one session per 100 calls, a counted tool, the arguments'
//! hash), appended in bursts as the writer thread does, then the sizes of
//! `audit.db` and its WAL. Run with `--nocapture` to see the figure.

use serde_json::{json, Value};
use std::path::Path;
use toolgate_audit_store::{AuditStore, DB_FILE};

/// 2026-11-21T23:00:00.000Z
const T0: u64 = 1_795_302_000_000;

/// At most this many bytes per record (issue 15).
const BUDGET: u64 = 300;

fn typical(i: u64) -> Value {
    let ms = T0 + i * 3;
    json!({
        "time": rfc3339(ms),
        "grant": "local",
        "session": format!("{:032x}", 0x5eed_0000_u64 + i / 100),
        "server": "echo",
        "tool": "echo",
        "decision": "allow",
        "rule": "tools.echo",
        "counters": [{"counter": "echo-calls", "used": (i % 1000 + 1) as f64, "max": 1e9}],
        "decision_us": 3.125 + (i % 7) as f64,
        "latency_ms": 0.153 + (i % 11) as f64 / 1000.0,
        "outcome": "ok",
        "args_sha256": format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    })
}

fn rfc3339(ms: u64) -> String {
    let into_day = ms - (T0 - 23 * 3_600_000);
    let (h, m, s, milli) = (
        into_day / 3_600_000 % 24,
        into_day / 60_000 % 60,
        into_day / 1000 % 60,
        into_day % 1000,
    );
    format!("2026-11-21T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn sizes(dir: &Path) -> u64 {
    let db = dir.join(DB_FILE);
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    size(&db) + size(Path::new(&wal))
}

#[test]
fn a_typical_record_takes_at_most_300_bytes_on_disk() {
    let n: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuditStore::open(dir.path()).unwrap();
    let records: Vec<Value> = (0..n).map(typical).collect();
    for burst in records.chunks(256) {
        store.append_all(burst).unwrap();
    }
    let open = sizes(dir.path());
    drop(store);
    let closed = sizes(dir.path());
    println!(
        "{n} typical records: {} bytes/record with the store open (audit.db + wal), {} closed",
        open / n,
        closed / n
    );
    assert!(closed / n <= BUDGET, "{} bytes/record", closed / n);
}
