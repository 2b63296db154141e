//! The sink, the writer thread and the intent journal together.

use super::*;
use crate::journal::temp_dir;
use serde_json::json;
use std::sync::Mutex;

fn record(tool: &str, server: Option<&str>) -> Record {
    Record {
        time: 1_795_302_000_123,
        grant: "local".into(),
        session: "s1".into(),
        server: server.map(str::to_string),
        rule: format!("tools.{tool}"),
        decision_us: 1.5,
        args_sha256: "00".into(),
        ..Record::new(tool, "allow", Outcome::Ok)
    }
}

/// A destination that keeps what it is given, and fails when told to.
#[derive(Clone, Default)]
struct Kept {
    records: Arc<Mutex<Vec<Value>>>,
    calls: Arc<Mutex<usize>>,
    fail: bool,
}

impl AuditDestination for Kept {
    fn append(&mut self, records: &[Value]) -> Result<(), String> {
        *self.calls.lock().unwrap() += 1;
        if self.fail {
            return Err("disk full".into());
        }
        self.records.lock().unwrap().extend_from_slice(records);
        Ok(())
    }
}

#[test]
fn the_server_is_in_the_json_only_when_known() {
    let with = record("t", Some("fs")).to_json();
    assert_eq!(with["server"], "fs");
    let keys: Vec<&str> = with
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(&keys[..5], ["time", "grant", "session", "server", "tool"]);
    assert!(record("t", None).to_json().get("server").is_none());
}

#[test]
fn records_reach_the_store_and_the_file_alike() {
    let dir = std::env::temp_dir().join(format!(
        "toolgate-audit-sink-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("audit.jsonl");
    let kept = Kept::default();
    let sink =
        AuditSink::open_with_store(Some(&file), LogLevel::Warn, Some(Box::new(kept.clone())))
            .unwrap();
    assert!(sink.enabled());
    for tool in ["a", "b", "c"] {
        sink.record(record(tool, Some("srv")));
    }
    sink.flush();
    let stored = kept.records.lock().unwrap().clone();
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored, lines);
    assert_eq!(stored[2]["tool"], "c");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_store_alone_enables_the_writer() {
    let kept = Kept::default();
    let sink =
        AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept.clone()))).unwrap();
    assert!(sink.enabled());
    sink.record(record("a", None));
    sink.flush();
    assert_eq!(kept.records.lock().unwrap().len(), 1);
    assert!(!AuditSink::open(None, LogLevel::Error).unwrap().enabled());
}

/// An observer that keeps the tools it saw.
struct Seen(Arc<Mutex<Vec<String>>>);

impl RecordObserver for Seen {
    fn observe(&mut self, record: &Record) {
        self.0.lock().unwrap().push(record.tool.clone());
    }
}

#[test]
fn an_observer_alone_enables_the_writer_and_sees_every_record() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = AuditSink::open_observed(
        None,
        LogLevel::Error,
        None,
        Some(Box::new(Seen(seen.clone()))),
    )
    .unwrap();
    assert!(sink.enabled());
    sink.record(record("a", None));
    sink.record(record("b", None));
    sink.flush();
    assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
}

#[test]
fn call_trace_reads_meta_but_keeps_a_header() {
    let meta = json!({"traceparent": "tp", "tracestate": "ts", "x": 1});
    let t = CallTrace::default().with_meta(Some(&meta));
    assert_eq!(
        (t.traceparent.as_deref(), t.tracestate.as_deref()),
        (Some("tp"), Some("ts"))
    );
    let header = CallTrace {
        traceparent: Some("header".into()),
        ..CallTrace::default()
    };
    assert_eq!(
        header.with_meta(Some(&meta)).traceparent.as_deref(),
        Some("header")
    );
    assert_eq!(CallTrace::default().with_meta(None).traceparent, None);
    let started = CallTrace::received_at(toolgate_clock::monotonic_now());
    assert!(started.start_unix_ns > 1_700_000_000_000_000_000);
}

#[test]
fn a_failing_store_does_not_stop_the_sink() {
    let kept = Kept {
        fail: true,
        ..Kept::default()
    };
    let sink =
        AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept.clone()))).unwrap();
    sink.record(record("a", None));
    sink.flush();
    sink.record(record("b", None));
    sink.flush();
    assert_eq!(*kept.calls.lock().unwrap(), 2);
}

#[test]
fn a_long_burst_goes_to_the_store_in_pieces() {
    let kept = Kept::default();
    let sink =
        AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept.clone()))).unwrap();
    let n = MAX_BURST * 2 + 3;
    for i in 0..n {
        sink.record(record(&format!("t{i}"), None));
    }
    sink.flush();
    let stored = kept.records.lock().unwrap();
    assert_eq!(stored.len(), n);
    assert_eq!(stored[n - 1]["tool"], format!("t{}", n - 1));
    assert!(*kept.calls.lock().unwrap() >= 3);
}

/// A sink with the journal `journal`, its records kept in `store` (and
/// `file`, when given).
fn journaled(file: Option<&Path>, store: Box<dyn AuditDestination>, journal: &Path) -> AuditSink {
    AuditSink::open_journaled(file, LogLevel::Error, Some(store), None, Some(journal)).unwrap()
}

fn journal_text(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn an_intent_is_the_record_as_interrupted_and_its_record_closes_it() {
    let dir = temp_dir("intend");
    let journal = dir.join("journal");
    let kept = Kept::default();
    let sink = journaled(None, Box::new(kept.clone()), &journal);
    assert_eq!(sink.journal_dir(), Some(journal.as_path()));
    let rec = sink.intend(record("a", Some("srv")));
    assert!(rec.intent.is_some());
    let text = journal_text(&journal);
    let line: Value = serde_json::from_str(text.trim_end()).unwrap();
    let mut expected = rec.to_json();
    expected["outcome"] = json!(INTERRUPTED);
    assert_eq!(line["record"], expected);
    sink.record(rec);
    sink.flush();
    assert_eq!(kept.records.lock().unwrap().len(), 1);
    assert!(journal_text(&journal).ends_with("}\nd 1\n"), "closed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_the_store_refuses_leaves_its_intent_open() {
    let dir = temp_dir("refused");
    let journal = dir.join("journal");
    let failing = Kept {
        fail: true,
        ..Kept::default()
    };
    let sink = journaled(None, Box::new(failing), &journal);
    let rec = sink.intend(record("a", None));
    sink.record(rec);
    sink.flush();
    assert_eq!(journal_text(&journal).lines().count(), 1, "still open");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dead_gateways_intents_reach_the_file_and_the_store_at_start() {
    let dir = temp_dir("recover");
    let journal = dir.join("journal");
    let file = dir.join("audit.jsonl");
    // A gateway forwards two calls; one answers; it dies.
    let kept = Kept::default();
    let dead = journaled(Some(&file), Box::new(kept.clone()), &journal);
    let answered = dead.intend(record("answered", None));
    let _in_flight = dead.intend(record("in_flight", None));
    dead.record(answered);
    dead.flush();
    // Its journal's lock goes when the process does: here, with the sink
    // and its writer thread.
    drop(dead);
    let unlocked = || {
        std::fs::read_dir(&journal).unwrap().all(|e| {
            let f = std::fs::File::open(e.unwrap().path()).unwrap();
            f.try_lock().is_ok()
        })
    };
    let deadline = toolgate_clock::monotonic_now() + std::time::Duration::from_secs(5);
    while !unlocked() {
        assert!(
            toolgate_clock::monotonic_now() < deadline,
            "the writer thread ends"
        );
        toolgate_clock::sleep(std::time::Duration::from_millis(5));
    }
    let after = Kept::default();
    let sink = journaled(Some(&file), Box::new(after.clone()), &journal);
    let recovered = after.records.lock().unwrap().clone();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["tool"], "in_flight");
    assert_eq!(recovered[0]["outcome"], INTERRUPTED);
    assert_eq!(recovered[0]["decision"], "allow");
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["tool"], "answered");
    assert_eq!(lines[1], recovered[0]);
    // Only the new gateway's own (empty) journal is left.
    assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 1);
    assert_eq!(journal_text(&journal), "");
    drop(sink);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_a_journal_intend_changes_nothing() {
    let kept = Kept::default();
    let sink = AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept))).unwrap();
    assert!(sink.intend(record("a", None)).intent.is_none());
    assert_eq!(sink.journal_dir(), None);
}

/// A destination whose first append waits until told to go on (a disk that
/// cannot keep up), saying when it starts waiting.
struct Stuck {
    kept: Kept,
    started: mpsc::Sender<()>,
    go: Option<mpsc::Receiver<()>>,
}

impl AuditDestination for Stuck {
    fn append(&mut self, records: &[Value]) -> Result<(), String> {
        if let Some(go) = self.go.take() {
            let _ = self.started.send(());
            let _ = go.recv();
        }
        self.kept.append(records)
    }
}

/// A sink with a queue of two records whose store is stuck on the first
/// record; returns it, what the store keeps, and the sender that unsticks it.
fn stuck_sink(when_full: WhenFull) -> (AuditSink, Kept, mpsc::Sender<()>) {
    let kept = Kept::default();
    let (started, wait_started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let store = Stuck {
        kept: kept.clone(),
        started,
        go: Some(go_rx),
    };
    let sink = AuditSink::open_queued(None, LogLevel::Error, Some(Box::new(store)), None, None, 2)
        .unwrap()
        .when_full(when_full);
    sink.record(record("first", None));
    wait_started.recv().unwrap();
    // The writer holds the first record; the queue takes two more.
    sink.record(record("queued1", None));
    sink.record(record("queued2", None));
    (sink, kept, go)
}

#[test]
fn a_full_queue_waits_briefly_then_drops_and_counts() {
    let (sink, kept, go) = stuck_sink(WhenFull::Wait);
    let started = toolgate_clock::monotonic_now();
    sink.record(record("dropped", None));
    assert!(started.elapsed() >= FULL_WAIT, "it waited for room first");
    assert_eq!(sink.dropped(), 1);
    assert_eq!(sink.clone().dropped(), 1, "one count for every clone");
    go.send(()).unwrap();
    sink.flush();
    let tools: Vec<Value> = kept
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["tool"].clone())
        .collect();
    assert_eq!(tools, [json!("first"), json!("queued1"), json!("queued2")]);
}

#[test]
fn a_full_queue_blocks_when_told_to_and_loses_nothing() {
    let (sink, kept, go) = stuck_sink(WhenFull::Block);
    let release = std::thread::spawn(move || {
        toolgate_clock::sleep(std::time::Duration::from_millis(50));
        go.send(()).unwrap();
    });
    sink.record(record("waited", None));
    release.join().unwrap();
    sink.flush();
    assert_eq!(sink.dropped(), 0);
    assert_eq!(kept.records.lock().unwrap().len(), 4);
    assert_eq!("block".parse::<WhenFull>(), Ok(WhenFull::Block));
    assert!("never".parse::<WhenFull>().is_err());
}

/// What a call costs the thread serving it: the intent (one `write(2)` of
/// its JSON to the journal) and handing the record to the writer. Run with
/// `cargo test --release -p toolgate-audit serving_thread_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement"]
fn serving_thread_cost() {
    let dir = temp_dir("cost");
    let kept = Kept::default();
    let sink = journaled(None, Box::new(kept.clone()), &dir.join("journal"));
    let n = 100_000u32;
    let started = toolgate_clock::monotonic_now();
    for _ in 0..n {
        let rec = sink.intend(record("echo", Some("srv")));
        sink.record(rec);
    }
    let per_call = started.elapsed() / n;
    sink.flush();
    let started = toolgate_clock::monotonic_now();
    for _ in 0..n {
        sink.record(record("echo", Some("srv")));
    }
    let record_only = started.elapsed() / n;
    sink.flush();
    println!("per call on the serving thread: intend + record {per_call:?}, record alone {record_only:?} ({n} calls)");
    assert_eq!(kept.records.lock().unwrap().len(), 2 * n as usize);
    std::fs::remove_dir_all(&dir).unwrap();
}
