//! The router against fake servers, in process: what a client lists and
//! calls, and what reaches each server.

use crate::gateway::{Context, Gateway, GatewayOptions, Reply, ServerOptions};
use crate::session::SessionKey;
use crate::upstreams::fake::FakeServer;
use crate::upstreams::AnyUpstream;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use toolgate_audit::{AuditSink, LogLevel};
use toolgate_call::answer::Era;
use toolgate_policy::{parse_policy, Format};
use toolgate_upstream::{Backoff, Transport, UpstreamSpec};

/// Every tool is denied (and so not listed) but these.
const POLICY: &str = "version: \"1\"\ndefault: deny\ntools:\n  a__echo: {}\n  b__add: {}\n";

/// A gateway in front of fake servers `a` and `b` (prefixed by their names),
/// under [`POLICY`].
async fn gateway(a: &FakeServer, b: &FakeServer) -> Arc<Gateway> {
    gateway_under(a, b, POLICY).await
}

/// [`gateway`] under another policy (YAML). Each fake's `events` is the
/// gateway's channel for its events.
pub(super) async fn gateway_under(a: &FakeServer, b: &FakeServer, policy: &str) -> Arc<Gateway> {
    let server = |name: &str| ServerOptions {
        name: name.into(),
        prefix: Some(name.into()),
        policy: None,
        spec: UpstreamSpec {
            name: name.into(),
            transport: Transport::Stdio {
                command: "unused".into(),
                args: Vec::new(),
                env: Vec::new(),
                cwd: None,
            },
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(5),
        },
        per_session: false,
    };
    let policy = parse_policy(policy, Format::Yaml, "test").expect("a valid policy");
    let opts = GatewayOptions {
        servers: vec![server("a"), server("b")],
        separator: "__".into(),
        policy: Some(Arc::new(policy)),
        grants: Vec::new(),
        session_key: SessionKey::random(),
        session_ttl: Duration::from_secs(3600),
        store: Arc::new(toolgate_policy::MemoryStore::default()),
        clock: Arc::new(toolgate_clock::SystemClock),
        audit: AuditSink::open(None, LogLevel::Error).expect("no audit file"),
        audit_args: false,
        startup_timeout: Duration::from_secs(1),
        approvals: Arc::new(toolgate_approvals::MemoryApprovals::new()),
        approval_events: Arc::new(toolgate_approvals::NoEvents),
        pins: Arc::new(toolgate_pins::MemoryPins::new()),
        pins_fail_open: false,
        revocations: Arc::new(toolgate_revocations::MemoryRevocations::new()),
    };
    let (a, b) = (a.clone(), b.clone());
    Gateway::start_with(opts, move |spec, events| {
        let fake = if spec.name == "a" { &a } else { &b };
        *fake.events.lock().unwrap() = Some(events);
        AnyUpstream::Fake(fake.clone())
    })
    .await
    .unwrap_or_else(|_| panic!("the gateway starts"))
}

/// Sends one request as the anonymous grant; the JSON-RPC answer.
async fn request(gateway: &Arc<Gateway>, method: &str, params: Value) -> Value {
    request_in(gateway, Era::Handshake, method, params).await
}

/// [`request`] from a client of `era`.
pub(super) async fn request_in(
    gateway: &Arc<Gateway>,
    era: Era,
    method: &str,
    params: Value,
) -> Value {
    let caller = gateway
        .authenticate(None)
        .expect("anonymous without grants");
    let ctx = Context {
        session: gateway.stateless_session(&caller, &Value::Null),
        caller,
        era,
        trace: None,
        arguments_text: None,
    };
    match gateway.request(&ctx, &json!(1), method, params).await {
        Reply::Json(answer) => answer,
        Reply::Raw(raw) => serde_json::from_slice(&raw).expect("JSON"),
        _ => panic!("{method}: not a JSON answer"),
    }
}

#[tokio::test]
async fn tools_list_merges_the_servers_and_hides_what_the_policy_denies() {
    let a = FakeServer::with_tools(&["echo", "secret"]);
    let b = FakeServer::with_tools(&["add"]);
    let gateway = gateway(&a, &b).await;
    let answer = request(&gateway, "tools/list", json!({})).await;
    let names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a__echo", "b__add"]);
}

#[tokio::test]
async fn a_call_the_policy_denies_never_reaches_the_server() {
    let a = FakeServer::with_tools(&["echo", "secret"]);
    let b = FakeServer::with_tools(&["add"]);
    let gateway = gateway(&a, &b).await;
    let answer = request(
        &gateway,
        "tools/call",
        json!({"name": "a__secret", "arguments": {}}),
    )
    .await;
    // Denied by default, so hidden too: to the client it is an unknown tool.
    assert_eq!(answer["error"]["code"], json!(-32602), "{answer}");
    assert!(a.calls().is_empty(), "{:?}", a.calls());
    assert!(b.calls().is_empty());
}

#[tokio::test]
async fn an_allowed_call_reaches_its_server_under_the_servers_own_name() {
    let a = FakeServer::with_tools(&["echo", "secret"]);
    let b = FakeServer::with_tools(&["add"]);
    let gateway = gateway(&a, &b).await;
    let answer = request(
        &gateway,
        "tools/call",
        json!({"name": "b__add", "arguments": {"x": 1}}),
    )
    .await;
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("called add"),
        "{answer}"
    );
    let calls = b.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "tools/call");
    assert_eq!(calls[0].1, json!({"name": "add", "arguments": {"x": 1}}));
    assert!(a.calls().is_empty());
}

#[tokio::test]
async fn an_unknown_tool_reaches_no_server() {
    let a = FakeServer::with_tools(&["echo"]);
    let b = FakeServer::with_tools(&["add"]);
    let gateway = gateway(&a, &b).await;
    let answer = request(
        &gateway,
        "tools/call",
        json!({"name": "c__nothing", "arguments": {}}),
    )
    .await;
    assert!(
        answer.get("error").is_some() || answer["result"]["isError"] == json!(true),
        "{answer}"
    );
    assert!(a.calls().is_empty() && b.calls().is_empty());
}

mod twins;
