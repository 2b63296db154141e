//! `toolgate demo`: an agent's calls played through `toolgate run` in front of
//! a real MCP server (by default @modelcontextprotocol/server-everything), with
//! each decision printed. It is an ordinary MCP client on the gateway's stdio.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The demo's policy; also `examples/everything.policy.json`.
pub const POLICY: &str = include_str!("../../../examples/everything.policy.json");

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Client {
    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{msg}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the gateway closed its output while waiting for an answer to {method}");
            }
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value.get("id") == Some(&json!(id)) && value.get("method").is_none() {
                return Ok(value);
            }
        }
    }

    fn notify(&mut self, method: &str) -> Result<()> {
        writeln!(
            self.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": method})
        )?;
        Ok(self.stdin.flush()?)
    }
}

pub fn run(server: Vec<String>) -> Result<u8> {
    let server = if server.is_empty() {
        [
            "npx",
            "-y",
            "@modelcontextprotocol/server-everything@2026.8.31",
            "stdio",
        ]
        .map(String::from)
        .to_vec()
    } else {
        server
    };
    let dir = std::env::temp_dir().join(format!("toolgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let policy_path = dir.join("policy.json");
    let audit_path = dir.join("audit.jsonl");
    std::fs::write(&policy_path, POLICY)?;
    let exe = std::env::current_exe().context("cannot find the toolgate binary")?;

    println!(
        "toolgate demo: an agent's calls through `toolgate run` in front of `{}`",
        server.join(" ")
    );
    println!("policy ({}):", policy_path.display());
    for line in POLICY.lines() {
        println!("  {line}");
    }
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--policy")
        .arg(&policy_path)
        .arg("--audit")
        .arg(&audit_path)
        // The demo starts from fresh counters every time.
        .arg("--state")
        .arg("memory")
        .arg("--")
        .args(&server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start `toolgate run`")?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut client = Client {
        child,
        stdin,
        stdout,
        next_id: 0,
    };

    let init = client.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "toolgate-demo", "version": env!("CARGO_PKG_VERSION")}}),
    )?;
    let server_name = init
        .pointer("/result/serverInfo/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    println!("\nconnected to {server_name} through the gateway");
    client.notify("notifications/initialized")?;

    let list = client.request("tools/list", json!({}))?;
    let names: Vec<&str> = list
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "tools/list: the agent sees {} tools: {}",
        names.len(),
        names.join(", ")
    );
    println!("\n{:<48} {:<18} what the agent got", "call", "decision");

    let calls: [(&str, Value); 9] = [
        ("echo", json!({"message": "hello through the gateway"})),
        ("get-env", json!({})),
        ("get-sum", json!({"a": 1, "b": 2})),
        ("get-sum", json!({"a": 3, "b": 4})),
        ("get-sum", json!({"a": 5, "b": 6})),
        ("get-sum", json!({"a": 7, "b": 8})),
        (
            "trigger-long-running-operation",
            json!({"duration": 30, "steps": 3}),
        ),
        ("toggle-simulated-logging", json!({})),
        ("get-tiny-image", json!({})),
    ];
    let mut allowed = 0;
    for (tool, args) in calls {
        let answer = client.request("tools/call", json!({"name": tool, "arguments": args}))?;
        let (decision, said) = describe(&answer);
        if decision == "allow" {
            allowed += 1;
        }
        println!("{:<48} {:<18} {}", format!("{tool} {args}"), decision, said);
    }
    drop(client.stdin);
    let status = client.child.wait()?;
    let audit = std::fs::read_to_string(&audit_path).unwrap_or_default();
    println!(
        "\n{allowed} calls reached the server; the rest never left the gateway. {} audit records in {} (gateway exit: {})",
        audit.lines().count(),
        audit_path.display(),
        status.code().unwrap_or(-1)
    );
    println!(
        "\nTo see the tools, build this policy and follow calls in a browser (the dashboard):\n  \
         TOOLGATE_ADMIN_TOKEN=\"$(openssl rand -hex 24)\" toolgate ui --policy {} -- {}\n  \
         then open http://{} and sign in with that token",
        policy_path.display(),
        server.join(" "),
        toolgate_host::ui::DEFAULT_UI_LISTEN
    );
    Ok(0)
}

/// The decision an answer shows, and a short text of what the agent got.
fn describe(answer: &Value) -> (String, String) {
    if let Some(err) = answer.get("error") {
        let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
        return (
            "unknown tool".into(),
            format!("JSON-RPC error {}: {msg}", err["code"]),
        );
    }
    let result = &answer["result"];
    let text = result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("(no text)")
        .replace('\n', " ");
    let short: String = text.chars().take(90).collect();
    match result
        .pointer("/structuredContent/toolgate/decision")
        .and_then(Value::as_str)
    {
        Some(decision) => (decision.to_owned(), short),
        None => ("allow".into(), format!("server said: {short}")),
    }
}
