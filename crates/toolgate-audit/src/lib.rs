//! The audit trail: one JSON line per `tools/call` decision.
//!
//! Records go through a channel to a writer task, so the decision path never
//! waits on the disk. The file is flushed whenever the channel runs dry, and
//! on shutdown. The same thread also hands the records to an
//! [`AuditDestination`] when there is one (the binary passes the SQLite audit
//! store): each burst of records that arrived together in one call, and to
//! a [`RecordObserver`] when there is one (the binary's metrics and traces,
//! toolgate-telemetry), so that they too are built off the hot path.
//!
//! An allowed call's record is complete only when the server answers, so a
//! gateway killed with calls in flight would leave calls the server ran with
//! no record. With a journal ([`AuditSink::open_journaled`], the binary's
//! default: `<data-dir>/audit-journal/`), [`AuditSink::intend`] writes the
//! call's record, outcome `interrupted`, to this process's intent journal
//! (`journal.rs`) before the call is forwarded: one `write(2)` on the serving
//! thread, no `fsync`, no wait for the writer thread or the store. The
//! writer closes the intent once the final record is written (file flushed,
//! store committed); a crash in between leaves both records, never none. At
//! start, the journals of dead processes in the directory are put in the
//! trail (their intents not closed, as records with outcome `interrupted`:
//! the call was forwarded, and may or may not have run) and removed;
//! [`recover_journals`] does the same for `toolgate audit`. What `write(2)`
//! returned survives `kill -9` and any crash of the process, not a loss of
//! power.

use serde_json::Value;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use toolgate_clock::rfc3339;
use toolgate_policy::{Decision, Millis, Taken};

mod journal;

use journal::Journal;
pub use journal::{Intent, INTERRUPTED};

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
    /// The call's line in the intent journal ([`AuditSink::intend`]), closed
    /// once this record is written. Not written to the audit trail.
    pub intent: Option<Intent>,
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
        let now = toolgate_clock::unix_now();
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
    /// The record of `decision` on a call of `tool` and its `outcome`, with
    /// nothing else known yet: the other fields empty (time 0, no grant,
    /// session, server, rule, reason, counters, timings, arguments or
    /// trace). Struct update syntax fills in the rest.
    pub fn new(tool: &str, decision: &'static str, outcome: Outcome) -> Record {
        Record {
            time: 0,
            grant: String::new(),
            session: String::new(),
            server: None,
            tool: tool.to_string(),
            decision,
            rule: String::new(),
            reason: None,
            counters: Vec::new(),
            decision_us: 0.0,
            latency_ms: None,
            outcome,
            args_sha256: String::new(),
            args: None,
            trace: None,
            intent: None,
        }
    }

    /// The record of a tool whose definition changed since it was pinned
    /// (`kind`: `pin_changed` when it is held back, `pin_changed_warn`).
    pub fn pin_changed(
        time: Millis,
        (grant, session): (String, String),
        server: &str,
        tool: &str,
        kind: &'static str,
    ) -> Record {
        Record {
            time,
            grant,
            session,
            server: Some(server.to_string()),
            rule: "pins".into(),
            reason: Some("the tool's definition differs from the pinned one".into()),
            ..Record::new(tool, kind, Outcome::Refused)
        }
    }

    /// The record's JSON line (without the newline).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(RecordJson {
            record: self,
            outcome: self.outcome.as_str(),
        })
        .expect("a record is JSON")
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

/// A record as the trail keeps it, with its outcome: written straight into
/// a journal line on the serving thread (no tree built), and turned into a
/// [`Value`] by [`Record::to_json`] on the writer thread.
struct RecordJson<'a> {
    record: &'a Record,
    outcome: &'a str,
}

impl serde::Serialize for RecordJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(serde::Serialize)]
        struct Counter<'a> {
            counter: &'a str,
            used: f64,
            max: f64,
        }
        struct Counters<'a>(&'a [Taken]);
        impl serde::Serialize for Counters<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|t| Counter {
                    counter: &t.counter,
                    used: t.used,
                    max: t.max,
                }))
            }
        }
        let r = self.record;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", &rfc3339(r.time))?;
        m.serialize_entry("grant", &r.grant)?;
        m.serialize_entry("session", &r.session)?;
        if let Some(server) = &r.server {
            m.serialize_entry("server", server)?;
        }
        m.serialize_entry("tool", &r.tool)?;
        m.serialize_entry("decision", r.decision)?;
        m.serialize_entry("rule", &r.rule)?;
        if let Some(reason) = &r.reason {
            m.serialize_entry("reason", reason)?;
        }
        m.serialize_entry("counters", &Counters(&r.counters))?;
        m.serialize_entry("decision_us", &((r.decision_us * 1000.0).round() / 1000.0))?;
        if let Some(l) = r.latency_ms {
            m.serialize_entry("latency_ms", &((l * 1000.0).round() / 1000.0))?;
        }
        m.serialize_entry("outcome", self.outcome)?;
        m.serialize_entry("args_sha256", &r.args_sha256)?;
        if let Some(args) = &r.args {
            m.serialize_entry("args", args)?;
        }
        m.end()
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
    /// This process's intent journal, when records are kept and a journal
    /// directory was given.
    journal: Option<Arc<Journal>>,
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
        AuditSink::open_journaled(path, log_level, store, observer, None)
    }

    /// [`AuditSink::open_observed`], with this process's intent journal in
    /// `journal` (when records are kept: a file or a store). First the
    /// journals of dead processes there are put in the file and the store
    /// (see the module's documentation) and removed.
    pub fn open_journaled(
        path: Option<&Path>,
        log_level: LogLevel,
        mut store: Option<Box<dyn AuditDestination>>,
        observer: Option<Box<dyn RecordObserver>>,
        journal: Option<&Path>,
    ) -> std::io::Result<AuditSink> {
        let mut file = match path {
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
                journal: None,
            });
        }
        let keeps = file.is_some() || store.is_some();
        let journal = match journal.filter(|_| keeps) {
            Some(dir) => {
                recover_into(dir, file.as_mut(), store.as_deref_mut(), log_level)?;
                Some(Arc::new(Journal::open(dir).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot start the audit journal in {}: {e}", dir.display()),
                    )
                })?))
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel::<Entry>();
        let writer_journal = journal.clone();
        std::thread::Builder::new()
            .name("toolgate-audit".into())
            .spawn(move || write_records(rx, file, store, observer, writer_journal))?;
        Ok(AuditSink {
            tx: Some(tx),
            log_level,
            keeps,
            journal,
        })
    }

    /// Before an allowed call is forwarded: writes its record, as it would
    /// stand if the gateway died now (outcome `interrupted`), to the intent
    /// journal, in one `write(2)` and without waiting for the writer thread;
    /// the record returned closes it when it is recorded. Without a journal
    /// the record comes back as it was.
    pub fn intend(&self, mut record: Record) -> Record {
        if let Some(journal) = &self.journal {
            record.intent = journal.intend(|out| {
                let view = RecordJson {
                    record: &record,
                    outcome: INTERRUPTED,
                };
                serde_json::to_writer(out, &view).expect("a record is JSON");
            });
        }
        record
    }

    /// The directory of this process's intent journal, if it has one.
    pub fn journal_dir(&self) -> Option<&Path> {
        self.journal.as_deref().map(Journal::dir)
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

/// Hands the burst to the store; `false` when the store refused it.
fn append_burst(store: &mut Option<Box<dyn AuditDestination>>, burst: &mut Vec<Value>) -> bool {
    let Some(store) = store else { return true };
    if burst.is_empty() {
        return true;
    }
    let result = store.append(burst);
    if let Err(e) = &result {
        let _ = writeln!(
            std::io::stderr(),
            "toolgate: cannot write {} record(s) to the audit store: {e}",
            burst.len()
        );
    }
    burst.clear();
    result.is_ok()
}

/// The journals of dead processes in `dir`: their open intents' records go
/// to the file and the store, then the journals are removed. Records the
/// store refuses leave the journals for the next start.
fn recover_into(
    dir: &Path,
    file: Option<&mut std::fs::File>,
    store: Option<&mut (dyn AuditDestination + 'static)>,
    log_level: LogLevel,
) -> std::io::Result<usize> {
    let found = journal::recover(dir)?;
    for (path, lines) in &found.unreadable {
        let _ = writeln!(
            std::io::stderr(),
            "toolgate: {}: {lines} line(s) of the audit journal could not be read",
            path.display()
        );
    }
    let count = found.records.len();
    if count > 0 {
        if let Some(file) = file {
            let mut text = String::new();
            for record in &found.records {
                text.push_str(&record.to_string());
                text.push('\n');
            }
            file.write_all(text.as_bytes())?;
        }
        if let Some(store) = store {
            store.append(&found.records).map_err(|e| {
                std::io::Error::other(format!(
                    "cannot put {count} record(s) recovered from the audit journal in {} into the audit store: {e}",
                    dir.display()
                ))
            })?;
        }
        if log_level >= LogLevel::Warn {
            let _ = writeln!(
                std::io::stderr(),
                "toolgate: recovered {count} record(s) of calls in flight when a gateway stopped (outcome \"{INTERRUPTED}\") from the audit journal in {}",
                dir.display()
            );
        }
    }
    found.finish();
    Ok(count)
}

/// For `toolgate audit`: puts the journals of dead gateways in `dir` into
/// `store` (see the module's documentation) and removes them; returns how
/// many records that added. A directory that does not exist has none.
pub fn recover_journals(
    dir: &Path,
    store: &mut (dyn AuditDestination + 'static),
) -> std::io::Result<usize> {
    recover_into(dir, None, Some(store), LogLevel::Error)
}

/// The intent journal's directory for a trail in the data directory `dir`.
pub fn journal_dir_in(dir: &Path) -> PathBuf {
    dir.join("audit-journal")
}

/// The writer thread: takes what has arrived, writes it, flushes, closes the
/// intents of the records written, answers the flushes waiting, and waits
/// for more.
fn write_records(
    rx: mpsc::Receiver<Entry>,
    file: Option<std::fs::File>,
    mut store: Option<Box<dyn AuditDestination>>,
    mut observer: Option<Box<dyn RecordObserver>>,
    journal: Option<Arc<Journal>>,
) {
    let mut out = file.map(BufWriter::new);
    let mut acks = Vec::new();
    let mut burst: Vec<Value> = Vec::new();
    // The intents of the records in `burst`, and of those in the store.
    let mut burst_intents: Vec<Intent> = Vec::new();
    let mut stored: Vec<Intent> = Vec::new();
    let only_observed = out.is_none() && store.is_none();
    loop {
        let first = if only_observed {
            toolgate_clock::sleep(OBSERVE_TICK);
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
        let mut file_ok = true;
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
                            file_ok = false;
                            let _ = writeln!(
                                std::io::stderr(),
                                "toolgate: cannot write the audit file"
                            );
                        }
                    }
                    if store.is_some() {
                        burst.push(value);
                        burst_intents.extend(rec.intent);
                        if burst.len() >= MAX_BURST {
                            if append_burst(&mut store, &mut burst) {
                                stored.append(&mut burst_intents);
                            }
                            burst_intents.clear();
                        }
                    } else {
                        stored.extend(rec.intent);
                    }
                }
                Entry::Flush(ack) => acks.push(ack),
            }
            next = rx.try_recv().ok();
        }
        if let Some(out) = &mut out {
            file_ok &= out.flush().is_ok();
        }
        if append_burst(&mut store, &mut burst) {
            stored.append(&mut burst_intents);
        }
        burst_intents.clear();
        // An intent whose record did not reach the trail stays open: the
        // next start after this process ends puts it there as interrupted.
        if let Some(journal) = &journal {
            if file_ok {
                journal.close(&stored);
            }
        }
        stored.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
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
        let started = CallTrace::received_at(toolgate_clock::monotonic_now());
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

    /// A sink with the journal `journal`, its records kept in `store` (and
    /// `file`, when given).
    fn journaled(
        file: Option<&Path>,
        store: Box<dyn AuditDestination>,
        journal: &Path,
    ) -> AuditSink {
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
}
