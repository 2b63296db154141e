//! The admin API over real HTTP: a real admin server on a free loopback
//! port, a real local HTTP server receiving the webhooks, and the in-memory
//! approval store. Signatures are recomputed here with the hmac crate.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use toolgate_admin::{serve_admin, AdminOptions, MetricsSource, Webhook, WebhookNotifier};
use toolgate_approvals::{
    ApprovalEvents, ApprovalRequest, ApprovalStore, Decided, MemoryApprovals, NewRequest, Via,
};

const TOKEN: &str = "admin-token-for-tests";
const SECRET: &str = "webhook-secret-for-tests";
/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    toolgate_clock::unix_now().as_millis() as u64
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

fn hmac_hex(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn new_request(tool: &str) -> NewRequest {
    NewRequest {
        grant: "agent".into(),
        server: Some("files".into()),
        tool: tool.into(),
        arguments: json!({"path": "/etc/passwd"}),
        reason: "reading system files needs a person".into(),
        rule: "tools.read_file".into(),
        expires_in_ms: 600_000,
    }
}

/// Remembers every event it is told about.
#[derive(Default)]
struct Recorder {
    requested: Mutex<Vec<String>>,
    decided: Mutex<Vec<ApprovalRequest>>,
}

impl ApprovalEvents for Recorder {
    fn requested(&self, request: &ApprovalRequest) {
        self.requested.lock().unwrap().push(request.id.clone());
    }
    fn decided(&self, request: &ApprovalRequest) {
        self.decided.lock().unwrap().push(request.clone());
    }
}

/// A running admin server.
struct Admin {
    addr: SocketAddr,
    store: Arc<MemoryApprovals>,
    events: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Admin {
    async fn start(webhook: Option<Webhook>) -> Admin {
        Self::start_with(Arc::new(MemoryApprovals::new()), webhook).await
    }

    async fn start_with(store: Arc<MemoryApprovals>, webhook: Option<Webhook>) -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events = Arc::new(Recorder::default());
        let opts = AdminOptions {
            listen: addr,
            webhook,
            ..AdminOptions::new(Sha256::digest(TOKEN).into())
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_admin(
            store.clone(),
            events.clone(),
            opts,
            listener,
            async {
                let _ = stopped.await;
            },
            Some(Arc::new(FixedMetrics)),
        ));
        Admin {
            addr,
            store,
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn pending(&self, tool: &str) -> ApprovalRequest {
        self.store.request(&new_request(tool), now_ms()).unwrap()
    }

    /// A request that expired a minute ago.
    fn expired(&self, tool: &str) -> ApprovalRequest {
        let mut new = new_request(tool);
        new.expires_in_ms = 1_000;
        self.store.request(&new, now_ms() - 60_000).unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut headers = vec![];
        if let Some(auth) = auth {
            headers.push(("authorization".to_string(), auth.to_string()));
        }
        send(self.addr, method, path, &headers, body.as_bytes()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(Method::GET, path, Some(&format!("Bearer {TOKEN}")), "")
            .await;
        (status, body)
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(Method::POST, path, Some(&format!("Bearer {TOKEN}")), body)
            .await;
        (status, body)
    }

    /// A webhook callback, signed with `secret` at `timestamp`.
    async fn callback(
        &self,
        body: &Value,
        secret: &str,
        timestamp: u64,
    ) -> (StatusCode, HeaderMap, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let signature = format!("sha256={}", hmac_hex(secret, timestamp, &body));
        self.callback_raw(&body, &timestamp.to_string(), &signature)
            .await
    }

    async fn callback_raw(
        &self,
        body: &[u8],
        timestamp: &str,
        signature: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let headers = [
            ("x-toolgate-timestamp".to_string(), timestamp.to_string()),
            ("x-toolgate-signature".to_string(), signature.to_string()),
        ];
        send(self.addr, Method::POST, "/webhook/decide", &headers, body).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.task.take().unwrap())
            .await
            .expect("serve_admin returns after shutdown")
            .unwrap();
    }
}

/// A metrics source with a fixed exposition.
struct FixedMetrics;

impl MetricsSource for FixedMetrics {
    fn render(&self) -> String {
        "# TYPE up gauge\nup 1\n".into()
    }
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, bytes) = send_raw(addr, method, path, headers, body).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, headers, value)
}

async fn send_raw(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (StatusCode, HeaderMap, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the admin server answers")
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

#[tokio::test]
async fn metrics_need_the_token_and_are_prometheus_text() {
    let admin = Admin::start(None).await;
    let (status, headers, _) = admin.call(Method::GET, "/metrics", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    let auth = [("authorization".to_string(), format!("Bearer {TOKEN}"))];
    let (status, headers, body) = send_raw(admin.addr, Method::GET, "/metrics", &auth, b"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(&body[..], b"# TYPE up gauge\nup 1\n");
    assert_error(
        admin.post("/metrics", "").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    admin.stop().await;
}

#[track_caller]
fn assert_error(found: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(found.0, status, "{}", found.1);
    assert_eq!(found.1["error"]["code"], code, "{}", found.1);
    assert!(found.1["error"]["message"].is_string(), "{}", found.1);
}

// --- the webhook receiver ----------------------------------------------------

/// What the receiver got.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A local HTTP server that records every request and answers with the
/// scripted statuses, then 200.
struct Receiver {
    url: String,
    got: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/T0/secret-path",
            listener.local_addr().unwrap()
        );
        let (tx, got) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let script = script.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    let script = script.clone();
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(Received { headers, body });
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, got }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.got.recv())
            .await
            .expect("a webhook arrives")
            .unwrap()
    }

    /// Nothing more arrives within `wait`.
    async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(wait, self.got.recv()).await {
            panic!("unexpected webhook: {extra:?}");
        }
    }
}

fn webhook(url: &str, admin_url: &str) -> Webhook {
    Webhook {
        initial_backoff: Duration::from_millis(20),
        ..Webhook::new(url, SECRET, admin_url)
    }
}

/// Checks the signature of a received webhook (recomputed here) and
/// returns its body.
#[track_caller]
fn verified(received: &Received) -> Value {
    let header = |name: &str| received.headers[name].to_str().unwrap().to_string();
    let timestamp: u64 = header("x-toolgate-timestamp").parse().unwrap();
    assert!(timestamp.abs_diff(now_secs()) <= 5, "timestamp {timestamp}");
    assert_eq!(
        header("x-toolgate-signature"),
        format!("sha256={}", hmac_hex(SECRET, timestamp, &received.body))
    );
    assert_eq!(header("content-type"), "application/json");
    serde_json::from_slice(&received.body).unwrap()
}

// --- the admin token --------------------------------------------------------

#[tokio::test]
async fn every_endpoint_needs_the_admin_token() {
    let admin = Admin::start(None).await;
    let id = admin.pending("read_file").id;
    let routes = [
        (Method::GET, "/approvals".to_string()),
        (Method::GET, "/approvals?all=true".to_string()),
        (Method::GET, format!("/approvals/{id}")),
        (Method::POST, format!("/approvals/{id}/approve")),
        (Method::POST, format!("/approvals/{id}/deny")),
        (Method::GET, "/no/such/route".to_string()),
    ];
    let wrong = [
        (None, r#"Bearer realm="toolgate-admin""#),
        (
            Some("Bearer not-the-token"),
            r#"Bearer realm="toolgate-admin", error="invalid_token""#,
        ),
        (Some(TOKEN), r#"Bearer realm="toolgate-admin""#),
        (
            Some("Basic YWRtaW46YWRtaW4="),
            r#"Bearer realm="toolgate-admin""#,
        ),
        (
            Some(&format!("Bearer {TOKEN}x")),
            r#"Bearer realm="toolgate-admin", error="invalid_token""#,
        ),
    ];
    for (method, path) in &routes {
        for (auth, challenge) in &wrong {
            let (status, headers, body) = admin.call(method.clone(), path, *auth, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            assert_eq!(headers["www-authenticate"], *challenge, "{method} {path}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // Nothing was decided by any of them.
    assert_eq!(
        admin.store.get(&id).unwrap().unwrap().status.name(),
        "pending"
    );
    assert!(admin.events.decided.lock().unwrap().is_empty());
    // The scheme is case-insensitive.
    let (status, _, _) = admin
        .call(
            Method::GET,
            "/approvals",
            Some(&format!("bearer {TOKEN}")),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    admin.stop().await;
}

// --- list, show, approve, deny ------------------------------------------------

#[tokio::test]
async fn list_shows_pending_requests_and_all_with_all_true() {
    let admin = Admin::start(None).await;
    let first = admin.pending("read_file");
    let second = admin.pending("delete_file");
    let expired = admin.expired("write_file");
    admin
        .store
        .decide(
            &second.id,
            false,
            Decided {
                by: "ops".into(),
                via: Via::Cli,
                at_ms: now_ms(),
                reason: None,
            },
            now_ms(),
        )
        .unwrap();

    let ids = |body: &Value| -> Vec<String> {
        body["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = admin.get("/approvals").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), [first.id.as_str()]);
    let shown = &body["approvals"][0];
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["tool"], "read_file");
    assert_eq!(shown["grant"], "agent");
    assert_eq!(shown["server"], "files");
    assert_eq!(shown["arguments"], json!({"path": "/etc/passwd"}));
    assert_eq!(shown["reason"], "reading system files needs a person");
    assert_eq!(shown["rule"], "tools.read_file");
    assert_eq!(shown["expired"], false);

    for query in ["?all=false", "?all=0"] {
        assert_eq!(
            ids(&admin.get(&format!("/approvals{query}")).await.1),
            [first.id.as_str()]
        );
    }
    for query in ["?all=true", "?all=1", "?all"] {
        let (status, body) = admin.get(&format!("/approvals{query}")).await;
        assert_eq!(status, StatusCode::OK);
        let mut found = ids(&body);
        found.sort();
        let mut expected = vec![first.id.clone(), second.id.clone(), expired.id.clone()];
        expected.sort();
        assert_eq!(found, expected, "{query}");
    }
    assert_error(
        admin.get("/approvals?status=pending").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    admin.stop().await;
}

#[tokio::test]
async fn show_returns_one_request() {
    let admin = Admin::start(None).await;
    let request = admin.pending("read_file");
    let (status, body) = admin.get(&format!("/approvals/{}", request.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], request.id);
    assert_eq!(body["key"], request.key);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["created_ms"], request.created_ms);
    assert_eq!(body["expires_ms"], request.expires_ms);

    let expired = admin.expired("write_file");
    let (_, body) = admin.get(&format!("/approvals/{}", expired.id)).await;
    assert_eq!(
        (body["status"].as_str(), body["expired"].as_bool()),
        (Some("pending"), Some(true))
    );

    assert_error(
        admin.get("/approvals/apr_0000000000000000").await,
        StatusCode::NOT_FOUND,
        "unknown",
    );
    admin.stop().await;
}

#[tokio::test]
async fn approve_and_deny_decide_once_via_the_api() {
    let admin = Admin::start(None).await;
    let a = admin.pending("read_file");
    let b = admin.pending("delete_file");

    let (status, body) = admin
        .post(
            &format!("/approvals/{}/approve", a.id),
            r#"{"reason": "ticket OPS-12", "by": "alice"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decision"]["by"], "alice");
    assert_eq!(body["decision"]["via"], "api");
    assert_eq!(body["decision"]["reason"], "ticket OPS-12");
    // The request's own reason is kept beside the decision's.
    assert_eq!(body["reason"], "reading system files needs a person");

    // No body: decided by "admin", with no reason.
    let (status, body) = admin.post(&format!("/approvals/{}/deny", b.id), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "denied");
    assert_eq!(body["decision"]["by"], "admin");
    assert_eq!(body["decision"]["via"], "api");
    assert!(body["decision"].get("reason").is_none(), "{body}");

    // The store holds the decisions, and the events were told.
    let stored = admin.store.get(&a.id).unwrap().unwrap();
    assert_eq!(stored.status.name(), "approved");
    let decided = admin.events.decided.lock().unwrap().clone();
    assert_eq!(
        decided
            .iter()
            .map(|r| (r.id.clone(), r.status.name()))
            .collect::<Vec<_>>(),
        [(a.id.clone(), "approved"), (b.id.clone(), "denied")]
    );

    // A second decision is refused, and tells nobody.
    for action in ["approve", "deny"] {
        assert_error(
            admin
                .post(&format!("/approvals/{}/{action}", a.id), "")
                .await,
            StatusCode::CONFLICT,
            "already_decided",
        );
    }
    assert_eq!(admin.events.decided.lock().unwrap().len(), 2);
    admin.stop().await;
}

#[tokio::test]
async fn decisions_on_unknown_expired_and_bad_input_are_refused() {
    let admin = Admin::start(None).await;
    let expired = admin.expired("write_file");
    let pending = admin.pending("read_file");
    assert_error(
        admin
            .post("/approvals/apr_0000000000000000/approve", "")
            .await,
        StatusCode::NOT_FOUND,
        "unknown",
    );
    assert_error(
        admin
            .post(&format!("/approvals/{}/approve", expired.id), "")
            .await,
        StatusCode::CONFLICT,
        "expired",
    );
    let approve = format!("/approvals/{}/approve", pending.id);
    for bad in [
        "not json",
        "[]",
        r#"{"reason": 5}"#,
        r#"{"by": "alice", "extra": true}"#,
        r#"{"by": ""}"#,
        r#"{"by": "a\nb"}"#,
        r#"{"by": "x", "by": "y"}"#,
    ] {
        assert_error(
            admin.post(&approve, bad).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(70_000));
    let (status, _) = admin.post(&approve, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        admin.store.get(&pending.id).unwrap().unwrap().status.name(),
        "pending"
    );

    assert_error(admin.get("/nope").await, StatusCode::NOT_FOUND, "not_found");
    let (status, headers, _) = admin
        .call(
            Method::DELETE,
            "/approvals",
            Some(&format!("Bearer {TOKEN}")),
            "",
        )
        .await;
    assert_eq!(
        (status, &headers["allow"]),
        (StatusCode::METHOD_NOT_ALLOWED, &"GET".parse().unwrap())
    );
    let (status, headers, _) = admin
        .call(Method::GET, &approve, Some(&format!("Bearer {TOKEN}")), "")
        .await;
    assert_eq!(
        (status, &headers["allow"]),
        (StatusCode::METHOD_NOT_ALLOWED, &"POST".parse().unwrap())
    );
    assert!(admin.events.decided.lock().unwrap().is_empty());
    admin.stop().await;
}

#[tokio::test]
async fn an_unreachable_store_is_503_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = AdminOptions {
        listen: addr,
        ..AdminOptions::new(Sha256::digest(TOKEN).into())
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_admin(
        Arc::new(toolgate_approvals::Unreachable("connection refused".into())),
        Arc::new(Recorder::default()),
        opts,
        listener,
        async {
            let _ = stopped.await;
        },
        None,
    ));
    let auth = [("authorization".to_string(), format!("Bearer {TOKEN}"))];
    for (method, path) in [
        (Method::GET, "/approvals"),
        (Method::GET, "/approvals/apr_1"),
        (Method::POST, "/approvals/apr_1/deny"),
    ] {
        let (status, _, body) = send(addr, method, path, &auth, b"").await;
        assert_error(
            (status, body),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
    }
    let _ = stop.send(());
    task.await.unwrap();
}

// --- the outgoing webhook ------------------------------------------------------

#[tokio::test]
async fn webhook_posts_a_signed_request_and_forwards_events() {
    let mut receiver = Receiver::start(&[]).await;
    let inner = Arc::new(Recorder::default());
    let notifier = WebhookNotifier::new(
        webhook(&receiver.url, "http://127.0.0.1:8081/"),
        inner.clone(),
    );
    let store = MemoryApprovals::new();
    let request = store.request(&new_request("read_file"), now_ms()).unwrap();

    notifier.requested(&request);
    assert_eq!(*inner.requested.lock().unwrap(), [request.id.as_str()]);
    let got = receiver.next().await;
    let body = verified(&got);
    assert_eq!(body["event"], "approval.requested");
    assert_eq!(body["request"]["id"], request.id);
    assert_eq!(body["request"]["status"], "pending");
    assert_eq!(body["request"]["tool"], "read_file");
    assert_eq!(body["request"]["arguments"], json!({"path": "/etc/passwd"}));
    let base = "http://127.0.0.1:8081";
    assert_eq!(
        body["approve_url"],
        format!("{base}/approvals/{}/approve", request.id)
    );
    assert_eq!(
        body["deny_url"],
        format!("{base}/approvals/{}/deny", request.id)
    );
    assert_eq!(body["callback_url"], format!("{base}/webhook/decide"));

    let decided = store
        .decide(
            &request.id,
            true,
            Decided {
                by: "bob".into(),
                via: Via::Cli,
                at_ms: now_ms(),
                reason: None,
            },
            now_ms(),
        )
        .unwrap();
    notifier.decided(&decided);
    assert_eq!(inner.decided.lock().unwrap().len(), 1);
    let body = verified(&receiver.next().await);
    assert_eq!(body["event"], "approval.decided");
    assert_eq!(body["request"]["status"], "approved");
    assert_eq!(body["request"]["decision"]["by"], "bob");
    assert_eq!(body["request"]["decision"]["via"], "cli");
    receiver.quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn webhook_is_retried_after_the_receiver_answers_500_twice() {
    let mut receiver = Receiver::start(&[500, 500]).await;
    let notifier = WebhookNotifier::new(
        webhook(&receiver.url, "http://127.0.0.1:8081"),
        Arc::new(Recorder::default()),
    );
    let request = MemoryApprovals::new()
        .request(&new_request("read_file"), now_ms())
        .unwrap();
    notifier.requested(&request);
    let started = toolgate_clock::monotonic_now();
    let attempts = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    // Backoff 20 ms, then 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
    for got in &attempts {
        let body = verified(got);
        assert_eq!(body["request"]["id"], request.id);
    }
    // Delivered on the third attempt: no fourth.
    receiver.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn webhook_gives_up_after_max_attempts_and_logs_without_the_url() {
    let mut receiver = Receiver::start(&[500, 503, 500, 500]).await;
    let (log_tx, mut log_rx) = mpsc::unbounded_channel();
    let notifier = WebhookNotifier::with_log(
        Webhook {
            max_attempts: 3,
            ..webhook(&receiver.url, "http://127.0.0.1:8081")
        },
        Arc::new(Recorder::default()),
        move |line| {
            let _ = log_tx.send(line);
        },
    );
    let request = MemoryApprovals::new()
        .request(&new_request("read_file"), now_ms())
        .unwrap();
    notifier.requested(&request);
    for _ in 0..3 {
        verified(&receiver.next().await);
    }
    let line = tokio::time::timeout(PATIENCE, log_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        line,
        format!(
            "webhook: gave up sending approval.requested for {} after 3 attempts: the receiver answered 500 Internal Server Error",
            request.id
        )
    );
    receiver.quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn webhook_retries_connection_errors_and_never_blocks_the_caller() {
    // A port with nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (log_tx, mut log_rx) = mpsc::unbounded_channel();
    let notifier = WebhookNotifier::with_log(
        Webhook {
            max_attempts: 2,
            ..webhook(&url, "http://127.0.0.1:8081")
        },
        Arc::new(Recorder::default()),
        move |line| {
            let _ = log_tx.send(line);
        },
    );
    let request = MemoryApprovals::new()
        .request(&new_request("read_file"), now_ms())
        .unwrap();
    let started = toolgate_clock::monotonic_now();
    for _ in 0..100 {
        notifier.requested(&request);
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let line = tokio::time::timeout(PATIENCE, log_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with(&format!(
            "webhook: gave up sending approval.requested for {} after 2 attempts: the receiver could not be reached",
            request.id
        )),
        "{line}"
    );
    assert!(!line.contains("/hook"), "{line}");
}

// --- the signed callback ---------------------------------------------------------

async fn with_callback() -> Admin {
    Admin::start(Some(webhook(
        "http://127.0.0.1:9/unused",
        "http://127.0.0.1:8081",
    )))
    .await
}

#[tokio::test]
async fn callback_with_a_good_signature_decides_via_webhook() {
    let admin = with_callback().await;
    let a = admin.pending("read_file");
    let b = admin.pending("delete_file");
    let (status, _, body) = admin
        .callback(
            &json!({"id": a.id, "decision": "approve", "by": "carol@chat", "reason": "looks fine"}),
            SECRET,
            now_secs(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decision"]["via"], "webhook");
    assert_eq!(body["decision"]["by"], "carol@chat");
    assert_eq!(body["decision"]["reason"], "looks fine");

    // `by` defaults to "webhook"; no admin token is needed (nor used).
    let (status, _, body) = admin
        .callback(&json!({"id": b.id, "decision": "deny"}), SECRET, now_secs())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["decision"]["by"].as_str()),
        (Some("denied"), Some("webhook"))
    );
    assert_eq!(admin.events.decided.lock().unwrap().len(), 2);

    // A decided request cannot be decided again, even with a fresh signature.
    let (status, _, body) = admin
        .callback(
            &json!({"id": a.id, "decision": "deny", "by": "x"}),
            SECRET,
            now_secs(),
        )
        .await;
    assert_error((status, body), StatusCode::CONFLICT, "already_decided");
    let (status, _, body) = admin
        .callback(
            &json!({"id": "apr_0000000000000000", "decision": "deny"}),
            SECRET,
            now_secs(),
        )
        .await;
    assert_error((status, body), StatusCode::NOT_FOUND, "unknown");
    let (status, _, body) = admin
        .callback(
            &json!({"id": a.id, "decision": "maybe"}),
            SECRET,
            now_secs(),
        )
        .await;
    assert_error((status, body), StatusCode::BAD_REQUEST, "bad_request");
    admin.stop().await;
}

#[tokio::test]
async fn callback_with_a_forged_signature_is_401() {
    let admin = with_callback().await;
    let request = admin.pending("read_file");
    let body = json!({"id": request.id, "decision": "approve"});
    // Signed with another secret.
    let (status, headers, answer) = admin.callback(&body, "guessed-secret", now_secs()).await;
    assert_error((status, answer), StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(headers.contains_key("www-authenticate"));
    // A good signature of another body.
    let now = now_secs();
    let other = serde_json::to_vec(&json!({"id": request.id, "decision": "deny"})).unwrap();
    let signature = format!("sha256={}", hmac_hex(SECRET, now, &other));
    let sent = serde_json::to_vec(&body).unwrap();
    let (status, _, answer) = admin
        .callback_raw(&sent, &now.to_string(), &signature)
        .await;
    assert_error((status, answer), StatusCode::UNAUTHORIZED, "unauthorized");
    // The admin token is not a signature.
    let headers = [("authorization".to_string(), format!("Bearer {TOKEN}"))];
    let (status, _, answer) =
        send(admin.addr, Method::POST, "/webhook/decide", &headers, &sent).await;
    assert_error((status, answer), StatusCode::UNAUTHORIZED, "unauthorized");
    // Malformed headers.
    for (ts, sig) in [
        ("yesterday", signature.as_str()),
        (&now.to_string(), "sha256=00"),
    ] {
        let (status, _, answer) = admin.callback_raw(&sent, ts, sig).await;
        assert_error((status, answer), StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(
        admin.store.get(&request.id).unwrap().unwrap().status.name(),
        "pending"
    );
    assert!(admin.events.decided.lock().unwrap().is_empty());
    admin.stop().await;
}

#[tokio::test]
async fn callback_replayed_within_the_window_is_401() {
    let admin = with_callback().await;
    let a = admin.pending("read_file");
    let body = serde_json::to_vec(&json!({"id": a.id, "decision": "approve"})).unwrap();
    let now = now_secs();
    let signature = format!("sha256={}", hmac_hex(SECRET, now, &body));
    let (status, _, answer) = admin
        .callback_raw(&body, &now.to_string(), &signature)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, answer) = admin
        .callback_raw(&body, &now.to_string(), &signature)
        .await;
    assert_error(
        (status, answer.clone()),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replay"),
        "{answer}"
    );
    admin.stop().await;
}

#[tokio::test]
async fn callback_with_a_stale_timestamp_is_401() {
    let admin = with_callback().await;
    let request = admin.pending("read_file");
    let body = json!({"id": request.id, "decision": "approve"});
    for timestamp in [now_secs() - 301 - 5, now_secs() + 301 + 5, 0] {
        let (status, _, answer) = admin.callback(&body, SECRET, timestamp).await;
        assert_error(
            (status, answer.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("300 s"),
            "{answer}"
        );
    }
    // Just inside the window is fine.
    let (status, _, answer) = admin.callback(&body, SECRET, now_secs() - 250).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    admin.stop().await;
}

#[tokio::test]
async fn callback_without_a_webhook_is_404() {
    let admin = Admin::start(None).await;
    let request = admin.pending("read_file");
    let (status, _, body) = admin
        .callback(
            &json!({"id": request.id, "decision": "approve"}),
            SECRET,
            now_secs(),
        )
        .await;
    assert_error((status, body), StatusCode::NOT_FOUND, "not_found");
    admin.stop().await;
}

// --- end to end: the webhook's receiver answers through the callback ---------------

#[tokio::test]
async fn a_chat_tool_approves_what_the_webhook_announced() {
    let mut receiver = Receiver::start(&[]).await;
    let store = Arc::new(MemoryApprovals::new());
    // The gateway's side: the admin server and the notifier share the webhook settings.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = webhook(
        &receiver.url,
        &format!("http://{}", listener.local_addr().unwrap()),
    );
    drop(listener);
    let admin = Admin::start_with(store.clone(), Some(hook.clone())).await;
    let hook = Webhook {
        admin_url: format!("http://{}", admin.addr),
        ..hook
    };
    let notifier = WebhookNotifier::new(hook, admin.events.clone());

    let request = store.request(&new_request("read_file"), now_ms()).unwrap();
    notifier.requested(&request);
    let announced = verified(&receiver.next().await);
    let callback_url = announced["callback_url"].as_str().unwrap();
    assert_eq!(
        callback_url,
        format!("http://{}/webhook/decide", admin.addr)
    );

    let (status, _, body) = admin
        .callback(
            &json!({"id": announced["request"]["id"], "decision": "approve", "by": "dana"}),
            SECRET,
            now_secs(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let used = store.consume(&request.key, now_ms()).unwrap().unwrap();
    assert_eq!(used.status.name(), "used");
    admin.stop().await;
}
