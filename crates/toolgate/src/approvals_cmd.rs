//! `toolgate approvals`: list, show, approve and deny the tool calls that a
//! `require_approval` rule holds, in the approval store of the state the
//! gateways use (`--state`, `--data-dir`, `--state-prefix`, as for
//! `toolgate run`).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Arc;
use toolgate_approvals::{ApprovalError, ApprovalRequest, ApprovalStore, Decided, Status, Via};
use toolgate_clock::rfc3339;
use toolgate_clock::{Clock, SystemClock};
use toolgate_config::StateStore;

use crate::flags::StateArgs;

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// List the requests waiting for a decision, newest first.
    List {
        /// Every request still kept (decided, used and expired ones too).
        #[arg(long)]
        all: bool,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Print every field of one request, its arguments in full.
    Show {
        /// The request's id (apr_...).
        id: String,
        /// A JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Approve a pending request: the held call may run, once.
    Approve(DecideArgs),
    /// Deny a pending request: the held call is refused.
    Deny(DecideArgs),
}

#[derive(Debug, Args)]
struct DecideArgs {
    /// The request's id (apr_...), as `toolgate approvals list` shows it.
    id: String,
    /// Why (kept with the decision and in the audit trail).
    #[arg(long)]
    reason: Option<String>,
    /// Who decides (default: the OS user, $USER).
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    state: StateArgs,
}

pub fn run(args: ApprovalsArgs) -> Result<u8> {
    let now = SystemClock.now_ms();
    match args.command {
        ApprovalsCommand::List { all, json, state } => list(&state, all, json, now),
        ApprovalsCommand::Show { id, json, state } => show(&state, &id, json, now),
        ApprovalsCommand::Approve(args) => decide(args, true, now),
        ApprovalsCommand::Deny(args) => decide(args, false, now),
    }
}

/// The approval store the flags point at; `None` when the embedded store
/// has never held a request (nothing is created just to look).
fn open(args: &StateArgs) -> Result<Option<Arc<dyn ApprovalStore>>> {
    let state = args.resolve(None)?;
    match &state.store {
        StateStore::Memory => bail!(
            "--state memory: a gateway keeps such approval requests in its own memory, where \
             `toolgate approvals` cannot reach them; use --state embedded (with the gateway's \
             --data-dir) or --state redis://HOST:PORT/DB"
        ),
        StateStore::Embedded => {
            let dir = toolgate_host::stores::data_dir(&state);
            if !dir.join(toolgate_state_sqlite::APPROVALS_DB_FILE).exists() {
                return Ok(None);
            }
        }
        StateStore::Redis(_) => {}
    }
    toolgate_host::stores::open_approvals(&state).map(Some)
}

fn list(args: &StateArgs, all: bool, as_json: bool, now: u64) -> Result<u8> {
    let requests = match open(args)? {
        Some(store) => store.list(!all, now)?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    if as_json {
        let views: Vec<Value> = requests.iter().map(|r| view(r, now)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&views)?)?;
    } else if requests.is_empty() {
        let what = if all { "" } else { "pending " };
        writeln!(out, "no {what}approval requests")?;
    } else {
        write_table(&mut out, &requests, all, now)?;
    }
    out.flush()?;
    Ok(0)
}

fn show(args: &StateArgs, id: &str, as_json: bool, now: u64) -> Result<u8> {
    let found = match open(args)? {
        Some(store) => store.get(id)?,
        None => None,
    };
    let r = found.ok_or_else(|| unknown(id))?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&view(&r, now))?)?;
    } else {
        write_details(&mut out, &r, now)?;
    }
    out.flush()?;
    Ok(0)
}

fn decide(args: DecideArgs, approve: bool, now: u64) -> Result<u8> {
    let Some(store) = open(&args.state)? else {
        return Err(unknown(&args.id));
    };
    let decided = Decided {
        by: args.by.clone().unwrap_or_else(os_user),
        via: Via::Cli,
        at_ms: now,
        reason: args.reason.clone(),
    };
    let r = match store.decide(&args.id, approve, decided, now) {
        Ok(r) => r,
        Err(e) => return Err(explain(store.as_ref(), e, now)),
    };
    // The decision goes into the audit trail of the data directory, with who
    // made it and how.
    if let Some(dir) = toolgate_host::stores::audit_dir(&args.state.resolve(None)?) {
        let sink =
            toolgate_host::audit::open_sink(None, toolgate_audit::LogLevel::Warn, Some(&dir))?;
        toolgate_approvals::ApprovalEvents::decided(
            &toolgate_serve::AuditApprovals(sink.clone()),
            &r,
        );
        sink.flush();
    }
    let verb = if approve { "approved" } else { "denied" };
    let server = r
        .server
        .as_deref()
        .map(|s| format!(" on {s}"))
        .unwrap_or_default();
    println!("{verb} {}: {}{server} for grant {}", r.id, r.tool, r.grant);
    if approve {
        println!(
            "the call may run once, until {} ({})",
            rfc3339(r.expires_ms),
            until(r.expires_ms, now)
        );
    }
    Ok(0)
}

/// The message for a decision the store refused.
fn explain(store: &dyn ApprovalStore, e: ApprovalError, now: u64) -> anyhow::Error {
    match e {
        ApprovalError::Unknown(id) => unknown(&id),
        ApprovalError::Expired(id) => {
            let when = match store.get(&id) {
                Ok(Some(r)) => format!(" {} ago", age(now.saturating_sub(r.expires_ms))),
                _ => String::new(),
            };
            anyhow!("approval request {id} expired{when}: it can no longer be decided")
        }
        ApprovalError::AlreadyDecided { id, status } => {
            let who = match store.get(&id) {
                Ok(Some(ApprovalRequest {
                    status:
                        Status::Approved(d) | Status::Denied(d) | Status::Used { decided: d, .. },
                    ..
                })) => format!(
                    " (by {} via {}, {} ago)",
                    d.by,
                    d.via.as_str(),
                    age(now.saturating_sub(d.at_ms))
                ),
                _ => String::new(),
            };
            anyhow!("approval request {id} was already {status}{who}")
        }
        e @ ApprovalError::Unavailable(_) => anyhow!(e),
    }
}

fn unknown(id: &str) -> anyhow::Error {
    anyhow!(
        "no approval request {id:?} in this state (expired requests are forgotten after a while; \
         see `toolgate approvals list --all`)"
    )
}

/// The OS user, for `--by`.
fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// A request as `--json` prints it, the same fields as the admin API's:
/// its status a field, and the decision (`decision`: by, via, at_ms,
/// reason) and use (`used_at_ms`) when there are.
fn view(r: &ApprovalRequest, now: u64) -> Value {
    let mut v = json!({
        "id": r.id,
        "status": r.status.name(),
        "expired": r.is_expired(now),
        "grant": r.grant,
        "server": r.server,
        "tool": r.tool,
        "arguments": r.arguments,
        "reason": r.reason,
        "rule": r.rule,
        "key": r.key,
        "created_ms": r.created_ms,
        "expires_ms": r.expires_ms,
    });
    let (decided, used) = match &r.status {
        Status::Pending => (None, None),
        Status::Approved(d) | Status::Denied(d) => (Some(d), None),
        Status::Used {
            decided,
            used_at_ms,
        } => (Some(decided), Some(*used_at_ms)),
    };
    if let Some(d) = decided {
        v["decision"] = json!({"by": d.by, "via": d.via.as_str(), "at_ms": d.at_ms});
        if let Some(reason) = &d.reason {
            v["decision"]["reason"] = json!(reason);
        }
    }
    if let Some(at) = used {
        v["used_at_ms"] = json!(at);
    }
    v
}

/// The longest arguments cell in the table (characters).
const ARGUMENTS_WIDTH: usize = 48;

fn write_table(
    out: &mut impl Write,
    requests: &[ApprovalRequest],
    with_status: bool,
    now: u64,
) -> std::io::Result<()> {
    let mut header = vec!["ID"];
    if with_status {
        header.push("STATUS");
    }
    header.extend([
        "AGE",
        "EXPIRES IN",
        "GRANT",
        "SERVER",
        "TOOL",
        "ARGUMENTS",
        "REASON",
    ]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in requests {
        let mut row = vec![r.id.clone()];
        if with_status {
            row.push(r.status.name().to_string());
        }
        row.extend([
            age(now.saturating_sub(r.created_ms)),
            if r.is_expired(now) {
                "expired".to_string()
            } else {
                age(r.expires_ms - now)
            },
            r.grant.clone(),
            r.server.clone().unwrap_or_else(|| "-".to_string()),
            r.tool.clone(),
            shorten(&r.arguments.to_string(), ARGUMENTS_WIDTH),
            one_line(&r.reason),
        ]);
        rows.push(row);
    }
    crate::table::write_rows(out, &rows)
}

fn write_details(out: &mut impl Write, r: &ApprovalRequest, now: u64) -> std::io::Result<()> {
    let mut field = |name: &str, value: &str| writeln!(out, "{:<12} {value}", format!("{name}:"));
    field("id", &r.id)?;
    field("status", r.status.name())?;
    field("grant", &r.grant)?;
    field("server", r.server.as_deref().unwrap_or("-"))?;
    field("tool", &r.tool)?;
    field("rule", &r.rule)?;
    field("reason", &r.reason)?;
    field(
        "created",
        &format!(
            "{} ({} ago)",
            rfc3339(r.created_ms),
            age(now.saturating_sub(r.created_ms))
        ),
    )?;
    field(
        "expires",
        &format!("{} ({})", rfc3339(r.expires_ms), until(r.expires_ms, now)),
    )?;
    let (verb, decided, used) = match &r.status {
        Status::Pending => ("", None, None),
        Status::Approved(d) => ("approved", Some(d), None),
        Status::Denied(d) => ("denied", Some(d), None),
        Status::Used {
            decided,
            used_at_ms,
        } => ("approved", Some(decided), Some(*used_at_ms)),
    };
    if let Some(d) = decided {
        field(
            "decided",
            &format!(
                "{verb} by {} via {} at {}",
                d.by,
                d.via.as_str(),
                rfc3339(d.at_ms)
            ),
        )?;
        if let Some(reason) = &d.reason {
            field("because", reason)?;
        }
    }
    if let Some(at) = used {
        field("used", &format!("the call ran at {}", rfc3339(at)))?;
    }
    field("key", &r.key)?;
    writeln!(out, "arguments:")?;
    let pretty = serde_json::to_string_pretty(&r.arguments).unwrap_or_else(|_| "?".into());
    for line in pretty.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// "in 5m", or "expired 2m ago".
fn until(expires_ms: u64, now: u64) -> String {
    if now >= expires_ms {
        format!("expired {} ago", age(now - expires_ms))
    } else {
        format!("in {}", age(expires_ms - now))
    }
}

/// A duration the way a person reads it: 45s, 12m, 3h, 2d.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to `max` characters, ending in "…" when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use toolgate_approvals::NewRequest;

    /// A data directory of its own, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "toolgate-approvals-cmd-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn embedded(dir: &Path) -> StateArgs {
        StateArgs {
            state: None,
            data_dir: Some(dir.to_path_buf()),
            state_fail: None,
            state_prefix: None,
        }
    }

    fn decide_args(dir: &Path, id: &str) -> DecideArgs {
        DecideArgs {
            id: id.to_string(),
            reason: Some("looks fine".into()),
            by: Some("carol".into()),
            state: embedded(dir),
        }
    }

    fn held(dir: &Path, amount: u64, now: u64) -> ApprovalRequest {
        let store = toolgate_state_sqlite::SqliteApprovals::open(dir).expect("open");
        store
            .request(
                &NewRequest {
                    grant: "alice".into(),
                    server: Some("bank".into()),
                    tool: "transfer".into(),
                    arguments: json!({"amount": amount}),
                    reason: "transfers need approval".into(),
                    rule: "tools[\"transfer\"]".into(),
                    expires_in_ms: 60_000,
                },
                now,
            )
            .expect("request")
    }

    #[test]
    fn approve_and_deny_decide_through_the_data_dir_once() {
        let dir = TempDir::new("decide");
        let now = SystemClock.now_ms();
        let a = held(&dir.0, 1, now);
        let b = held(&dir.0, 2, now);
        assert_eq!(
            decide(decide_args(&dir.0, &a.id), true, now + 1).unwrap(),
            0
        );
        assert_eq!(
            decide(decide_args(&dir.0, &b.id), false, now + 1).unwrap(),
            0
        );

        let store = toolgate_state_sqlite::SqliteApprovals::open(&dir.0).unwrap();
        match store.get(&a.id).unwrap().unwrap().status {
            Status::Approved(d) => {
                assert_eq!((d.by.as_str(), d.via), ("carol", Via::Cli));
                assert_eq!(d.reason.as_deref(), Some("looks fine"));
            }
            other => panic!("expected approved, got {other:?}"),
        }
        assert!(store.consume(&a.key, now + 2).unwrap().is_some());

        let again = decide(decide_args(&dir.0, &a.id), false, now + 3).unwrap_err();
        assert!(
            again
                .to_string()
                .contains("was already used (by carol via cli"),
            "{again}"
        );
        let denied = decide(decide_args(&dir.0, &b.id), true, now + 3).unwrap_err();
        assert!(
            denied.to_string().contains("was already denied"),
            "{denied}"
        );
    }

    #[test]
    fn an_expired_or_unknown_request_is_an_error() {
        let dir = TempDir::new("expired");
        let now = SystemClock.now_ms();
        let r = held(&dir.0, 3, now - 120_000);
        let e = decide(decide_args(&dir.0, &r.id), true, now).unwrap_err();
        assert!(e.to_string().contains("expired 1m ago"), "{e}");
        let e = decide(decide_args(&dir.0, "apr_ffffffffffffffff"), true, now).unwrap_err();
        assert!(e.to_string().contains("no approval request"), "{e}");
        assert!(show(&embedded(&dir.0), "apr_nope", false, now).is_err());
        assert_eq!(show(&embedded(&dir.0), &r.id, false, now).unwrap(), 0);
        assert_eq!(list(&embedded(&dir.0), true, false, now).unwrap(), 0);
    }

    #[test]
    fn looking_at_an_empty_data_dir_creates_nothing() {
        let dir = TempDir::new("empty");
        let now = SystemClock.now_ms();
        assert_eq!(list(&embedded(&dir.0), false, true, now).unwrap(), 0);
        assert!(decide(decide_args(&dir.0, "apr_0000000000000000"), true, now).is_err());
        assert!(!dir.0.exists(), "nothing written");
    }

    #[test]
    fn the_table_shows_one_row_per_request() {
        let dir = TempDir::new("table");
        let now = SystemClock.now_ms();
        let r = held(&dir.0, 4, now - 5_000);
        let mut out = Vec::new();
        write_table(&mut out, std::slice::from_ref(&r), false, now).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("ID "), "{text}");
        for cell in [
            r.id.as_str(),
            "5s",
            "55s",
            "alice",
            "bank",
            "transfer",
            "{\"amount\":4}",
        ] {
            assert!(lines[1].contains(cell), "{cell} in {text}");
        }
        let mut out = Vec::new();
        write_details(&mut out, &r, now).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("arguments:\n  {\n    \"amount\": 4\n  }"),
            "{text}"
        );
    }

    #[test]
    fn durations_read_like_a_person_says_them() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(60_000), "1m");
        assert_eq!(age(3_600_000), "1h");
        assert_eq!(age(47 * 3_600_000), "47h");
        assert_eq!(age(3 * 86_400_000), "3d");
        assert_eq!(until(10_000, 5_000), "in 5s");
        assert_eq!(until(10_000, 70_000), "expired 1m ago");
    }

    #[test]
    fn long_arguments_are_shortened() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "ab…");
        assert_eq!(shorten("ééééé", 4), "ééé…");
    }

    #[test]
    fn the_json_view_names_the_status_and_keeps_both_reasons() {
        let mut r = toolgate_approvals::pending(
            &toolgate_approvals::NewRequest {
                grant: "g".into(),
                server: None,
                tool: "t".into(),
                arguments: json!({"a": 1}),
                reason: "rule reason".into(),
                rule: "r".into(),
                expires_in_ms: 1000,
            },
            5,
        );
        r.status = Status::Denied(Decided {
            by: "carol".into(),
            via: Via::Cli,
            at_ms: 6,
            reason: Some("decision reason".into()),
        });
        let v = view(&r, 6);
        assert_eq!(v["status"], "denied");
        assert_eq!(v["expired"], false);
        assert_eq!(v["reason"], "rule reason");
        assert_eq!(v["decision"]["reason"], "decision reason");
        assert_eq!(v["decision"]["via"], "cli");
        assert_eq!(view(&r, 1005)["expired"], true);
    }
}
