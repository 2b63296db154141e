//! [`SqliteRevocations`]: the [`RevocationStore`] of ended sessions in
//! `revocations.db` of the data directory, so every gateway process sharing
//! the directory (and the session key) refuses a session ended on any of
//! them.
//!
//! One table, one row per ended session:
//!
//! ```sql
//! revocations(id TEXT PRIMARY KEY, until_ms INTEGER)
//! ```
//!
//! A revocation is one upsert that keeps the later end; a check is one
//! indexed read (WAL: it never waits for a writer). Rows that have ended
//! are deleted by later revocations. Any database error is
//! [`RevocationError::Unavailable`]: the gateway then refuses the request.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rusqlite::Connection;
use toolgate_revocations::{RevocationError, RevocationStore};

use crate::db::{self, to_sql, Schema};
use crate::StateError;

/// The revocations database file inside the data directory.
pub const REVOCATIONS_DB_FILE: &str = "revocations.db";

const SCHEMA: Schema = Schema {
    version: 1,
    sql: "CREATE TABLE IF NOT EXISTS revocations (
    id TEXT PRIMARY KEY NOT NULL,
    until_ms INTEGER NOT NULL
)",
};

const UPSERT: &str = "INSERT INTO revocations (id, until_ms) VALUES (?1, ?2)
    ON CONFLICT (id) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)";
const SELECT: &str = "SELECT 1 FROM revocations WHERE id = ?1 AND until_ms > ?2";
const PRUNE: &str = "DELETE FROM revocations WHERE until_ms <= ?1";

/// Ended sessions in `revocations.db` of a data directory.
pub struct SqliteRevocations {
    path: PathBuf,
    db: Mutex<Connection>,
    /// The latest `now` asked about: rows ending before it are pruned.
    seen_now: AtomicU64,
}

impl std::fmt::Debug for SqliteRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRevocations")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteRevocations {
    /// Opens the store in `dir`, creating the directory and the file when
    /// they do not exist yet.
    pub fn open(dir: &Path) -> Result<SqliteRevocations, StateError> {
        let (path, db) = db::open_in(dir, REVOCATIONS_DB_FILE, db::BUSY_TIMEOUT, &SCHEMA)?;
        Ok(SqliteRevocations {
            path,
            db: Mutex::new(db),
            seen_now: AtomicU64::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unavailable(&self, e: rusqlite::Error) -> RevocationError {
        RevocationError::Unavailable(format!("{}: {e}", self.path.display()))
    }
}

impl RevocationStore for SqliteRevocations {
    fn revoke(&self, id: &str, now_ms: u64, until_ms: u64) -> Result<(), RevocationError> {
        self.seen_now.fetch_max(now_ms, Ordering::Relaxed);
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.prepare_cached(UPSERT)
            .and_then(|mut s| s.execute(rusqlite::params![id, to_sql(until_ms)]))
            .map_err(|e| self.unavailable(e))?;
        // Best effort: a failed prune leaves rows that no longer count.
        let now = self.seen_now.load(Ordering::Relaxed);
        let _ = db
            .prepare_cached(PRUNE)
            .and_then(|mut s| s.execute([to_sql(now)]));
        Ok(())
    }

    fn is_revoked(&self, id: &str, now_ms: u64) -> Result<bool, RevocationError> {
        self.seen_now.fetch_max(now_ms, Ordering::Relaxed);
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let mut select = db.prepare_cached(SELECT).map_err(|e| self.unavailable(e))?;
        select
            .exists(rusqlite::params![id, to_sql(now_ms)])
            .map_err(|e| self.unavailable(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteRevocations::open(dir.path()).unwrap());
        // The suite's ids are its own: one file serves every case.
        toolgate_revocations::suite::run(&|| Box::new(Shared(store.clone())));
    }

    #[test]
    fn another_process_sees_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let one = SqliteRevocations::open(dir.path()).unwrap();
        let other = SqliteRevocations::open(dir.path()).unwrap();
        one.revoke("s1", 1_000, 10_000).unwrap();
        assert_eq!(other.is_revoked("s1", 5_000), Ok(true));
        assert_eq!(other.is_revoked("s1", 10_000), Ok(false));
    }

    #[test]
    fn an_unreadable_file_is_unavailable_not_unrevoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteRevocations::open(dir.path()).unwrap();
        store
            .db
            .lock()
            .unwrap()
            .execute_batch("DROP TABLE revocations")
            .unwrap();
        assert!(matches!(
            store.is_revoked("s1", 1),
            Err(RevocationError::Unavailable(_))
        ));
        assert!(store.revoke("s1", 1, 2).is_err());
    }

    struct Shared(std::sync::Arc<SqliteRevocations>);

    impl RevocationStore for Shared {
        fn revoke(&self, id: &str, now_ms: u64, until_ms: u64) -> Result<(), RevocationError> {
            self.0.revoke(id, now_ms, until_ms)
        }
        fn is_revoked(&self, id: &str, now_ms: u64) -> Result<bool, RevocationError> {
            self.0.is_revoked(id, now_ms)
        }
    }
}
