//! [`AuditStore`]: the SQLite file, its schema, and what is done to it: append,
//! query, verify and prune.
//!
//! Three tables. `records` holds one row per record: its place in the chain
//! (`seq`, `prev_hash`, `hash`, 32 bytes each hash) and the record itself in
//! the compact form of `codec.rs` (its strings as ids in `strings`, its
//! times and timings as integers; a record not of the gateway's shape whole,
//! as JSON text in `raw`). `chain` holds one row: the head (the last record
//! appended) and the anchor (the last record pruned, or seq 0 and the genesis
//! hash), so that the chain still verifies after pruning and a row deleted at
//! the end shows. The hash is of the record as JSON (what `toolgate audit
//! --json` prints), not of the row, so the form of the rows can change.

use crate::chain::{chain_hash, GENESIS_HASH};
use crate::codec::{counters_text, decode, encode, parse_counters, Row};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store's file name inside the data directory.
pub const DB_FILE: &str = "audit.db";

/// `PRAGMA user_version` of the schema below. Version 1 (the record's JSON
/// text, hex hashes and copies of its fields in every row) is migrated on
/// open (`migrate.rs`).
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// `records` holds a record of the gateway's shape as columns (`codec.rs`):
/// strings as ids in `strings`, times and timings as integers, the
/// arguments' hash and the chain's hashes as 32 bytes; any other record
/// whole, as its JSON text, in `raw`.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strings (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS records (
    seq         INTEGER PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    grant       INTEGER NOT NULL,
    session     INTEGER,
    server      INTEGER,
    tool        INTEGER NOT NULL,
    decision    INTEGER NOT NULL,
    rule        INTEGER,
    reason      INTEGER,
    counters    TEXT,
    decision_us INTEGER,
    latency     INTEGER,
    outcome     INTEGER,
    args        BLOB,
    raw         TEXT,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
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
    /// Strings' ids in `strings`, as appends found them.
    ids: HashMap<String, i64>,
}

/// The columns of a row read back, its strings resolved.
const SELECT: &str = "
SELECT r.seq, r.time_ms, g.text, se.text, sv.text, t.text, d.text, ru.text, re.text,
       r.counters, r.decision_us, r.latency, o.text, r.args, r.raw, r.prev_hash, r.hash,
       (r.grant IS NOT NULL AND g.text IS NULL) OR (r.session IS NOT NULL AND se.text IS NULL)
       OR (r.server IS NOT NULL AND sv.text IS NULL) OR (r.tool IS NOT NULL AND t.text IS NULL)
       OR (r.decision IS NOT NULL AND d.text IS NULL) OR (r.rule IS NOT NULL AND ru.text IS NULL)
       OR (r.reason IS NOT NULL AND re.text IS NULL) OR (r.outcome IS NOT NULL AND o.text IS NULL)
FROM records r
LEFT JOIN strings g ON g.id = r.grant
LEFT JOIN strings se ON se.id = r.session
LEFT JOIN strings sv ON sv.id = r.server
LEFT JOIN strings t ON t.id = r.tool
LEFT JOIN strings d ON d.id = r.decision
LEFT JOIN strings ru ON ru.id = r.rule
LEFT JOIN strings re ON re.id = r.reason
LEFT JOIN strings o ON o.id = r.outcome
WHERE 1 = 1";

pub(crate) const INSERT_SQL: &str = "
INSERT INTO records
  (seq, time_ms, grant, session, server, tool, decision, rule, reason, counters,
   decision_us, latency, outcome, args, raw, prev_hash, hash)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// At most this many strings' ids are remembered between appends.
const KNOWN_IDS: usize = 100_000;

/// A row as read: its record (or why it cannot be read) and its hashes.
struct ReadRow {
    seq: i64,
    time_ms: i64,
    /// The record, or the stored text that is not JSON.
    record: Result<Value, String>,
    /// The columns a `raw` row keeps for queries, to compare with its record.
    raw_columns: Option<Row<String>>,
    /// Why the columns cannot be read back (a string or a counter edited).
    unreadable: Option<&'static str>,
    prev_hash: String,
    hash: String,
}

/// A hash column as hex (what a text holds, when a text is there).
fn hash_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Blob(b) => hex::encode(b),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

/// A hash in hex as the bytes a hash column keeps (a text that is not hex,
/// which only an edit can cause, as its bytes: it will not verify).
pub(crate) fn hash_blob(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).unwrap_or_else(|_| hex_text.as_bytes().to_vec())
}

/// The names of counters, by id, read as needed.
struct Names<'c> {
    stmt: rusqlite::CachedStatement<'c>,
    known: HashMap<i64, Option<String>>,
}

impl<'c> Names<'c> {
    fn new(conn: &'c Connection) -> rusqlite::Result<Names<'c>> {
        Ok(Names {
            stmt: conn.prepare_cached("SELECT text FROM strings WHERE id = ?1")?,
            known: HashMap::new(),
        })
    }

    fn counters(&mut self, text: &str) -> rusqlite::Result<Option<Vec<(String, String, String)>>> {
        let Some(parsed) = parse_counters(text) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(parsed.len());
        for (id, used, max) in parsed {
            if !self.known.contains_key(&id) {
                let name = self.stmt.query_row([id], |r| r.get(0)).optional()?;
                self.known.insert(id, name);
            }
            match &self.known[&id] {
                Some(name) => out.push((name.clone(), used, max)),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

fn read_row(r: &rusqlite::Row<'_>, names: &mut Names<'_>) -> rusqlite::Result<ReadRow> {
    let mut row: Row<String> = Row {
        time_ms: r.get(1)?,
        grant: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        session: r.get(3)?,
        server: r.get(4)?,
        tool: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        decision: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
        rule: r.get(7)?,
        reason: r.get(8)?,
        counters: None,
        decision_us: r.get(10)?,
        latency: r.get(11)?,
        outcome: r.get(12)?,
        args: r.get(13)?,
        raw: r.get(14)?,
    };
    let mut unreadable = r
        .get::<_, bool>(17)?
        .then_some("it refers to a string that is not in the store (edited)");
    if let Some(text) = r.get::<_, Option<String>>(9)? {
        row.counters = names.counters(&text)?;
        if row.counters.is_none() {
            unreadable.get_or_insert("its counters column cannot be read (edited)");
        }
    }
    let (record, raw_columns) = match row.raw.take() {
        Some(text) => (serde_json::from_str(&text).map_err(|_| text), Some(row)),
        None => (Ok(decode(&row)), None),
    };
    Ok(ReadRow {
        seq: r.get(0)?,
        time_ms: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
        record,
        raw_columns,
        unreadable,
        prev_hash: hash_text(r.get_ref(15)?),
        hash: hash_text(r.get_ref(16)?),
    })
}

/// The hash of a record kept whole: of the canonical form of its stored text
/// (parsed again, so that appending and verifying hash the very same value).
fn stored_hash(prev_hash: &str, text: &str) -> Result<String, AuditError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| AuditError::InvalidRecord(e.to_string()))?;
    Ok(chain_hash(prev_hash, &value))
}

/// Inserts `row` as record `seq` with its hashes; `id` gives a string's id.
pub(crate) fn insert_row(
    insert: &mut rusqlite::CachedStatement<'_>,
    id: &mut dyn FnMut(&str) -> rusqlite::Result<i64>,
    seq: i64,
    row: &Row<&str>,
    (prev_hash, hash): (&str, &str),
) -> rusqlite::Result<()> {
    let mut opt = |s: Option<&str>| s.map(&mut *id).transpose();
    let (session, server, rule) = (opt(row.session)?, opt(row.server)?, opt(row.rule)?);
    let (reason, outcome) = (opt(row.reason)?, opt(row.outcome)?);
    let counters = match &row.counters {
        Some(list) => {
            let mut ids = Vec::with_capacity(list.len());
            for (name, used, max) in list {
                ids.push((id(name)?, used.as_str(), max.as_str()));
            }
            Some(counters_text(&ids))
        }
        None => None,
    };
    insert.execute(params![
        seq,
        row.time_ms,
        id(row.grant)?,
        session,
        server,
        id(row.tool)?,
        id(row.decision)?,
        rule,
        reason,
        counters,
        row.decision_us,
        row.latency,
        outcome,
        row.args,
        row.raw,
        hash_blob(prev_hash),
        hash_blob(hash),
    ])?;
    Ok(())
}

/// Gives strings their ids in `strings` inside a write transaction: those
/// known from earlier appends (ids never change: strings are never
/// deleted), else found or added, and remembered once the transaction
/// commits.
pub(crate) struct Interner<'c, 'k> {
    add: rusqlite::CachedStatement<'c>,
    find: rusqlite::CachedStatement<'c>,
    known: &'k HashMap<String, i64>,
    fresh: HashMap<String, i64>,
}

impl<'c, 'k> Interner<'c, 'k> {
    pub(crate) fn new(
        tx: &'c Connection,
        known: &'k HashMap<String, i64>,
    ) -> rusqlite::Result<Interner<'c, 'k>> {
        Ok(Interner {
            add: tx.prepare_cached(
                "INSERT INTO strings (text) VALUES (?1) ON CONFLICT (text) DO NOTHING",
            )?,
            find: tx.prepare_cached("SELECT id FROM strings WHERE text = ?1")?,
            known,
            fresh: HashMap::new(),
        })
    }

    pub(crate) fn id(&mut self, text: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.known.get(text).or_else(|| self.fresh.get(text)) {
            return Ok(*id);
        }
        self.add.execute([text])?;
        let id = self.find.query_row([text], |r| r.get(0))?;
        self.fresh.insert(text.to_string(), id);
        Ok(id)
    }

    pub(crate) fn into_fresh(self) -> HashMap<String, i64> {
        self.fresh
    }
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
        // Takes effect only before the first table is made: a new store
        // gives the pages that pruning frees back to the file system.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // In WAL mode, NORMAL loses nothing on a crash of the process, only
        // the last commits on a loss of power.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The WAL is cut back to this after a checkpoint.
        conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(AuditError::NewerSchema {
                path,
                found: version,
            });
        }
        if version < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Read again under the write lock: another process may have
            // made or migrated the store meanwhile.
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let migrated = if version == 1 {
                crate::migrate::from_v1(&tx)?;
                true
            } else {
                false
            };
            if version < SCHEMA_VERSION {
                tx.execute_batch(SCHEMA)?;
                tx.execute(
                    "INSERT OR IGNORE INTO chain (id, anchor_seq, anchor_hash, head_seq, head_hash)
                     VALUES (1, 0, ?1, 0, ?1)",
                    [GENESIS_HASH],
                )?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            tx.commit()?;
            if migrated {
                // The old rows' pages back to the file system (and
                // auto_vacuum on from now).
                // Not needed for anything to work: a failure leaves a
                // larger file.
                let _ = conn.execute_batch("VACUUM");
            }
        }
        Ok(AuditStore {
            conn,
            path,
            ids: HashMap::new(),
        })
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

    /// Appends records in one transaction, hashing and chaining them; returns
    /// their seqs. Either all are appended or, on an error, none.
    pub fn append_all(&mut self, records: &[Value]) -> Result<Range<u64>, AuditError> {
        let rows = records
            .iter()
            .map(|r| encode(r).map_err(AuditError::InvalidRecord))
            .collect::<Result<Vec<_>, AuditError>>()?;
        if self.ids.len() > KNOWN_IDS {
            self.ids.clear();
        }
        let AuditStore { conn, ids, .. } = self;
        // IMMEDIATE takes the write lock before reading the head: no other
        // process can append between the read and the insert.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (head_seq, mut prev): (i64, String) = tx.query_row(
            "SELECT head_seq, head_hash FROM chain WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut seq = head_seq;
        let fresh = {
            let mut insert = tx.prepare_cached(INSERT_SQL)?;
            let mut interner = Interner::new(&tx, ids)?;
            for (row, record) in rows.iter().zip(records) {
                seq += 1;
                let hash = match &row.raw {
                    Some(text) => stored_hash(&prev, text)?,
                    None => chain_hash(&prev, record),
                };
                insert_row(
                    &mut insert,
                    &mut |text| interner.id(text),
                    seq,
                    row,
                    (&prev, &hash),
                )?;
                prev = hash;
            }
            interner.into_fresh()
        };
        tx.execute(
            "UPDATE chain SET head_seq = ?1, head_hash = ?2 WHERE id = 1",
            params![seq, prev],
        )?;
        tx.commit()?;
        ids.extend(fresh);
        Ok(head_seq as u64 + 1..seq as u64 + 1)
    }

    /// The records that match, oldest first.
    pub fn query(&self, filter: &Filter) -> Result<Vec<StoredRecord>, AuditError> {
        let mut sql = String::from(SELECT);
        let mut args: Vec<SqlValue> = Vec::new();
        for (column, value) in [
            ("grant", &filter.grant),
            ("server", &filter.server),
            ("tool", &filter.tool),
            ("decision", &filter.decision),
        ] {
            if let Some(value) = value {
                args.push(SqlValue::Text(value.clone()));
                sql.push_str(&format!(
                    " AND r.{column} = (SELECT id FROM strings WHERE text = ?{})",
                    args.len()
                ));
            }
        }
        if let Some(since) = filter.since {
            args.push(SqlValue::Integer(i64::try_from(since).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" AND r.time_ms >= ?{}", args.len()));
        }
        if let Some(after) = filter.after {
            args.push(SqlValue::Integer(i64::try_from(after).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" AND r.seq > ?{}", args.len()));
        }
        match filter.limit {
            Some(limit) => {
                args.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
                sql.push_str(&format!(" ORDER BY r.seq DESC LIMIT ?{}", args.len()));
            }
            None => sql.push_str(" ORDER BY r.seq"),
        }
        let mut names = Names::new(&self.conn)?;
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut records = Vec::new();
        while let Some(r) = rows.next()? {
            let row = read_row(r, &mut names)?;
            records.push(StoredRecord {
                seq: row.seq as u64,
                time_ms: row.time_ms as u64,
                record: row.record.unwrap_or_else(Value::String),
                hash: row.hash,
            });
        }
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
        self.prune_retained(Some(before), None)
    }

    /// Deletes the oldest records so that at most `keep` are left, anchoring
    /// the chain as [`AuditStore::prune`] does.
    pub fn prune_to_count(&mut self, keep: u64) -> Result<PruneReport, AuditError> {
        self.prune_retained(None, Some(keep))
    }

    /// [`AuditStore::prune`] and [`AuditStore::prune_to_count`] in one (one
    /// verification of the chain): deletes from the start of the chain what
    /// either would.
    pub fn prune_retained(
        &mut self,
        before: Option<u64>,
        keep: Option<u64>,
    ) -> Result<PruneReport, AuditError> {
        self.prune_where(|tx, report| {
            let mut cut = 0;
            if let Some(before) = before {
                let before = i64::try_from(before).unwrap_or(i64::MAX);
                let keep_from: Option<i64> = tx.query_row(
                    "SELECT MIN(seq) FROM records WHERE time_ms >= ?1",
                    [before],
                    |r| r.get(0),
                )?;
                cut = match keep_from {
                    Some(seq) => seq - 1,
                    None => report.last_seq.map_or(0, |s| s as i64),
                };
            }
            if let (Some(keep), Some(last)) = (keep, report.last_seq) {
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                cut = cut.max((last as i64).saturating_sub(keep));
            }
            Ok(cut)
        })
    }

    /// Prunes through the record `cut` says (given the verified chain). The
    /// chain is verified in a read transaction, so appends (other
    /// processes', this gateway's writer) wait only for the deletion: the
    /// write transaction checks that the anchor and the last record pruned
    /// are still what was verified.
    fn prune_where(
        &mut self,
        cut: impl FnOnce(&Connection, &VerifyReport) -> rusqlite::Result<i64>,
    ) -> Result<PruneReport, AuditError> {
        let read = self.conn.transaction()?;
        let report = verify_chain(&read)?;
        let anchor = report.pruned_through as i64;
        let cut = cut(&read, &report)?;
        let unchanged = PruneReport {
            removed: 0,
            pruned_through: report.pruned_through,
        };
        if cut <= anchor {
            return Ok(unchanged);
        }
        let cut_hash = |tx: &Connection| {
            tx.query_row("SELECT hash FROM records WHERE seq = ?1", [cut], |r| {
                Ok(hash_text(r.get_ref(0)?))
            })
            .optional()
        };
        let anchor_of = |tx: &Connection| {
            tx.query_row(
                "SELECT anchor_seq, anchor_hash FROM chain WHERE id = 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
        };
        let (verified_hash, verified_anchor) = (cut_hash(&read)?, anchor_of(&read)?);
        read.commit()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if anchor_of(&tx)? != verified_anchor {
            // Another process pruned meanwhile: its prune stands.
            return Ok(unchanged);
        }
        let Some(hash) = cut_hash(&tx)?.filter(|h| Some(h) == verified_hash.as_ref()) else {
            return Err(broken(cut, "the record changed while the chain was pruned"));
        };
        let removed = tx.execute("DELETE FROM records WHERE seq <= ?1", [cut])?;
        tx.execute(
            "UPDATE chain SET anchor_seq = ?1, anchor_hash = ?2 WHERE id = 1",
            params![cut, hash],
        )?;
        tx.commit()?;
        // The freed pages back to the file system (a store made before
        // auto_vacuum reuses them instead).
        let _ = self.conn.execute_batch("PRAGMA incremental_vacuum");
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
    let mut names = Names::new(conn)?;
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY r.seq"))?;
    let mut rows = stmt.query([])?;
    let (mut expected, mut prev) = (anchor_seq + 1, anchor_hash);
    let (mut count, mut first) = (0u64, None);
    while let Some(r) = rows.next()? {
        let row = read_row(r, &mut names)?;
        let seq = row.seq;
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
        if row.prev_hash != prev {
            let why = if seq - 1 == anchor_seq {
                "its prev_hash is not the chain's anchor".to_string()
            } else {
                format!("its prev_hash is not the hash of record {}", seq - 1)
            };
            return Err(broken(seq, why));
        }
        if let Some(why) = row.unreadable {
            return Err(broken(seq, why));
        }
        let Ok(value) = row.record else {
            return Err(broken(seq, "the record is not valid JSON (edited)"));
        };
        if chain_hash(&prev, &value) != row.hash {
            return Err(broken(
                seq,
                "its hash does not match the record (the record or the hash was edited)",
            ));
        }
        if let Some(stored) = &row.raw_columns {
            match encode(&value) {
                Ok(f)
                    if f.time_ms == stored.time_ms
                        && f.grant == stored.grant
                        && f.server == stored.server.as_deref()
                        && f.tool == stored.tool
                        && f.decision == stored.decision => {}
                Ok(_) => {
                    return Err(broken(
                        seq,
                        "its columns (time, grant, server, tool, decision) do not match the record",
                    ))
                }
                Err(why) => return Err(broken(seq, why)),
            }
        }
        first.get_or_insert(seq);
        count += 1;
        expected = seq + 1;
        prev = row.hash;
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
