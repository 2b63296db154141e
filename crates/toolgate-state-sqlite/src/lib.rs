//! toolgate's embedded counter store: the rate-limit counters of every
//! gateway process on one machine, in one SQLite file.
//!
//! [`SqliteStore`] implements [`toolgate_policy::CounterStore`] over
//! `DIR/counters.db`. Every process that opens the same data directory
//! shares the same budgets, and the counts survive a restart.
//!
//! A tour of the crate:
//!
//! - `store`: [`SqliteStore`], one connection behind a mutex; each acquire
//!   not paid from a slice, and each release, is one transaction of
//!   prepared, cached statements.
//! - `db`: opening a file, the connection settings, and the schemas.
//! - `approvals`: [`SqliteApprovals`], the
//!   [`toolgate_approvals::ApprovalStore`] of requests held for a person's
//!   decision, in `DIR/approvals.db` beside the counters: one row per
//!   request, every operation one `BEGIN IMMEDIATE` transaction, so
//!   gateways and `toolgate approvals` in other processes see each other's
//!   requests and decisions, and an approval is consumed exactly once.
//! - `revocations`: [`SqliteRevocations`], the
//!   [`toolgate_revocations::RevocationStore`] of ended sessions in
//!   `DIR/revocations.db` (`DELETE /mcp` on one `toolgate serve` process is
//!   seen by every process sharing the directory).
//! - `pins`: [`SqlitePins`], the [`toolgate_pins::PinStore`] of pinned
//!   tool definitions in `DIR/pins.db`.
//! - `state-bench-sqlite` (a binary, `src/bin/state-bench.rs`): decision
//!   latency and throughput of this store alone.
//!
//! # Invariants
//!
//! - **Atomic across processes.** An acquire checks and updates all of its
//!   draws in one `BEGIN IMMEDIATE` transaction: the write lock is taken
//!   before anything is read, so no connection, in this process or another,
//!   can change a log between the check and the update. Either every draw is
//!   taken or none is. Connections wait for each other up to the busy
//!   timeout (5 s by default, [`Options::busy_timeout`]).
//! - **Budget leasing** ([`toolgate_policy::lease`]). A limit with a large
//!   remaining budget (`max` of 16,384 or more, above the last 1% of it)
//!   is not read per call: the transaction that admits a call also takes a
//!   slice of `max / 4096` units, written to the log as an entry spanning
//!   the next `window / 64` ms, and the calls after it are admitted from the
//!   slice in memory (under the connection's mutex) while it lasts and its
//!   span has not passed. The slice is committed before any of it is spent,
//!   so a `kill -9` loses no admitted call (unspent slices of a killed
//!   process stay counted until they expire); the next transaction on the
//!   key, or dropping the store, gives unspent units back. Limits under
//!   16,384 stay one transaction per call and exact across processes.
//! - **The window guarantee** of the in-memory store: never more than `max`
//!   units admitted in any interval of `window` length. Each key's row holds
//!   the sliding log of [`toolgate_policy::window`], the one
//!   [`toolgate_policy::MemoryStore`] keeps, in its stored form: entries
//!   `(start, end, units)`, where an admission within `window / 64` of the
//!   newest entry's start merges into it (about 65 entries, 1.6 KB, at most
//!   per key), and an entry counts until `end + window`. Expired entries
//!   are dropped when the key is next admitted; rows whose logs have emptied
//!   are swept every few thousand acquires ([`SqliteStore::sweep`]), so the
//!   file follows the number of keys in use, not every key ever seen.
//! - **Fail mode.** When the database cannot be read or written at acquire
//!   time (I/O error, corruption, a lock held past the busy timeout), an
//!   acquire returns [`toolgate_policy::Refusal::Unavailable`] in
//!   [`toolgate_policy::FailMode::Closed`], and admits the call uncounted
//!   (an empty [`toolgate_policy::Grant`]) in `FailMode::Open`. A release
//!   that fails keeps the quota taken. [`SqliteStore::open`] itself fails
//!   with a [`StateError`] naming the path.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous=NORMAL`. A commit appends
//! its pages to `counters.db-wal` with `write()` and does not wait for the
//! disk. When the WAL has grown by 4000 pages (about 4000 acquires: an
//! acquire usually rewrites one page), the committing connection checkpoints: it
//! `fsync`s the WAL, copies it into `counters.db` and `fsync`s that. This is
//! the only disk wait, once per few thousand decisions (it is the `max` in
//! the bench).
//!
//! - A process that exits, panics or is killed (`kill -9`) loses nothing:
//!   every committed acquire is in the operating system's page cache, and
//!   the next process to open the directory reads it from the WAL.
//! - An operating-system crash or power loss can lose the acquires committed
//!   since the last checkpoint (at most about 4000; the kernel usually
//!   writes them back within about 30 s, but nothing waits for that). The
//!   file stays consistent: SQLite rolls the WAL back to its last complete,
//!   synced transaction. What is lost is counted usage, so after such a
//!   crash callers may be admitted again up to what the lost acquires took;
//!   the store never refuses more than it should because of a crash.
//!
//! `synchronous=FULL` would close that gap at the cost of an `fsync` per
//! decision (hundreds of microseconds to milliseconds), which the latency
//! target rules out. `synchronous=OFF` would only skip the checkpoint's
//! `fsync`s (commits do not sync in WAL mode either way) and would let a
//! power loss corrupt the file.
//!
//! The data directory must be on a local file system: WAL's shared-memory
//! index does not work over NFS (opening then fails with
//! [`StateError::NoWal`] or locking errors).

#![forbid(unsafe_code)]

mod approvals;
mod db;
mod pins;
mod revocations;
mod store;

use std::path::PathBuf;

pub use approvals::{SqliteApprovals, APPROVALS_DB_FILE, RETENTION_MS};
pub use pins::{SqlitePins, PINS_DB_FILE};
pub use revocations::{SqliteRevocations, REVOCATIONS_DB_FILE};
pub use store::{Options, SqliteStore, DB_FILE};

/// Why the counter store or the approval store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {}: {source}", path.display())]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state database {}: write-ahead logging is not available (journal mode stays {mode:?}); \
         is the directory on a network file system?",
        path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "state database {}: schema version {version} is not one this toolgate knows ({known})",
        path.display()
    )]
    Schema {
        path: PathBuf,
        version: i64,
        known: i64,
    },
    #[error(
        "state database {}: the log of key {key:?} is {bytes} bytes, not whole entries",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        key: String,
        bytes: usize,
    },
}
