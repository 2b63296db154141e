//! The audit trail of a running gateway: its sink ([`open_sink`]: the
//! `--audit` file, the store in the data directory, the intent journal and
//! the observer that feeds metrics and traces), retention (a thread that
//! prunes old records every hour), opening an existing store with the
//! records of interrupted calls recovered, and the times the command line
//! gives (`30d`, an RFC 3339 time).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use toolgate_audit::{journal_dir_in, recover_journals, AuditDestination, AuditSink, LogLevel};
use toolgate_audit_store::{parse_rfc3339, AuditError, AuditStore};
use toolgate_clock::{Clock, SystemClock};

/// The audit sink of a gateway: the `--audit` file if given, and the audit
/// store in `data_dir` if given (`None`: no store).
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
    observer: Option<Box<dyn toolgate_audit::RecordObserver>>,
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

/// How long the audit trail keeps records when `--audit-retention` is not
/// given.
pub const DEFAULT_RETENTION: &str = "30d";

/// The most records the trail keeps when `--audit-retention` is not given
/// (about 1.8 GB at 180 bytes a record): the disk stays bounded whatever the
/// rate of calls.
pub const DEFAULT_MAX_RECORDS: u64 = 10_000_000;

/// About how many bytes a typical call's record takes in `audit.db`
/// (toolgate-audit-store's `tests/size.rs` measures it).
pub const BYTES_PER_RECORD: u64 = 180;

/// Retention of the audit store in `dir` (`None`: no store): `keep` (such as
/// `30d`) starts it ([`keep_audit_for`]); `forever` keeps every record and
/// says so once, with how to bound it; without `keep`, records older than
/// [`DEFAULT_RETENTION`] and beyond the newest [`DEFAULT_MAX_RECORDS`] are
/// pruned.
pub fn audit_retention(dir: Option<&Path>, keep: Option<&str>, audit: &AuditSink) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let db = dir.join(toolgate_audit_store::DB_FILE);
    match keep {
        Some("forever") => {
            audit.log(
                LogLevel::Warn,
                &format!(
                    "the audit trail in {} is kept forever (about {BYTES_PER_RECORD} bytes a call); bound it with --audit-retention 30d, or prune it with toolgate audit prune --older-than 30d",
                    db.display()
                ),
            );
            Ok(())
        }
        Some(keep) => keep_audit_for(dir, keep, None, audit.clone()),
        None => {
            audit.log(
                LogLevel::Info,
                &format!(
                    "the audit trail in {} keeps {DEFAULT_RETENTION} and at most {DEFAULT_MAX_RECORDS} records (about {BYTES_PER_RECORD} bytes a call), pruned every hour; --audit-retention sets the age (forever keeps every record)",
                    db.display()
                ),
            );
            keep_audit_for(
                dir,
                DEFAULT_RETENTION,
                Some(DEFAULT_MAX_RECORDS),
                audit.clone(),
            )
        }
    }
}

/// Retention: every hour (and at once), records older than `keep` (such as
/// "30d"), and the oldest beyond the newest `max_records` when given, are
/// pruned from the audit store in `dir`; the chain still verifies.
pub fn keep_audit_for(
    dir: &Path,
    keep: &str,
    max_records: Option<u64>,
    audit: AuditSink,
) -> Result<()> {
    let now = SystemClock.now_ms();
    // Checked now, so that a bad value is an error at start.
    parse_time(keep, now).context("--audit-retention")?;
    let mut store = AuditStore::open(dir)
        .with_context(|| format!("cannot open the audit store in {}", dir.display()))?;
    let keep = keep.to_string();
    std::thread::Builder::new()
        .name("toolgate-retention".into())
        .spawn(move || loop {
            prune_once(&mut store, &keep, max_records, &audit, SystemClock.now_ms());
            toolgate_clock::sleep(std::time::Duration::from_secs(3600));
        })
        .context("cannot start the retention thread")?;
    Ok(())
}

/// One round of retention at `now`.
fn prune_once(
    store: &mut AuditStore,
    keep: &str,
    max_records: Option<u64>,
    audit: &AuditSink,
    now: u64,
) {
    let Ok(before) = parse_time(keep, now) else {
        return;
    };
    let why = match max_records {
        Some(max) => format!("older than {keep} or beyond the newest {max}"),
        None => format!("older than {keep}"),
    };
    match store.prune_retained(Some(before), max_records) {
        Ok(report) if report.removed > 0 => audit.log(
            LogLevel::Info,
            &format!("audit retention: pruned {} records {why}", report.removed),
        ),
        Ok(_) => {}
        Err(e) => audit.log(LogLevel::Warn, &format!("audit retention: {e}")),
    }
}

/// The audit store as the sink's destination.
pub struct StoreDestination(pub AuditStore);

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
/// a gateway died added first (from the intent journals of dead gateways);
/// `recovered` is told how many were added, and from where, when any were.
pub fn open_existing(dir: &Path, recovered: impl FnOnce(usize, &Path)) -> Result<AuditStore> {
    let store = AuditStore::open_existing(dir).map_err(|e| match e {
        AuditError::Missing { path } => anyhow::anyhow!(
            "no audit store at {} (a gateway writes one when given --data-dir)",
            path.display()
        ),
        e => anyhow::Error::new(e).context(format!("{}", dir.display())),
    })?;
    let journal = journal_dir_in(dir);
    let mut store = StoreDestination(store);
    let count = recover_journals(&journal, &mut store)
        .with_context(|| format!("cannot recover the audit journal in {}", journal.display()))?;
    if count > 0 {
        recovered(count, &journal);
    }
    Ok(store.0)
}

/// A time given on the command line: a duration back from `now`
/// (`90s`, `30m`, `12h`, `30d`, `2w`) or an RFC 3339 time.
pub fn parse_time(text: &str, now: u64) -> Result<u64> {
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
    use toolgate_audit::{LogLevel, Outcome, Record};
    use toolgate_audit_store::{AuditStore, Filter};

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
    fn retention_prunes_by_age_and_by_count_and_the_chain_still_verifies() {
        let dir = std::env::temp_dir().join(format!("toolgate-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let day = 86_400_000;
        let now = 1_795_302_000_000;
        let mut store = AuditStore::open(&dir).unwrap();
        let records: Vec<_> = (0..10u64)
            .map(|i| {
                let mut r = Record {
                    time: now - (40 - i) * day,
                    grant: "g".into(),
                    ..Record::new("t", "allow", Outcome::Ok)
                };
                if i >= 5 {
                    r.time = now - (10 - i) * 1000;
                }
                r.to_json()
            })
            .collect();
        store.append_all(&records).unwrap();
        let sink = toolgate_audit::AuditSink::open(None, LogLevel::Error).unwrap();
        super::prune_once(&mut store, "30d", None, &sink, now);
        assert_eq!(store.verify().unwrap().records, 5);
        super::prune_once(&mut store, "30d", Some(2), &sink, now);
        let report = store.verify().unwrap();
        assert_eq!((report.records, report.pruned_through), (2, 8));
        let left = store.query(&Filter::default()).unwrap();
        assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), [9, 10]);
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
