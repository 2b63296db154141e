//! The outgoing webhook: [`WebhookNotifier`] turns every new approval
//! request (`approval.requested`) and every decision (`approval.decided`)
//! into a signed JSON POST, queued and sent from background tasks with
//! exponential backoff, and passes every event on to the next
//! `ApprovalEvents` (the audit recorder) first.

use crate::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::{now_ms, request_json, Webhook};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use toolgate_approvals::{ApprovalEvents, ApprovalRequest};

/// Events waiting to be sent; past this, new ones are dropped (and logged).
const QUEUE: usize = 1024;
/// Deliveries in flight at once.
const CONCURRENT: usize = 16;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Announces approval requests and decisions to a webhook. Never blocks:
/// an event is queued, and sent by a background task.
pub struct WebhookNotifier {
    queue: mpsc::Sender<Bytes>,
    admin_url: String,
    inner: Arc<dyn ApprovalEvents>,
    log: Log,
}

impl WebhookNotifier {
    /// Starts the sender (call it inside a tokio runtime); every event also
    /// goes to `inner`. Delivery failures are printed to stderr.
    pub fn new(webhook: Webhook, inner: Arc<dyn ApprovalEvents>) -> WebhookNotifier {
        Self::with_log(webhook, inner, |line| eprintln!("toolgate: {line}"))
    }

    /// [`WebhookNotifier::new`], with delivery failures (one line each,
    /// without the URL or the secret) given to `log`.
    pub fn with_log(
        webhook: Webhook,
        inner: Arc<dyn ApprovalEvents>,
        log: impl Fn(String) + Send + Sync + 'static,
    ) -> WebhookNotifier {
        let log: Log = Arc::new(log);
        let (queue, rx) = mpsc::channel(QUEUE);
        let admin_url = webhook.admin_url.clone();
        let sender = Sender {
            client: client(),
            uri: webhook.url.parse().ok(),
            webhook,
            log: log.clone(),
        };
        tokio::spawn(sender.run(rx));
        WebhookNotifier {
            queue,
            admin_url,
            inner,
            log,
        }
    }

    fn enqueue(&self, event: &str, request: &ApprovalRequest) {
        let base = &self.admin_url;
        let id = &request.id;
        let payload = json!({
            "event": event,
            "request": request_json(request, now_ms()),
            "approve_url": format!("{base}/approvals/{id}/approve"),
            "deny_url": format!("{base}/approvals/{id}/deny"),
            "callback_url": format!("{base}/webhook/decide"),
        });
        let body = Bytes::from(serde_json::to_vec(&payload).expect("serialisable"));
        if self.queue.try_send(body).is_err() {
            (self.log)(format!(
                "webhook: dropped {event} for {id}: {QUEUE} events are already waiting to be sent"
            ));
        }
    }
}

impl ApprovalEvents for WebhookNotifier {
    fn requested(&self, request: &ApprovalRequest) {
        self.inner.requested(request);
        self.enqueue("approval.requested", request);
    }

    fn decided(&self, request: &ApprovalRequest) {
        self.inner.decided(request);
        self.enqueue("approval.decided", request);
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The background side: takes queued bodies and delivers each, a few at once.
struct Sender {
    client: HttpClient,
    /// `None`: the URL does not parse (every event is logged as undeliverable).
    uri: Option<Uri>,
    webhook: Webhook,
    log: Log,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Bytes>) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(CONCURRENT));
        while let Some(body) = rx.recv().await {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let this = this.clone();
            tokio::spawn(async move {
                this.deliver(body).await;
                drop(permit);
            });
        }
    }

    /// Sends `body` until the receiver answers 2xx or the attempts run out;
    /// each attempt is signed afresh (with its own timestamp).
    async fn deliver(&self, body: Bytes) {
        let what = describe(&body);
        let Some(uri) = &self.uri else {
            (self.log)(format!(
                "webhook: cannot send {what}: the webhook URL is not a valid URL"
            ));
            return;
        };
        let attempts = self.webhook.max_attempts.max(1);
        let mut backoff = self.webhook.initial_backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(uri, &body).await {
                Ok(()) => return,
                Err(why) => last = why,
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        (self.log)(format!(
            "webhook: gave up sending {what} after {attempts} attempts: {last}"
        ));
    }

    async fn attempt(&self, uri: &Uri, body: &Bytes) -> Result<(), String> {
        let timestamp = now_ms() / 1000;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("toolgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(self.webhook.secret.as_bytes(), timestamp, body),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("the receiver could not be reached: {e}"))?;
            let status = response.status();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), 64 << 10).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")))
    }
}

/// "approval.requested for apr_…", for log lines.
fn describe(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    format!(
        "{} for {}",
        value["event"].as_str().unwrap_or("an event"),
        value["request"]["id"].as_str().unwrap_or("?")
    )
}
