//! toolgate's admin API: out-of-band approvers for the tool calls a policy
//! rule holds (`"action": "require_approval"`).
//!
//! A tour of the crate:
//!
//! - `api`: the HTTP API on its own listener ([`serve_admin`]). Every route
//!   but the webhook callback needs the admin bearer token; refusals are
//!   one enum turned into JSON errors by one `match`.
//! - `signature`: HMAC-SHA256 signatures of webhook bodies ([`sign`]), their
//!   verification, and the replay guard of the callback.
//! - `webhook`: [`WebhookNotifier`], an `ApprovalEvents` that POSTs every
//!   new request (and every decision) to a URL from a background task, with
//!   retries, and forwards every event to the next one.
//! - here: the options ([`AdminOptions`], [`Webhook`]) and the wire form of
//!   a request, which the API and the webhook share.
//!
//! Invariants: a decision goes through `ApprovalStore::decide` only (the
//! store's atomic step decides who wins a race); the admin token is held
//! only as its SHA-256 and compared in constant time; the webhook secret and
//! URL never show in `Debug` or in a log line; nothing here blocks the
//! caller of an `ApprovalEvents` method.

#![forbid(unsafe_code)]

mod api;
mod signature;
mod webhook;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use toolgate_approvals::{ApprovalRequest, Decided, Status};

pub use api::{serve_admin, serve_admin_with_console, MetricsSource};
pub use signature::{sign, MAX_SKEW_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub use webhook::WebhookNotifier;

/// Where the admin API listens when nothing else is said.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

/// The admin API's settings.
#[derive(Clone)]
pub struct AdminOptions {
    /// The address the admin listener is bound to (loopback by default).
    pub listen: SocketAddr,
    /// SHA-256 of the admin bearer token.
    pub token_sha256: [u8; 32],
    /// Where new requests are announced, and the secret that signs both the
    /// announcements and the callbacks (`POST /webhook/decide`).
    pub webhook: Option<Webhook>,
}

impl AdminOptions {
    /// Listens on [`DEFAULT_LISTEN`], with no webhook.
    pub fn new(token_sha256: [u8; 32]) -> AdminOptions {
        AdminOptions {
            listen: DEFAULT_LISTEN.parse().expect("the default admin address"),
            token_sha256,
            webhook: None,
        }
    }
}

impl fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminOptions")
            .field("listen", &self.listen)
            .field("token_sha256", &hex::encode(self.token_sha256))
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// An outgoing webhook: where to POST, and how to sign and retry.
#[derive(Clone)]
pub struct Webhook {
    /// `http://...` (may embed a credential in its path: never logged).
    pub url: String,
    /// The HMAC-SHA256 key of `X-Toolgate-Signature`, both ways.
    pub secret: String,
    /// Attempts per event, the first one included (default 5).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; doubled after each further
    /// one (default 1 s).
    pub initial_backoff: Duration,
    /// The admin API's base URL as the receiver reaches it (no trailing
    /// slash): `approve_url`, `deny_url` and `callback_url` start with it.
    pub admin_url: String,
}

impl Webhook {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);

    /// A webhook with the default retries.
    pub fn new(
        url: impl Into<String>,
        secret: impl Into<String>,
        admin_url: impl Into<String>,
    ) -> Webhook {
        Webhook {
            url: url.into(),
            secret: secret.into(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            admin_url: admin_url.into().trim_end_matches('/').to_string(),
        }
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &redact_path(&self.url))
            .field("secret", &format_args!("***"))
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("admin_url", &self.admin_url)
            .finish()
    }
}

/// `http://host:port/***`: the path of a webhook URL may be a credential.
fn redact_path(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if authority.len() == rest.len() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/***")
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    toolgate_clock::Clock::now_ms(&toolgate_clock::SystemClock)
}

/// The wire form of a request, built here field by field: the admin API
/// and the webhook own it. (`ApprovalRequest`'s own serialisation flattens
/// the decision into the request, so a decision's `reason` would collide
/// with the request's `reason`.)
pub(crate) fn request_json(request: &ApprovalRequest, now_ms: u64) -> Value {
    let decision = |d: &Decided| {
        let mut decision = json!({"by": d.by, "via": d.via.as_str(), "at_ms": d.at_ms});
        if let Some(reason) = &d.reason {
            decision["reason"] = json!(reason);
        }
        decision
    };
    let mut value = json!({
        "id": request.id,
        "status": request.status.name(),
        "expired": request.is_expired(now_ms),
        "grant": request.grant,
        "server": request.server,
        "tool": request.tool,
        "arguments": request.arguments,
        "reason": request.reason,
        "rule": request.rule,
        "key": request.key,
        "created_ms": request.created_ms,
        "expires_ms": request.expires_ms,
    });
    match &request.status {
        Status::Pending => {}
        Status::Approved(d) | Status::Denied(d) => value["decision"] = decision(d),
        Status::Used {
            decided,
            used_at_ms,
        } => {
            value["decision"] = decision(decided);
            value["used_at_ms"] = json!(used_at_ms);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_redacted_in_debug() {
        assert_eq!(
            redact_path("http://hooks.example:8080/T000/B000/secret"),
            "http://hooks.example:8080/***"
        );
        assert_eq!(
            redact_path("http://user:pw@hooks.example"),
            "http://hooks.example"
        );
        let hook = Webhook::new("http://h/s3cret", "k3y", "http://127.0.0.1:8081/");
        let shown = format!(
            "{:?}",
            AdminOptions {
                webhook: Some(hook),
                ..AdminOptions::new([7; 32])
            }
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(
            shown.contains("admin_url: \"http://127.0.0.1:8081\""),
            "{shown}"
        );
    }
}
