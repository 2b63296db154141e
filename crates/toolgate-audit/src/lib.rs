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
use std::sync::atomic::{AtomicU64, Ordering};
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
    tx: Option<mpsc::SyncSender<Entry>>,
    /// What [`AuditSink::record`] does when the queue is full.
    when_full: WhenFull,
    /// Records dropped because the queue stayed full (shared by the clones).
    dropped: Arc<AtomicU64>,
    /// How many records the queue holds.
    queue: usize,
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
        store: Option<Box<dyn AuditDestination>>,
        observer: Option<Box<dyn RecordObserver>>,
        journal: Option<&Path>,
    ) -> std::io::Result<AuditSink> {
        AuditSink::open_queued(path, log_level, store, observer, journal, QUEUE_RECORDS)
    }

    /// [`AuditSink::open_journaled`] with a queue of `queue` records.
    fn open_queued(
        path: Option<&Path>,
        log_level: LogLevel,
        mut store: Option<Box<dyn AuditDestination>>,
        observer: Option<Box<dyn RecordObserver>>,
        journal: Option<&Path>,
        queue: usize,
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
                when_full: WhenFull::default(),
                dropped: Arc::default(),
                queue: 0,
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
        let (tx, rx) = mpsc::sync_channel::<Entry>(queue);
        let writer_journal = journal.clone();
        std::thread::Builder::new()
            .name("toolgate-audit".into())
            .spawn(move || write_records(rx, file, store, observer, writer_journal))?;
        Ok(AuditSink {
            tx: Some(tx),
            when_full: WhenFull::default(),
            dropped: Arc::default(),
            queue,
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

    /// Sets what [`AuditSink::record`] does when the writer's queue is full
    /// (set it before the sink is cloned).
    pub fn when_full(mut self, rule: WhenFull) -> AuditSink {
        self.when_full = rule;
        self
    }

    /// Queues the record for the writer thread. When the queue
    /// ([`QUEUE_RECORDS`]) is full, [`WhenFull`] says what happens: by
    /// default the call waits up to [`FULL_WAIT`] for room, then the record
    /// is dropped, counted ([`AuditSink::dropped`]) and said on stderr.
    pub fn record(&self, rec: Record) {
        if self.log_level >= LogLevel::Info {
            let _ = writeln!(std::io::stderr(), "{}", rec.log_line());
        }
        let Some(tx) = &self.tx else { return };
        let mut entry = match tx.try_send(Entry::Record(Box::new(rec))) {
            Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => return,
            Err(mpsc::TrySendError::Full(entry)) => entry,
        };
        if self.when_full == WhenFull::Block {
            let _ = tx.send(entry);
            return;
        }
        let deadline = toolgate_clock::monotonic_now() + FULL_WAIT;
        while toolgate_clock::monotonic_now() < deadline {
            toolgate_clock::sleep(std::time::Duration::from_millis(1));
            entry = match tx.try_send(entry) {
                Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => return,
                Err(mpsc::TrySendError::Full(entry)) => entry,
            };
        }
        drop(entry);
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Said at the first drop, then at 2, 4, 8...: never silent, never a flood.
        if n.is_power_of_two() {
            let _ = writeln!(
                std::io::stderr(),
                "toolgate: the audit trail cannot keep up: {n} record(s) dropped so far (its queue of {} records stayed full for {} ms); an allowed call's intent stays in the audit journal and is recovered as \"{INTERRUPTED}\" after this gateway stops; --audit-when-full block makes calls wait instead",
                self.queue,
                FULL_WAIT.as_millis()
            );
        }
    }

    /// How many records were dropped because the writer's queue stayed full
    /// ([`WhenFull::Wait`]).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

/// How many records wait for the writer thread at most (a few hundred bytes
/// of memory each).
pub const QUEUE_RECORDS: usize = 65_536;

/// How long [`AuditSink::record`] waits for room in a full queue
/// ([`WhenFull::Wait`]).
pub const FULL_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What a call does when the writer's queue is full (the disk cannot keep
/// up with the calls): `--audit-when-full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait up to [`FULL_WAIT`] for room, then drop the record, count it and
    /// say so on stderr (at the 1st, 2nd, 4th, 8th... drop).
    #[default]
    Wait,
    /// Wait as long as it takes: no record is ever dropped, calls go at the
    /// pace of the disk.
    Block,
}

impl std::str::FromStr for WhenFull {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(WhenFull::Wait),
            "block" => Ok(WhenFull::Block),
            other => Err(format!(
                "unknown rule for a full audit queue {other:?} (expected wait or block)"
            )),
        }
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
mod tests;
