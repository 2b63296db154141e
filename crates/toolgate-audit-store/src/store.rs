//! [`AuditStore`]: the SQLite file, its schema, and what is done to it: append,
//! query, verify and prune.
//!
//! Two tables. `records` holds one row per record: its place in the chain
//! (`seq`, `prev_hash`, `hash`), the record's JSON text as the gateway wrote it,
//! and copies of the fields a query filters on (`time`, `grant`, `server`,
//! `tool`, `decision`). `chain` holds one row: the head (the last record
//! appended) and the anchor (the last record pruned, or seq 0 and the genesis
//! hash), so that the chain still verifies after pruning and a row deleted at
//! the end shows.

use crate::chain::{chain_hash, GENESIS_HASH};
use crate::time::parse_rfc3339;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store's file name inside the data directory.
pub const DB_FILE: &str = "audit.db";

/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq       INTEGER PRIMARY KEY,
    time      TEXT    NOT NULL,
    time_ms   INTEGER NOT NULL,
    grant     TEXT    NOT NULL,
    server    TEXT,
    tool      TEXT    NOT NULL,
    decision  TEXT    NOT NULL,
    record    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records (time_ms);
CREATE TABLE IF NOT EXISTS chain (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT    NOT NULL,
    head_seq    INTEGER NOT NULL,
    head_hash   TEXT    NOT NULL
);
";

/// How long an append waits for another process's append to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no audit store at {}", path.display())]
    Missing { path: PathBuf },
    #[error("the audit store {} has schema version {found}; this toolgate knows up to {SCHEMA_VERSION}", path.display())]
    NewerSchema { path: PathBuf, found: i64 },
    #[error("the audit store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("invalid audit record: {0}")]
    InvalidRecord(String),
    /// The chain does not verify: `seq` is the first record found wrong.
    #[error("audit trail broken at record {seq}: {why}")]
    Broken { seq: u64, why: String },
}

/// Which records a query returns. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub grant: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    /// Records at or after this time (milliseconds since the Unix epoch).
    pub since: Option<u64>,
    /// Records after this sequence number (the dashboard's "what is new").
    pub after: Option<u64>,
    /// At most this many: the newest ones (still returned oldest first).
    pub limit: Option<usize>,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub seq: u64,
    pub time_ms: u64,
    /// The record; a JSON string holding the stored text when that is not
    /// JSON (which only an edit of the file can cause: `verify` names it).
    pub record: Value,
    pub hash: String,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many records are in the store.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The last record pruned (0 when none ever was).
    pub pruned_through: u64,
    /// The hash of the last record appended: note it elsewhere, and a rewrite
    /// of the whole chain from some record on shows too.
    pub head_hash: String,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: u64,
    /// The last record pruned so far (0 when none ever was).
    pub pruned_through: u64,
}

/// The audit trail in `<data-dir>/audit.db`. One per process (or thread);
/// several, in several processes, may append to one directory.
#[derive(Debug)]
pub struct AuditStore {
    conn: Connection,
    path: PathBuf,
}

/// The fields of a record copied into columns.
#[derive(Debug, PartialEq)]
struct Facts<'a> {
    time: &'a str,
    time_ms: i64,
    grant: &'a str,
    server: Option<&'a str>,
    tool: &'a str,
    decision: &'a str,
}

fn facts(record: &Value) -> Result<Facts<'_>, String> {
    let obj = record
        .as_object()
        .ok_or("the record is not a JSON object")?;
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the record has no string \"{key}\""))
    };
    let time = text("time")?;
    let time_ms = parse_rfc3339(time)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| format!("the record's \"time\" is not an RFC 3339 time: {time:?}"))?;
    let server = match obj.get("server") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("the record's \"server\" is not a string".into()),
    };
    Ok(Facts {
        time,
        time_ms,
        grant: text("grant")?,
        server,
        tool: text("tool")?,
        decision: text("decision")?,
    })
}

/// The hash of a record as stored: of the canonical form of its stored text
/// (parsed again, so that appending and verifying hash the very same value).
fn stored_hash(prev_hash: &str, text: &str) -> Result<String, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    Ok(chain_hash(prev_hash, &value))
}

impl AuditStore {
    /// Opens `<dir>/audit.db`, making the directory and the file if needed.
    pub fn open(dir: &Path) -> Result<AuditStore, AuditError> {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::connect(dir.join(DB_FILE), OpenFlags::default())
    }

    /// Opens `<dir>/audit.db` only if it exists (for commands that read it).
    pub fn open_existing(dir: &Path) -> Result<AuditStore, AuditError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(AuditError::Missing { path });
        }
        let flags = OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE;
        Self::connect(path, flags)
    }

    fn connect(path: PathBuf, flags: OpenFlags) -> Result<AuditStore, AuditError> {
        let mut conn = Connection::open_with_flags(&path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // In WAL mode, NORMAL loses nothing on a crash of the process, only
        // the last commits on a loss of power.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(AuditError::NewerSchema {
                path,
                found: version,
            });
        }
        if version < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT OR IGNORE INTO chain (id, anchor_seq, anchor_hash, head_seq, head_hash)
                 VALUES (1, 0, ?1, 0, ?1)",
                [GENESIS_HASH],
            )?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(AuditStore { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (a JSON object with string `time` (RFC 3339),
    /// `grant`, `tool` and `decision`, and an optional string `server`);
    /// returns its seq.
    pub fn append(&mut self, record: &Value) -> Result<u64, AuditError> {
        Ok(self.append_all(std::slice::from_ref(record))?.start)
    }

    /// Appends records in one transaction; returns their seqs. Either all are
    /// appended or, on an error, none.
    pub fn append_all(&mut self, records: &[Value]) -> Result<Range<u64>, AuditError> {
        let rows = records
            .iter()
            .map(|r| Ok((facts(r).map_err(AuditError::InvalidRecord)?, r.to_string())))
            .collect::<Result<Vec<_>, AuditError>>()?;
        // IMMEDIATE takes the write lock before reading the head: no other
        // process can append between the read and the insert.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (head_seq, mut prev): (i64, String) = tx.query_row(
            "SELECT head_seq, head_hash FROM chain WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut seq = head_seq;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO records
                   (seq, time, time_ms, grant, server, tool, decision, record, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (f, text) in &rows {
                seq += 1;
                let hash = stored_hash(&prev, text)
                    .map_err(|e| AuditError::InvalidRecord(e.to_string()))?;
                insert.execute(params![
                    seq, f.time, f.time_ms, f.grant, f.server, f.tool, f.decision, text, prev, hash
                ])?;
                prev = hash;
            }
        }
        tx.execute(
            "UPDATE chain SET head_seq = ?1, head_hash = ?2 WHERE id = 1",
            params![seq, prev],
        )?;
        tx.commit()?;
        Ok(head_seq as u64 + 1..seq as u64 + 1)
    }

    /// The records that match, oldest first.
    pub fn query(&self, filter: &Filter) -> Result<Vec<StoredRecord>, AuditError> {
        let mut sql = String::from("SELECT seq, time_ms, record, hash FROM records WHERE 1 = 1");
        let mut args: Vec<SqlValue> = Vec::new();
        for (column, value) in [
            ("grant", &filter.grant),
            ("server", &filter.server),
            ("tool", &filter.tool),
            ("decision", &filter.decision),
        ] {
            if let Some(value) = value {
                args.push(SqlValue::Text(value.clone()));
                sql.push_str(&format!(" AND {column} = ?{}", args.len()));
            }
        }
        if let Some(since) = filter.since {
            args.push(SqlValue::Integer(i64::try_from(since).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" AND time_ms >= ?{}", args.len()));
        }
        if let Some(after) = filter.after {
            args.push(SqlValue::Integer(i64::try_from(after).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" AND seq > ?{}", args.len()));
        }
        match filter.limit {
            Some(limit) => {
                args.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
                sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
            }
            None => sql.push_str(" ORDER BY seq"),
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            let text: String = r.get(2)?;
            Ok(StoredRecord {
                seq: r.get::<_, i64>(0)? as u64,
                time_ms: r.get::<_, i64>(1)? as u64,
                record: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                hash: r.get(3)?,
            })
        })?;
        let mut records = rows.collect::<Result<Vec<_>, _>>()?;
        if filter.limit.is_some() {
            records.reverse();
        }
        Ok(records)
    }

    /// Checks the whole chain, from the anchor to the head; names the first
    /// record found wrong as [`AuditError::Broken`].
    pub fn verify(&mut self) -> Result<VerifyReport, AuditError> {
        // One read transaction: one snapshot, even while others append.
        let tx = self.conn.transaction()?;
        let report = verify_chain(&tx)?;
        tx.commit()?;
        Ok(report)
    }

    /// Deletes the records older than `before` (milliseconds since the Unix
    /// epoch) from the start of the chain, up to the first record that is not,
    /// and anchors the chain at the last one deleted. Refuses (with
    /// [`AuditError::Broken`]) to prune a chain that does not verify: that
    /// would hide the evidence.
    pub fn prune(&mut self, before: u64) -> Result<PruneReport, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let report = verify_chain(&tx)?;
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let keep_from: Option<i64> = tx.query_row(
            "SELECT MIN(seq) FROM records WHERE time_ms >= ?1",
            [before],
            |r| r.get(0),
        )?;
        let anchor = report.pruned_through as i64;
        let cut = match keep_from {
            Some(seq) => seq - 1,
            None => report.last_seq.map_or(anchor, |s| s as i64),
        };
        if cut <= anchor {
            return Ok(PruneReport {
                removed: 0,
                pruned_through: report.pruned_through,
            });
        }
        let hash: String = tx.query_row("SELECT hash FROM records WHERE seq = ?1", [cut], |r| {
            r.get(0)
        })?;
        let removed = tx.execute("DELETE FROM records WHERE seq <= ?1", [cut])?;
        tx.execute(
            "UPDATE chain SET anchor_seq = ?1, anchor_hash = ?2 WHERE id = 1",
            params![cut, hash],
        )?;
        tx.commit()?;
        Ok(PruneReport {
            removed: removed as u64,
            pruned_through: cut as u64,
        })
    }
}

fn broken(seq: i64, why: impl Into<String>) -> AuditError {
    AuditError::Broken {
        seq: seq.max(0) as u64,
        why: why.into(),
    }
}

fn verify_chain(conn: &Connection) -> Result<VerifyReport, AuditError> {
    let chain: Option<(i64, String, i64, String)> = conn
        .query_row(
            "SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM chain WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((anchor_seq, anchor_hash, head_seq, head_hash)) = chain else {
        return Err(broken(1, "the chain's head and anchor are missing"));
    };
    let mut stmt = conn.prepare(
        "SELECT seq, time, time_ms, grant, server, tool, decision, record, prev_hash, hash
         FROM records ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let (mut expected, mut prev) = (anchor_seq + 1, anchor_hash);
    let (mut count, mut first) = (0u64, None);
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        if seq < expected {
            return Err(broken(
                seq,
                format!("the record is before the chain's anchor (record {anchor_seq})"),
            ));
        }
        if seq > expected {
            let why = if expected - 1 == anchor_seq && anchor_seq > 0 {
                format!("the record is missing (the chain was pruned through {anchor_seq}, the next record is {seq})")
            } else if expected - 1 == anchor_seq {
                format!("the record is missing (the first record is {seq})")
            } else {
                format!(
                    "the record is missing (the chain goes from {} to {seq})",
                    expected - 1
                )
            };
            return Err(broken(expected, why));
        }
        if seq > head_seq {
            return Err(broken(
                seq,
                format!("the record is beyond the chain's head (record {head_seq})"),
            ));
        }
        let prev_hash: String = row.get(8)?;
        if prev_hash != prev {
            let why = if seq - 1 == anchor_seq {
                "its prev_hash is not the chain's anchor".to_string()
            } else {
                format!("its prev_hash is not the hash of record {}", seq - 1)
            };
            return Err(broken(seq, why));
        }
        let text: String = row.get(7)?;
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            return Err(broken(seq, "the record is not valid JSON (edited)"));
        };
        let hash: String = row.get(9)?;
        if chain_hash(&prev, &value) != hash {
            return Err(broken(
                seq,
                "its hash does not match the record (the record or the hash was edited)",
            ));
        }
        let server: Option<String> = row.get(4)?;
        let stored = Facts {
            time: &row.get::<_, String>(1)?,
            time_ms: row.get(2)?,
            grant: &row.get::<_, String>(3)?,
            server: server.as_deref(),
            tool: &row.get::<_, String>(5)?,
            decision: &row.get::<_, String>(6)?,
        };
        match facts(&value) {
            Ok(f) if f == stored => {}
            Ok(_) => {
                return Err(broken(
                    seq,
                    "its columns (time, grant, server, tool, decision) do not match the record",
                ))
            }
            Err(why) => return Err(broken(seq, why)),
        }
        first.get_or_insert(seq);
        count += 1;
        expected = seq + 1;
        prev = hash;
    }
    let last = expected - 1;
    if last < head_seq {
        return Err(broken(
            expected,
            format!("the record is missing (the chain ends at {last}, its head is {head_seq})"),
        ));
    }
    if prev != head_hash {
        return Err(broken(
            head_seq,
            "the chain's head hash is not the last record's hash",
        ));
    }
    Ok(VerifyReport {
        records: count,
        first_seq: first.map(|s| s as u64),
        last_seq: (count > 0).then_some(last as u64),
        pruned_through: anchor_seq.max(0) as u64,
        head_hash,
    })
}
