//! `toolgate run`: the stdio gateway in front of one server.
//!
//! Two loops share one table of requests in flight:
//! - client → server: every message is read strictly (a duplicate key or bad
//!   UTF-8 is refused), `tools/call` is decided before it is forwarded, and
//!   anything else is forwarded byte for byte;
//! - server → client: answers to `tools/list` are filtered, answers to
//!   `tools/call` close their audit record (and give quota back on a
//!   JSON-RPC error), and everything else is forwarded byte for byte.
//!
//! When the server exits, every call in flight is answered with an error at
//! once and the gateway exits with the server's status.

use crate::frame::{Frame, FrameReader};
use crate::reload::{watch_policy_file, LivePolicy};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::process::Child;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use toolgate_approvals::{ApprovalEvents, ApprovalStore};
use toolgate_audit::{AuditSink, LogLevel, Outcome, Record};
use toolgate_call::answer::{Era, HeldBack, APPROVAL_INPUT, APPROVAL_STATE};
use toolgate_call::record::{CallFacts, TraceContext};
use toolgate_call::verdict::{verdict, Verdict};
use toolgate_child as child;
use toolgate_clock::Clock;
use toolgate_jsonrpc::{
    error_response, incoming, one_line, peek, read_message, Id, Incoming, Read as Framed,
    StrictError, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR,
};
use toolgate_pins::{Observed, PinStore};
use toolgate_policy::{Call, CounterStore, Decision, Grant, Policy};

mod client;
mod held;
mod pins;
mod server;

use client::*;
use held::*;
use pins::*;
use server::*;

/// Everything `run_stdio` needs; the outside world comes in here.
pub struct StdioOptions {
    pub policy: Arc<Policy>,
    /// Watch this file and put every valid edit in force (hot reload).
    pub policy_file: Option<std::path::PathBuf>,
    pub store: Arc<dyn CounterStore>,
    pub clock: Arc<dyn Clock>,
    /// The one local agent's grant name (`--grant`, default "local").
    pub grant: String,
    pub audit: AuditSink,
    /// Record raw arguments in the audit trail (`--audit-args`).
    pub audit_args: bool,
    /// The largest message accepted from the client, in bytes.
    pub max_message_bytes: usize,
    /// The server: program and arguments.
    pub command: Vec<String>,
    /// Forward SIGINT, SIGTERM and SIGHUP to the server.
    pub forward_signals: bool,
    /// Approval requests (require_approval rules).
    pub approvals: Arc<dyn ApprovalStore>,
    /// Told about new approval requests and decisions (webhook, audit).
    pub approval_events: Arc<dyn ApprovalEvents>,
    /// Pinned tool definitions.
    pub pins: Arc<dyn PinStore>,
    /// The server's name in pins and the audit trail.
    pub server_name: String,
    /// While the pin store cannot be reached: refuse (closed) or allow (open).
    pub pins_fail_open: bool,
    /// Set while the server runs (from its start until its stdout closes).
    pub server_up: Arc<std::sync::atomic::AtomicBool>,
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error(transparent)]
    Spawn(#[from] child::SpawnError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot start a gateway thread: {0}")]
    Thread(std::io::Error),
}

/// How long the server gets to exit after the client has gone, before SIGTERM
/// and then SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A client request in flight, by the id the server sees.
struct Entry {
    what: Pending,
    /// The id as the client spelled it: its answer carries this spelling.
    client_id: Box<str>,
    /// Whether the server sees an id of the gateway's own instead.
    rewritten: bool,
}

enum Pending {
    /// Any other request: tracked so that no two requests in flight share an
    /// id, and so that its answer goes back with the client's spelling.
    Other,
    List,
    Call(Box<CallInFlight>),
    /// A call held for approval: its id stays reserved until it is answered.
    Held,
}

struct CallInFlight {
    grant: Grant,
    started: Instant,
    /// `None` when the audit sink is off.
    record: Option<Record>,
}

struct Shared {
    policy: Arc<LivePolicy>,
    store: Arc<dyn CounterStore>,
    clock: Arc<dyn Clock>,
    grant: String,
    session: String,
    audit: AuditSink,
    audit_args: bool,
    /// Requests in flight, by the id the server sees.
    pending: Mutex<HashMap<Id, Entry>>,
    /// The ids of the gateway's own given to requests whose client id could
    /// read differently to the server (`-0`, `1e2`, big numbers, escapes), by
    /// the client's id: to translate the client's `notifications/cancelled`.
    rewritten: Mutex<HashMap<Id, Box<str>>>,
    next_rewrite: std::sync::atomic::AtomicU64,
    /// The client's end; both directions write to it.
    to_client: Mutex<BufWriter<Box<dyn Write + Send>>>,
    /// The server's end: the client thread, and held calls once approved,
    /// write to it; `None` once the client has gone (closing it asks the
    /// server to exit).
    to_server: Mutex<Option<BufWriter<std::process::ChildStdin>>>,
    approvals: Arc<dyn ApprovalStore>,
    approval_events: Arc<dyn ApprovalEvents>,
    /// The client's capabilities, from its initialize request.
    client_caps: Mutex<Option<Value>>,
    /// Requests of the gateway's own to the client (elicitation), by id.
    asking: Mutex<HashMap<Id, tokio::sync::oneshot::Sender<Value>>>,
    next_ask: std::sync::atomic::AtomicU64,
    pins: Arc<dyn PinStore>,
    server_name: String,
    /// Tools held back because their definition changed since it was pinned.
    held_back: Mutex<std::collections::HashSet<String>>,
    /// Tools whose pin this process has checked (listed, or looked up).
    pin_checked: Mutex<std::collections::HashSet<String>>,
    pins_fail_open: bool,
}

/// What to do with one request from the client.
enum Route {
    /// Forward it (its id tracked as this).
    Pass(Pending),
    /// Answer it in the server's place; do not forward.
    Answer(Value),
    /// A require_approval rule holds it: decided on a thread of its own.
    Hold(Box<HeldCall>),
}

/// What the IO threads tell the main thread.
enum Event {
    ClientClosed,
    ServerClosed,
}

/// Runs the gateway until the server exits; returns the exit code to use.
///
/// One thread per direction, each blocked in `read` on its pipe: a message
/// crosses the gateway without waking any other thread, which keeps the
/// added latency close to that of a plain byte relay.
pub fn run_stdio(
    opts: StdioOptions,
    client_in: impl Read + Send + 'static,
    client_out: impl Write + Send + 'static,
) -> Result<i32, StdioError> {
    // Spawned from the caller's thread: PR_SET_PDEATHSIG follows the thread
    // that forked, and the caller's thread lives as long as the gateway.
    let mut server = child::spawn(&opts.command)?;
    let pid = server.id();
    let server_up = opts.server_up.clone();
    server_up.store(true, std::sync::atomic::Ordering::Relaxed);
    if opts.forward_signals {
        child::forward_signals(pid).map_err(StdioError::Signals)?;
    }
    let server_in = server.stdin.take().expect("piped stdin");
    let server_out = server.stdout.take().expect("piped stdout");
    let shared = Arc::new(Shared {
        policy: Arc::new(LivePolicy::new(opts.policy)),
        store: opts.store,
        clock: opts.clock,
        grant: opts.grant,
        session: new_session_id(),
        audit: opts.audit,
        audit_args: opts.audit_args,
        pending: Mutex::new(HashMap::new()),
        rewritten: Mutex::new(HashMap::new()),
        next_rewrite: std::sync::atomic::AtomicU64::new(1),
        to_client: Mutex::new(BufWriter::with_capacity(64 * 1024, Box::new(client_out))),
        to_server: Mutex::new(Some(BufWriter::with_capacity(64 * 1024, server_in))),
        approvals: opts.approvals,
        approval_events: opts.approval_events,
        client_caps: Mutex::new(None),
        asking: Mutex::new(HashMap::new()),
        next_ask: std::sync::atomic::AtomicU64::new(1),
        pins: opts.pins,
        server_name: opts.server_name,
        held_back: Mutex::new(std::collections::HashSet::new()),
        pin_checked: Mutex::new(std::collections::HashSet::new()),
        pins_fail_open: opts.pins_fail_open,
    });

    if let Some(path) = opts.policy_file {
        // The tools a client may see can change with the policy: say so.
        let weak = Arc::downgrade(&shared);
        watch_policy_file(
            path,
            shared.policy.clone(),
            shared.audit.clone(),
            move || {
                if let Some(shared) = weak.upgrade() {
                    shared.send(
                        &json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                    );
                }
            },
        )
        .map_err(StdioError::Thread)?;
    }
    let (events, event) = mpsc::channel();
    let limit = opts.max_message_bytes;
    let (s, e) = (shared.clone(), events.clone());
    spawn_thread("toolgate-client", move || {
        client_to_server(&s, client_in, limit);
        let _ = e.send(Event::ClientClosed);
    })?;
    let (s, e) = (shared.clone(), events);
    spawn_thread("toolgate-server", move || {
        server_to_client(&s, server_out);
        server_up.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = e.send(Event::ServerClosed);
    })?;

    let status = match event.recv() {
        Ok(Event::ServerClosed) | Err(_) => {
            // Calls in flight will get no answer: say so now, not after the exit.
            fail_in_flight(&shared);
            wait_for_exit(&mut server, pid, Duration::ZERO, &shared.audit)
        }
        Ok(Event::ClientClosed) => {
            // The server's stdin is closed; it should exit by itself.
            let status = wait_for_exit(&mut server, pid, EXIT_GRACE, &shared.audit);
            // Let the last answers it wrote through.
            let _ = event.recv_timeout(Duration::from_millis(200));
            status
        }
    };
    fail_in_flight(&shared);
    let code = status.map(exit_code).unwrap_or(1);
    shared
        .audit
        .log(LogLevel::Info, &format!("server exited ({code})"));
    let _ = shared.to_client.lock().expect("client lock").flush();
    shared.audit.flush();
    Ok(code)
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StdioError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(StdioError::Thread)
}

/// Waits for the server to exit: `grace` for it to go by itself, then
/// SIGTERM, then (after another grace period) SIGKILL.
fn wait_for_exit(
    server: &mut Child,
    pid: u32,
    grace: Duration,
    audit: &AuditSink,
) -> std::io::Result<std::process::ExitStatus> {
    // A server that closed its stdout is exiting; give it a moment even then.
    let grace = grace.max(Duration::from_secs(1));
    if let Some(status) = wait_timeout(server, grace)? {
        return Ok(status);
    }
    audit.log(LogLevel::Warn, "server still running; sending SIGTERM");
    child::signal(pid, libc::SIGTERM);
    if let Some(status) = wait_timeout(server, EXIT_GRACE)? {
        return Ok(status);
    }
    audit.log(LogLevel::Warn, "server still running; sending SIGKILL");
    let _ = server.kill();
    server.wait()
}

fn wait_timeout(
    server: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = toolgate_clock::monotonic_now() + timeout;
    loop {
        if let Some(status) = server.try_wait()? {
            return Ok(Some(status));
        }
        if toolgate_clock::monotonic_now() >= deadline {
            return Ok(None);
        }
        toolgate_clock::sleep(Duration::from_millis(5));
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    hex::encode(bytes)
}

impl Shared {
    /// Writes a message of the gateway's own to the client, at once.
    fn send(&self, value: &Value) {
        let mut out = self.to_client.lock().expect("client lock");
        let _ = serde_json::to_writer(&mut *out, value);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    /// Writes the gateway's answer to a client request, its `id` spelled as
    /// the client spelled it (`client_id`, JSON text).
    fn answer(&self, client_id: &str, value: &Value) {
        let bytes = toolgate_jsonrpc::to_vec_with_id(value, client_id);
        let mut out = self.to_client.lock().expect("client lock");
        let _ = out.write_all(&bytes);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

fn client_to_server(shared: &Arc<Shared>, client_in: impl Read, limit: usize) {
    let mut reader = FrameReader::new(client_in, limit);
    let mut forward = Vec::new();
    while let Ok(Some(frame)) = reader.read_frame() {
        match frame {
            Frame::Oversize => {
                shared.send(&error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    &format!(
                        "Invalid Request: message exceeds the gateway's limit of {limit} bytes"
                    ),
                    None,
                ));
            }
            Frame::Line(bytes) => route_line(shared, bytes, &mut forward),
        };
        let mut guard = shared.to_server.lock().expect("server lock");
        let Some(server) = guard.as_mut() else { break };
        let mut failed = false;
        for bytes in forward.drain(..) {
            if server
                .write_all(&bytes)
                .and_then(|()| server.write_all(b"\n"))
                .is_err()
            {
                failed = true;
                break;
            }
        }
        // Batch the flush while more input is already buffered (pipelining).
        if failed || (!reader.has_buffered() && server.flush().is_err()) {
            break;
        }
    }
    // Closing the server's stdin asks it to exit (MCP stdio shutdown).
    if let Some(mut server) = shared.to_server.lock().expect("server lock").take() {
        let _ = server.flush();
    }
}
