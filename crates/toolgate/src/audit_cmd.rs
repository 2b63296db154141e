//! `toolgate audit`: list, verify, prune and import the audit trail kept in
//! the data directory's SQLite store (the sink the gateways write through
//! is toolgate-host's `audit`).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use toolgate_audit_store::{default_data_dir, AuditError, AuditStore, Filter, StoredRecord};
use toolgate_clock::{Clock, SystemClock};
use toolgate_host::audit::parse_time;

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

/// The store in `dir`, the records of interrupted calls recovered first.
fn open_existing(dir: &Path) -> Result<AuditStore> {
    toolgate_host::audit::open_existing(dir, |recovered, journal| {
        eprintln!(
            "toolgate: added {recovered} record(s) of calls in flight when a gateway stopped (outcome \"interrupted\") from {}",
            journal.display()
        );
    })
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
    let header = COLUMNS.map(str::to_string);
    let rows: Vec<[String; 8]> = std::iter::once(header)
        .chain(records.iter().map(|r| {
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
        }))
        .collect();
    crate::table::write_rows(out, &rows)
}

fn verify(dir: &Path) -> Result<u8> {
    unless_broken(
        dir,
        AuditStore::verify,
        |report| {
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
        },
        |seq, why| println!("audit trail broken at record {seq}: {why}"),
    )
}

fn prune(dir: &Path, before: u64) -> Result<u8> {
    unless_broken(
        dir,
        |store| store.prune(before),
        |report| {
            println!(
                "pruned {} records older than {}; the chain starts after record {}",
                report.removed,
                toolgate_clock::rfc3339(before),
                report.pruned_through
            );
        },
        |seq, why| eprintln!("toolgate: not pruning: audit trail broken at record {seq}: {why}"),
    )
}

/// Runs `op` on the trail in `dir`: `done` tells what it did (exit 0); a
/// broken chain is told by `broken` (exit 1); any other error is returned.
fn unless_broken<T>(
    dir: &Path,
    op: impl FnOnce(&mut AuditStore) -> Result<T, AuditError>,
    done: impl FnOnce(T),
    broken: impl FnOnce(u64, String),
) -> Result<u8> {
    let mut store = open_existing(dir)?;
    match op(&mut store) {
        Ok(report) => {
            done(report);
            Ok(0)
        }
        Err(AuditError::Broken { seq, why }) => {
            broken(seq, why);
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
