//! The database files: opening a connection, its settings, and the schemas.
//!
//! `counters.db` has one table, one row per counter key:
//!
//! ```sql
//! counters(key TEXT PRIMARY KEY, window_ms INTEGER, empty_at INTEGER, log BLOB)
//! ```
//!
//! `log` is the key's sliding log (`toolgate_policy::window`, in its stored
//! form), `window_ms` the window length it
//! was last used with, and `empty_at` when every entry of the log has
//! expired, after which the row may be swept.
//!
//! `approvals.db` (see `approvals`) has one table, one row per approval
//! request. Each file keeps its own schema version in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::StateError;

/// The schema of one database file, its version kept in `PRAGMA user_version`.
pub(crate) struct Schema {
    pub(crate) version: i64,
    /// Creates the tables (run once, in the transaction that sets the version).
    pub(crate) sql: &'static str,
}

/// The schema of `counters.db`.
pub(crate) const COUNTERS: Schema = Schema {
    version: 1,
    sql: "CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY NOT NULL,
    window_ms INTEGER NOT NULL,
    empty_at INTEGER NOT NULL,
    log BLOB NOT NULL
)",
};

/// WAL frames after which a committing connection checkpoints the log into
/// the database file (the only time a commit waits for the disk, with
/// `synchronous=NORMAL`). An acquire usually adds one frame, so this is
/// about one checkpoint (two `fsync`s, milliseconds) per 4000 decisions,
/// which keeps it out of the p99.9 latency; with SQLite's default of 1000
/// it showed there (about 5 ms). The price: an OS crash can lose up to this
/// many commits (see the crate docs).
const WAL_AUTOCHECKPOINT: i64 = 4000;

/// After a checkpoint the WAL file is truncated back to this size (bytes).
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// How long a connection waits for another's write lock by default.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating the directory and the file if needed) the database
/// `file` in `dir` with [`open`]; its path and the connection.
pub(crate) fn open_in(
    dir: &Path,
    file: &str,
    busy_timeout: Duration,
    schema: &Schema,
) -> Result<(PathBuf, Connection), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(file);
    let db = open(&path, busy_timeout, schema)?;
    Ok((path, db))
}

/// Milliseconds as an SQLite integer (clamped; real times are far below).
pub(crate) fn to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Opens (creating if needed) the database at `path` with the settings every
/// connection uses, and creates or checks the schema.
pub(crate) fn open(
    path: &Path,
    busy_timeout: Duration,
    schema: &Schema,
) -> Result<Connection, StateError> {
    let sql = |source| StateError::Sql {
        path: path.to_path_buf(),
        source,
    };
    let db = Connection::open(path).map_err(sql)?;
    // First, so that opening while another process holds a lock waits.
    db.busy_timeout(busy_timeout).map_err(sql)?;
    let mode: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    db.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL;
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT};
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};"
    ))
    .map_err(sql)?;

    // Create or check the schema in one write transaction, so processes
    // opening a new directory at the same time do it once.
    db.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let checked = (|| {
        let version: i64 = db.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version == 0 {
            db.execute_batch(schema.sql)?;
            db.execute_batch(&format!("PRAGMA user_version = {}", schema.version))?;
        }
        db.execute_batch("COMMIT")?;
        Ok(version)
    })();
    match checked {
        Ok(version) if version == 0 || version == schema.version => Ok(db),
        Ok(version) => Err(StateError::Schema {
            path: path.to_path_buf(),
            version,
            known: schema.version,
        }),
        Err(source) => {
            let _ = db.execute_batch("ROLLBACK");
            Err(sql(source))
        }
    }
}
