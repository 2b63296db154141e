//! The embedded approval store against the shared behavioural suite, across
//! restarts and several processes, and when its database fails.
//!
//! Tests that need other processes re-run this test binary with
//! `TOOLGATE_APPROVALS_CHILD` set to a role; the test named in the command
//! line then plays that role instead of its own (see `common`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{say, wait_for_file, ChildTest, Roles};
use serde_json::json;
use toolgate_approvals::{
    ApprovalError, ApprovalRequest, ApprovalStore, Decided, NewRequest, Status, Via,
};
use toolgate_state_sqlite::{SqliteApprovals, StateError, APPROVALS_DB_FILE, RETENTION_MS};

const T0: u64 = 1_700_000_000_000;
const ROLES: Roles = Roles {
    role: "TOOLGATE_APPROVALS_CHILD",
    dir: "TOOLGATE_APPROVALS_DIR",
};

/// A store in a temporary directory that goes when the store does.
struct InTempDir {
    store: SqliteApprovals,
    _dir: tempfile::TempDir,
}

impl ApprovalStore for InTempDir {
    fn request(&self, new: &NewRequest, now: u64) -> Result<ApprovalRequest, ApprovalError> {
        self.store.request(new, now)
    }
    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalError> {
        self.store.get(id)
    }
    fn list(&self, pending_only: bool, now: u64) -> Result<Vec<ApprovalRequest>, ApprovalError> {
        self.store.list(pending_only, now)
    }
    fn decide(
        &self,
        id: &str,
        approve: bool,
        decided: Decided,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        self.store.decide(id, approve, decided, now)
    }
    fn consume(&self, key: &str, now: u64) -> Result<Option<ApprovalRequest>, ApprovalError> {
        self.store.consume(key, now)
    }
}

fn new(tool: &str, arguments: serde_json::Value) -> NewRequest {
    NewRequest {
        grant: "alice".into(),
        server: Some("bank".into()),
        tool: tool.into(),
        arguments,
        reason: "transfers need approval".into(),
        rule: "tools[\"transfer\"]".into(),
        expires_in_ms: 60_000,
    }
}

fn by(name: &str) -> Decided {
    Decided {
        by: name.into(),
        via: Via::Cli,
        at_ms: T0 + 1,
        reason: Some("ok".into()),
    }
}

// ---- child processes ------------------------------------------------------

// ---- the shared suite -----------------------------------------------------

#[test]
fn the_sqlite_approvals_pass_the_suite() {
    toolgate_approvals::suite::run_all(&|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteApprovals::open(dir.path()).expect("open the store");
        Arc::new(InTempDir { store, _dir: dir })
    });
}

// ---- restarts and several processes --------------------------------------

#[test]
fn a_request_made_decided_and_consumed_by_three_processes_runs_once() {
    if let Some((role, dir)) = ROLES.child() {
        let store = SqliteApprovals::open(&dir).expect("child opens");
        let call = new("transfer", json!({"amount": 100, "to": "bob"}));
        match role.as_str() {
            "request" => {
                let r = store.request(&call, T0).expect("request");
                say(&format!("{} {}", r.id, r.key));
            }
            role if role.starts_with("approve ") => {
                let id = &role["approve ".len()..];
                let r = store.decide(id, true, by("carol"), T0 + 1).expect("decide");
                say(r.status.name());
            }
            role if role.starts_with("consume ") => {
                let key = &role["consume ".len()..];
                say("ready");
                wait_for_file(&dir.join("go"));
                let won = store.consume(key, T0 + 2).expect("consume").is_some();
                say(if won { "consumed" } else { "nothing" });
            }
            other => panic!("unknown role {other:?}"),
        }
        return;
    }

    const TEST: &str = "a_request_made_decided_and_consumed_by_three_processes_runs_once";
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");

    // A gateway process makes the request...
    let mut requester = ROLES.spawn(TEST, "request", &data);
    let said = requester.says();
    requester.succeeds();
    let (id, key) = said.split_once(' ').expect("id and key");
    let (id, key) = (id.to_string(), key.to_string());

    // ...this process sees it pending, and the same call again is the same
    // request...
    let store = SqliteApprovals::open(&data).expect("open");
    let pending = store.list(true, T0 + 1).expect("list");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    let again = store
        .request(
            &new("transfer", json!({"to": "bob", "amount": 100})),
            T0 + 1,
        )
        .expect("request again");
    assert_eq!(again.id, id, "the same call from another process");

    // ...`toolgate approvals approve` in another process decides it...
    let mut approver = ROLES.spawn(TEST, &format!("approve {id}"), &data);
    assert_eq!(approver.says(), "approved");
    approver.succeeds();
    assert!(matches!(
        store.get(&id).expect("get"),
        Some(ApprovalRequest { status: Status::Approved(ref d), .. }) if d.by == "carol"
    ));

    // ...and four gateway processes race to run the call: one does.
    let mut racers: Vec<ChildTest> = (0..4)
        .map(|_| ROLES.spawn(TEST, &format!("consume {key}"), &data))
        .collect();
    for racer in &mut racers {
        assert_eq!(racer.says(), "ready");
    }
    std::fs::write(data.join("go"), b"").expect("say go");
    let mut consumed = 0;
    for racer in &mut racers {
        match racer.says().as_str() {
            "consumed" => consumed += 1,
            "nothing" => {}
            other => panic!("unexpected report {other:?}"),
        }
    }
    for racer in racers {
        racer.succeeds();
    }
    assert_eq!(consumed, 1, "an approval runs exactly one call");
    let used = store.get(&id).expect("get").expect("kept");
    assert!(matches!(used.status, Status::Used { used_at_ms, .. } if used_at_ms == T0 + 2));
    assert!(store.consume(&key, T0 + 3).expect("consume").is_none());
}

#[test]
fn requests_and_decisions_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteApprovals::open(dir.path()).expect("open");
    let r = store
        .request(&new("transfer", json!({"amount": 1})), T0)
        .expect("request");
    store
        .decide(&r.id, false, by("dave"), T0 + 1)
        .expect("deny");
    drop(store);

    let store = SqliteApprovals::open(dir.path()).expect("reopen");
    let back = store.get(&r.id).expect("get").expect("kept");
    assert_eq!(back.arguments, json!({"amount": 1}));
    assert!(matches!(back.status, Status::Denied(ref d) if d.by == "dave"));
    assert!(matches!(
        store.decide(&r.id, true, by("erin"), T0 + 2),
        Err(ApprovalError::AlreadyDecided {
            status: "denied",
            ..
        })
    ));
}

#[test]
fn two_stores_on_one_directory_see_each_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = SqliteApprovals::open(dir.path()).expect("open a");
    let b = SqliteApprovals::open(dir.path()).expect("open b");
    let r = a
        .request(&new("transfer", json!({"amount": 2})), T0)
        .expect("request");
    b.decide(&r.id, true, by("carol"), T0 + 1).expect("approve");
    assert!(a.consume(&r.key, T0 + 2).expect("consume").is_some());
    assert!(b.consume(&r.key, T0 + 2).expect("consume").is_none());
}

#[test]
fn arguments_are_kept_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteApprovals::open(dir.path()).expect("open");
    let arguments = json!({
        "z": [], "a": {}, "float": 0.30000000000000004, "big": u64::MAX,
        "text": "quote \" and \\ and \u{1f600}", "status": "approved",
        "nested": [{"b": 1, "a": [null, true]}]
    });
    let r = store
        .request(&new("t", arguments.clone()), T0)
        .expect("request");
    store.decide(&r.id, true, by("c"), T0 + 1).expect("approve");
    let used = store
        .consume(&r.key, T0 + 2)
        .expect("consume")
        .expect("used");
    assert_eq!(used.arguments, arguments);
    assert_eq!(store.get(&r.id).unwrap().unwrap().arguments, arguments);
    assert_eq!(
        serde_json::to_string(&used.arguments).unwrap(),
        serde_json::to_string(&arguments).unwrap(),
        "key order kept"
    );
}

#[test]
fn requests_long_expired_are_pruned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteApprovals::open(dir.path()).expect("open");
    let old = store
        .request(&new("t", json!({"n": 1})), T0)
        .expect("request");
    let later = T0 + 60_000 + RETENTION_MS;
    let fresh = store
        .request(&new("t", json!({"n": 2})), later - 1)
        .expect("request");
    assert!(
        store.get(&old.id).unwrap().is_some(),
        "kept until retention"
    );
    store
        .request(&new("t", json!({"n": 3})), later)
        .expect("request");
    assert!(store.get(&old.id).unwrap().is_none(), "pruned after it");
    assert!(store.get(&fresh.id).unwrap().is_some());
    assert_eq!(store.prune(u64::MAX).expect("prune"), 2);
    assert!(store.list(false, later).unwrap().is_empty());
}

// ---- failures -------------------------------------------------------------

#[test]
fn a_locked_database_is_unavailable_until_it_frees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        SqliteApprovals::open_with(dir.path(), Duration::from_millis(50)).expect("open store");
    let r = store.request(&new("t", json!({})), T0).expect("request");
    let locker =
        rusqlite::Connection::open(dir.path().join(APPROVALS_DB_FILE)).expect("open locker");
    locker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    match store.decide(&r.id, true, by("c"), T0 + 1) {
        Err(ApprovalError::Unavailable(why)) => {
            assert!(why.contains(APPROVALS_DB_FILE), "names the file: {why}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        store.get(&r.id),
        Err(ApprovalError::Unavailable(_))
    ));
    locker.execute_batch("ROLLBACK").expect("unlock");
    assert!(store.decide(&r.id, true, by("c"), T0 + 1).is_ok());
}

#[test]
fn a_corrupted_row_is_unavailable_not_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteApprovals::open(dir.path()).expect("open");
    let r = store.request(&new("t", json!({})), T0).expect("request");
    let db = rusqlite::Connection::open(dir.path().join(APPROVALS_DB_FILE)).expect("open");
    db.execute("UPDATE approvals SET request = 'not json'", [])
        .expect("corrupt");
    assert!(matches!(
        store.get(&r.id),
        Err(ApprovalError::Unavailable(why)) if why.contains("not readable")
    ));
}

#[test]
fn open_refuses_an_approvals_schema_it_does_not_know() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = rusqlite::Connection::open(dir.path().join(APPROVALS_DB_FILE)).expect("create");
    db.execute_batch("PRAGMA user_version = 9")
        .expect("version");
    drop(db);
    let err = SqliteApprovals::open(dir.path()).expect_err("refused");
    assert!(
        matches!(
            err,
            StateError::Schema {
                version: 9,
                known: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(APPROVALS_DB_FILE), "{err}");
}

#[test]
fn the_approvals_file_does_not_disturb_the_counters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let approvals = SqliteApprovals::open(dir.path()).expect("approvals");
    let counters =
        toolgate_state_sqlite::SqliteStore::open(dir.path(), toolgate_policy::FailMode::Closed)
            .expect("counters beside approvals");
    assert_eq!(counters.key_count().expect("count"), 0);
    assert!(approvals.list(false, T0).expect("list").is_empty());
}
