//! The embedded store against the shared behavioural suite, across
//! restarts, `kill -9` and several processes, and when its database fails.
//!
//! Tests that need other processes re-run this test binary with
//! `TOOLGATE_STATE_SQLITE_CHILD` set to a role; the test named in the command
//! line then plays that role instead of its own (see `common`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{say, wait_for_file, ChildTest, Roles};
use toolgate_policy::{CounterStore, Draw, FailMode, Grant, Millis, Refusal, RuleRef};
use toolgate_state_sqlite::{Options, SqliteStore, StateError, DB_FILE};

const T0: Millis = 1_700_000_000_000;
const MINUTE: u64 = 60_000;
const ROLES: Roles = Roles {
    role: "TOOLGATE_STATE_SQLITE_CHILD",
    dir: "TOOLGATE_STATE_SQLITE_DIR",
};

/// A store in a temporary directory that goes when the store does.
struct InTempDir {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl CounterStore for InTempDir {
    fn acquire(&self, draws: &[Draw], now: Millis) -> Result<Grant, Refusal> {
        self.store.acquire(draws, now)
    }

    fn release(&self, grant: &Grant) {
        self.store.release(grant)
    }
}

fn draw(key: &str, max: f64) -> Draw {
    Draw {
        counter: key.to_string(),
        key: format!("{key}\u{1f}grant\u{1f}g"),
        window: MINUTE,
        max,
        cost: 1.0,
        rule: RuleRef::from_static("tools[\"t\"]"),
    }
}

/// Calls admitted out of `calls`, at `start`, `start + 1`, ...; panics when
/// the store is unavailable.
fn admit_count(store: &SqliteStore, d: &Draw, calls: u64, start: Millis) -> usize {
    (0..calls)
        .filter(
            |i| match store.acquire(std::slice::from_ref(d), start + i) {
                Ok(_) => true,
                Err(Refusal::Exhausted(_)) => false,
                Err(Refusal::Unavailable(why)) => panic!("store unavailable: {why}"),
            },
        )
        .count()
}

// ---- child processes ------------------------------------------------------

// ---- the shared suite -----------------------------------------------------

#[test]
fn the_sqlite_store_passes_the_suite() {
    toolgate_policy::suite::run_all(&|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open the store");
        Arc::new(InTempDir { store, _dir: dir })
    });
}

#[test]
fn stores_on_one_directory_pass_the_shared_suite() {
    toolgate_policy::suite::run_shared(&|n| {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        (0..n)
            .map(|_| {
                let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open");
                Arc::new(Shared {
                    store,
                    _dir: dir.clone(),
                }) as Arc<dyn CounterStore>
            })
            .collect()
    });
}

/// A store on a temporary directory other stores share.
struct Shared {
    store: SqliteStore,
    _dir: Arc<tempfile::TempDir>,
}

impl CounterStore for Shared {
    fn acquire(&self, draws: &[Draw], now: Millis) -> Result<Grant, Refusal> {
        self.store.acquire(draws, now)
    }

    fn release(&self, grant: &Grant) {
        self.store.release(grant)
    }
}

// ---- restart, kill -9, several processes ---------------------------------

/// 100,000 per minute: slices of 24.
const LARGE: f64 = 100_000.0;

#[test]
fn kill_9_keeps_what_was_spent_from_slices() {
    let d = draw("kill9-large", LARGE);
    if let Some((role, dir)) = ROLES.child() {
        assert_eq!(role, "take 60,000 then wait to be killed");
        let store = SqliteStore::open(&dir, FailMode::Closed).expect("child opens");
        assert_eq!(admit_count(&store, &d, 60_000, T0), 60_000);
        say("taken");
        toolgate_clock::sleep(Duration::from_secs(60));
        std::process::exit(3);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = ROLES.spawn(
        "kill_9_keeps_what_was_spent_from_slices",
        "take 60,000 then wait to be killed",
        dir.path(),
    );
    assert_eq!(child.says(), "taken");
    child.process.kill().expect("SIGKILL the child");
    let status = child.process.wait().expect("reap the child");
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open after the kill");
    let used = store.used(&d.key, T0 + 60_000).expect("used");
    assert!(
        (60_000.0..=60_000.0 + LARGE / 4096.0).contains(&used),
        "counted {used}: what was spent, and at most the unspent slice"
    );
    let left = admit_count(&store, &d, 50_000, T0 + 60_000);
    assert!(
        left as f64 <= LARGE - 60_000.0 && left as f64 >= LARGE - used,
        "{left} admitted after the restart"
    );
}

#[test]
fn four_processes_share_a_large_budget_within_one_percent() {
    let d = draw("shared-large", LARGE);
    if let Some((role, dir)) = ROLES.child() {
        assert_eq!(role, "hammer large");
        let store = SqliteStore::open(&dir, FailMode::Closed).expect("child opens");
        say("ready");
        wait_for_file(&dir.join("go"));
        // All in one millisecond: no slice expires, every one is contended.
        let admitted = admit_count_at(&store, &d, 40_000, T0);
        say(&format!("admitted {admitted}"));
        return;
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let total = four_children_admit(
        "four_processes_share_a_large_budget_within_one_percent",
        "hammer large",
        &data,
    );
    assert!(
        total as f64 <= LARGE,
        "{total} admitted: never more than max"
    );
    assert!(
        total as f64 >= LARGE * 0.99,
        "{total} admitted: at most 1% less"
    );
}

/// Four children of `test` playing `role` open `data` (a directory no one
/// has used yet) at once, say "ready", wait for the go, call, and say
/// "admitted N"; the sum of their Ns, once each has exited successfully.
fn four_children_admit(test: &str, role: &str, data: &Path) -> usize {
    std::fs::create_dir(data).expect("data dir");
    let mut children: Vec<ChildTest> = (0..4).map(|_| ROLES.spawn(test, role, data)).collect();
    for child in &mut children {
        assert_eq!(child.says(), "ready");
    }
    std::fs::write(data.join("go"), b"").expect("say go");
    let mut total = 0;
    for child in &mut children {
        let said = child.says();
        total += said
            .strip_prefix("admitted ")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("unexpected child report {said:?}"));
    }
    for child in children {
        child.succeeds();
    }
    total
}

/// Calls admitted out of `calls`, all at `now`.
fn admit_count_at(store: &SqliteStore, d: &Draw, calls: u64, now: Millis) -> usize {
    (0..calls)
        .filter(|_| match store.acquire(std::slice::from_ref(d), now) {
            Ok(_) => true,
            Err(Refusal::Exhausted(_)) => false,
            Err(Refusal::Unavailable(why)) => panic!("store unavailable: {why}"),
        })
        .count()
}

#[test]
fn a_reopened_store_remembers_the_budget_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = draw("restart", 5.0);
    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open");
    assert_eq!(admit_count(&store, &d, 3, T0), 3);
    drop(store);

    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("reopen");
    assert_eq!(store.used(&d.key, T0 + 10).expect("used"), 3.0);
    assert_eq!(admit_count(&store, &d, 5, T0 + 10), 2, "2 of 5 left");
}

#[test]
fn a_grant_taken_before_a_restart_is_released_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = draw("release", 1.0);
    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open");
    let grant = store
        .acquire(std::slice::from_ref(&d), T0)
        .expect("admitted");
    drop(store);

    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("reopen");
    assert_eq!(admit_count(&store, &d, 1, T0 + 1), 0, "the budget is used");
    store.release(&grant);
    assert_eq!(
        admit_count(&store, &d, 1, T0 + 2),
        1,
        "released after restart"
    );
}

#[test]
fn kill_9_keeps_what_was_taken() {
    let d = draw("kill9", 5.0);
    if let Some((role, dir)) = ROLES.child() {
        assert_eq!(role, "take 3 then wait to be killed");
        let store = SqliteStore::open(&dir, FailMode::Closed).expect("child opens");
        assert_eq!(admit_count(&store, &d, 3, T0), 3);
        say("taken 3");
        // Bounded, in case the parent is gone; the parent kills it first.
        toolgate_clock::sleep(Duration::from_secs(60));
        std::process::exit(3);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = ROLES.spawn(
        "kill_9_keeps_what_was_taken",
        "take 3 then wait to be killed",
        dir.path(),
    );
    assert_eq!(child.says(), "taken 3");
    // Child::kill is SIGKILL on Unix.
    child.process.kill().expect("SIGKILL the child");
    let status = child.process.wait().expect("reap the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died of SIGKILL: {status:?}"
    );
    assert!(
        dir.path().join(format!("{DB_FILE}-wal")).exists(),
        "the killed process left its write-ahead log behind"
    );

    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open after the kill");
    assert_eq!(admit_count(&store, &d, 5, T0 + 10), 2, "only 2 of 5 left");
}

#[test]
fn four_processes_share_one_budget_exactly() {
    let d = draw("shared", 50.0);
    if let Some((role, dir)) = ROLES.child() {
        assert_eq!(role, "hammer");
        let store = SqliteStore::open(&dir, FailMode::Closed).expect("child opens");
        say("ready");
        wait_for_file(&dir.join("go"));
        let admitted = admit_count(&store, &d, 200, T0);
        say(&format!("admitted {admitted}"));
        return;
    }

    // The children open a directory no one has used yet, all at once, then
    // start calling together.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let total = four_children_admit("four_processes_share_one_budget_exactly", "hammer", &data);
    assert_eq!(total, 50, "exactly max calls admitted across 4 processes");

    let store = SqliteStore::open(&data, FailMode::Closed).expect("open");
    assert_eq!(store.used(&d.key, T0 + 100).expect("used"), 50.0);
}

#[test]
fn two_stores_on_one_directory_share_one_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = SqliteStore::open(dir.path(), FailMode::Closed).expect("open a");
    let b = SqliteStore::open(dir.path(), FailMode::Closed).expect("open b");
    let d = draw("two", 4.0);
    assert_eq!(admit_count(&a, &d, 3, T0), 3);
    assert_eq!(admit_count(&b, &d, 3, T0 + 3), 1);
    assert_eq!(admit_count(&a, &d, 1, T0 + 6), 0);
}

// ---- housekeeping ---------------------------------------------------------

#[test]
fn rows_of_emptied_logs_are_swept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open");
    for k in 0..10 {
        admit_count(&store, &draw(&format!("sweep{k}"), 1.0), 1, T0 + k);
    }
    assert_eq!(store.key_count().expect("count"), 10);
    assert_eq!(
        store.sweep(T0 + 5 + MINUTE).expect("sweep"),
        6,
        "keys 0..=5"
    );
    assert_eq!(store.key_count().expect("count"), 4);
    assert_eq!(
        store
            .used(&draw("sweep9", 1.0).key, T0 + 5 + MINUTE)
            .expect("used"),
        1.0
    );
}

#[test]
fn acquires_sweep_emptied_rows_by_themselves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open");
    for k in 0..10 {
        admit_count(&store, &draw(&format!("old{k}"), 1.0), 1, T0);
    }
    // 8192 acquires later (the sweep interval), at a time when the old
    // keys' logs have emptied, only the live key is left.
    let live = draw("live", 1e9);
    assert_eq!(admit_count(&store, &live, 8192, T0 + MINUTE), 8192);
    assert_eq!(store.key_count().expect("count"), 1);
}

#[test]
fn a_released_key_whose_log_empties_loses_its_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("open");
    let grant = store.acquire(&[draw("gone", 1.0)], T0).expect("admitted");
    assert_eq!(store.key_count().expect("count"), 1);
    store.release(&grant);
    assert_eq!(store.key_count().expect("count"), 0);
}

// ---- failures -------------------------------------------------------------

/// Opens a store in `dir` (closed), takes one call, closes it, then
/// overwrites every page after the first (the schema) with garbage.
fn corrupt_counter_pages(dir: &Path) {
    let store = SqliteStore::open(dir, FailMode::Closed).expect("open");
    assert_eq!(admit_count(&store, &draw("c", 5.0), 1, T0), 1);
    drop(store); // the last connection checkpoints the WAL into the file
    let path = dir.join(DB_FILE);
    let mut bytes = std::fs::read(&path).expect("read the database");
    let page = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        n => usize::from(n),
    };
    assert!(bytes.len() > page, "the counters live after the first page");
    bytes[page..].fill(0xA5);
    std::fs::write(&path, bytes).expect("corrupt the database");
}

#[test]
fn a_corrupted_database_refuses_as_unavailable_in_closed_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    corrupt_counter_pages(dir.path());
    let store = SqliteStore::open(dir.path(), FailMode::Closed).expect("the schema page is intact");
    match store.acquire(&[draw("c", 5.0)], T0 + 1) {
        Err(Refusal::Unavailable(why)) => {
            assert!(why.contains(DB_FILE), "names the file: {why}");
            assert!(why.contains("malformed"), "says why: {why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn a_corrupted_database_admits_uncounted_in_open_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    corrupt_counter_pages(dir.path());
    let store = SqliteStore::open(dir.path(), FailMode::Open).expect("the schema page is intact");
    for i in 0..10 {
        assert_eq!(
            store.acquire(&[draw("c", 5.0)], T0 + 1 + i),
            Ok(Grant::default()),
            "admitted without counting"
        );
    }
}

/// Another connection holds the write lock longer than the store waits.
fn with_write_lock_held(dir: &Path, check: impl FnOnce()) {
    let holder = rusqlite::Connection::open(dir.join(DB_FILE)).expect("second connection");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    check();
    holder
        .execute_batch("ROLLBACK")
        .expect("give the lock back");
}

#[test]
fn a_locked_database_refuses_as_unavailable_in_closed_mode_until_it_frees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        fail: FailMode::Closed,
        busy_timeout: Duration::from_millis(50),
    };
    let store = SqliteStore::open_with(dir.path(), options).expect("open");
    let d = draw("locked", 5.0);
    with_write_lock_held(dir.path(), || {
        match store.acquire(std::slice::from_ref(&d), T0) {
            Err(Refusal::Unavailable(why)) => assert!(why.contains("locked"), "says why: {why}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    });
    assert_eq!(admit_count(&store, &d, 5, T0 + 1), 5, "nothing was counted");
}

#[test]
fn a_locked_database_admits_uncounted_in_open_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        fail: FailMode::Open,
        busy_timeout: Duration::from_millis(50),
    };
    let store = SqliteStore::open_with(dir.path(), options).expect("open");
    let d = draw("locked", 1.0);
    with_write_lock_held(dir.path(), || {
        for i in 0..3 {
            assert_eq!(
                store.acquire(std::slice::from_ref(&d), T0 + i),
                Ok(Grant::default())
            );
        }
    });
    assert_eq!(
        admit_count(&store, &d, 2, T0 + 10),
        1,
        "nothing was counted"
    );
}

#[test]
fn open_names_a_data_directory_that_cannot_be_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").expect("a file in the way");
    let err = SqliteStore::open(&file.join("state"), FailMode::Closed).expect_err("cannot create");
    assert!(matches!(err, StateError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn open_names_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(DB_FILE), [0xA5; 8192]).expect("garbage");
    let err = SqliteStore::open(dir.path(), FailMode::Closed).expect_err("not a database");
    let message = err.to_string();
    assert!(message.contains(DB_FILE), "{message}");
    assert!(message.contains("not a database"), "{message}");
}

#[test]
fn open_refuses_a_schema_version_it_does_not_know() {
    let dir = tempfile::tempdir().expect("temp dir");
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("create");
    other
        .execute_batch("PRAGMA user_version = 7")
        .expect("set version");
    drop(other);
    let err = SqliteStore::open(dir.path(), FailMode::Closed).expect_err("unknown schema");
    assert!(
        matches!(err, StateError::Schema { version: 7, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(DB_FILE), "{err}");
}
