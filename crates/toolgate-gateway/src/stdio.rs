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

use crate::answer::{refusal, unknown_tool, Era};
use crate::audit::{decision_facts, AuditSink, LogLevel, Outcome, Record};
use crate::child;
use crate::clock::Clock;
use crate::frame::{Frame, FrameReader};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use toolgate_jsonrpc::{
    args_sha256, error_response, parse_strict, peek, Id, Message, Parsed, StrictError,
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR,
};
use toolgate_policy::{Call, CounterStore, Decision, Grant, Policy};

/// Everything `run_stdio` needs; the outside world comes in here.
pub struct StdioOptions {
    pub policy: Arc<Policy>,
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
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error(transparent)]
    Spawn(#[from] child::SpawnError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// How long the server gets to exit after the client has gone, before SIGTERM
/// and then SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(5);

enum Pending {
    List,
    Call(Box<CallInFlight>),
}

struct CallInFlight {
    grant: Grant,
    started: Instant,
    /// `None` when the audit sink is off.
    record: Option<Record>,
}

struct Shared {
    policy: Arc<Policy>,
    store: Arc<dyn CounterStore>,
    clock: Arc<dyn Clock>,
    grant: String,
    session: String,
    audit: AuditSink,
    audit_args: bool,
    pending: Mutex<HashMap<Id, Pending>>,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
}

/// What to do with one message from the client.
enum Route {
    /// Forward it as it came.
    Pass,
    /// Answer it in the server's place; do not forward.
    Answer(Value),
    /// Drop it (a notification the policy refuses).
    Drop,
}

/// Runs the gateway until the server exits; returns the exit code to use.
pub async fn run_stdio<I, O>(
    opts: StdioOptions,
    client_in: I,
    client_out: O,
) -> Result<i32, StdioError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    // Spawned here, on the caller's thread: PR_SET_PDEATHSIG follows the thread
    // that forked, and the caller's thread lives as long as the gateway.
    let mut server = child::spawn(&opts.command)?;
    let pid = server.id().unwrap_or(0);
    let signals = if opts.forward_signals {
        Some(child::forward_signals(pid).map_err(StdioError::Signals)?)
    } else {
        None
    };
    let server_in = server.stdin.take().expect("piped stdin");
    let server_out = server.stdout.take().expect("piped stdout");

    let (to_client, from_gateway) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(write_client(client_out, from_gateway));
    let shared = Arc::new(Shared {
        policy: opts.policy,
        store: opts.store,
        clock: opts.clock,
        grant: opts.grant,
        session: new_session_id(),
        audit: opts.audit,
        audit_args: opts.audit_args,
        pending: Mutex::new(HashMap::new()),
        to_client,
    });

    let upstream = tokio::spawn(server_to_client(shared.clone(), server_out));
    let downstream = tokio::spawn(client_to_server(
        shared.clone(),
        client_in,
        server_in,
        opts.max_message_bytes,
    ));

    let mut downstream = Some(downstream);
    let status = tokio::select! {
        status = server.wait() => status,
        _ = async { downstream.as_mut().expect("set above").await } => {
            downstream = None;
            wait_after_client(&mut server, pid, &shared.audit).await
        }
    };
    // Let the last answers the server wrote before it exited through.
    let mut upstream = upstream;
    if tokio::time::timeout(Duration::from_millis(200), &mut upstream)
        .await
        .is_err()
    {
        upstream.abort();
        let _ = upstream.await;
    }
    if let Some(d) = downstream {
        d.abort();
        let _ = d.await;
    }
    if let Some(s) = signals {
        s.abort();
    }
    fail_in_flight(&shared);
    let code = match status {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    };
    shared
        .audit
        .log(LogLevel::Info, &format!("server exited ({code})"));
    drop(shared);
    let _ = writer.await;
    Ok(code)
}

/// After the client's end closes: the server's stdin is closed; give it time to
/// exit, then SIGTERM, then SIGKILL.
async fn wait_after_client(
    server: &mut tokio::process::Child,
    pid: u32,
    audit: &AuditSink,
) -> std::io::Result<std::process::ExitStatus> {
    if let Ok(s) = tokio::time::timeout(EXIT_GRACE, server.wait()).await {
        return s;
    }
    audit.log(
        LogLevel::Warn,
        "server still running after its input closed; sending SIGTERM",
    );
    child::signal(pid, libc::SIGTERM);
    if let Ok(s) = tokio::time::timeout(EXIT_GRACE, server.wait()).await {
        return s;
    }
    let _ = server.start_kill();
    server.wait().await
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

async fn write_client<O: AsyncWrite + Unpin>(out: O, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next {
            if out.write_all(&msg).await.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

impl Shared {
    fn send(&self, value: &Value) {
        let mut bytes = serde_json::to_vec(value).expect("a Value always serialises");
        bytes.push(b'\n');
        let _ = self.to_client.send(bytes);
    }

    fn send_raw(&self, mut bytes: Vec<u8>) {
        bytes.push(b'\n');
        let _ = self.to_client.send(bytes);
    }
}

async fn client_to_server<I: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    client_in: I,
    server_in: tokio::process::ChildStdin,
    limit: usize,
) {
    let mut reader = FrameReader::new(client_in, limit);
    let mut server = BufWriter::with_capacity(64 * 1024, server_in);
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        let forward: Option<Vec<u8>> = match frame {
            Frame::Oversize => {
                shared.send(&error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    &format!(
                        "Invalid Request: message exceeds the gateway's limit of {limit} bytes"
                    ),
                    None,
                ));
                None
            }
            Frame::Line(bytes) => route_line(&shared, bytes),
        };
        if let Some(mut bytes) = forward {
            bytes.push(b'\n');
            if server.write_all(&bytes).await.is_err() {
                break;
            }
        }
        if !reader.has_buffered() && server.flush().await.is_err() {
            break;
        }
    }
    // Closing the server's stdin asks it to exit (MCP stdio shutdown).
    let _ = server.shutdown().await;
}

/// Decides what happens to one line from the client; returns the bytes to forward.
fn route_line(shared: &Shared, bytes: Vec<u8>) -> Option<Vec<u8>> {
    let received = Instant::now();
    match parse_strict(&bytes) {
        Err(StrictError::Syntax(e)) => {
            shared.send(&error_response(
                &Value::Null,
                PARSE_ERROR,
                &format!("Parse error: {e}"),
                None,
            ));
            None
        }
        Err(StrictError::DuplicateKey(key)) => {
            // Answer with the id, when the message has a usable one.
            let id = peek(&bytes)
                .and_then(|p| p.id())
                .map_or(Value::Null, |id| id.to_value());
            shared.audit.log(
                LogLevel::Warn,
                &format!("refused a message that repeats the key {key:?}"),
            );
            shared.send(&error_response(
                &id,
                INVALID_REQUEST,
                &format!("Invalid Request: duplicate key {key:?}"),
                None,
            ));
            None
        }
        Ok(Parsed::Single(value)) => match route_message(shared, &value, received) {
            Route::Pass => Some(bytes),
            Route::Answer(answer) => {
                shared.send(&answer);
                None
            }
            Route::Drop => None,
        },
        Ok(Parsed::Batch(items)) => {
            if items.is_empty() {
                shared.send(&error_response(
                    &Value::Null,
                    INVALID_REQUEST,
                    "Invalid Request: empty batch",
                    None,
                ));
                return None;
            }
            let mut answers = Vec::new();
            let mut passed = Vec::new();
            let count = items.len();
            for item in items {
                match route_message(shared, &item, received) {
                    Route::Pass => passed.push(item),
                    Route::Answer(a) => answers.push(a),
                    Route::Drop => {}
                }
            }
            if !answers.is_empty() {
                shared.send(&Value::Array(answers));
            }
            if passed.is_empty() {
                None
            } else if passed.len() == count {
                Some(bytes)
            } else {
                Some(serde_json::to_vec(&Value::Array(passed)).expect("serialisable"))
            }
        }
    }
}

fn route_message(shared: &Shared, value: &Value, received: Instant) -> Route {
    match Message::classify(value) {
        Message::Request {
            id,
            method: "tools/call",
            params,
        } => police_call(shared, id, params, received),
        Message::Request {
            id,
            method: "tools/list",
            ..
        } => {
            let Some(key) = Id::of(id) else {
                return Route::Pass;
            };
            let mut pending = shared.pending.lock().expect("pending lock");
            if pending.contains_key(&key) {
                return Route::Answer(id_in_use(id));
            }
            pending.insert(key, Pending::List);
            Route::Pass
        }
        Message::Request { .. } | Message::Response { .. } => Route::Pass,
        Message::Notification {
            method: "tools/call",
            ..
        } => {
            // A call without an id cannot be answered; a server that ran it anyway
            // would run it unpoliced.
            shared.audit.log(
                LogLevel::Warn,
                "dropped a tools/call sent as a notification (no id)",
            );
            Route::Drop
        }
        Message::Notification { .. } => Route::Pass,
        Message::Invalid => {
            let id = value
                .get("id")
                .filter(|id| Id::of(id).is_some())
                .cloned()
                .unwrap_or(Value::Null);
            Route::Answer(error_response(
                &id,
                INVALID_REQUEST,
                "Invalid Request: not a JSON-RPC 2.0 message",
                None,
            ))
        }
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

static NULL: Value = Value::Null;

fn police_call(
    shared: &Shared,
    id: &Value,
    params_value: Option<&Value>,
    received: Instant,
) -> Route {
    let Some(params) = params_value.and_then(Value::as_object) else {
        return Route::Answer(error_response(
            id,
            INVALID_PARAMS,
            "Invalid params: tools/call needs params",
            None,
        ));
    };
    let Some(tool) = params.get("name").and_then(Value::as_str) else {
        return Route::Answer(error_response(
            id,
            INVALID_PARAMS,
            "Invalid params: tools/call needs params.name as a string",
            None,
        ));
    };
    let arguments = params.get("arguments").unwrap_or(&NULL);
    if !(arguments.is_object() || arguments.is_null()) {
        return Route::Answer(error_response(
            id,
            INVALID_PARAMS,
            "Invalid params: params.arguments must be an object",
            None,
        ));
    }
    let key = Id::of(id).expect("a request id is a string or a number");
    if shared
        .pending
        .lock()
        .expect("pending lock")
        .contains_key(&key)
    {
        return Route::Answer(id_in_use(id));
    }
    let now = shared.clock.now_ms();
    let call = Call {
        tool,
        arguments,
        grant: &shared.grant,
        session: &shared.session,
    };
    let decision = shared.policy.decide(&call, shared.store.as_ref(), now);
    let decision_us = received.elapsed().as_secs_f64() * 1e6;
    // Building the record (and hashing the arguments) is skipped when nothing
    // would receive it.
    let record = shared.audit.enabled().then(|| {
        let (kind, rule, reason) = decision_facts(&decision);
        Record {
            time: now,
            grant: shared.grant.clone(),
            session: shared.session.clone(),
            tool: tool.to_owned(),
            decision: kind,
            rule,
            reason,
            counters: Vec::new(),
            decision_us,
            latency_ms: None,
            outcome: Outcome::Refused,
            args_sha256: args_sha256(arguments),
            args: shared.audit_args.then(|| arguments.clone()),
        }
    });
    match decision {
        Decision::Allow { grant, .. } => {
            let record = record.map(|mut r| {
                r.counters = grant.taken.clone();
                r
            });
            let flight = CallInFlight {
                grant,
                started: received,
                record,
            };
            shared
                .pending
                .lock()
                .expect("pending lock")
                .insert(key, Pending::Call(Box::new(flight)));
            Route::Pass
        }
        refused => {
            if let Some(record) = record {
                shared.audit.record(record);
            }
            if let Decision::Unknown { .. } = refused {
                return Route::Answer(unknown_tool(id, tool));
            }
            let era = Era::of_params(params_value);
            Route::Answer(refusal(id, tool, &refused, era).expect("not an allow"))
        }
    }
}

async fn server_to_client(shared: Arc<Shared>, server_out: tokio::process::ChildStdout) {
    let mut reader = FrameReader::new(server_out, usize::MAX);
    loop {
        let bytes = match reader.next().await {
            Ok(Some(Frame::Line(bytes))) => bytes,
            Ok(Some(Frame::Oversize)) => continue,
            Ok(None) | Err(_) => return,
        };
        let out = answer_from_server(&shared, bytes);
        shared.send_raw(out);
    }
}

/// Settles the request a server message answers, if the gateway tracks it;
/// returns the bytes to give the client.
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
    let Some(id) = p.id() else { return bytes };
    let is_error = p.error.is_some();
    let Some(pending) = shared.pending.lock().expect("pending lock").remove(&id) else {
        return bytes;
    };
    match pending {
        Pending::Call(flight) => {
            settle_call(shared, *flight, is_error);
            bytes
        }
        Pending::List => match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut value) => {
                filter_tools_list(&shared.policy, &mut value);
                serde_json::to_vec(&value).expect("serialisable")
            }
            Err(_) => bytes,
        },
    }
}

fn batch_from_server(shared: &Shared, bytes: Vec<u8>) -> Vec<u8> {
    let Ok(Value::Array(mut items)) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    for item in &mut items {
        if item.get("method").is_some() {
            continue;
        }
        let Some(id) = item.get("id").and_then(Id::of) else {
            continue;
        };
        let Some(pending) = shared.pending.lock().expect("pending lock").remove(&id) else {
            continue;
        };
        match pending {
            Pending::Call(flight) => settle_call(shared, *flight, item.get("error").is_some()),
            Pending::List => filter_tools_list(&shared.policy, item),
        }
    }
    serde_json::to_vec(&Value::Array(items)).expect("serialisable")
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
fn filter_tools_list(policy: &Policy, message: &mut Value) {
    if let Some(tools) = message
        .pointer_mut("/result/tools")
        .and_then(Value::as_array_mut)
    {
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| policy.is_listed(n))
        });
    }
}

/// The server is gone: every call still waiting gets an error now.
fn fail_in_flight(shared: &Shared) {
    let drained: Vec<(Id, Pending)> = shared
        .pending
        .lock()
        .expect("pending lock")
        .drain()
        .collect();
    for (id, pending) in drained {
        shared.send(&error_response(
            &id.to_value(),
            INTERNAL_ERROR,
            "upstream server exited before answering",
            Some(json!({"toolgate": {"reason": "upstream_exited"}})),
        ));
        if let Pending::Call(flight) = pending {
            if let Some(mut record) = flight.record {
                record.outcome = Outcome::NoResponse;
                record.latency_ms = Some(flight.started.elapsed().as_secs_f64() * 1e3);
                shared.audit.record(record);
            }
        }
    }
}
