//! The audit trail: one JSON line per `tools/call` decision.
//!
//! Records go through a channel to a writer task, so the decision path never
//! waits on the disk. The file is flushed whenever the channel runs dry, and
//! on shutdown. The same thread also hands the records to an
//! [`AuditDestination`] when there is one (the binary passes the SQLite audit
//! store): each burst of records that arrived together in one call, and to
//! a [`RecordObserver`] when there is one (the binary's metrics and traces,
//! toolgate-telemetry), so that they too are built off the hot path.

use crate::clock::rfc3339;
use serde_json::{json, Map, Value};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use toolgate_policy::{Decision, Millis, Taken};

/// How much the gateway says on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            other => Err(format!(
                "unknown log level {other:?} (expected error, warn, info or debug)"
            )),
        }
    }
}

/// What happened to a call after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by the gateway; never sent.
    Refused,
    /// The server answered with a result.
    Ok,
    /// The server answered with a JSON-RPC error (quota given back).
    Error,
    /// No answer: the server exited, or the gateway shut down first.
    NoResponse,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::NoResponse => "no_response",
        }
    }
}

/// One decision, as recorded.
#[derive(Debug, Clone)]
pub struct Record {
    pub time: Millis,
    pub grant: String,
    pub session: String,
    /// The upstream server's name in the gateway (`None` with one server, in
    /// `toolgate run`).
    pub server: Option<String>,
    pub tool: String,
    pub decision: &'static str,
    pub rule: String,
    pub reason: Option<String>,
    pub counters: Vec<Taken>,
    pub decision_us: f64,
    pub latency_ms: Option<f64>,
    pub outcome: Outcome,
    pub args_sha256: String,
    pub args: Option<Value>,
    /// What a trace span of the call needs: set on the records of the
    /// clients' own `tools/call` requests (not on approvals decided by an
    /// admin, or records imported from a file). Not written to the audit trail.
    pub trace: Option<Box<CallTrace>>,
}

/// The facts about a `tools/call` that a trace span needs besides its
/// record. The client's trace context is kept as it came and checked on the
/// writer thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTrace {
    /// The W3C `traceparent` the client sent (HTTP header, else
    /// `params._meta.traceparent`), unchecked.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with it, unchecked.
    pub tracestate: Option<String>,
    /// When the gateway received the call, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// The MCP protocol version of the call, when known.
    pub protocol_version: Option<String>,
}

impl CallTrace {
    /// A call received at `received` (wall-clock time worked back from it).
    pub fn received_at(received: std::time::Instant) -> CallTrace {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let start = now.saturating_sub(received.elapsed());
        CallTrace {
            start_unix_ns: u64::try_from(start.as_nanos()).unwrap_or(u64::MAX),
            ..CallTrace::default()
        }
    }

    /// `traceparent` and `tracestate` from a request's `_meta`, when strings.
    pub fn with_meta(mut self, meta: Option<&Value>) -> CallTrace {
        let text = |key: &str| {
            meta.and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if self.traceparent.is_none() {
            self.traceparent = text("traceparent");
            self.tracestate = text("tracestate");
        }
        self
    }
}

impl Record {
    /// The record's JSON line (without the newline).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("time".into(), json!(rfc3339(self.time)));
        m.insert("grant".into(), json!(self.grant));
        m.insert("session".into(), json!(self.session));
        if let Some(server) = &self.server {
            m.insert("server".into(), json!(server));
        }
        m.insert("tool".into(), json!(self.tool));
        m.insert("decision".into(), json!(self.decision));
        m.insert("rule".into(), json!(self.rule));
        if let Some(reason) = &self.reason {
            m.insert("reason".into(), json!(reason));
        }
        let counters: Vec<Value> = self
            .counters
            .iter()
            .map(|t| json!({"counter": t.counter, "used": t.used, "max": t.max}))
            .collect();
        m.insert("counters".into(), Value::Array(counters));
        m.insert(
            "decision_us".into(),
            json!((self.decision_us * 1000.0).round() / 1000.0),
        );
        if let Some(l) = self.latency_ms {
            m.insert("latency_ms".into(), json!((l * 1000.0).round() / 1000.0));
        }
        m.insert("outcome".into(), json!(self.outcome.as_str()));
        m.insert("args_sha256".into(), json!(self.args_sha256));
        if let Some(args) = &self.args {
            m.insert("args".into(), args.clone());
        }
        Value::Object(m)
    }

    fn log_line(&self) -> String {
        let mut line = format!(
            "toolgate: {} {} by {} ({})",
            self.decision,
            self.tool,
            self.rule,
            self.outcome.as_str()
        );
        if let Some(reason) = &self.reason {
            line.push_str(": ");
            line.push_str(reason);
        }
        line
    }
}

/// The facts of a decision that go into its record.
pub fn decision_facts(decision: &Decision) -> (&'static str, String, Option<String>) {
    match decision {
        Decision::Allow { rule, .. } => ("allow", rule.to_string(), None),
        Decision::Deny { rule, reason } => ("deny", rule.to_string(), Some(reason.clone())),
        Decision::Unknown { rule } => ("unknown", rule.to_string(), None),
        Decision::ApprovalRequired { rule, reason, .. } => {
            ("approval_required", rule.to_string(), Some(reason.clone()))
        }
        Decision::RateLimited { rule, reason, .. } => {
            ("rate_limited", rule.to_string(), Some(reason.clone()))
        }
        Decision::Unavailable { rule, reason } => {
            ("state_unavailable", rule.to_string(), Some(reason.clone()))
        }
    }
}

/// A place records go besides the file, written on the writer thread: the
/// binary's SQLite audit store, or a test's list.
pub trait AuditDestination: Send {
    /// Stores records (each as [`Record::to_json`] gives it), in order. On an
    /// error the gateway goes on; the message goes to stderr.
    fn append(&mut self, records: &[Value]) -> Result<(), String>;
}

/// Something that watches every record on the writer thread (metrics,
/// traces). It must not block: the writer thread also writes the audit trail.
pub trait RecordObserver: Send {
    fn observe(&mut self, record: &Record);
}

/// Where records go: an optional file, an optional [`AuditDestination`], an
/// optional [`RecordObserver`], and stderr at `info`.
#[derive(Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<Entry>>,
    log_level: LogLevel,
    /// Records are written somewhere (a file or a store), not only observed.
    keeps: bool,
}

enum Entry {
    Record(Box<Record>),
    /// Write everything before this, then answer.
    Flush(mpsc::Sender<()>),
}

impl AuditSink {
    /// Opens (appending) the audit file, if one is given.
    pub fn open(path: Option<&Path>, log_level: LogLevel) -> std::io::Result<AuditSink> {
        AuditSink::open_with_store(path, log_level, None)
    }

    /// Opens (appending) the audit file, if one is given, and writes records
    /// to `store` too, if one is given.
    pub fn open_with_store(
        path: Option<&Path>,
        log_level: LogLevel,
        store: Option<Box<dyn AuditDestination>>,
    ) -> std::io::Result<AuditSink> {
        AuditSink::open_observed(path, log_level, store, None)
    }

    /// [`AuditSink::open_with_store`], with every record shown to `observer`
    /// too (first, on the writer thread).
    pub fn open_observed(
        path: Option<&Path>,
        log_level: LogLevel,
        store: Option<Box<dyn AuditDestination>>,
        observer: Option<Box<dyn RecordObserver>>,
    ) -> std::io::Result<AuditSink> {
        let file = match path {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => None,
        };
        if file.is_none() && store.is_none() && observer.is_none() {
            return Ok(AuditSink {
                tx: None,
                log_level,
                keeps: false,
            });
        }
        let keeps = file.is_some() || store.is_some();
        let (tx, rx) = mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("toolgate-audit".into())
            .spawn(move || write_records(rx, file, store, observer))?;
        Ok(AuditSink {
            tx: Some(tx),
            log_level,
            keeps,
        })
    }

    pub fn record(&self, rec: Record) {
        if self.log_level >= LogLevel::Info {
            let _ = writeln!(std::io::stderr(), "{}", rec.log_line());
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Entry::Record(Box::new(rec)));
        }
    }

    /// Waits (up to five seconds) until every record sent so far is on disk.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::channel();
            if tx.send(Entry::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(std::time::Duration::from_secs(5));
            }
        }
    }

    pub fn log(&self, level: LogLevel, message: &str) {
        if self.log_level >= level {
            let _ = writeln!(std::io::stderr(), "toolgate: {message}");
        }
    }

    /// Whether records are written (a file or a store) rather than only
    /// observed: when not, callers may leave out what only the audit trail
    /// reads (the arguments' hash).
    pub fn keeps_records(&self) -> bool {
        self.keeps
    }

    /// Whether records go anywhere; when not, callers may skip building them.
    pub fn enabled(&self) -> bool {
        self.tx.is_some() || self.log_level >= LogLevel::Info
    }
}

/// The most records handed to the [`AuditDestination`] in one call.
const MAX_BURST: usize = 512;

/// With only an observer (nothing written), the writer thread wakes this
/// often and takes what has arrived, instead of being woken by every
/// record: a gateway thread then never pays for a wake-up.
const OBSERVE_TICK: std::time::Duration = std::time::Duration::from_millis(20);

fn append_burst(store: &mut Option<Box<dyn AuditDestination>>, burst: &mut Vec<Value>) {
    let Some(store) = store else { return };
    if burst.is_empty() {
        return;
    }
    if let Err(e) = store.append(burst) {
        let _ = writeln!(
            std::io::stderr(),
            "toolgate: cannot write {} record(s) to the audit store: {e}",
            burst.len()
        );
    }
    burst.clear();
}

/// The writer thread: takes what has arrived, writes it, flushes, answers the
/// flushes waiting, and waits for more.
fn write_records(
    rx: mpsc::Receiver<Entry>,
    file: Option<std::fs::File>,
    mut store: Option<Box<dyn AuditDestination>>,
    mut observer: Option<Box<dyn RecordObserver>>,
) {
    let mut out = file.map(BufWriter::new);
    let mut acks = Vec::new();
    let mut burst: Vec<Value> = Vec::new();
    let only_observed = out.is_none() && store.is_none();
    loop {
        let first = if only_observed {
            std::thread::sleep(OBSERVE_TICK);
            match rx.try_recv() {
                Ok(entry) => entry,
                Err(mpsc::TryRecvError::Empty) => continue,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(entry) => entry,
                Err(_) => break,
            }
        };
        let mut next = Some(first);
        while let Some(entry) = next {
            match entry {
                Entry::Record(rec) => {
                    if let Some(observer) = &mut observer {
                        observer.observe(&rec);
                    }
                    if only_observed {
                        next = rx.try_recv().ok();
                        continue;
                    }
                    let value = rec.to_json();
                    if let Some(out) = &mut out {
                        let mut line = value.to_string();
                        line.push('\n');
                        // A full disk must not stop the gateway; the
                        // records are lost and stderr says so.
                        if out.write_all(line.as_bytes()).is_err() {
                            let _ = writeln!(
                                std::io::stderr(),
                                "toolgate: cannot write the audit file"
                            );
                        }
                    }
                    if store.is_some() {
                        burst.push(value);
                        if burst.len() >= MAX_BURST {
                            append_burst(&mut store, &mut burst);
                        }
                    }
                }
                Entry::Flush(ack) => acks.push(ack),
            }
            next = rx.try_recv().ok();
        }
        if let Some(out) = &mut out {
            let _ = out.flush();
        }
        append_burst(&mut store, &mut burst);
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn record(tool: &str, server: Option<&str>) -> Record {
        Record {
            time: 1_795_302_000_123,
            grant: "local".into(),
            session: "s1".into(),
            server: server.map(str::to_string),
            tool: tool.into(),
            decision: "allow",
            rule: format!("tools.{tool}"),
            reason: None,
            counters: Vec::new(),
            decision_us: 1.5,
            latency_ms: None,
            outcome: Outcome::Ok,
            args_sha256: "00".into(),
            args: None,
            trace: None,
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
        let sink = AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept.clone())))
            .unwrap();
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
        let started = CallTrace::received_at(std::time::Instant::now());
        assert!(started.start_unix_ns > 1_700_000_000_000_000_000);
    }

    #[test]
    fn a_failing_store_does_not_stop_the_sink() {
        let kept = Kept {
            fail: true,
            ..Kept::default()
        };
        let sink = AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept.clone())))
            .unwrap();
        sink.record(record("a", None));
        sink.flush();
        sink.record(record("b", None));
        sink.flush();
        assert_eq!(*kept.calls.lock().unwrap(), 2);
    }

    #[test]
    fn a_long_burst_goes_to_the_store_in_pieces() {
        let kept = Kept::default();
        let sink = AuditSink::open_with_store(None, LogLevel::Error, Some(Box::new(kept.clone())))
            .unwrap();
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
}
