//! Reaching MCP servers as a client: a configured server's transport, the
//! one server given on the command line (`--upstream URL` or `-- COMMAND`),
//! and listing every tool of many servers at once (for `toolgate scan` and
//! `toolgate ui`).

use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_upstream::{Backoff, Transport, Upstream, UpstreamEvent, UpstreamSpec};

/// A server to reach as a client.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// The gateway-name prefix (with a config); `None`: the server's own names.
    pub prefix: Option<String>,
    pub transport: Transport,
}

/// The servers of a gateway config, as targets.
pub fn config_targets(config: &toolgate_config::Config) -> Vec<Target> {
    config
        .servers
        .iter()
        .map(|s| Target {
            name: s.name.clone(),
            prefix: s.prefix.clone(),
            transport: transport_of(&s.transport),
        })
        .collect()
}

/// The one server of the command line: `--upstream URL` or a command
/// after `--`; `None` when neither or both are given.
pub fn one_server(upstream: Option<&str>, command: &[String]) -> Option<Transport> {
    match (upstream, command.split_first()) {
        (Some(url), None) => Some(Transport::Http {
            url: url.to_string(),
            headers: Vec::new(),
            protocol: toolgate_upstream::Protocol::Auto,
        }),
        (None, Some((command, rest))) => Some(Transport::Stdio {
            command: command.clone(),
            args: rest.to_vec(),
            env: Vec::new(),
            cwd: None,
        }),
        _ => None,
    }
}

/// A server to list: a server that dies is reported, not waited for (the
/// first Down fails it).
pub fn spec(name: &str, transport: Transport, timeout: Duration) -> UpstreamSpec {
    UpstreamSpec {
        name: name.to_string(),
        transport,
        backoff: Backoff::default(),
        request_timeout: timeout,
    }
}

/// How to reach a configured server (shared with `toolgate serve`).
pub fn transport_of(transport: &toolgate_config::ServerTransport) -> Transport {
    use toolgate_config::ServerTransport as T;
    let secrets = |h: &Vec<(String, toolgate_config::Secret)>| {
        h.iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect::<Vec<_>>()
    };
    match transport {
        T::Stdio {
            command,
            args,
            env,
            cwd,
        } => Transport::Stdio {
            command: command.clone(),
            args: args.clone(),
            env: secrets(env),
            cwd: cwd.clone(),
        },
        T::Http {
            url,
            headers,
            protocol,
        } => Transport::Http {
            url: url.clone(),
            headers: secrets(headers),
            protocol: match protocol {
                toolgate_config::UpstreamProtocol::Auto => toolgate_upstream::Protocol::Auto,
                toolgate_config::UpstreamProtocol::Handshake => {
                    toolgate_upstream::Protocol::Handshake
                }
                toolgate_config::UpstreamProtocol::Stateless => {
                    toolgate_upstream::Protocol::Stateless
                }
            },
        },
        T::Sse { url, headers } => Transport::Sse {
            url: url.clone(),
            headers: secrets(headers),
        },
    }
}

/// Lists the tools of each server at once (every page), for `toolgate ui`:
/// one result per server, in order.
pub async fn list_servers(
    servers: Vec<(String, Transport)>,
    timeout: Duration,
) -> Vec<Result<Vec<Value>, String>> {
    let specs: Vec<UpstreamSpec> = servers
        .into_iter()
        .map(|(name, transport)| spec(&name, transport, timeout))
        .collect();
    scan_all(&specs, timeout).await
}

/// What the progress line shows: servers still being scanned, tools found.
#[derive(Default)]
struct Progress {
    tools: AtomicUsize,
    pending: Mutex<Vec<String>>,
}

impl Progress {
    fn line(&self) -> String {
        let pending = self.pending.lock().unwrap().join(", ");
        let n = self.tools.load(Ordering::Relaxed);
        format!(
            "scanning {pending}\u{2026} {n} {}",
            if n == 1 { "tool" } else { "tools" }
        )
    }
}

/// Lists the tools of every server at once (a progress line on a
/// terminal's stderr); one result per server, in order.
pub async fn scan_all(
    targets: &[UpstreamSpec],
    timeout: Duration,
) -> Vec<Result<Vec<Value>, String>> {
    let progress = Arc::new(Progress::default());
    *progress.pending.lock().unwrap() = targets.iter().map(|t| t.name.clone()).collect();
    let ticker = std::io::stderr().is_terminal().then(|| {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                eprint!("\r\x1b[K{}", progress.line());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let handles: Vec<_> = targets
        .iter()
        .map(|t| {
            let spec = t.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let name = spec.name.clone();
                let result = scan_one(spec, timeout, &progress).await;
                progress.pending.lock().unwrap().retain(|n| *n != name);
                result
            })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(
            handle
                .await
                .unwrap_or_else(|e| Err(format!("the scan stopped: {e}"))),
        );
    }
    if let Some(ticker) = ticker {
        ticker.abort();
        eprint!("\r\x1b[K");
    }
    results
}

/// Connects to one server, lists its tools (every page) and disconnects.
async fn scan_one(
    spec: UpstreamSpec,
    timeout: Duration,
    progress: &Progress,
) -> Result<Vec<Value>, String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = Upstream::start(spec, tx);
    // The first Down before the tools are listed fails the server at once
    // (instead of waiting out the restarts).
    let down = async {
        loop {
            match rx.recv().await {
                Some(UpstreamEvent::Down { reason, .. }) => return reason,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    };
    let result = tokio::select! {
        biased;
        listed = async {
            if !upstream.wait_ready(timeout).await {
                return Err(format!("not ready within {}s", timeout.as_secs()));
            }
            list_tools(&upstream, progress).await
        } => listed,
        reason = down => Err(reason),
    };
    upstream.shutdown(Duration::from_secs(1)).await;
    result
}

async fn list_tools(upstream: &Upstream, progress: &Progress) -> Result<Vec<Value>, String> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    let mut cursors = HashSet::new();
    loop {
        let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
        let result = upstream
            .request("tools/list", params, None)
            .await
            .map_err(|e| format!("tools/list failed: {e}"))?;
        let page = result
            .get("tools")
            .and_then(Value::as_array)
            .ok_or("tools/list answered without a `tools` array")?;
        progress.tools.fetch_add(page.len(), Ordering::Relaxed);
        tools.extend(page.iter().cloned());
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => {
                if !cursors.insert(next.to_string()) {
                    return Err(format!("tools/list returned the cursor {next:?} twice"));
                }
                cursor = Some(next.to_string());
            }
            _ => return Ok(tools),
        }
    }
}
