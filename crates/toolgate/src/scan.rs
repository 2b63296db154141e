//! `toolgate scan`: connect to MCP servers as a client, list every tool,
//! classify each (toolgate-scan decides; this file only gathers and prints),
//! and optionally write the recommended policy.
//!
//! Data (the table or the JSON array) goes to stdout; progress, errors and
//! the "wrote FILE" line go to stderr.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toolgate_host::upstreams::Target;
use toolgate_policy::Format;
use toolgate_scan::{classify, recommend_policy, Category, Classification};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// A gateway config: scan every server in it, in parallel (tools named by
    /// their gateway names in --write-policy).
    #[arg(long, conflicts_with_all = ["upstream", "command"])]
    config: Option<PathBuf>,
    /// A Streamable HTTP MCP server to scan (instead of a command after `--`).
    #[arg(long, conflicts_with = "command")]
    upstream: Option<String>,
    /// table (for people) or json (one array of {server, tool, category, risk, evidence}).
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Write the recommended policy to this file (.json, .yaml or .yml).
    #[arg(long, value_name = "FILE")]
    write_policy: Option<PathBuf>,
    /// In the recommended policy, hide Destructive tools instead of requiring approval.
    #[arg(long)]
    strict: bool,
    /// How long to wait for each server to start, and for each tools/list page.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// The MCP server command and its arguments (one stdio server).
    #[arg(last = true)]
    command: Vec<String>,
}

/// One classified tool.
struct Row {
    server: String,
    /// The tool's name as the server lists it.
    tool: String,
    /// The name a policy gives it (the gateway name with --config).
    policy_name: String,
    definition: Value,
    class: Classification,
}

pub fn run(args: ScanArgs) -> Result<u8> {
    let policy_format = match &args.write_policy {
        Some(path) => Some(Format::from_path(path).with_context(|| {
            format!(
                "--write-policy {}: unknown policy format (use .json, .yaml or .yml)",
                path.display()
            )
        })?),
        None => None,
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (targets, separator) = match targets(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("toolgate scan: {e:#}");
            return Ok(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let specs: Vec<_> = targets
        .iter()
        .map(|t| toolgate_host::upstreams::spec(&t.name, t.transport.clone(), timeout))
        .collect();
    let results = runtime.block_on(toolgate_host::upstreams::scan_all(&specs, timeout));
    drop(runtime);

    let mut failed = false;
    let mut rows = Vec::new();
    for (target, result) in targets.iter().zip(results) {
        match result {
            Ok(tools) => {
                for definition in tools {
                    let Some(tool) = definition.get("name").and_then(Value::as_str) else {
                        eprintln!(
                            "toolgate scan: server {:?} listed a tool without a name; skipped",
                            target.name
                        );
                        continue;
                    };
                    let tool = tool.to_string();
                    let policy_name =
                        gateway_name(separator.as_deref(), target.prefix.as_deref(), &tool);
                    rows.push(Row {
                        server: target.name.clone(),
                        class: classify(&definition),
                        tool,
                        policy_name,
                        definition,
                    });
                }
            }
            Err(reason) => {
                failed = true;
                eprintln!("toolgate scan: server {:?} failed: {reason}", target.name);
            }
        }
    }
    rows.sort_by(|a, b| {
        a.server
            .cmp(&b.server)
            .then(b.class.risk.cmp(&a.class.risk))
            .then(a.tool.cmp(&b.tool))
    });

    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Json => {
            let array: Vec<Value> = rows.iter().map(json_row).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&array)?)?;
        }
        OutputFormat::Table => {
            let width = std::io::stdout().is_terminal().then(terminal_width);
            write!(out, "{}", table(&rows, width))?;
            writeln!(out, "{}", summary(&rows))?;
        }
    }
    out.flush()?;

    if let (Some(path), Some(format)) = (&args.write_policy, policy_format) {
        match write_policy(path, format, &rows, args.strict) {
            Ok(n) => eprintln!(
                "wrote {}: {n} {}",
                path.display(),
                if n == 1 { "rule" } else { "rules" }
            ),
            Err(e) => {
                eprintln!("toolgate scan: {e:#}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

/// The name a policy gives a tool: `prefix + separator + tool` with --config
/// (as `toolgate serve` names it), else the server's own name.
fn gateway_name(separator: Option<&str>, prefix: Option<&str>, tool: &str) -> String {
    match (separator, prefix) {
        (Some(separator), Some(prefix)) => format!("{prefix}{separator}{tool}"),
        _ => tool.to_string(),
    }
}

/// The servers to scan, and the separator of gateway names (with --config).
fn targets(args: &ScanArgs) -> Result<(Vec<Target>, Option<String>)> {
    if let Some(path) = &args.config {
        let config = match toolgate_config::load_config(path, &toolgate_host::process_env) {
            Ok(c) => c,
            Err(d) => bail!("{d}\ncannot scan the servers of an invalid config"),
        };
        let targets = toolgate_host::upstreams::config_targets(&config);
        return Ok((targets, Some(config.separator.clone())));
    }
    let Some(transport) =
        toolgate_host::upstreams::one_server(args.upstream.as_deref(), &args.command)
    else {
        bail!("give the server: -- COMMAND [ARGS...], --upstream URL or --config FILE");
    };
    Ok((
        vec![Target {
            name: "server".into(),
            prefix: None,
            transport,
        }],
        None,
    ))
}

/// A serde name (`"Read"`, `"critical"`, `"annotation"`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn json_row(row: &Row) -> Value {
    json!({
        "server": row.server,
        "tool": row.tool,
        "category": serde_name(&row.class.category),
        "risk": serde_name(&row.class.risk),
        "evidence": row
            .class
            .evidence
            .iter()
            .map(|e| json!({ "source": serde_name(&e.source), "detail": e.detail }))
            .collect::<Vec<_>>(),
    })
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c >= 40)
        .unwrap_or(100)
}

/// The table; with a `width` (a terminal), evidence is wrapped to fit it.
fn table(rows: &[Row], width: Option<usize>) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let evidence = r
                .class
                .evidence
                .iter()
                .map(|e| e.detail.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            [
                r.server.clone(),
                r.tool.clone(),
                serde_name(&r.class.category),
                serde_name(&r.class.risk),
                if evidence.is_empty() {
                    "-".into()
                } else {
                    evidence
                },
            ]
        })
        .collect();
    let header = ["SERVER", "TOOL", "CATEGORY", "RISK", "EVIDENCE"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&cells) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let indent: usize = widths.iter().map(|w| w + 2).sum();
    let room = width.map(|w| w.saturating_sub(indent).max(20));
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let mut line = String::new();
        for (w, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<w$}  ", w = w));
        }
        let lines = match room {
            Some(room) => wrap_items(&row[4], room),
            None => vec![row[4].clone()],
        };
        for (i, text) in lines.iter().enumerate() {
            if i == 0 {
                out.push_str(&line);
            } else {
                out.push_str(&" ".repeat(indent));
            }
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// Wraps `; `-joined evidence at the joins where it can, inside an item only
/// when the item alone is wider than `room`.
fn wrap_items(text: &str, room: usize) -> Vec<String> {
    let items: Vec<&str> = text.split("; ").collect();
    let pieces = items.iter().enumerate().map(|(i, item)| {
        if i + 1 < items.len() {
            format!("{item};")
        } else {
            item.to_string()
        }
    });
    fill(pieces, room, |item| wrap(item, room))
}

/// Splits `text` into lines of at most `room` characters, at spaces where
/// possible.
fn wrap(text: &str, room: usize) -> Vec<String> {
    fill(text.split(' ').map(str::to_string), room, |word| {
        let chars: Vec<char> = word.chars().collect();
        chars.chunks(room).map(|c| c.iter().collect()).collect()
    })
}

/// Lines of at most `room` characters filled with `pieces`, one space
/// apart; a piece wider than the room is broken by `split`, and the line
/// goes on after its last part.
fn fill(
    pieces: impl IntoIterator<Item = String>,
    room: usize,
    split: impl Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let len = |s: &str| s.chars().count();
    let mut lines = Vec::new();
    let mut current = String::new();
    for mut piece in pieces {
        if !current.is_empty() && len(&current) + 1 + len(&piece) > room {
            lines.push(std::mem::take(&mut current));
        }
        if len(&piece) > room {
            let mut parts = split(&piece);
            piece = parts.pop().unwrap_or_default();
            lines.extend(parts);
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&piece);
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

const CATEGORIES: [Category; 6] = [
    Category::Read,
    Category::Write,
    Category::Execute,
    Category::Destructive,
    Category::Financial,
    Category::Other,
];

/// `13 tools: 5 Read, 3 Write, 5 Other`.
fn summary(rows: &[Row]) -> String {
    let counts: Vec<String> = CATEGORIES
        .iter()
        .filter_map(|c| {
            let n = rows.iter().filter(|r| r.class.category == *c).count();
            (n > 0).then(|| format!("{n} {}", serde_name(c)))
        })
        .collect();
    let total = format!(
        "{} {}",
        rows.len(),
        if rows.len() == 1 { "tool" } else { "tools" }
    );
    if counts.is_empty() {
        total
    } else {
        format!("{total}: {}", counts.join(", "))
    }
}

/// Writes the recommended policy, checks it with the policy parser and
/// returns its number of tool rules.
fn write_policy(path: &Path, format: Format, rows: &[Row], strict: bool) -> Result<usize> {
    let mut seen = HashSet::new();
    let mut tools = Vec::new();
    for row in rows {
        if seen.insert(row.policy_name.clone()) {
            tools.push((
                row.policy_name.clone(),
                row.definition.clone(),
                row.class.clone(),
            ));
        } else {
            eprintln!(
                "toolgate scan: two tools are named {:?}; the policy covers the first (server {:?})",
                row.policy_name, row.server
            );
        }
    }
    let policy = recommend_policy(&tools, strict);
    let text = match format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&policy)?),
        Format::Yaml => to_yaml(&policy)?,
    };
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    toolgate_host::policy::load_policy(path).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nthe policy written to {} is not valid (a bug: please report it)",
            path.display()
        )
    })?;
    Ok(policy
        .get("tools")
        .and_then(Value::as_object)
        .map_or(0, |t| t.len()))
}

fn to_yaml(value: &Value) -> Result<String> {
    toolgate_policy::document::write_yaml(value).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_names() {
        assert_eq!(gateway_name(Some("__"), Some("fs"), "read"), "fs__read");
        assert_eq!(gateway_name(Some("."), None, "read"), "read");
        assert_eq!(gateway_name(None, None, "read"), "read");
    }

    #[test]
    fn wrap_fits_the_room() {
        let lines = wrap("verb \"delete\"; destructiveHint: true; field \"path\"", 16);
        assert!(lines.iter().all(|l| l.chars().count() <= 16), "{lines:?}");
        assert_eq!(
            lines.join(" "),
            "verb \"delete\"; destructiveHint: true; field \"path\""
        );
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(
            wrap_items(
                "verb \"get\"; readOnlyHint: true; destructiveHint: false",
                24
            ),
            [
                "verb \"get\";",
                "readOnlyHint: true;",
                "destructiveHint: false"
            ]
        );
        assert_eq!(wrap_items("a; b; c", 10), ["a; b; c"]);
        assert_eq!(wrap_items("-", 10), ["-"]);
    }

    #[test]
    fn yaml_round_trips_through_the_policy_parser() {
        let policy = json!({
            "version": "1",
            "default": "deny",
            "tools": {
                "read_file": {"action": "allow", "description": "Read: \"quoted\", colon: yes"},
                "a__write": {"limits": [{"counter": "a__write_rate", "window": "minute", "max": 30, "scope": "grant"}]}
            }
        });
        let text = to_yaml(&policy).unwrap();
        toolgate_policy::parse_policy(&text, Format::Yaml, "t.yaml").unwrap();
    }
}
