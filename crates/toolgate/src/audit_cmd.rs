//! `toolgate audit`: list, verify, prune and import the audit trail kept in
//! the data directory's SQLite store; and [`open_sink`], which the gateways
//! use to send their records there.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use toolgate_audit_store::{
    default_data_dir, parse_rfc3339, AuditError, AuditStore, Filter, StoredRecord,
};
use toolgate_gateway::audit::{
    journal_dir_in, recover_journals, AuditDestination, AuditSink, LogLevel,
};
use toolgate_gateway::{Clock, SystemClock};

/// The decisions a record can hold (`--decision` takes one).
const DECISIONS: [&str; 10] = [
    "allow",
    "deny",
    "unknown",
    "approval_required",
    "rate_limited",
    "state_unavailable",
    "approval_requested",
    "approval_pending",
    "approved",
    "approval_denied",
];

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first record that was edited or deleted.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Delete old records; the chain still verifies from the last one deleted.
    Prune {
        /// Delete the records older than this: a duration (90s, 30m, 12h, 30d, 2w)
        /// or an RFC 3339 time.
        #[arg(long, value_name = "AGE|TIME")]
        older_than: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Append the records of a JSON-lines audit file (`--audit FILE`) to the store.
    Import {
        /// The file; `-` reads stdin.
        file: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Debug, Args)]
struct DataDirArg {
    /// The data directory (default: $TOOLGATE_DATA_DIR, else $XDG_DATA_HOME/toolgate,
    /// else ~/.local/share/toolgate).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

/// `toolgate audit` with no subcommand: list records.
#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Only this grant's records.
    #[arg(long)]
    grant: Option<String>,
    /// Only the records of calls to this upstream server (its name in the gateway).
    #[arg(long)]
    server: Option<String>,
    /// Only the records of this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only the records with this decision.
    #[arg(long, value_parser = DECISIONS)]
    decision: Option<String>,
    /// Only records since then: a duration back from now (90s, 30m, 1h, 7d, 2w)
    /// or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    since: Option<String>,
    /// At most this many, the newest.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON record per line (as in the audit file) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: AuditArgs) -> Result<u8> {
    let now = SystemClock.now_ms();
    match args.command {
        None => list(&args.list, now),
        Some(AuditCommand::Verify { dir }) => verify(&dir.dir()),
        Some(AuditCommand::Prune { older_than, dir }) => {
            let before = parse_time(&older_than, now).context("--older-than")?;
            prune(&dir.dir(), before)
        }
        Some(AuditCommand::Import { file, dir }) => import(&file, &dir.dir()),
    }
}

/// The audit sink of a gateway: the `--audit` file if given, and the audit
/// store in `data_dir` if given (`None`: no store).
// Until `run` and `serve` call it (they are gaining --data-dir).
pub fn open_sink(
    audit_file: Option<&Path>,
    log_level: LogLevel,
    data_dir: Option<&Path>,
) -> Result<AuditSink> {
    open_sink_observed(audit_file, log_level, data_dir, None)
}

/// [`open_sink`], with every record shown to `observer` too (metrics, traces).
pub fn open_sink_observed(
    audit_file: Option<&Path>,
    log_level: LogLevel,
    data_dir: Option<&Path>,
    observer: Option<Box<dyn toolgate_gateway::audit::RecordObserver>>,
) -> Result<AuditSink> {
    let store = match data_dir {
        Some(dir) => {
            let store = AuditStore::open(dir)
                .with_context(|| format!("cannot open the audit store in {}", dir.display()))?;
            Some(Box::new(StoreDestination(store)) as Box<dyn AuditDestination>)
        }
        None => None,
    };
    // Calls in flight are in the intent journal: beside the store, else
    // beside the file.
    let journal = match (data_dir, audit_file) {
        (Some(dir), _) => Some(journal_dir_in(dir)),
        (None, Some(file)) => {
            let mut name = file.as_os_str().to_os_string();
            name.push(".journal");
            Some(PathBuf::from(name))
        }
        (None, None) => None,
    };
    AuditSink::open_journaled(audit_file, log_level, store, observer, journal.as_deref())
        .with_context(|| match audit_file {
            Some(path) => format!("cannot open the audit file {}", path.display()),
            None => "cannot start the audit writer".to_string(),
        })
}

/// Retention of the audit store in `dir` (`None`: no store): `keep` starts
/// it ([`keep_audit_for`]); without it, says once that the trail is kept
/// forever and how to bound it.
pub fn audit_retention(dir: Option<&Path>, keep: Option<&str>, audit: &AuditSink) -> Result<()> {
    match (dir, keep) {
        (Some(dir), Some(keep)) => keep_audit_for(dir, keep, audit.clone()),
        (Some(dir), None) => {
            audit.log(
                LogLevel::Warn,
                &format!(
                    "the audit trail in {} is kept forever (about 620 bytes a call); bound it with --audit-retention 30d, or prune it with toolgate audit prune --older-than 30d",
                    dir.join(toolgate_audit_store::DB_FILE).display()
                ),
            );
            Ok(())
        }
        (None, _) => Ok(()),
    }
}

/// Retention: every hour (and at once), records older than `keep` (such as
/// "30d") are pruned from the audit store in `dir`; the chain still verifies.
pub fn keep_audit_for(dir: &Path, keep: &str, audit: AuditSink) -> Result<()> {
    let now = SystemClock.now_ms();
    // Checked now, so that a bad value is an error at start.
    parse_time(keep, now).context("--audit-retention")?;
    let mut store = AuditStore::open(dir)
        .with_context(|| format!("cannot open the audit store in {}", dir.display()))?;
    let keep = keep.to_string();
    std::thread::Builder::new()
        .name("toolgate-retention".into())
        .spawn(move || loop {
            let now = SystemClock.now_ms();
            if let Ok(before) = parse_time(&keep, now) {
                match store.prune(before) {
                    Ok(report) if report.removed > 0 => audit.log(
                        LogLevel::Info,
                        &format!(
                            "audit retention: pruned {} records older than {keep}",
                            report.removed
                        ),
                    ),
                    Ok(_) => {}
                    Err(e) => audit.log(LogLevel::Warn, &format!("audit retention: {e}")),
                }
            }
            std::thread::sleep(std::time::Duration::from_secs(3600));
        })
        .context("cannot start the retention thread")?;
    Ok(())
}

/// The audit store as the sink's destination.
struct StoreDestination(AuditStore);

impl AuditDestination for StoreDestination {
    fn append(&mut self, records: &[Value]) -> Result<(), String> {
        let path = self.0.path().display().to_string();
        self.0
            .append_all(records)
            .map(drop)
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// The store in `dir`, with the records of calls that were in flight when
/// a gateway died added first (from the intent journals of dead gateways).
fn open_existing(dir: &Path) -> Result<AuditStore> {
    let store = AuditStore::open_existing(dir).map_err(|e| match e {
        AuditError::Missing { path } => anyhow::anyhow!(
            "no audit store at {} (a gateway writes one when given --data-dir)",
            path.display()
        ),
        e => anyhow::Error::new(e).context(format!("{}", dir.display())),
    })?;
    let journal = journal_dir_in(dir);
    let mut store = StoreDestination(store);
    let recovered = recover_journals(&journal, &mut store)
        .with_context(|| format!("cannot recover the audit journal in {}", journal.display()))?;
    if recovered > 0 {
        eprintln!(
            "toolgate: added {recovered} record(s) of calls in flight when a gateway stopped (outcome \"interrupted\") from {}",
            journal.display()
        );
    }
    Ok(store.0)
}

fn list(args: &ListArgs, now: u64) -> Result<u8> {
    let since = match &args.since {
        Some(text) => Some(parse_time(text, now).context("--since")?),
        None => None,
    };
    let filter = Filter {
        grant: args.grant.clone(),
        server: args.server.clone(),
        tool: args.tool.clone(),
        decision: args.decision.clone(),
        since,
        after: None,
        limit: args.limit,
    };
    let store = open_existing(&args.dir.dir())?;
    let records = store.query(&filter)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &records {
            writeln!(out, "{}", r.record)?;
        }
    } else {
        write_table(&mut out, &records)?;
    }
    out.flush()?;
    Ok(0)
}

const COLUMNS: [&str; 8] = [
    "SEQ", "TIME", "GRANT", "SERVER", "TOOL", "DECISION", "OUTCOME", "REASON",
];

fn write_table(out: &mut impl Write, records: &[StoredRecord]) -> std::io::Result<()> {
    let field = |r: &StoredRecord, key: &str| match r.record.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            [
                r.seq.to_string(),
                field(r, "time"),
                field(r, "grant"),
                field(r, "server"),
                field(r, "tool"),
                field(r, "decision"),
                field(r, "outcome"),
                field(r, "reason"),
            ]
        })
        .collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = COLUMNS.map(str::to_string);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn verify(dir: &Path) -> Result<u8> {
    let mut store = open_existing(dir)?;
    match store.verify() {
        Ok(report) => {
            println!("audit trail intact: {} records", report.records);
            if let (Some(first), Some(last)) = (report.first_seq, report.last_seq) {
                println!("records {first} to {last}, head hash {}", report.head_hash);
            }
            if report.pruned_through > 0 {
                println!(
                    "pruned through record {} (the chain starts after it)",
                    report.pruned_through
                );
            }
            Ok(0)
        }
        Err(AuditError::Broken { seq, why }) => {
            println!("audit trail broken at record {seq}: {why}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

fn prune(dir: &Path, before: u64) -> Result<u8> {
    let mut store = open_existing(dir)?;
    match store.prune(before) {
        Ok(report) => {
            println!(
                "pruned {} records older than {}; the chain starts after record {}",
                report.removed,
                toolgate_gateway::clock::rfc3339(before),
                report.pruned_through
            );
            Ok(0)
        }
        Err(AuditError::Broken { seq, why }) => {
            eprintln!("toolgate: not pruning: audit trail broken at record {seq}: {why}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

fn import(file: &Path, dir: &Path) -> Result<u8> {
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut records = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON record", file.display(), n + 1))?;
        records.push(record);
    }
    let mut store = AuditStore::open(dir)
        .with_context(|| format!("cannot open the audit store in {}", dir.display()))?;
    let seqs = store
        .append_all(&records)
        .with_context(|| format!("{}: nothing imported", file.display()))?;
    println!(
        "imported {} records into {} (records {} to {})",
        records.len(),
        store.path().display(),
        seqs.start,
        seqs.end.saturating_sub(1)
    );
    Ok(0)
}

/// A time given on the command line: a duration back from `now`
/// (`90s`, `30m`, `12h`, `30d`, `2w`) or an RFC 3339 time.
fn parse_time(text: &str, now: u64) -> Result<u64> {
    if let Some(ms) = parse_rfc3339(text) {
        return Ok(ms);
    }
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_at);
    let unit_ms: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => bail!(
            "{text:?} is neither a duration (like 90s, 30m, 12h, 30d, 2w) nor an RFC 3339 time"
        ),
    };
    let Ok(count) = digits.parse::<u64>() else {
        bail!("{text:?} is neither a duration (like 90s, 30m, 12h, 30d, 2w) nor an RFC 3339 time");
    };
    Ok(now.saturating_sub(count.saturating_mul(unit_ms)))
}

#[cfg(test)]
mod tests {
    use super::{open_sink, parse_time};
    use toolgate_audit_store::{AuditStore, Filter};
    use toolgate_gateway::audit::{LogLevel, Outcome, Record};

    #[test]
    fn the_sink_writes_the_store_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("toolgate-open-sink-{}", std::process::id()));
        let data_dir = dir.join("data");
        let file = dir.join("audit.jsonl");
        let sink = open_sink(Some(&file), LogLevel::Error, Some(&data_dir)).unwrap();
        for tool in ["a", "b"] {
            sink.record(Record {
                time: 1_795_302_000_123,
                grant: "local".into(),
                session: "s".into(),
                server: Some("fs".into()),
                tool: tool.into(),
                decision: "deny",
                rule: "default".into(),
                reason: Some("not listed".into()),
                counters: Vec::new(),
                decision_us: 3.0,
                latency_ms: None,
                outcome: Outcome::Refused,
                args_sha256: "00".into(),
                args: None,
                trace: None,
                intent: None,
            });
        }
        sink.flush();
        let mut store = AuditStore::open_existing(&data_dir).unwrap();
        assert_eq!(store.verify().unwrap().records, 2);
        let records = store.query(&Filter::default()).unwrap();
        assert_eq!(records[1].record["tool"], "b");
        assert_eq!(records[1].record["server"], "fs");
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn times_on_the_command_line() {
        let now = 1_795_302_000_000;
        for (text, expected) in [
            ("90s", Some(now - 90_000)),
            ("30m", Some(now - 1_800_000)),
            ("1h", Some(now - 3_600_000)),
            ("30d", Some(now - 30 * 86_400_000)),
            ("2w", Some(now - 14 * 86_400_000)),
            ("0s", Some(now)),
            ("99999999999w", Some(0)),
            ("2026-11-21T22:00:00Z", Some(now - 3_600_000)),
            ("", None),
            ("h", None),
            ("1", None),
            ("1y", None),
            ("-1h", None),
            ("1.5h", None),
            ("yesterday", None),
        ] {
            assert_eq!(parse_time(text, now).ok(), expected, "{text:?}");
        }
    }
}
