//! The stdio transport against real servers: the Python probe server and
//! the TypeScript server-everything.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use toolgate_clock::monotonic_now;
use toolgate_upstream::{CallError, UpstreamEvent};

fn probe(env: Vec<(String, String)>) -> toolgate_upstream::Transport {
    stdio(python(), vec![probe_server()], env)
}

/// The probe behind `tee`, so the test can read what reached its stdin.
fn probe_with_stdin_log(log: &std::path::Path) -> toolgate_upstream::Transport {
    stdio(
        "sh".into(),
        vec![
            "-c".into(),
            "tee -a \"$STDIN_LOG\" | exec \"$PY\" \"$PROBE\"".into(),
        ],
        vec![
            ("STDIN_LOG".into(), log.to_string_lossy().into_owned()),
            ("PY".into(), python()),
            ("PROBE".into(), probe_server()),
        ],
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("toolgate-upstream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    dir
}

async fn wait_for_file_line(path: &std::path::Path, needle: &str) -> bool {
    let deadline = monotonic_now() + Duration::from_secs(5);
    while monotonic_now() < deadline {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn probe_initialize_list_call_and_rpc_error() {
    let (up, mut events) = start(spec("probe", probe(vec![]))).await;
    let info = up.info().unwrap();
    assert_eq!(info.server_info["name"], "toolgate-probe");
    assert!(matches!(
        events.recv().await,
        Some(UpstreamEvent::Ready { .. })
    ));

    let page = up.request("tools/list", None, None).await.unwrap();
    assert_eq!(page["tools"].as_array().unwrap().len(), 25);
    assert_eq!(page["nextCursor"], "probe-page:25");

    let r = call(&up, "echo", json!({"text": "hello"}), None).await;
    assert_eq!(text(&r), "hello");

    match up
        .request(
            "tools/call",
            Some(json!({"name": "fail_rpc", "arguments": {}})),
            None,
        )
        .await
    {
        Err(CallError::Rpc(e)) => {
            assert_eq!(e.code, -32050);
            assert_eq!(e.message, "probe server: fail_rpc always fails");
        }
        other => panic!("expected the JSON-RPC error, got {other:?}"),
    }
    up.shutdown(Duration::from_secs(2)).await;
    assert!(up.info().is_none());
    assert!(matches!(
        up.request("tools/list", None, None).await,
        Err(CallError::Unavailable(_))
    ));
}

#[tokio::test]
async fn probe_killed_mid_call_fails_at_once_then_restarts() {
    let pidfile = tmp("pid");
    let env = vec![(
        "PROBE_PIDFILE".to_string(),
        pidfile.to_string_lossy().into_owned(),
    )];
    let (up, mut events) = start(spec("probe", probe(env))).await;
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();

    let slow = tokio::spawn({
        let up = up.clone();
        async move {
            up.request(
                "tools/call",
                Some(json!({"name": "slow", "arguments": {"seconds": 30}})),
                None,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = monotonic_now();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), slow)
        .await
        .expect("in-flight request must fail at once");
    let failed_after = killed.elapsed();
    assert!(matches!(r.unwrap(), Err(CallError::Unavailable(_))));
    eprintln!("in-flight request failed {failed_after:?} after the kill");

    let mut saw_down = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            UpstreamEvent::Down { .. } => saw_down = true,
            UpstreamEvent::Ready { .. } if saw_down => break,
            _ => {}
        }
    }
    assert!(up.wait_ready(Duration::from_secs(10)).await);
    let r = call(&up, "echo", json!({"text": "again"}), None).await;
    assert_eq!(text(&r), "again");
    let new_pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    assert_ne!(pid, new_pid, "the server was restarted");
    up.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&pidfile);
}

#[tokio::test]
async fn probe_concurrent_requests_from_many_tasks() {
    let (up, _events) = start(spec("probe", probe(vec![]))).await;
    let t = monotonic_now();
    concurrent_echoes(&up, "echo", "text", 200).await;
    eprintln!("200 concurrent echoes over stdio took {:?}", t.elapsed());
    up.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn probe_dropped_request_sends_cancelled_upstream() {
    let log = tmp("stdin-cancel");
    let (up, _events) = start(spec("probe", probe_with_stdin_log(&log))).await;
    let fut = up.request(
        "tools/call",
        Some(json!({"name": "slow", "arguments": {"seconds": 30}})),
        None,
    );
    assert!(tokio::time::timeout(Duration::from_millis(300), fut)
        .await
        .is_err());
    assert!(
        wait_for_file_line(&log, "notifications/cancelled").await,
        "the server never received notifications/cancelled"
    );
    // the connection still works
    assert_eq!(
        text(&call(&up, "echo", json!({"text": "ok"}), None).await),
        "ok"
    );
    up.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn probe_request_timeout_fails_and_sends_cancelled() {
    let log = tmp("stdin-timeout");
    let mut s = spec("probe", probe_with_stdin_log(&log));
    s.request_timeout = Duration::from_millis(400);
    let (up, _events) = start(s).await;
    let r = up
        .request(
            "tools/call",
            Some(json!({"name": "slow", "arguments": {"seconds": 10}})),
            None,
        )
        .await;
    assert_eq!(r, Err(CallError::Timeout(Duration::from_millis(400))));
    assert!(wait_for_file_line(&log, "the request timed out").await);
    up.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&log);
}

fn everything_stdio() -> toolgate_upstream::Transport {
    stdio(node(), vec![everything(), "stdio".into()], vec![])
}

#[tokio::test]
async fn everything_stdio_calls_sampling_elicitation_progress() {
    let (up, _events) = start(spec("everything", everything_stdio())).await;
    everything_suite(&up).await;
    concurrent_echoes(&up, "echo", "message", 50).await;
    up.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn everything_stdio_sampling_is_refused_when_sessions_in_flight_differ() {
    let (up, _events) = start(spec("everything", everything_stdio())).await;
    let a = Recorder::new("session-a");
    let long = tokio::spawn({
        let up = up.clone();
        let a = a.clone();
        async move {
            call(
                &up,
                "trigger-long-running-operation",
                json!({"duration": 1.5, "steps": 1}),
                Some(a),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = Recorder::new("session-b");
    let r = up
        .request(
            "tools/call",
            Some(json!({"name": "trigger-sampling-request", "arguments": {"prompt": "x"}})),
            Some(b.clone()),
        )
        .await;
    let refused = match &r {
        Err(CallError::Rpc(e)) => e.message.contains("per_session"),
        Ok(v) => v["isError"] == true && v.to_string().contains("per_session"),
        _ => false,
    };
    assert!(
        refused,
        "expected the sampling request to be refused, got {r:?}"
    );
    assert!(a.methods().is_empty() && b.methods().is_empty());
    long.await.unwrap();
    up.shutdown(Duration::from_secs(2)).await;
}
