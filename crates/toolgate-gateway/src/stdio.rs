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
use toolgate_approvals::{
    call_key, decide_by_client_user, ApprovalEvents, ApprovalStore, NewRequest, Status,
};
use toolgate_audit::{decision_facts, AuditSink, CallTrace, LogLevel, Outcome, Record};
use toolgate_call::answer::{
    approval_input_required, approval_question, refusal, unknown_tool, Era, HeldBack,
    APPROVAL_INPUT, APPROVAL_STATE,
};
use toolgate_child as child;
use toolgate_clock::Clock;
use toolgate_jsonrpc::{
    args_sha256, error_response, incoming, one_line, peek, read_message, Id, Incoming,
    Read as Framed, StrictError, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR,
};
use toolgate_pins::{Observed, PinStore};
use toolgate_policy::{Call, CounterStore, Decision, Grant, Policy};

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
    asking: Mutex<HashMap<Id, mpsc::Sender<Value>>>,
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
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = server.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
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

/// Decides what happens to one line from the client; pushes the messages to
/// forward to the server onto `forward`.
///
/// What is forwarded is what the gateway read: each message on a line of
/// its own ([`one_line`]: no byte a line reader could take for a line
/// break), a request under an id every parser reads alike.
fn route_line(shared: &Arc<Shared>, bytes: Vec<u8>, forward: &mut Vec<Vec<u8>>) {
    let received = Instant::now();
    match read_message(&bytes) {
        Err(StrictError::Syntax(e)) => {
            shared.send(&error_response(
                &Value::Null,
                PARSE_ERROR,
                &format!("Parse error: {e}"),
                None,
            ));
        }
        Err(StrictError::DuplicateKey(key)) => {
            // Answer with the id, when the message has a usable one.
            let id = toolgate_jsonrpc::peek_raw_id(&bytes).unwrap_or("null");
            shared.audit.log(
                LogLevel::Warn,
                &format!("refused a message that repeats the key {key:?}"),
            );
            shared.answer(
                id,
                &error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    &format!("Invalid Request: duplicate key {key:?}"),
                    None,
                ),
            );
        }
        Ok(Framed::Single(message)) => {
            // Forwarded as it came (the common case) without a copy.
            let out = route_one(shared, &bytes, message, received).map(|line| match line {
                Cow::Borrowed(_) => None,
                Cow::Owned(line) => Some(line),
            });
            match out {
                Some(Some(line)) => forward.push(line),
                Some(None) => forward.push(bytes),
                None => {}
            }
        }
        Ok(Framed::Batch(items)) => {
            if items.is_empty() {
                shared.send(&error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    "Invalid Request: empty batch",
                    None,
                ));
                return;
            }
            // MCP has had no batches since 2025-06-18, and servers drop them
            // whole. Each element is decided on its own and forwarded on its
            // own line; an element that is not a message (a number, a string,
            // an array: a batch in a batch) is answered -32600 and goes no
            // further.
            for item in items {
                let text = item.get().as_bytes();
                match incoming(item.get()) {
                    Ok(message) => {
                        if let Some(line) = route_one(shared, text, message, received) {
                            forward.push(line.into_owned());
                        }
                    }
                    Err(_) => shared.send(&invalid_request(&Value::Null)),
                }
            }
        }
    }
}

/// `text` through [`one_line`], copied only when that changes it.
fn on_one_line(text: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let changed = match one_line(&text) {
        Cow::Owned(line) => Some(line),
        Cow::Borrowed(_) => None,
    };
    match changed {
        Some(line) => Cow::Owned(line),
        None => text,
    }
}

/// One message (alone, or an element of a batch) from the client; returns
/// what to forward to the server, if anything.
fn route_one<'t>(
    shared: &Arc<Shared>,
    text: &'t [u8],
    message: Incoming<'_>,
    received: Instant,
) -> Option<Cow<'t, [u8]>> {
    match message {
        Incoming::Response { raw_id } => {
            // An answer to one of the gateway's own requests goes no further.
            if let Some(id) = Id::from_raw(raw_id) {
                let waiter = shared.asking.lock().expect("asking lock").remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(serde_json::from_slice(text).unwrap_or(Value::Null));
                    return None;
                }
            }
            Some(on_one_line(Cow::Borrowed(text)))
        }
        Incoming::Invalid | Incoming::BadId { .. } => {
            shared.send(&invalid_request(&Value::Null));
            None
        }
        Incoming::Notification { method, .. } if method == "tools/call" => {
            // A call without an id cannot be answered; a server that ran it anyway
            // would run it unpoliced.
            shared.audit.log(
                LogLevel::Warn,
                "dropped a tools/call sent as a notification (no id)",
            );
            None
        }
        Incoming::Notification { method, params } => {
            let text = match (&*method, params) {
                ("notifications/cancelled", Some(params)) => {
                    cancelled_for_server(shared, text, params)
                }
                _ => Cow::Borrowed(text),
            };
            Some(on_one_line(text))
        }
        Incoming::Request {
            id,
            raw_id,
            method,
            params,
        } => {
            // The id the server sees: the client's when every parser reads it
            // alike, else one of the gateway's own (mapped back on the answer).
            let (server_id, rewritten) = if Id::is_plain(raw_id) {
                (id, None)
            } else {
                let mine = loop {
                    let n = shared
                        .next_rewrite
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let raw = format!("\"toolgate-id-{n}\"");
                    let mine = Id::from_raw(&raw).expect("a string id");
                    if !shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .contains_key(&mine)
                    {
                        break (mine, raw);
                    }
                };
                (mine.0, Some((id, mine.1)))
            };
            if shared
                .pending
                .lock()
                .expect("pending lock")
                .contains_key(&server_id)
            {
                shared.answer(raw_id, &id_in_use(&Value::Null));
                return None;
            }
            let route = route_request(shared, (&server_id, raw_id), &method, params, received);
            let entry = |what| Entry {
                what,
                client_id: raw_id.into(),
                rewritten: rewritten.is_some(),
            };
            let bytes = on_one_line(match &rewritten {
                Some((_, raw)) => Cow::Owned(toolgate_jsonrpc::replace_raw(text, raw_id, raw)),
                None => Cow::Borrowed(text),
            });
            match route {
                Route::Answer(answer) => {
                    shared.answer(raw_id, &answer);
                    None
                }
                Route::Pass(what) => {
                    shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .insert(server_id, entry(what));
                    if let Some((client, raw)) = rewritten {
                        shared
                            .rewritten
                            .lock()
                            .expect("rewritten lock")
                            .insert(client, raw.into());
                    }
                    Some(bytes)
                }
                Route::Hold(held) => {
                    shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .insert(held.id.clone(), entry(Pending::Held));
                    hold_call(shared, *held, bytes.into_owned());
                    None
                }
            }
        }
    }
}

/// A client's `notifications/cancelled` as the server must read it: a
/// request whose id the gateway replaced is named by the gateway's id.
fn cancelled_for_server<'t>(shared: &Shared, text: &'t [u8], params: &RawValue) -> Cow<'t, [u8]> {
    #[derive(serde::Deserialize)]
    struct Cancelled<'a> {
        #[serde(rename = "requestId", borrow)]
        request_id: Option<&'a RawValue>,
    }
    let Ok(Cancelled {
        request_id: Some(raw),
    }) = serde_json::from_str::<Cancelled<'_>>(params.get())
    else {
        return Cow::Borrowed(text);
    };
    let Some(id) = Id::from_raw(raw.get()) else {
        return Cow::Borrowed(text);
    };
    match shared.rewritten.lock().expect("rewritten lock").get(&id) {
        Some(mine) => Cow::Owned(toolgate_jsonrpc::replace_raw(text, raw.get(), mine)),
        None => Cow::Borrowed(text),
    }
}

fn invalid_request(id: &Value) -> Value {
    error_response(
        id,
        INVALID_REQUEST,
        "Invalid Request: not a JSON-RPC 2.0 message",
        None,
    )
}

fn route_request(
    shared: &Shared,
    (server_id, client_id): (&Id, &str),
    method: &str,
    params: Option<&RawValue>,
    received: Instant,
) -> Route {
    match method {
        "tools/call" => police_call(shared, (server_id, client_id), params, received),
        "initialize" => {
            let caps = params
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|p| p.get("capabilities").cloned());
            *shared.client_caps.lock().expect("caps lock") = caps;
            Route::Pass(Pending::Other)
        }
        "tools/list" => Route::Pass(Pending::List),
        _ => Route::Pass(Pending::Other),
    }
}

fn id_in_use(id: &Value) -> Value {
    error_response(
        id,
        INVALID_REQUEST,
        "Invalid Request: a request with this id is already in flight",
        None,
    )
}

/// The parts of tools/call params the policy reads.
#[derive(serde::Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// As the client wrote it: conditions compare its numbers exactly.
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default, rename = "_meta", borrow)]
    meta: Option<&'a RawValue>,
    /// 2026-07-28 retry of an input-required round trip.
    #[serde(default, rename = "requestState")]
    request_state: Option<String>,
    #[serde(default, rename = "inputResponses")]
    input_responses: Option<Value>,
}

fn police_call(
    shared: &Shared,
    (server_id, client_id): (&Id, &str),
    params: Option<&RawValue>,
    received: Instant,
) -> Route {
    // Params must be an object: an array would be read by position here and
    // perhaps otherwise by the server.
    if params.is_some_and(|p| !p.get().trim_start().starts_with('{')) {
        return Route::Answer(error_response(
            &Value::Null,
            INVALID_PARAMS,
            "Invalid params: tools/call params must be an object",
            None,
        ));
    }
    let parsed = params.map(|p| serde_json::from_str::<CallParams<'_>>(p.get()));
    let CallParams {
        name,
        arguments,
        meta,
        request_state,
        input_responses,
    } = match parsed {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return Route::Answer(error_response(
                &Value::Null,
                INVALID_PARAMS,
                &format!("Invalid params: tools/call params: {e}"),
                None,
            ))
        }
        None => {
            return Route::Answer(error_response(
                &Value::Null,
                INVALID_PARAMS,
                "Invalid params: tools/call needs params",
                None,
            ))
        }
    };
    let arguments_text = arguments.map(RawValue::get);
    let arguments: Value = match arguments_text.map(serde_json::from_str).transpose() {
        Ok(arguments) => arguments.unwrap_or(Value::Null),
        Err(e) => {
            return Route::Answer(error_response(
                &Value::Null,
                INVALID_PARAMS,
                &format!("Invalid params: tools/call params: arguments: {e}"),
                None,
            ))
        }
    };
    let tool: &str = &name;
    let verdict = pin_check(shared, tool);
    let held_back = match &verdict {
        PinCheck::Clear => None,
        PinCheck::Changed => Some(HeldBack::PinChanged {
            server: &shared.server_name,
            tool,
        }),
        PinCheck::Unavailable(why) => Some(HeldBack::PinUnavailable { why }),
    };
    if let Some(held_back) = held_back {
        let era = Era::of_meta(
            meta.and_then(|m| serde_json::from_str(m.get()).ok())
                .as_ref(),
        );
        return Route::Answer(toolgate_jsonrpc::result_response(
            &Value::Null,
            held_back.result(tool, era),
        ));
    }
    if !(arguments.is_object() || arguments.is_null()) {
        return Route::Answer(error_response(
            &Value::Null,
            INVALID_PARAMS,
            "Invalid params: params.arguments must be an object",
            None,
        ));
    }
    let arguments = &arguments;
    let now = shared.clock.now_ms();
    let call = Call {
        tool,
        arguments,
        arguments_text,
        grant: &shared.grant,
        session: &shared.session,
    };
    let decision = shared
        .policy
        .get()
        .decide(&call, shared.store.as_ref(), now);
    let meta_text = meta.map(RawValue::get);
    let record = decision_record(shared, tool, arguments, &decision, received, meta_text);
    if let Decision::ApprovalRequired { .. } = decision {
        let meta: Option<Value> = meta.and_then(|m| serde_json::from_str(m.get()).ok());
        let era = Era::of_meta(meta.as_ref());
        let elicitation_2026 = meta
            .as_ref()
            .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
            .is_some_and(|caps| caps.get("elicitation").is_some());
        let answer = request_state
            .as_deref()
            .and_then(|s| s.strip_prefix(APPROVAL_STATE))
            .map(str::to_string)
            .zip(
                input_responses
                    .as_ref()
                    .and_then(|r| r.pointer(&format!("/{APPROVAL_INPUT}/action")))
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
        return Route::Hold(Box::new(HeldCall {
            meta: meta_text.map(str::to_string),
            id: server_id.clone(),
            client_id: client_id.into(),
            tool: tool.to_owned(),
            arguments: arguments.clone(),
            decision,
            era,
            received,
            elicitation_2026,
            answer,
        }));
    }
    match decision {
        Decision::Allow { grant, .. } => {
            let record = record.map(|mut r| {
                r.counters = grant.taken.clone();
                shared.audit.intend(r)
            });
            let flight = CallInFlight {
                grant,
                started: received,
                record,
            };
            Route::Pass(Pending::Call(Box::new(flight)))
        }
        refused => {
            if let Some(record) = record {
                shared.audit.record(record);
            }
            let id = Value::Null;
            if let Decision::Unknown { .. } = refused {
                return Route::Answer(unknown_tool(&id, tool));
            }
            let era = Era::of_meta(
                meta.and_then(|m| serde_json::from_str(m.get()).ok())
                    .as_ref(),
            );
            Route::Answer(refusal(&id, tool, &refused, era).expect("not an allow"))
        }
    }
}

fn server_to_client(shared: &Shared, server_out: std::process::ChildStdout) {
    let mut reader = FrameReader::new(server_out, usize::MAX);
    loop {
        let bytes = match reader.read_frame() {
            Ok(Some(Frame::Line(bytes))) => bytes,
            Ok(Some(Frame::Oversize)) => continue,
            Ok(None) | Err(_) => return,
        };
        let out = answer_from_server(shared, bytes);
        let mut client = shared.to_client.lock().expect("client lock");
        if client
            .write_all(&out)
            .and_then(|()| client.write_all(b"\n"))
            .is_err()
        {
            return;
        }
        if !reader.has_buffered() && client.flush().is_err() {
            return;
        }
    }
}

/// Settles the request a server message answers, if the gateway tracks it;
/// returns the bytes to give the client (with the id as the client spelled
/// it).
fn answer_from_server(shared: &Shared, bytes: Vec<u8>) -> Vec<u8> {
    if shared.pending.lock().expect("pending lock").is_empty() {
        return bytes;
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return batch_from_server(shared, bytes);
    }
    let Some(p) = peek(&bytes) else { return bytes };
    if p.method.is_some() {
        return bytes;
    }
    let Some(raw) = p.id else { return bytes };
    let Some(id) = Id::from_raw(raw.get()) else {
        return bytes;
    };
    let is_error = p.error.is_some();
    let Some(entry) = take_entry(shared, id) else {
        return bytes;
    };
    let respelled = (raw.get() != &*entry.client_id)
        .then(|| toolgate_jsonrpc::replace_raw(&bytes, raw.get(), &entry.client_id));
    let bytes = respelled.unwrap_or(bytes);
    match entry.what {
        Pending::Call(flight) => {
            settle_call(shared, *flight, is_error);
            bytes
        }
        Pending::Other | Pending::Held => bytes,
        Pending::List => match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut value) => {
                filter_tools_list(shared, &mut value);
                toolgate_jsonrpc::to_vec_with_id(&value, &entry.client_id)
            }
            Err(_) => bytes,
        },
    }
}

/// Takes the entry of the request a server answer names; a held call's is
/// left in place (it was never forwarded, so the answer is not to it).
fn take_entry(shared: &Shared, id: Id) -> Option<Entry> {
    let mut pending = shared.pending.lock().expect("pending lock");
    if matches!(
        pending.get(&id),
        Some(Entry {
            what: Pending::Held,
            ..
        })
    ) {
        return None;
    }
    let entry = pending.remove(&id)?;
    drop(pending);
    if entry.rewritten {
        if let Some(client) = Id::from_raw(&entry.client_id) {
            shared
                .rewritten
                .lock()
                .expect("rewritten lock")
                .remove(&client);
        }
    }
    Some(entry)
}

fn batch_from_server(shared: &Shared, bytes: Vec<u8>) -> Vec<u8> {
    let Ok(Value::Array(mut items)) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    let mut spelled: Vec<Option<Box<str>>> = Vec::with_capacity(items.len());
    for item in &mut items {
        spelled.push(None);
        if item.get("method").is_some() {
            continue;
        }
        let Some(id) = item.get("id").and_then(Id::of) else {
            continue;
        };
        let Some(entry) = take_entry(shared, id) else {
            continue;
        };
        match entry.what {
            Pending::Call(flight) => settle_call(shared, *flight, item.get("error").is_some()),
            Pending::List => filter_tools_list(shared, item),
            Pending::Other | Pending::Held => {}
        }
        *spelled.last_mut().expect("pushed") = Some(entry.client_id);
    }
    let mut out = vec![b'['];
    for (i, (item, client_id)) in items.iter().zip(&spelled).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match client_id {
            Some(id) => out.extend_from_slice(&toolgate_jsonrpc::to_vec_with_id(item, id)),
            None => serde_json::to_writer(&mut out, item).expect("serialisable"),
        }
    }
    out.push(b']');
    out
}

fn settle_call(shared: &Shared, flight: CallInFlight, is_error: bool) {
    let CallInFlight {
        grant,
        started,
        record,
    } = flight;
    if is_error {
        // The call did not happen: its quota goes back.
        shared.store.release(&grant);
    }
    if let Some(mut record) = record {
        record.outcome = if is_error {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        record.latency_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        shared.audit.record(record);
    }
}

/// Removes the tools the policy hides (or refuses by default) from a tools/list answer.
fn filter_tools_list(shared: &Shared, message: &mut Value) {
    let policy = shared.policy.get();
    let now = shared.clock.now_ms();
    if let Some(tools) = message
        .pointer_mut("/result/tools")
        .and_then(Value::as_array_mut)
    {
        tools.retain(|t| {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return false;
            };
            policy.is_listed(name) && pin_allows(shared, &policy, t, name, now)
        });
    }
}

/// Records a listed definition against its pin; false when the tool is to be
/// held back (its definition changed and the policy blocks changed tools).
fn pin_allows(shared: &Shared, policy: &Policy, tool: &Value, name: &str, now: u64) -> bool {
    let observed = shared.pins.observe(&shared.server_name, tool, now);
    shared
        .pin_checked
        .lock()
        .expect("pin lock")
        .insert(name.to_string());
    let mut held_back = shared.held_back.lock().expect("held-back lock");
    match observed {
        Ok(Observed::New | Observed::Same) => {
            held_back.remove(name);
            true
        }
        Ok(Observed::Changed { first }) => {
            let block = policy.blocks_changed_tools();
            if first {
                let what = if block {
                    "held back until the change is accepted"
                } else {
                    "allowed (pins.on_change: warn)"
                };
                shared.audit.log(
                    LogLevel::Warn,
                    &format!("tool {name:?} of server {:?} changed its definition since it was pinned: {what} (toolgate pins diff)", shared.server_name),
                );
                pin_audit(
                    shared,
                    name,
                    if block {
                        "pin_changed"
                    } else {
                        "pin_changed_warn"
                    },
                );
            }
            if block {
                held_back.insert(name.to_string());
            }
            !block
        }
        Err(_) if shared.pins_fail_open => true,
        Err(e) => {
            // Fail closed: a definition that cannot be checked is held back.
            shared.audit.log(
                LogLevel::Error,
                &format!("pins: {e}; tool {name:?} is held back"),
            );
            held_back.insert(name.to_string());
            false
        }
    }
}

/// Whether a tool is held back for a changed definition; one that has been
/// accepted since (`toolgate pins accept`) is released.
/// What the pin of a tool says about a call to it.
enum PinCheck {
    Clear,
    /// The definition changed and the policy blocks changed tools.
    Changed,
    /// The pin store cannot be reached (and the fail mode is closed).
    Unavailable(String),
}

fn pin_check(shared: &Shared, tool: &str) -> PinCheck {
    let listed_here = shared.pin_checked.lock().expect("pin lock").contains(tool);
    let held = shared
        .held_back
        .lock()
        .expect("held-back lock")
        .contains(tool);
    if listed_here && !held {
        return PinCheck::Clear;
    }
    // Held back, or never listed by this process (a call before any
    // tools/list): the store knows whether the definition changed.
    let verdict = match shared.pins.get(&shared.server_name, tool) {
        Ok(Some(pin)) if pin.is_changed() && shared.policy.get().blocks_changed_tools() => {
            PinCheck::Changed
        }
        Ok(_) => PinCheck::Clear,
        Err(_) if shared.pins_fail_open => return PinCheck::Clear,
        Err(e) => return PinCheck::Unavailable(e.to_string()),
    };
    let mut held_back = shared.held_back.lock().expect("held-back lock");
    match verdict {
        PinCheck::Changed => {
            held_back.insert(tool.to_string());
        }
        _ => {
            held_back.remove(tool);
            shared
                .pin_checked
                .lock()
                .expect("pin lock")
                .insert(tool.to_string());
        }
    }
    verdict
}

fn pin_audit(shared: &Shared, tool: &str, kind: &'static str) {
    if !shared.audit.enabled() {
        return;
    }
    shared.audit.record(Record::pin_changed(
        shared.clock.now_ms(),
        (shared.grant.clone(), shared.session.clone()),
        &shared.server_name,
        tool,
        kind,
    ));
}

/// The server is gone: every request still waiting gets an error now.
fn fail_in_flight(shared: &Shared) {
    let drained: Vec<Entry> = {
        let mut pending = shared.pending.lock().expect("pending lock");
        // Held calls are answered by their own thread (the server is gone by
        // the time they are approved, and they say so then).
        let ids: Vec<Id> = pending
            .iter()
            .filter(|(_, e)| !matches!(e.what, Pending::Held))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| pending.remove(&id))
            .collect()
    };
    for entry in drained {
        shared.answer(
            &entry.client_id,
            &error_response(
                &Value::Null,
                INTERNAL_ERROR,
                "upstream server exited before answering",
                Some(json!({"toolgate": {"reason": "upstream_exited"}})),
            ),
        );
        if let Pending::Call(flight) = entry.what {
            if let Some(mut record) = flight.record {
                record.outcome = Outcome::NoResponse;
                record.latency_ms = Some(flight.started.elapsed().as_secs_f64() * 1e3);
                shared.audit.record(record);
            }
        }
    }
}

/// A call a require_approval rule holds, with what it needs to go ahead.
struct HeldCall {
    /// The call's `_meta`, as sent (for its trace context).
    meta: Option<String>,
    /// The id the server sees (the call's entry in the table of requests in flight).
    id: Id,
    /// The id as the client spelled it, for its answer.
    client_id: Box<str>,
    tool: String,
    arguments: Value,
    decision: Decision,
    era: Era,
    received: Instant,
    /// A 2026-07-28 client that can be asked with an input-required result.
    elicitation_2026: bool,
    /// The retry of that round trip: (approval request id, the user's action).
    answer: Option<(String, String)>,
}

/// What becomes of a held call.
enum HeldOutcome {
    /// Approved and admitted: forward it (`true`: strip toolgate's own
    /// round-trip fields first).
    Run(Box<CallInFlight>, bool),
    /// Answer the client in the server's place.
    Answer(Value),
}

/// Decides a held call on a thread of its own, so the client's other
/// messages (including its answer to an elicitation) keep flowing. Its id is
/// reserved (`Pending::Held`) while it is held: a second request with it gets
/// "id in use", and cannot take the held call's place in the table.
fn hold_call(shared: &Arc<Shared>, held: HeldCall, bytes: Vec<u8>) {
    let audit = shared.audit.clone();
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("toolgate-approval".into())
        .spawn(move || match decide_held(&shared, &held) {
            HeldOutcome::Answer(answer) => {
                shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .remove(&held.id);
                shared.answer(&held.client_id, &answer);
            }
            HeldOutcome::Run(flight, strip) => {
                let bytes = if strip {
                    strip_round_trip(&bytes)
                } else {
                    bytes
                };
                if let Some(entry) = shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .get_mut(&held.id)
                {
                    entry.what = Pending::Call(flight);
                }
                let mut guard = shared.to_server.lock().expect("server lock");
                let written = guard.as_mut().is_some_and(|server| {
                    server
                        .write_all(&bytes)
                        .and_then(|()| server.write_all(b"\n"))
                        .and_then(|()| server.flush())
                        .is_ok()
                });
                drop(guard);
                if !written {
                    shared
                        .pending
                        .lock()
                        .expect("pending lock")
                        .remove(&held.id);
                    shared.answer(
                        &held.client_id,
                        &error_response(
                            &Value::Null,
                            INTERNAL_ERROR,
                            "the server is gone; the approved call did not run",
                            None,
                        ),
                    );
                }
            }
        });
    if spawned.is_err() {
        audit.log(
            LogLevel::Error,
            "cannot start a thread for a held call; it is refused",
        );
    }
}

fn held_answer(held: &HeldCall, held_back: HeldBack<'_>) -> HeldOutcome {
    HeldOutcome::Answer(toolgate_jsonrpc::result_response(
        &Value::Null,
        held_back.result(&held.tool, held.era),
    ))
}

fn audit_approval(
    shared: &Shared,
    held: &HeldCall,
    kind: &'static str,
    rule: &str,
    reason: String,
) {
    let record = call_record(
        shared,
        &held.tool,
        &held.arguments,
        kind,
        rule.to_string(),
        Some(reason),
        held.received,
        held.meta.as_deref(),
    );
    if let Some(record) = record {
        shared.audit.record(record);
    }
}

/// The audit record of a decision about a call; `None` when nothing would
/// receive it (then neither the record is built nor the arguments hashed).
#[allow(clippy::too_many_arguments)]
fn call_record(
    shared: &Shared,
    tool: &str,
    arguments: &Value,
    kind: &'static str,
    rule: String,
    reason: Option<String>,
    received: Instant,
    meta: Option<&str>,
) -> Option<Record> {
    shared.audit.enabled().then(|| Record {
        time: shared.clock.now_ms(),
        grant: shared.grant.clone(),
        session: shared.session.clone(),
        server: None,
        tool: tool.to_owned(),
        decision: kind,
        rule,
        reason,
        counters: Vec::new(),
        decision_us: received.elapsed().as_secs_f64() * 1e6,
        latency_ms: None,
        outcome: Outcome::Refused,
        // Only the audit trail reads the hash: metrics and traces alone skip it.
        args_sha256: if shared.audit.keeps_records() {
            args_sha256(arguments)
        } else {
            String::new()
        },
        args: shared.audit_args.then(|| arguments.clone()),
        trace: Some(Box::new(call_trace(received, meta))),
        intent: None,
    })
}

/// The trace context in a call's `_meta` (raw JSON), read only as far as
/// `traceparent` and `tracestate`.
fn call_trace(received: Instant, meta: Option<&str>) -> CallTrace {
    #[derive(serde::Deserialize)]
    struct TraceMeta {
        #[serde(default)]
        traceparent: Option<String>,
        #[serde(default)]
        tracestate: Option<String>,
    }
    let found = meta.and_then(|m| serde_json::from_str::<TraceMeta>(m).ok());
    CallTrace {
        traceparent: found.as_ref().and_then(|f| f.traceparent.clone()),
        tracestate: found.and_then(|f| f.tracestate),
        ..CallTrace::received_at(received)
    }
}

/// [`call_record`] with the facts of a policy decision.
fn decision_record(
    shared: &Shared,
    tool: &str,
    arguments: &Value,
    decision: &Decision,
    received: Instant,
    meta: Option<&str>,
) -> Option<Record> {
    let (kind, rule, reason) = decision_facts(decision);
    call_record(shared, tool, arguments, kind, rule, reason, received, meta)
}

/// The live approval request for a held call, or a new one: a new request is
/// announced (webhook) and put in the audit trail.
fn open_request(
    shared: &Shared,
    held: &HeldCall,
    new: &NewRequest,
    now: u64,
) -> Result<toolgate_approvals::ApprovalRequest, toolgate_approvals::ApprovalError> {
    let request = shared.approvals.request(new, now)?;
    if request.created_ms == now && request.status == Status::Pending {
        shared.approval_events.requested(&request);
        audit_approval(
            shared,
            held,
            "approval_requested",
            &new.rule,
            format!(
                "approval request {} (expires {})",
                request.id,
                toolgate_clock::rfc3339(request.expires_ms)
            ),
        );
    }
    Ok(request)
}

fn decide_held(shared: &Shared, held: &HeldCall) -> HeldOutcome {
    let Decision::ApprovalRequired {
        rule,
        reason,
        approval,
        plan,
    } = &held.decision
    else {
        unreachable!("only held calls come here")
    };
    let tool = held.tool.as_str();
    let unavailable = |e: toolgate_approvals::ApprovalError| {
        held_answer(
            held,
            HeldBack::StateUnavailable {
                why: &e.to_string(),
            },
        )
    };
    let key = call_key(
        &shared.grant,
        Some(&shared.server_name),
        tool,
        &held.arguments,
    );
    let new = NewRequest {
        grant: shared.grant.clone(),
        server: Some(shared.server_name.clone()),
        tool: tool.to_string(),
        arguments: held.arguments.clone(),
        reason: reason.clone(),
        rule: rule.to_string(),
        expires_in_ms: approval.expires_ms,
    };
    let now = shared.clock.now_ms();
    if approval.via_client && held.era == Era::Stateless && held.elicitation_2026 {
        if let Some((request_id, action)) = &held.answer {
            // The retry: the answer decides the request of this very call only.
            match shared.approvals.get(request_id) {
                Ok(Some(r)) if r.key == key => {
                    let decided = decide_by_client_user(
                        &*shared.approvals,
                        &*shared.approval_events,
                        &r,
                        action == "accept",
                        &shared.grant,
                        now,
                    )
                    .unwrap_or(r);
                    if let Status::Denied(d) = &decided.status {
                        let held_back = HeldBack::Denied {
                            request_id: &decided.id,
                            decided: d,
                        };
                        audit_approval(
                            shared,
                            held,
                            "approval_denied",
                            rule.as_str(),
                            held_back.text(tool),
                        );
                        return held_answer(held, held_back);
                    }
                }
                Ok(_) => return held_answer(held, HeldBack::ForeignAnswer),
                Err(e) => return unavailable(e),
            }
        } else {
            // The first round: ask with an input-required result.
            let request = match open_request(shared, held, &new, now) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            };
            let result = approval_input_required(&new, &request);
            return HeldOutcome::Answer(toolgate_jsonrpc::result_response(&Value::Null, result));
        }
    }
    let mut approved = match shared.approvals.consume(&key, now) {
        Ok(found) => found,
        Err(e) => return unavailable(e),
    };
    if approved.is_none() {
        let ask_client = approval.via_client
            && held.era == Era::Handshake
            && shared
                .client_caps
                .lock()
                .expect("caps lock")
                .as_ref()
                .is_some_and(|caps| caps.get("elicitation").is_some());
        if !ask_client && !approval.via_admin {
            let held_back = HeldBack::Unaskable {
                rule: rule.as_str(),
                reason,
            };
            audit_approval(
                shared,
                held,
                "approval_required",
                rule.as_str(),
                held_back.text(tool),
            );
            return held_answer(held, held_back);
        }
        let request = match open_request(shared, held, &new, now) {
            Ok(r) => r,
            Err(e) => return unavailable(e),
        };
        let decided = if ask_client {
            ask_client_user(shared, &request, &new)
        } else {
            None
        };
        let request = match decided {
            Some(approve) => match decide_by_client_user(
                &*shared.approvals,
                &*shared.approval_events,
                &request,
                approve,
                &shared.grant,
                shared.clock.now_ms(),
            ) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            },
            None if approval.via_admin => {
                let deadline = Instant::now() + Duration::from_millis(approval.hold_ms);
                let mut current = request;
                while current.status == Status::Pending && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    match shared.approvals.get(&current.id) {
                        Ok(Some(r)) => current = r,
                        Ok(None) => break,
                        Err(e) => return unavailable(e),
                    }
                }
                current
            }
            None => request,
        };
        match &request.status {
            Status::Approved(_) => match shared.approvals.consume(&key, shared.clock.now_ms()) {
                Ok(found) => approved = found,
                Err(e) => return unavailable(e),
            },
            Status::Denied(d) => {
                let held_back = HeldBack::Denied {
                    request_id: &request.id,
                    decided: d,
                };
                audit_approval(
                    shared,
                    held,
                    "approval_denied",
                    rule.as_str(),
                    held_back.text(tool),
                );
                return held_answer(held, held_back);
            }
            _ => {}
        }
        if approved.is_none() {
            let held_back = HeldBack::Pending {
                request: &request,
                reason,
                rule: rule.as_str(),
            };
            audit_approval(
                shared,
                held,
                "approval_pending",
                rule.as_str(),
                held_back.text(tool),
            );
            return held_answer(held, held_back);
        }
    }
    let approved = approved.expect("checked above");
    // Approved: the call takes its quota only now that it runs.
    let result = if plan.draws.is_empty() {
        Ok(Grant::default())
    } else {
        shared.store.acquire(&plan.draws, shared.clock.now_ms())
    };
    let decision = plan.clone().conclude(result);
    let Decision::Allow { grant, .. } = decision.clone() else {
        if let Some(record) = decision_record(
            shared,
            &held.tool,
            &held.arguments,
            &decision,
            held.received,
            held.meta.as_deref(),
        ) {
            shared.audit.record(record);
        }
        let answer = refusal(&Value::Null, tool, &decision, held.era).expect("not an allow");
        return HeldOutcome::Answer(answer);
    };
    let record = decision_record(
        shared,
        &held.tool,
        &held.arguments,
        &decision,
        held.received,
        held.meta.as_deref(),
    )
    .map(|mut r| {
        r.counters = grant.taken.clone();
        if let Status::Used { decided, .. } = &approved.status {
            r.reason = Some(format!(
                "approved by {} via {} (approval request {})",
                decided.by,
                decided.via.as_str(),
                approved.id
            ));
        }
        shared.audit.intend(r)
    });
    // A round-trip retry goes upstream without toolgate's own fields.
    let strip = held.answer.is_some();
    HeldOutcome::Run(
        Box::new(CallInFlight {
            grant,
            started: held.received,
            record,
        }),
        strip,
    )
}

/// Asks the client's user through elicitation: `Some(true)` accept,
/// `Some(false)` decline or cancel, `None` when the client did not answer.
fn ask_client_user(
    shared: &Shared,
    request: &toolgate_approvals::ApprovalRequest,
    new: &NewRequest,
) -> Option<bool> {
    let n = shared
        .next_ask
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = Value::String(format!("toolgate-approval-{n}"));
    let (tx, rx) = mpsc::channel();
    shared
        .asking
        .lock()
        .expect("asking lock")
        .insert(Id::of(&id).expect("a string id"), tx);
    shared.send(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "elicitation/create",
        "params": approval_question(new, request),
    }));
    let wait = Duration::from_millis(
        request
            .expires_ms
            .saturating_sub(shared.clock.now_ms())
            .min(600_000),
    );
    match rx.recv_timeout(wait) {
        Ok(answer) => answer
            .get("result")
            .map(|r| r.get("action").and_then(Value::as_str) == Some("accept")),
        Err(_) => {
            shared
                .asking
                .lock()
                .expect("asking lock")
                .remove(&Id::of(&id).expect("a string id"));
            None
        }
    }
}

/// The call of a round-trip retry, without toolgate's `requestState` and its
/// entry in `inputResponses`: the server sees the call as the client first made it.
fn strip_round_trip(bytes: &[u8]) -> Vec<u8> {
    let Ok(mut message) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.to_vec();
    };
    if let Some(Value::Object(params)) = message.get_mut("params") {
        params.remove("requestState");
        if let Some(Value::Object(responses)) = params.get_mut("inputResponses") {
            responses.remove(APPROVAL_INPUT);
            if responses.is_empty() {
                params.remove("inputResponses");
            }
        }
    }
    serde_json::to_vec(&message).unwrap_or_else(|_| bytes.to_vec())
}
