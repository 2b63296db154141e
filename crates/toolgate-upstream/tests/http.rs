//! The Streamable HTTP transport against the real server-everything.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use toolgate_upstream::Transport;

/// server-everything in `streamableHttp` mode on a free port; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(mode: &str) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(node())
            .args([everything(), mode.into()])
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server-everything {mode} never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
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
    };
    let (up, _events) = start(spec("everything-http", transport)).await;
    everything_suite(&up).await;
    let t = Instant::now();
    concurrent_echoes(&up, "echo", "message", 50).await;
    eprintln!("50 concurrent echoes over Streamable HTTP took {:?}", t.elapsed());
    up.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn https_urls_are_refused_clearly() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let up = toolgate_upstream::Upstream::start(
        spec("tls", Transport::Http { url: "https://127.0.0.1:1/mcp".into(), headers: vec![] }),
        tx,
    );
    match rx.recv().await {
        Some(toolgate_upstream::UpstreamEvent::Down { reason, .. }) => assert!(reason.contains("https"), "{reason}"),
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(matches!(
        up.request("tools/list", None, None).await,
        Err(toolgate_upstream::CallError::Unavailable(_))
    ));
}

#[tokio::test]
async fn everything_legacy_sse_calls() {
    let server = Server::start("sse");
    let url = format!("http://127.0.0.1:{}/sse", server.port);
    let (up, _events) = start(spec("everything-sse", Transport::Sse { url, headers: vec![] })).await;
    let r = call(&up, "echo", serde_json::json!({"message": "legacy"}), None).await;
    assert!(text(&r).contains("legacy"), "{r}");
    up.shutdown(Duration::from_secs(2)).await;
}
