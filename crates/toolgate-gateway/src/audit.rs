//! The audit trail: one JSON line per `tools/call` decision.
//!
//! Records go through a channel to a writer task, so the decision path never
//! waits on the disk. The file is flushed whenever the channel runs dry, and
//! on shutdown.

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
}

impl Record {
    /// The record's JSON line (without the newline).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("time".into(), json!(rfc3339(self.time)));
        m.insert("grant".into(), json!(self.grant));
        m.insert("session".into(), json!(self.session));
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
        Decision::ApprovalRequired { rule, reason } => {
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

/// Where records go: an optional file, and stderr at `info`.
#[derive(Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<Entry>>,
    log_level: LogLevel,
}

enum Entry {
    Record(Box<Record>),
    /// Write everything before this, then answer.
    Flush(mpsc::Sender<()>),
}

impl AuditSink {
    /// Opens (appending) the audit file, if one is given.
    pub fn open(path: Option<&Path>, log_level: LogLevel) -> std::io::Result<AuditSink> {
        let Some(path) = path else {
            return Ok(AuditSink {
                tx: None,
                log_level,
            });
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("toolgate-audit".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                let mut acks = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(entry) = next {
                        match entry {
                            Entry::Record(rec) => {
                                let mut line = rec.to_json().to_string();
                                line.push('\n');
                                // A full disk must not stop the gateway; the
                                // records are lost and stderr says so below.
                                if out.write_all(line.as_bytes()).is_err() {
                                    let _ = writeln!(
                                        std::io::stderr(),
                                        "toolgate: cannot write the audit file"
                                    );
                                }
                            }
                            Entry::Flush(ack) => acks.push(ack),
                        }
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                }
            })?;
        Ok(AuditSink {
            tx: Some(tx),
            log_level,
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

    /// Whether records go anywhere; when not, callers may skip building them.
    pub fn enabled(&self) -> bool {
        self.tx.is_some() || self.log_level >= LogLevel::Info
    }
}
