//! The Streamable HTTP transport against the real server-everything.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use toolgate_clock::monotonic_now;
use toolgate_upstream::Transport;

/// server-everything (`streamableHttp` or `sse` mode) on a free port; killed
/// on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(mode: &str) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Server::start_on(mode, port)
    }

    fn start_on(mode: &str, port: u16) -> Server {
        let child = Command::new(node())
            .args([everything(), mode.into()])
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = monotonic_now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                monotonic_now() < deadline,
                "server-everything {mode} never listened on {port}"
            );
            toolgate_clock::sleep(Duration::from_millis(50));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn everything_streamable_http_calls_sampling_elicitation_progress() {
    let server = Server::start("streamableHttp");
    let url = format!("http://127.0.0.1:{}/mcp", server.port);
    let transport = Transport::Http {
        url,
        headers: vec![("x-test-secret".into(), "s3cret".into())],
        protocol: toolgate_upstream::Protocol::Auto,
    };
    let (up, _events) = start(spec("everything-http", transport)).await;
    everything_suite(&up).await;
    let t = monotonic_now();
    concurrent_echoes(&up, "echo", "message", 50).await;
    eprintln!(
        "50 concurrent echoes over Streamable HTTP took {:?}",
        t.elapsed()
    );
    up.shutdown(Duration::from_secs(2)).await;
}

/// Over HTTP a server-to-client request rides the SSE stream of the POST it
/// belongs to, so it reaches the right session even when requests from other
/// sessions are in flight (on stdio the same situation is refused).
#[tokio::test]
async fn everything_http_sampling_follows_its_post_stream() {
    let server = Server::start("streamableHttp");
    let url = format!("http://127.0.0.1:{}/mcp", server.port);
    let transport = Transport::Http {
        url,
        headers: vec![],
        protocol: toolgate_upstream::Protocol::Auto,
    };
    let (up, _events) = start(spec("everything-http", transport)).await;
    let a = Recorder::new("session-a");
    let long = tokio::spawn({
        let up = up.clone();
        let a = a.clone();
        async move {
            let args = serde_json::json!({"duration": 1.0, "steps": 1});
            call(&up, "trigger-long-running-operation", args, Some(a)).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = Recorder::new("session-b");
    let args = serde_json::json!({"prompt": "routed", "maxTokens": 5});
    let r = call(&up, "trigger-sampling-request", args, Some(b.clone())).await;
    assert!(text(&r).contains(CANNED), "{r}");
    assert_eq!(b.methods(), vec!["sampling/createMessage"]);
    assert!(a.methods().is_empty());
    long.await.unwrap();
    up.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn everything_http_server_restart_reports_down_then_ready_again() {
    let server = Server::start("streamableHttp");
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (up, mut events) = start(spec(
        "everything-http",
        Transport::Http {
            url,
            headers: vec![],
            protocol: toolgate_upstream::Protocol::Auto,
        },
    ))
    .await;
    drop(server);
    let t = monotonic_now();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        if let toolgate_upstream::UpstreamEvent::Down { .. } = ev.expect("no Down event").unwrap() {
            break;
        }
    }
    eprintln!("Down reported {:?} after the HTTP server died", t.elapsed());
    assert!(matches!(
        up.request("tools/list", None, None).await,
        Err(toolgate_upstream::CallError::Unavailable(_))
    ));
    let _server = Server::start_on("streamableHttp", port);
    assert!(
        up.wait_ready(Duration::from_secs(10)).await,
        "never reconnected"
    );
    let r = call(&up, "echo", serde_json::json!({"message": "back"}), None).await;
    assert!(text(&r).contains("back"), "{r}");
    up.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn urls_that_are_not_http_are_refused_clearly() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let up = toolgate_upstream::Upstream::start(
        spec(
            "ws",
            Transport::Http {
                url: "ws://127.0.0.1:1/mcp".into(),
                headers: vec![],
                protocol: toolgate_upstream::Protocol::Auto,
            },
        ),
        tx,
    );
    match rx.recv().await {
        Some(toolgate_upstream::UpstreamEvent::Down { reason, .. }) => {
            assert!(reason.contains("http:// or https://"), "{reason}")
        }
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(matches!(
        up.request("tools/list", None, None).await,
        Err(toolgate_upstream::CallError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_https_server_that_cannot_be_reached_is_down() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let up = toolgate_upstream::Upstream::start(
        spec(
            "tls",
            Transport::Http {
                // A port nothing listens on: bound, then released.
                url: format!(
                    "https://127.0.0.1:{}/mcp",
                    TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .expect("a free port")
                        .port()
                ),
                headers: vec![],
                protocol: toolgate_upstream::Protocol::Auto,
            },
        ),
        tx,
    );
    match rx.recv().await {
        Some(toolgate_upstream::UpstreamEvent::Down { reason, .. }) => {
            assert!(reason.contains("cannot connect"), "{reason}")
        }
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(matches!(
        up.request("tools/list", None, None).await,
        Err(toolgate_upstream::CallError::Unavailable(_))
    ));
    up.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn everything_legacy_sse_calls() {
    let server = Server::start("sse");
    let url = format!("http://127.0.0.1:{}/sse", server.port);
    let (up, _events) = start(spec(
        "everything-sse",
        Transport::Sse {
            url,
            headers: vec![],
        },
    ))
    .await;
    let r = call(&up, "echo", serde_json::json!({"message": "legacy"}), None).await;
    assert!(text(&r).contains("legacy"), "{r}");
    up.shutdown(Duration::from_secs(2)).await;
}
