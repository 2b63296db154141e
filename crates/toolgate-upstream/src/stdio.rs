//! The stdio transport: the server is a child process speaking
//! newline-delimited JSON-RPC on stdin/stdout. The supervisor restarts it
//! with exponential backoff when it dies.

use crate::conn::{Conn, Link, Restarts};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub(crate) struct StdioCommand {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

/// Runs the child until shutdown, restarting it when it dies.
pub(crate) async fn supervise(conn: Arc<Conn>, cmd: StdioCommand) {
    let mut restarts = Restarts::new(&conn);
    let mut shutdown = conn.shutdown.subscribe();
    loop {
        if conn.is_shutting_down() {
            return;
        }
        restarts.begin();
        let reason = match spawn(&cmd) {
            Err(e) => format!("cannot start {:?}: {e}", cmd.command),
            Ok(child) => match run_child(&conn, child, &mut shutdown).await {
                Some(reason) => reason,
                None => {
                    conn.go_down("the gateway is shutting down");
                    return;
                }
            },
        };
        if !restarts.ended(&conn, &reason, &mut shutdown).await {
            return;
        }
    }
}

fn spawn(cmd: &StdioCommand) -> std::io::Result<Child> {
    let mut c = std::process::Command::new(&cmd.command);
    c.args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    toolgate_child::die_with_parent(&mut c);
    let mut c = Command::from(c);
    c.kill_on_drop(true);
    c.spawn()
}

/// Serves one child until it dies (returns why) or shutdown is asked for
/// (returns `None` once the child is gone).
async fn run_child(
    conn: &Arc<Conn>,
    mut child: Child,
    shutdown: &mut tokio::sync::watch::Receiver<Option<Duration>>,
) -> Option<String> {
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill().await;
        return Some("child has no stdin/stdout pipe".into());
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // dropping stdin closes the child's input
    });
    let reader_conn = conn.clone();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Ok(msg) = serde_json::from_str(line) {
                reader_conn.dispatch(msg, None);
            }
        }
    });
    conn.set_link(Some(Link::Stdio(tx)));

    let init = conn.handshake();
    tokio::pin!(init);
    let mut init_done = false;
    let result = loop {
        tokio::select! {
            status = child.wait() => {
                break Some(match status {
                    Ok(s) => format!("server process exited ({s})"),
                    Err(e) => format!("cannot wait for server process: {e}"),
                });
            }
            r = &mut init, if !init_done => {
                init_done = true;
                if let Err(e) = r {
                    let _ = child.kill().await;
                    break Some(format!("initialize failed: {e}"));
                }
            }
            _ = shutdown.changed() => {
                let grace = (*shutdown.borrow()).unwrap_or_default();
                // Closing stdin is the polite way to ask a stdio server to stop.
                conn.set_link(None);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                break None;
            }
        }
    };
    writer.abort();
    reader.abort();
    result
}
