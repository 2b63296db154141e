//! The processes under test: `http-echo`, and `toolgate serve` and
//! `tcp-relay` in front of it. Each is started on port 0 and found by the
//! `listening on ADDR` line it prints (on stdout or stderr); all are killed
//! when dropped.

use crate::client::Endpoint;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long a server may take to print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running server process and its MCP endpoint.
pub struct Server {
    pub name: &'static str,
    pub endpoint: Arc<Endpoint>,
    child: Child,
}

impl Server {
    pub fn start_echo(exe: &Path) -> Result<Server> {
        let mut cmd = Command::new(exe);
        cmd.args(["--listen", "127.0.0.1:0"]);
        Server::start("direct", exe, cmd)
    }

    /// `toolgate serve --policy P --listen 127.0.0.1:0 --upstream URL EXTRA...`.
    pub fn start_toolgate(
        exe: &Path,
        policy: &Path,
        upstream: &str,
        extra: &[String],
    ) -> Result<Server> {
        check_has_serve(exe)?;
        let mut cmd = Command::new(exe);
        // State (counters, audit trail) in a directory of the bench's own,
        // beside its policy file, never in the user's data directory.
        let data = policy.with_file_name("toolgate-data");
        cmd.arg("serve")
            .arg("--policy")
            .arg(policy)
            .args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .arg("--data-dir")
            .arg(data)
            .args(extra);
        Server::start("toolgate", exe, cmd)
    }

    /// `tcp-relay --listen 127.0.0.1:0 --to ADDR`: the same MCP endpoint as
    /// `upstream` (same path), one byte-copying hop away.
    pub fn start_relay(exe: &Path, upstream: &Endpoint) -> Result<Server> {
        let mut cmd = Command::new(exe);
        cmd.args(["--listen", "127.0.0.1:0", "--to"])
            .arg(upstream.addr.to_string());
        let mut server = Server::start("relay", exe, cmd)?;
        server.endpoint = Arc::new(Endpoint::new(server.endpoint.addr, &upstream.path));
        Ok(server)
    }

    fn start(name: &'static str, exe: &Path, mut cmd: Command) -> Result<Server> {
        if !exe.exists() {
            bail!(
                "{} not found: build it with cargo build --release -p toolgate -p toolgate-bench",
                exe.display()
            );
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let (tx, rx) = mpsc::channel();
        watch(child.stdout.take().expect("piped"), name, tx.clone());
        watch(child.stderr.take().expect("piped"), name, tx);
        let listening = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                return Err(match status {
                    Some(status) => anyhow!(
                        "{name} ({}) exited with {status} before it listened",
                        exe.display()
                    ),
                    None => anyhow!(
                        "{name} ({}) printed no `listening on ADDR` in {START_TIMEOUT:?}",
                        exe.display()
                    ),
                });
            }
        };
        let (addr, path) =
            parse_listening(&listening).with_context(|| format!("{name} printed {listening:?}"))?;
        Ok(Server {
            name,
            endpoint: Arc::new(Endpoint::new(addr, path)),
            child,
        })
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited with {status}", self.name),
            None => Ok(()),
        }
    }

    /// The process's resident set size (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails with a clear message if this toolgate has no `serve` subcommand.
fn check_has_serve(exe: &Path) -> Result<()> {
    if !exe.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p toolgate, or pass --toolgate PATH",
            exe.display()
        );
    }
    let out = Command::new(exe)
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "{} has no `serve` subcommand ({}): build a toolgate with `toolgate serve`, \
             or measure the echo server alone with --target direct",
            exe.display(),
            why.trim()
        );
    }
    Ok(())
}

/// Copies a child's output to our stderr, line by line, and sends the
/// first `listening on` line through `tx`.
fn watch(from: impl Read + Send + 'static, name: &'static str, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if !sent && line.contains("listening on ") {
                sent = true;
                let _ = tx.send(line);
                continue;
            }
            let _ = writeln!(std::io::stderr().lock(), "[{name}] {line}");
        }
    });
}

/// `listening on 127.0.0.1:PORT` or `listening on http://127.0.0.1:PORT/mcp`
/// (anywhere in the line): the address and the path, `/mcp` if none.
fn parse_listening(line: &str) -> Result<(SocketAddr, &str)> {
    let rest = &line[line
        .find("listening on ")
        .ok_or_else(|| anyhow!("no `listening on`"))?
        + 13..];
    let token = rest.split_whitespace().next().unwrap_or("");
    let token = token.strip_prefix("http://").unwrap_or(token);
    let (addr, path) = match token.find('/') {
        Some(i) if i + 1 < token.len() => (&token[..i], &token[i..]),
        Some(i) => (&token[..i], "/mcp"),
        None => (token, "/mcp"),
    };
    let addr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not an address"))?;
    Ok((addr, path))
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn listening_lines() {
        for (line, addr, path) in [
            ("listening on 127.0.0.1:4000", "127.0.0.1:4000", "/mcp"),
            (
                "listening on http://127.0.0.1:4000/mcp",
                "127.0.0.1:4000",
                "/mcp",
            ),
            (
                "toolgate: listening on http://127.0.0.1:9/gw (policy p.json)",
                "127.0.0.1:9",
                "/gw",
            ),
            (
                "listening on http://127.0.0.1:4000/",
                "127.0.0.1:4000",
                "/mcp",
            ),
        ] {
            let (a, p) = parse_listening(line).unwrap();
            assert_eq!((a.to_string().as_str(), p), (addr, path), "{line}");
        }
        assert!(parse_listening("listening on nowhere").is_err());
    }
}
