//! [`SqliteApprovals`]: the [`ApprovalStore`] in `approvals.db` of a data
//! directory, shared by every process that opens the same directory (the
//! gateways holding calls, and `toolgate approvals` deciding them).
//!
//! One table, one row per request:
//!
//! ```sql
//! approvals(id TEXT PRIMARY KEY, key TEXT, status TEXT,
//!           created_ms INTEGER, expires_ms INTEGER, request TEXT)
//! ```
//!
//! `request` is the whole request as JSON, with its status nested under
//! `"decision"` (not flattened as in [`ApprovalRequest`]'s own JSON, where a
//! decision's `reason` would collide with the request's); `key`, `status`,
//! `created_ms` and `expires_ms` repeat the fields that queries select on. Every operation, reads included, is one
//! `BEGIN IMMEDIATE` transaction: the write lock is taken before anything is
//! read, so a decision or a consumption in one process cannot interleave
//! with one in another (an approved call is consumed exactly once).
//!
//! The file is separate from `counters.db`, so approvals never wait for the
//! counters' write lock, and each file keeps its own schema version. Rows
//! are deleted [`RETENTION_MS`] after their request expired (by the next new
//! request); the audit trail keeps the decisions for longer.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use toolgate_approvals::{
    apply_consume, apply_decision, call_key, pending, ApprovalError, ApprovalRequest,
    ApprovalStore, Asked, Decided, NewRequest, Status,
};

use crate::db::{self, to_sql, Schema};
use crate::StateError;

/// The approvals database file inside the data directory.
pub const APPROVALS_DB_FILE: &str = "approvals.db";

/// How long a row is kept after its request expired (for `show` and `list
/// --all`): 7 days.
pub const RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

const SCHEMA: Schema = Schema {
    version: 1,
    sql: "CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    request TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_by_key ON approvals (key, status, expires_ms);
CREATE INDEX IF NOT EXISTS approvals_by_created ON approvals (created_ms, id);
CREATE INDEX IF NOT EXISTS approvals_by_expiry ON approvals (expires_ms);",
};

/// The live request of a key: pending, or approved and unused, not expired.
const SELECT_LIVE: &str = "SELECT request FROM approvals
    WHERE key = ?1 AND status IN ('pending', 'approved') AND expires_ms > ?2
    ORDER BY created_ms DESC, id DESC LIMIT 1";
const SELECT_APPROVED: &str = "SELECT request FROM approvals
    WHERE key = ?1 AND status = 'approved' AND expires_ms > ?2
    ORDER BY created_ms ASC, id ASC LIMIT 1";
const SELECT_ID: &str = "SELECT request FROM approvals WHERE id = ?1";
const SELECT_ALL: &str = "SELECT request FROM approvals ORDER BY created_ms DESC, id DESC";
const SELECT_PENDING: &str = "SELECT request FROM approvals
    WHERE status = 'pending' AND expires_ms > ?1 ORDER BY created_ms DESC, id DESC";
const INSERT: &str = "INSERT INTO approvals (id, key, status, created_ms, expires_ms, request)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPDATE: &str = "UPDATE approvals SET status = ?2, request = ?3 WHERE id = ?1";
const PRUNE: &str = "DELETE FROM approvals WHERE expires_ms <= ?1";

/// Approval requests in `approvals.db` of a data directory. See the module
/// docs for the table and what each operation locks.
pub struct SqliteApprovals {
    path: PathBuf,
    db: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteApprovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteApprovals")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a transaction failed: the database, or a decision's rules.
enum Failure {
    Sql(rusqlite::Error),
    Json(String),
    Rule(ApprovalError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sql(e)
    }
}

impl SqliteApprovals {
    /// Opens the store in `dir`, creating the directory and `approvals.db`
    /// when they do not exist yet; waits up to 5 s for another connection's
    /// write lock.
    pub fn open(dir: &Path) -> Result<SqliteApprovals, StateError> {
        SqliteApprovals::open_with(dir, db::BUSY_TIMEOUT)
    }

    /// [`SqliteApprovals::open`] with another busy timeout.
    pub fn open_with(dir: &Path, busy_timeout: Duration) -> Result<SqliteApprovals, StateError> {
        let (path, db) = db::open_in(dir, APPROVALS_DB_FILE, busy_timeout, &SCHEMA)?;
        Ok(SqliteApprovals {
            path,
            db: Mutex::new(db),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the requests that expired before `before`; how many.
    /// [`ApprovalStore::request`] does this itself for requests expired more
    /// than [`RETENTION_MS`] ago.
    pub fn prune(&self, before: u64) -> Result<usize, ApprovalError> {
        self.transaction(|db| Ok(db.prepare_cached(PRUNE)?.execute([to_sql(before)])?))
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: committed when it
    /// returns `Ok`, rolled back otherwise.
    fn transaction<T>(
        &self,
        body: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, ApprovalError> {
        let db = self.lock();
        let run = || -> Result<T, Failure> {
            if !db.is_autocommit() {
                // Left open by a panic in an earlier call.
                db.execute_batch("ROLLBACK")?;
            }
            db.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            let done = body(&db).and_then(|value| {
                db.prepare_cached("COMMIT")?.execute([])?;
                Ok(value)
            });
            if done.is_err() && !db.is_autocommit() {
                let _ = db.execute_batch("ROLLBACK");
            }
            done
        };
        run().map_err(|failure| match failure {
            Failure::Rule(e) => e,
            Failure::Sql(e) => ApprovalError::Unavailable(format!("{}: {e}", self.path.display())),
            Failure::Json(e) => ApprovalError::Unavailable(format!(
                "{}: a stored request is not readable: {e}",
                self.path.display()
            )),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held may have left a transaction open:
        // `transaction` rolls it back before starting the next one.
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ApprovalStore for SqliteApprovals {
    fn request(&self, new: &NewRequest, now: u64) -> Result<ApprovalRequest, ApprovalError> {
        let key = call_key(&new.grant, new.server.as_deref(), &new.tool, &new.arguments);
        self.transaction(|db| {
            if let Some(live) = select_one(db, SELECT_LIVE, params![key, to_sql(now)])? {
                return Ok(live);
            }
            db.prepare_cached(PRUNE)?
                .execute([to_sql(now.saturating_sub(RETENTION_MS))])?;
            let r = pending(new, now);
            db.prepare_cached(INSERT)?.execute(params![
                r.id,
                r.key,
                r.status.name(),
                to_sql(r.created_ms),
                to_sql(r.expires_ms),
                to_json(&r)?,
            ])?;
            Ok(r)
        })
    }

    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalError> {
        self.transaction(|db| select_one(db, SELECT_ID, [id]))
    }

    fn list(&self, pending_only: bool, now: u64) -> Result<Vec<ApprovalRequest>, ApprovalError> {
        self.transaction(|db| {
            let (mut statement, args) = if pending_only {
                (db.prepare_cached(SELECT_PENDING)?, vec![to_sql(now)])
            } else {
                (db.prepare_cached(SELECT_ALL)?, vec![])
            };
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), |row| {
                    row.get::<_, String>(0)
                })?
                .collect::<Result<Vec<String>, _>>()?;
            rows.iter().map(|text| from_json(text)).collect()
        })
    }

    fn decide(
        &self,
        id: &str,
        approve: bool,
        decided: Decided,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        self.transaction(|db| {
            let mut r = select_one(db, SELECT_ID, [id])?
                .ok_or_else(|| Failure::Rule(ApprovalError::Unknown(id.to_string())))?;
            r.status = apply_decision(&r, approve, decided, now).map_err(Failure::Rule)?;
            save(db, &r)?;
            Ok(r)
        })
    }

    fn consume(&self, key: &str, now: u64) -> Result<Option<ApprovalRequest>, ApprovalError> {
        self.transaction(|db| {
            let Some(mut r) = select_one(db, SELECT_APPROVED, params![key, to_sql(now)])? else {
                return Ok(None);
            };
            let Some(used) = apply_consume(&r, now) else {
                return Err(Failure::Json(format!(
                    "request {} is stored as approved but reads as {}",
                    r.id,
                    r.status.name()
                )));
            };
            r.status = used;
            save(db, &r)?;
            Ok(Some(r))
        })
    }
}

fn select_one(
    db: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Option<ApprovalRequest>, Failure> {
    let text: Option<String> = db
        .prepare_cached(sql)?
        .query_row(args, |row| row.get(0))
        .optional()?;
    text.as_deref().map(from_json).transpose()
}

fn save(db: &Connection, r: &ApprovalRequest) -> Result<(), Failure> {
    db.prepare_cached(UPDATE)?
        .execute(params![r.id, r.status.name(), to_json(r)?])?;
    Ok(())
}

/// A request as stored: its status nested under `decision`.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    asked: Asked,
    expires_ms: u64,
    decision: Status,
}

fn to_json(r: &ApprovalRequest) -> Result<String, Failure> {
    let stored = Stored {
        asked: Asked::of(r),
        expires_ms: r.expires_ms,
        decision: r.status.clone(),
    };
    serde_json::to_string(&stored).map_err(|e| Failure::Json(e.to_string()))
}

fn from_json(text: &str) -> Result<ApprovalRequest, Failure> {
    let s: Stored = serde_json::from_str(text).map_err(|e| Failure::Json(e.to_string()))?;
    s.asked
        .into_request(s.expires_ms, s.decision)
        .map_err(Failure::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as `approvals.db` holds it: the request's fields in order, its
    /// expiry, then its status under `decision`.
    const STORED: &str = r#"{"id":"apr_0123456789abcdef","key":"k","grant":"g","server":null,"tool":"t","arguments":{"b":[],"a":0.1},"reason":"r","rule":"tools[\"t\"]","created_ms":1,"expires_ms":11,"decision":{"state":"pending"}}"#;

    #[test]
    fn the_stored_layout_reads_and_writes_back_the_same() {
        let Ok(r) = from_json(STORED) else {
            panic!("a stored row")
        };
        assert_eq!(r.id, "apr_0123456789abcdef");
        assert_eq!(r.arguments, serde_json::json!({"b": [], "a": 0.1}));
        assert_eq!((r.created_ms, r.expires_ms), (1, 11));
        assert_eq!(r.status, Status::Pending);
        let Ok(text) = to_json(&r) else {
            panic!("encodes")
        };
        assert_eq!(text, STORED);
    }
}
