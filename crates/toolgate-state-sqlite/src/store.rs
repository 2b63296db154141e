//! [`SqliteStore`]: the [`CounterStore`] over one SQLite connection.
//!
//! Every durable step (an acquire that is not paid from a slice, a release)
//! is one `BEGIN IMMEDIATE` transaction: it takes the database's write lock
//! first, then reads the logs of the call's keys, decides, and writes them
//! back, so no other connection (in this process or another) can change a
//! log between the check and the update. Limits with a large remaining
//! budget are leased ([`toolgate_policy::lease`]): the transaction that
//! admits a call also takes a slice, committed before any of it is spent,
//! and the calls after it are admitted from the slice in memory, under the
//! same lock as the connection.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::db::{self, to_sql};
use crate::StateError;
use rusqlite::{params, Connection, OptionalExtension};
use toolgate_policy::lease::{self, Lease, Leases};
use toolgate_policy::window::{Malformed, Window};
use toolgate_policy::{
    check_draws, CounterStore, Draw, Exhausted, FailMode, Grant, Millis, Refusal, Taken,
};

/// The database file inside the data directory.
pub const DB_FILE: &str = "counters.db";

/// Acquires between two sweeps of rows whose logs have emptied.
const SWEEP_EVERY: u32 = 8192;

const SELECT_LOG: &str = "SELECT rowid, log FROM counters WHERE key = ?1";
const SELECT_LOG_WINDOW: &str = "SELECT rowid, log, window_ms FROM counters WHERE key = ?1";
const UPDATE_LOG: &str =
    "UPDATE counters SET window_ms = ?2, empty_at = ?3, log = ?4 WHERE rowid = ?1";
const INSERT_LOG: &str =
    "INSERT INTO counters (key, window_ms, empty_at, log) VALUES (?1, ?2, ?3, ?4)";
const DELETE_ROW: &str = "DELETE FROM counters WHERE rowid = ?1";
const SWEEP: &str = "DELETE FROM counters WHERE empty_at <= ?1";

/// How a store is opened; [`SqliteStore::open`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// What an acquire does when the database fails.
    pub fail: FailMode,
    /// How long a transaction waits for another connection's write lock
    /// before the database counts as failed (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fail: FailMode::Closed,
            busy_timeout: db::BUSY_TIMEOUT,
        }
    }
}

/// Counter store in `counters.db` of a data directory, shared by every
/// process that opens the same directory. See the crate docs for what it
/// guarantees.
pub struct SqliteStore {
    path: PathBuf,
    fail: FailMode,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("fail", &self.fail)
            .finish_non_exhaustive()
    }
}

struct Conn {
    db: Connection,
    since_sweep: u32,
    /// Reused buffer for encoding logs.
    scratch: Vec<u8>,
    /// Slices taken by this store and not spent yet.
    leases: Leases,
}

/// Why a transaction failed.
enum Failure {
    Sql(rusqlite::Error),
    Malformed { key: String, bytes: usize },
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sql(e)
    }
}

impl Failure {
    fn into_error(self, path: &Path) -> StateError {
        let path = path.to_path_buf();
        match self {
            Failure::Sql(source) => StateError::Sql { path, source },
            Failure::Malformed { key, bytes } => StateError::Malformed { path, key, bytes },
        }
    }
}

/// A key's log as read in this transaction.
struct Loaded<'a> {
    key: &'a str,
    rowid: Option<i64>,
    log: Window,
}

/// What a committed acquire changes in memory: the grant's draws taken in
/// the transaction (`None` for those paid from a slice), the keys whose
/// slices it gave back, and the slices it took.
struct Plan<'a> {
    taken: Vec<Option<Taken>>,
    returned: Vec<&'a str>,
    slices: Vec<(&'a str, Lease)>,
}

impl SqliteStore {
    /// Opens the store in `dir`, creating the directory and `counters.db`
    /// when they do not exist yet.
    pub fn open(dir: &Path, fail: FailMode) -> Result<SqliteStore, StateError> {
        SqliteStore::open_with(
            dir,
            Options {
                fail,
                ..Options::default()
            },
        )
    }

    /// [`SqliteStore::open`] with every option.
    pub fn open_with(dir: &Path, options: Options) -> Result<SqliteStore, StateError> {
        let (path, db) = db::open_in(dir, DB_FILE, options.busy_timeout, &db::COUNTERS)?;
        Ok(SqliteStore {
            path,
            fail: options.fail,
            conn: Mutex::new(Conn {
                db,
                since_sweep: 0,
                scratch: Vec::new(),
                leases: Leases::new(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Units currently counted for `key` at `now` (0 when unknown), with the
    /// window length the key was last drawn with.
    pub fn used(&self, key: &str, now: Millis) -> Result<f64, StateError> {
        let mut conn = self.lock();
        conn.used(key, now).map_err(|f| f.into_error(&self.path))
    }

    /// Deletes the rows of keys whose logs have emptied by `now`; how many.
    /// Acquires do this by themselves every few thousand calls.
    pub fn sweep(&self, now: Millis) -> Result<usize, StateError> {
        let mut conn = self.lock();
        conn.since_sweep = 0;
        conn.sweep(now).map_err(|f| f.into_error(&self.path))
    }

    /// Number of counter keys held (including ones not yet swept).
    pub fn key_count(&self) -> Result<usize, StateError> {
        let conn = self.lock();
        conn.db
            .query_row("SELECT count(*) FROM counters", [], |row| row.get(0))
            .map_err(|source| StateError::Sql {
                path: self.path.clone(),
                source,
            })
    }

    /// Gives the unspent units of this store's slices back to the durable
    /// logs (dropping the store does it too), so other processes can use
    /// them.
    pub fn give_back_slices(&self) -> Result<(), StateError> {
        let mut conn = self.lock();
        if conn.leases.is_empty() {
            return Ok(());
        }
        conn.transaction(|conn| conn.give_back_slices())
            .map_err(|f| f.into_error(&self.path))?;
        conn.leases = Leases::new();
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while the lock was held may have left a transaction open:
        // `Conn::transaction` rolls it back before starting the next one.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable(&self, failure: Failure) -> Result<Grant, Refusal> {
        match self.fail {
            FailMode::Closed => Err(Refusal::Unavailable(
                failure.into_error(&self.path).to_string(),
            )),
            FailMode::Open => Ok(Grant::default()),
        }
    }
}

impl CounterStore for SqliteStore {
    fn acquire(&self, draws: &[Draw], now: Millis) -> Result<Grant, Refusal> {
        if draws.is_empty() {
            return Ok(Grant::default());
        }
        let mut conn = self.lock();
        conn.since_sweep += 1;
        if conn.since_sweep >= SWEEP_EVERY {
            conn.since_sweep = 0;
            // A failure here shows again in the next transaction.
            let _ = conn.sweep(now);
        }
        if let Some(grant) = conn.leases.spend(draws, now) {
            return Ok(grant);
        }
        match conn.transaction(|conn| conn.acquire(draws, now)) {
            Ok(Ok(plan)) => Ok(conn.apply(draws, now, plan)),
            Ok(Err(exhausted)) => Err(Refusal::Exhausted(exhausted)),
            Err(failure) => {
                drop(conn);
                self.unavailable(failure)
            }
        }
    }

    fn release(&self, grant: &Grant) {
        if grant.taken.is_empty() {
            return;
        }
        // Best effort: when the database fails the quota stays taken.
        let _ = self.lock().transaction(|conn| conn.release(grant));
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Best effort: what is not given back stays counted until it expires.
        let _ = self.give_back_slices();
    }
}

impl Conn {
    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: committed when it
    /// returns `Ok`, rolled back otherwise.
    fn transaction<T>(
        &mut self,
        body: impl FnOnce(&mut Conn) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        if !self.db.is_autocommit() {
            // Left open by a panic in an earlier call.
            self.db.execute_batch("ROLLBACK")?;
        }
        self.db.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let done = body(self).and_then(|value| {
            self.db.prepare_cached("COMMIT")?.execute([])?;
            Ok(value)
        });
        if done.is_err() && !self.db.is_autocommit() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
        done
    }

    fn sweep(&mut self, now: Millis) -> Result<usize, Failure> {
        self.transaction(|conn| Ok(conn.db.prepare_cached(SWEEP)?.execute([to_sql(now)])?))
    }

    /// The row of `key`: its rowid and its log, read with window length
    /// `window`, or with the length it was last drawn with (`None`).
    fn row(&mut self, key: &str, window: Option<u64>) -> Result<Option<(i64, Window)>, Failure> {
        let sql = if window.is_some() {
            SELECT_LOG
        } else {
            SELECT_LOG_WINDOW
        };
        let found = self
            .db
            .prepare_cached(sql)?
            .query_row([key], |row| {
                let length = match window {
                    Some(length) => length,
                    None => u64::try_from(row.get::<_, i64>(2)?).unwrap_or(1),
                };
                let rowid: i64 = row.get(0)?;
                let bytes = row.get_ref(1)?.as_blob()?;
                Ok((rowid, Window::decode(bytes, length)))
            })
            .optional()?;
        match found {
            None => Ok(None),
            Some((rowid, Ok(log))) => Ok(Some((rowid, log))),
            Some((_, Err(Malformed(bytes)))) => Err(Failure::Malformed {
                key: key.to_string(),
                bytes,
            }),
        }
    }

    fn load<'a>(&mut self, key: &'a str, window: u64) -> Result<Loaded<'a>, Failure> {
        Ok(match self.row(key, Some(window))? {
            None => Loaded {
                key,
                rowid: None,
                log: Window::new(window),
            },
            Some((rowid, log)) => Loaded {
                key,
                rowid: Some(rowid),
                log,
            },
        })
    }

    fn save(&mut self, loaded: &Loaded<'_>) -> Result<(), Failure> {
        let log = &loaded.log;
        match loaded.rowid {
            Some(rowid) if log.is_empty() => {
                self.db.prepare_cached(DELETE_ROW)?.execute([rowid])?;
            }
            None if log.is_empty() => {}
            rowid => {
                log.encode(&mut self.scratch);
                let window = to_sql(log.length());
                let empty_at = to_sql(log.empty_at());
                match rowid {
                    Some(rowid) => self.db.prepare_cached(UPDATE_LOG)?.execute(params![
                        rowid,
                        window,
                        empty_at,
                        &self.scratch[..]
                    ])?,
                    None => self.db.prepare_cached(INSERT_LOG)?.execute(params![
                        loaded.key,
                        window,
                        empty_at,
                        &self.scratch[..]
                    ])?,
                };
            }
        }
        Ok(())
    }

    /// The all-or-nothing step, inside a transaction. Keys whose slices pay
    /// for their draws are not read; every other key's slice, if any, is
    /// given back, and a new one taken where the limit has room for it.
    fn acquire<'a>(
        &mut self,
        draws: &'a [Draw],
        now: Millis,
    ) -> Result<Result<Plan<'a>, Exhausted>, Failure> {
        let mut logs: Vec<Loaded<'a>> = Vec::with_capacity(draws.len());
        for draw in draws {
            if logs.iter().any(|l| l.key == draw.key) || self.leases.covers(draws, draw, now) {
                continue;
            }
            let mut loaded = self.load(&draw.key, draw.window)?;
            if let Some(held) = self.leases.get(&draw.key) {
                loaded.log.give_back_unspent(held.start, held.left);
            }
            logs.push(loaded);
        }

        // Check every draw; none is taken unless all fit.
        let checked = check_draws(draws, |draw, extra| {
            match logs.iter_mut().find(|l| l.key == draw.key) {
                Some(loaded) => {
                    let log = &mut loaded.log;
                    log.set_length(draw.window);
                    log.expire(now);
                    (log.room(now, extra, draw.cost, draw.max), log.used())
                }
                // Paid from a slice that covers every draw on its key.
                None => (toolgate_policy::window::Room::Fits, 0.0),
            }
        });
        if let Err(exhausted) = checked {
            // Nothing is written: expired entries go with the next admission.
            return Ok(Err(exhausted));
        }

        let mut taken = Vec::with_capacity(draws.len());
        for draw in draws {
            taken.push(logs.iter_mut().find(|l| l.key == draw.key).map(|loaded| {
                loaded.log.take(now, draw.cost);
                Taken::new(draw, now, loaded.log.used())
            }));
        }
        let mut slices = Vec::new();
        let leases = lease::call_leases(draws);
        for loaded in logs.iter_mut().filter(|_| leases) {
            if let Some(draw) = draws.iter().find(|d| d.key == loaded.key) {
                let units = lease::slice(draw.max, loaded.log.used());
                if units > 0.0 {
                    let slice = Lease::new(draw, now, units, loaded.log.used() + units);
                    loaded.log.take_until(now, slice.end, units);
                    slices.push((loaded.key, slice));
                }
            }
        }
        for loaded in &logs {
            self.save(loaded)?;
        }
        Ok(Ok(Plan {
            taken,
            returned: logs.iter().map(|l| l.key).collect(),
            slices,
        }))
    }

    /// After the commit of `plan`: the slices given back and taken, and the
    /// grant, the draws paid from slices spent now.
    fn apply(&mut self, draws: &[Draw], now: Millis, plan: Plan<'_>) -> Grant {
        for key in plan.returned {
            self.leases.remove(key);
        }
        for (key, slice) in plan.slices {
            self.leases.insert(key, slice);
        }
        let taken = draws
            .iter()
            .zip(plan.taken)
            .map(|(draw, taken)| taken.unwrap_or_else(|| self.leases.spend_one(draw, now)))
            .collect();
        Grant { taken }
    }

    /// Gives every slice's unspent units back, inside a transaction.
    fn give_back_slices(&mut self) -> Result<(), Failure> {
        let held: Vec<(String, Lease)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.left > 0.0)
            .map(|(k, l)| (k.to_string(), l.clone()))
            .collect();
        for (key, slice) in &held {
            let mut loaded = self.load(key, slice.window)?;
            if loaded.rowid.is_some() && loaded.log.give_back_unspent(slice.start, slice.left) {
                self.save(&loaded)?;
            }
        }
        Ok(())
    }

    /// Gives back what a grant took, inside a transaction.
    fn release(&mut self, grant: &Grant) -> Result<(), Failure> {
        for taken in &grant.taken {
            let mut loaded = self.load(&taken.key, taken.window)?;
            if loaded.rowid.is_some() && loaded.log.give_back(taken.at, taken.cost) {
                self.save(&loaded)?;
            }
        }
        Ok(())
    }

    fn used(&mut self, key: &str, now: Millis) -> Result<f64, Failure> {
        Ok(self.row(key, None)?.map_or(0.0, |(_, mut log)| {
            log.expire(now);
            log.used()
        }))
    }
}
