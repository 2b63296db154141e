//! toolgate's web dashboard: the page (embedded in the binary) and the JSON
//! API behind it, served on the admin listener by `toolgate serve` and
//! `toolgate run`, and standalone by `toolgate ui`.
//!
//! A tour of the crate:
//!
//! - here: [`ConsoleBackend`], what a host (the live gateway, or `toolgate
//!   ui` on its own) tells the dashboard: the servers and their tools, and
//!   how to put a saved policy in force; [`OnDisk`], the editable policy
//!   files and where the audit trail is, fixed at start; and [`Console`],
//!   which answers the dashboard's requests from both. Nothing here knows HTTP: the admin API
//!   (toolgate-admin) turns a [`Response`] into one.
//! - `api`: the `/api/...` routes, one function each; every refusal is an
//!   [`api::ApiError`] answered by one `match`.
//! - `files`: policy files: read, validate (the messages of `toolgate
//!   validate`), render a document as JSON or YAML, line diffs, and the
//!   atomic save (temp file + rename, refused when the file changed since).
//! - `assets`: the page, its script and its style sheet (`include_str!`),
//!   with the security headers.
//!
//! Invariants: a policy that does not validate is never written; a save
//! based on an older version of the file than the one on disk is refused
//! (409); only the files the backend names can be read or written (a path
//! in a request is compared with that list, never opened as given); request
//! bodies with unknown fields or repeated keys are refused.

#![forbid(unsafe_code)]

mod api;
mod assets;
mod files;

use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub use files::{diff_lines, render, DiffLine};

/// A boxed future, for the one async method of [`ConsoleBackend`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the dashboard is shown, by whoever hosts it.
pub trait ConsoleBackend: Send + Sync {
    /// `serve`, `run` or `ui` (shown on the page).
    fn mode(&self) -> &'static str;
    /// Every server and tool known now.
    fn catalogue(&self) -> Catalogue;
    /// Called after `path` was saved: puts it in force and says how that
    /// went (a live gateway answers once the reload is done).
    fn reload<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Reload>;
}

/// What the dashboard works on, on disk: fixed when the host starts.
#[derive(Debug, Clone, Default)]
pub struct OnDisk {
    /// The policy files the dashboard may read and write.
    pub policy_files: Vec<PolicyFile>,
    /// The data directory holding the audit trail (`audit.db`), if any.
    pub audit_dir: Option<PathBuf>,
}

/// The servers a host knows, in config order.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub status: ServerStatus,
    pub tools: Vec<Tool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    /// Connected (or scanned, for `toolgate ui`).
    Ready,
    /// Not connected now; the gateway keeps trying.
    Down,
    /// Being scanned (`toolgate ui` at start).
    Scanning,
    /// Could not be listed, and why.
    Failed(String),
    /// The host does not see the server's tools (`toolgate run`), and what
    /// to do instead.
    Unlisted(String),
}

impl ServerStatus {
    fn name(&self) -> &'static str {
        match self {
            ServerStatus::Ready => "ready",
            ServerStatus::Down => "down",
            ServerStatus::Scanning => "scanning",
            ServerStatus::Failed(_) => "failed",
            ServerStatus::Unlisted(_) => "unlisted",
        }
    }
}

/// One tool of a server.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The name agents call it by (with the server's prefix, in a config).
    pub name: String,
    /// The name the server gives it (what a server's own policy names).
    pub original: String,
    /// The definition as the server lists it.
    pub definition: Value,
}

/// An editable policy file and which names it governs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The gateway's policy: tools by the names agents use.
    Gateway,
    /// A server's own policy: that server's tools, by the server's names.
    Server(String),
    /// A grant's policy: tools by the names agents use.
    Grant(String),
}

/// What happened to a saved policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The gateway put it in force.
    Reloaded,
    /// The gateway could not (its messages); the previous policy stays.
    Failed(String),
    /// Written; nothing in this process confirms that it is in force, and
    /// this says what puts it in force.
    Pending(String),
}

/// An answer, for the HTTP layer to send as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers besides content-type.
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Vec<u8>,
}

/// The dashboard: answers its page's requests from a backend.
pub struct Console {
    backend: Arc<dyn ConsoleBackend>,
    on_disk: OnDisk,
    /// Held while a save checks the file and replaces it.
    saving: Mutex<()>,
}

impl Console {
    pub fn new(backend: Arc<dyn ConsoleBackend>, on_disk: OnDisk) -> Console {
        Console {
            backend,
            on_disk,
            saving: Mutex::new(()),
        }
    }

    /// The page and its assets (`GET /`, `/assets/app.js`, `/assets/app.css`):
    /// no token needed, they hold no data. `None` for any other path.
    pub fn asset(method: &str, path: &str) -> Option<Response> {
        assets::asset(method, path)
    }

    /// Whether `path` is one of the API's (`/api` and below): answered by
    /// [`Console::api`] once the caller is authenticated.
    pub fn is_api(path: &str) -> bool {
        path == "/api" || path.starts_with("/api/")
    }

    /// Answers an authenticated `/api/...` request.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Response {
        api::handle(self, method, path, query, body).await
    }
}
