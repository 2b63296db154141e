//! A fast MCP server over stdio, as a baseline: it answers `initialize`,
//! `tools/list` (one tool, `echo`) and `tools/call` (echoes its `text`
//! argument) as quickly as one thread can. Used by the end-to-end benchmark,
//! direct and behind `toolgate run`.

use serde_json::{json, Value};
use std::io::{BufRead, BufWriter, Write};

fn main() {
    let mut input = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id") else { continue };
        let result = match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo-server", "version": "1"}
            }),
            Some("tools/list") => json!({"tools": [{
                "name": "echo",
                "description": "Echoes its text argument",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}
            }]}),
            Some("tools/call") => {
                let text = msg
                    .pointer("/params/arguments/text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                json!({"content": [{"type": "text", "text": text}]})
            }
            Some(_) => json!({}),
            None => continue,
        };
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if serde_json::to_writer(&mut out, &reply).is_err() || out.write_all(b"\n").is_err() {
            break;
        }
        if input.buffer().is_empty() && out.flush().is_err() {
            break;
        }
    }
    let _ = out.flush();
}
