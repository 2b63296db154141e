//! The dashboard on the admin listener, over real HTTP: its page needs no
//! token, its API needs the admin token, and an unauthenticated caller still
//! learns nothing about the routes.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use toolgate_admin::{serve_admin_with_console, AdminOptions};
use toolgate_approvals::{ApprovalEvents, ApprovalRequest, MemoryApprovals};
use toolgate_console::{BoxFuture, Catalogue, Console, ConsoleBackend, OnDisk, Reload};

const TOKEN: &str = "admin-token-for-console-tests";

struct Nothing;

impl ConsoleBackend for Nothing {
    fn mode(&self) -> &'static str {
        "test"
    }
    fn catalogue(&self) -> Catalogue {
        Catalogue::default()
    }
    fn reload<'a>(&'a self, _path: &'a Path) -> BoxFuture<'a, Reload> {
        Box::pin(async { Reload::Reloaded })
    }
}

struct Quiet;

impl ApprovalEvents for Quiet {
    fn requested(&self, _: &ApprovalRequest) {}
    fn decided(&self, _: &ApprovalRequest) {}
}

async fn start(console: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut opts = AdminOptions::new(Sha256::digest(TOKEN.as_bytes()).into());
    opts.listen = addr;
    let console = console.then(|| Arc::new(Console::new(Arc::new(Nothing), OnDisk::default())));
    tokio::spawn(serve_admin_with_console(
        Arc::new(MemoryApprovals::new()),
        Arc::new(Quiet),
        opts,
        console,
        None,
        listener,
        std::future::pending(),
    ));
    addr
}

/// (status, lower-cased head, body) of one HTTP/1.1 request.
async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn the_page_is_public_and_the_api_needs_the_admin_token() {
    let addr = start(true).await;
    let (status, head, body) = get(addr, "/", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>toolgate dashboard</title>"));
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"));
    assert!(head.contains("referrer-policy: no-referrer"));
    assert_eq!(get(addr, "/assets/app.js", None).await.0, 200);

    for (path, token) in [
        ("/api/info", None),
        ("/api/info", Some("not-the-admin-token")),
        ("/api/no-such-route", None),
        ("/assets/secret", None),
        ("/approvals", None),
    ] {
        let (status, head, body) = get(addr, path, token).await;
        assert_eq!(status, 401, "{path} {token:?}");
        assert!(head.contains("www-authenticate: bearer"));
        assert!(
            !body.contains("mode") && !body.contains("no such"),
            "{body}"
        );
    }
    let (status, _, body) = get(addr, "/api/info", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""mode":"test""#), "{body}");
    assert_eq!(get(addr, "/api/no-such-route", Some(TOKEN)).await.0, 404);
    assert_eq!(get(addr, "/approvals", Some(TOKEN)).await.0, 200);
}

#[tokio::test]
async fn without_a_dashboard_there_is_no_page() {
    let addr = start(false).await;
    assert_eq!(get(addr, "/", None).await.0, 401);
    assert_eq!(get(addr, "/", Some(TOKEN)).await.0, 404);
    assert_eq!(get(addr, "/api/info", Some(TOKEN)).await.0, 404);
}
