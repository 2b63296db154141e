//! Helpers shared by the integration tests: where the real servers live, a
//! recording Downstream, and starting an upstream.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_upstream::{
    Backoff, BoxFuture, Downstream, RpcError, Transport, Upstream, UpstreamEvent, UpstreamSpec,
};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn need(path: PathBuf) -> String {
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/setup.sh first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

pub fn python() -> String {
    need(root().join(".venv/bin/python"))
}

pub fn probe_server() -> String {
    need(root().join("tests/servers/probe_server.py"))
}

pub fn everything() -> String {
    need(
        root()
            .join("tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    )
}

pub fn node() -> String {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "node is missing: run ./scripts/setup.sh first");
    "node".into()
}

pub fn spec(name: &str, transport: Transport) -> UpstreamSpec {
    UpstreamSpec {
        name: name.into(),
        transport,
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        },
        request_timeout: Duration::from_secs(20),
    }
}

pub fn stdio(command: String, args: Vec<String>, env: Vec<(String, String)>) -> Transport {
    Transport::Stdio {
        command,
        args,
        env,
        cwd: None,
    }
}

pub async fn start(spec: UpstreamSpec) -> (Upstream, mpsc::UnboundedReceiver<UpstreamEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Upstream::start(spec, tx);
    assert!(
        up.wait_ready(Duration::from_secs(20)).await,
        "server never became ready"
    );
    (up, rx)
}

pub async fn call(
    up: &Upstream,
    tool: &str,
    args: Value,
    ds: Option<Arc<dyn Downstream>>,
) -> Value {
    up.request(
        "tools/call",
        Some(json!({"name": tool, "arguments": args})),
        ds,
    )
    .await
    .unwrap_or_else(|e| panic!("tools/call {tool} failed: {e}"))
}

/// The text of a tools/call result's first content item.
pub fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A client session that records what the server asked and answers with
/// canned results.
pub struct Recorder {
    pub session: String,
    pub requests: Mutex<Vec<(String, Option<Value>)>>,
    pub notes: Mutex<Vec<(String, Option<Value>)>>,
}

impl Recorder {
    pub fn new(session: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            session: session.into(),
            requests: Mutex::default(),
            notes: Mutex::default(),
        })
    }

    pub fn methods(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }
}

pub const CANNED: &str = "canned answer from the recorder";

impl Downstream for Recorder {
    fn request(&self, method: String, params: Option<Value>) -> BoxFuture<Result<Value, RpcError>> {
        self.requests.lock().unwrap().push((method.clone(), params));
        Box::pin(async move {
            match method.as_str() {
                "sampling/createMessage" => Ok(json!({
                    "role": "assistant",
                    "content": {"type": "text", "text": CANNED},
                    "model": "recorder-model",
                    "stopReason": "endTurn",
                })),
                "elicitation/create" => Ok(json!({"action": "decline"})),
                "roots/list" => Ok(json!({"roots": []})),
                _ => Err(RpcError {
                    code: -32601,
                    message: format!("recorder does not do {method}"),
                    data: None,
                }),
            }
        })
    }

    fn notify(&self, method: String, params: Option<Value>) {
        self.notes.lock().unwrap().push((method, params));
    }

    fn session(&self) -> &str {
        &self.session
    }
}

/// Runs the shared checks against server-everything on any transport:
/// tools/list, echo, a JSON-RPC error, sampling, elicitation, progress.
pub async fn everything_suite(up: &Upstream) {
    let info = up.info().expect("ready");
    assert_eq!(info.server_info["name"], "mcp-servers/everything");
    assert_eq!(info.protocol_version, "2025-11-25");

    let tools = up.request("tools/list", None, None).await.unwrap();
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in [
        "echo",
        "trigger-sampling-request",
        "trigger-elicitation-request",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }

    let r = call(up, "echo", json!({"message": "hi"}), None).await;
    assert!(text(&r).contains("hi"), "{r}");

    match up.request("no/such/method", None, None).await {
        Err(toolgate_upstream::CallError::Rpc(e)) => assert_eq!(e.code, -32601, "{e:?}"),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }

    // sampling: the server's request reaches the Downstream, the answer gets back
    let rec = Recorder::new("s1");
    let r = call(
        up,
        "trigger-sampling-request",
        json!({"prompt": "hello", "maxTokens": 5}),
        Some(rec.clone()),
    )
    .await;
    assert!(text(&r).contains(CANNED), "{r}");
    assert_eq!(rec.methods(), vec!["sampling/createMessage"]);

    // elicitation
    let rec = Recorder::new("s1");
    let r = call(
        up,
        "trigger-elicitation-request",
        json!({}),
        Some(rec.clone()),
    )
    .await;
    assert_eq!(rec.methods(), vec!["elicitation/create"], "{r}");

    // progress: the token is rewritten on the way up and restored on the way down
    let rec = Recorder::new("s1");
    let r = up
        .request(
            "tools/call",
            Some(json!({
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 0.4, "steps": 2},
                "_meta": {"progressToken": "my-token"},
            })),
            Some(rec.clone()),
        )
        .await
        .unwrap();
    assert!(r["content"].is_array(), "{r}");
    let notes = rec.notes.lock().unwrap().clone();
    let progress: Vec<_> = notes
        .iter()
        .filter(|(m, _)| m == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 2, "{notes:?}");
    for (_, p) in progress {
        assert_eq!(p.as_ref().unwrap()["progressToken"], "my-token");
    }
}

/// Many tasks, each its own echo, all at once.
pub async fn concurrent_echoes(up: &Upstream, tool: &str, arg: &str, n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let up = up.clone();
        let arg = arg.to_owned();
        let tool = tool.to_owned();
        tasks.push(tokio::spawn(async move {
            let r = call(&up, &tool, json!({ arg: format!("msg-{i}") }), None).await;
            assert!(text(&r).contains(&format!("msg-{i}")), "{r}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
