//! The audit store from the outside: append and query, the chain and every
//! kind of tampering it catches, appends from several processes, pruning.
//! Tampering is done as an intruder would: raw SQL on the file.

use rusqlite::Connection;
use serde_json::{json, Value};
use std::path::Path;
use toolgate_audit_store::{
    chain_hash, AuditError, AuditStore, Filter, StoredRecord, DB_FILE, GENESIS_HASH,
};

/// 2026-11-21T23:00:00.000Z
const T0: u64 = 1_795_302_000_000;

fn rfc3339(ms: u64) -> String {
    // Enough for the times these tests use: the same day as T0.
    let into_day = ms - (T0 - 23 * 3_600_000);
    let (h, m, s, milli) = (
        into_day / 3_600_000,
        into_day / 60_000 % 60,
        into_day / 1000 % 60,
        into_day % 1000,
    );
    assert!(h < 24, "test time out of range");
    format!("2026-11-21T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A record shaped like the gateway's.
fn record(at: u64, grant: &str, server: Option<&str>, tool: &str, decision: &str) -> Value {
    // In the gateway's order: `server` after `session`.
    let mut r = json!({
        "time": rfc3339(at),
        "grant": grant,
        "session": "s1",
        "server": server,
        "tool": tool,
        "decision": decision,
        "rule": format!("tools.{tool}"),
        "counters": [],
        "decision_us": 12.5,
        "outcome": if decision == "allow" { "ok" } else { "refused" },
        "args_sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    });
    if server.is_none() {
        r.as_object_mut().unwrap().shift_remove("server");
    }
    r
}

/// Five records, a second apart, from T0 + 1 s.
fn five() -> Vec<Value> {
    vec![
        record(T0 + 1000, "alice", Some("fs"), "read_file", "allow"),
        record(T0 + 2000, "bob", Some("fs"), "write_file", "deny"),
        record(T0 + 3000, "alice", Some("mail"), "send", "rate_limited"),
        record(T0 + 4000, "alice", None, "read_file", "allow"),
        record(T0 + 5000, "bob", Some("mail"), "send", "allow"),
    ]
}

fn store_with(dir: &Path, records: &[Value]) -> AuditStore {
    let mut store = AuditStore::open(dir).unwrap();
    for r in records {
        store.append(r).unwrap();
    }
    store
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(DB_FILE)).unwrap()
}

fn seqs(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn broken_at(result: Result<impl std::fmt::Debug, AuditError>) -> (u64, String) {
    match result {
        Err(AuditError::Broken { seq, why }) => (seq, why),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[test]
fn appends_number_records_from_one_and_query_returns_them_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuditStore::open(dir.path()).unwrap();
    for (i, r) in five().iter().enumerate() {
        assert_eq!(store.append(r).unwrap(), i as u64 + 1);
    }
    assert_eq!(store.append_all(&five()[..2]).unwrap(), 6..8);
    assert_eq!(store.append_all(&[]).unwrap(), 8..8);
    let all = store.query(&Filter::default()).unwrap();
    assert_eq!(seqs(&all), (1..=7).collect::<Vec<_>>());
    assert_eq!(all[0].record, five()[0]);
    assert_eq!(all[0].time_ms, T0 + 1000);
    // The record keeps the gateway's key order.
    let text = all[0].record.to_string();
    assert!(text.starts_with(r#"{"time":"2026-11-21T23:00:01.000Z","grant":"alice""#));
}

#[test]
fn the_chain_links_each_record_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), &five());
    let all = store.query(&Filter::default()).unwrap();
    let mut prev = GENESIS_HASH.to_string();
    for r in &all {
        assert_eq!(r.hash, chain_hash(&prev, &r.record), "record {}", r.seq);
        prev = r.hash.clone();
    }
    let report = store.verify().unwrap();
    assert_eq!(report.records, 5);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(5)));
    assert_eq!(report.pruned_through, 0);
    assert_eq!(report.head_hash, prev);
}

#[test]
fn query_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &five());
    let s = |v: &str| Some(v.to_string());
    let cases: Vec<(Filter, Vec<u64>)> = vec![
        (Filter::default(), vec![1, 2, 3, 4, 5]),
        (
            Filter {
                grant: s("alice"),
                ..Filter::default()
            },
            vec![1, 3, 4],
        ),
        (
            Filter {
                grant: s("carol"),
                ..Filter::default()
            },
            vec![],
        ),
        (
            Filter {
                server: s("mail"),
                ..Filter::default()
            },
            vec![3, 5],
        ),
        (
            Filter {
                tool: s("read_file"),
                ..Filter::default()
            },
            vec![1, 4],
        ),
        (
            Filter {
                decision: s("allow"),
                ..Filter::default()
            },
            vec![1, 4, 5],
        ),
        (
            Filter {
                since: Some(T0 + 3000),
                ..Filter::default()
            },
            vec![3, 4, 5],
        ),
        (
            Filter {
                since: Some(T0 + 3001),
                ..Filter::default()
            },
            vec![4, 5],
        ),
        (
            Filter {
                limit: Some(2),
                ..Filter::default()
            },
            vec![4, 5],
        ),
        (
            Filter {
                limit: Some(0),
                ..Filter::default()
            },
            vec![],
        ),
        (
            Filter {
                limit: Some(99),
                ..Filter::default()
            },
            vec![1, 2, 3, 4, 5],
        ),
        (
            Filter {
                grant: s("alice"),
                decision: s("allow"),
                ..Filter::default()
            },
            vec![1, 4],
        ),
        (
            Filter {
                grant: s("alice"),
                limit: Some(1),
                ..Filter::default()
            },
            vec![4],
        ),
        (
            Filter {
                after: Some(2),
                ..Filter::default()
            },
            vec![3, 4, 5],
        ),
        (
            Filter {
                grant: s("alice"),
                after: Some(3),
                ..Filter::default()
            },
            vec![4],
        ),
        (
            Filter {
                server: s("fs"),
                tool: s("write_file"),
                since: Some(T0),
                ..Filter::default()
            },
            vec![2],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(seqs(&store.query(&filter).unwrap()), expected, "{filter:?}");
    }
}

#[test]
fn append_refuses_records_it_cannot_index_and_appends_none_of_a_bad_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuditStore::open(dir.path()).unwrap();
    let good = record(T0, "g", None, "t", "allow");
    let with = |key: &str, value: Value| {
        let mut r = good.clone();
        r[key] = value;
        r
    };
    let mut no_tool = good.clone();
    no_tool.as_object_mut().unwrap().remove("tool");
    for (bad, why) in [
        (json!([1]), "not a JSON object"),
        (no_tool, "no string \"tool\""),
        (with("grant", json!(7)), "no string \"grant\""),
        (with("time", json!("yesterday")), "not an RFC 3339 time"),
        (with("server", json!(["fs"])), "\"server\" is not a string"),
    ] {
        match store.append_all(&[good.clone(), bad]) {
            Err(AuditError::InvalidRecord(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("expected an invalid record ({why}), got {other:?}"),
        }
    }
    assert_eq!(store.verify().unwrap().records, 0);
    assert_eq!(store.append(&with("server", Value::Null)).unwrap(), 1);
}

#[test]
fn an_empty_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let report = AuditStore::open(dir.path()).unwrap().verify().unwrap();
    assert_eq!(report.records, 0);
    assert_eq!(report.last_seq, None);
    assert_eq!(report.head_hash, GENESIS_HASH);
}

/// Each kind of tampering, done with raw SQL to a store of five records, and
/// the record `verify` must name first.
#[test]
fn verify_names_the_first_record_tampered_with() {
    let cases: &[(&str, &str, u64, &str)] = &[
        (
            "edited record",
            "UPDATE records SET decision = (SELECT id FROM strings WHERE text = 'allow') WHERE seq = 2",
            2,
            "hash does not match",
        ),
        (
            "record no longer JSON",
            "UPDATE records SET raw = '{\"time\"' WHERE seq = 3",
            3,
            "not valid JSON",
        ),
        (
            "edited hash",
            "UPDATE records SET hash = CASE WHEN hash = zeroblob(32) THEN randomblob(32) ELSE zeroblob(32) END WHERE seq = 3",
            3,
            "hash does not match",
        ),
        (
            "edited prev_hash",
            "UPDATE records SET prev_hash = CASE WHEN prev_hash = zeroblob(32) THEN randomblob(32) ELSE zeroblob(32) END WHERE seq = 4",
            4,
            "prev_hash is not the hash of record 3",
        ),
        ("deleted row", "DELETE FROM records WHERE seq = 3", 3, "chain goes from 2 to 4"),
        ("deleted first row", "DELETE FROM records WHERE seq = 1", 1, "first record is 2"),
        ("deleted last row", "DELETE FROM records WHERE seq = 5", 5, "its head is 5"),
        ("deleted every row", "DELETE FROM records", 1, "its head is 5"),
        (
            "edited string",
            "UPDATE strings SET text = 'mallory' WHERE text = 'write_file'",
            2,
            "hash does not match",
        ),
        (
            "edited server column",
            "UPDATE records SET server = NULL WHERE seq = 1",
            1,
            "hash does not match",
        ),
        (
            "deleted string",
            "DELETE FROM strings WHERE text = 'send'",
            3,
            "not in the store",
        ),
        (
            "edited counters",
            "UPDATE records SET counters = 'x' WHERE seq = 4",
            4,
            "counters column",
        ),
        (
            "row added after the head",
            "INSERT INTO records SELECT 6, time_ms, grant, session, server, tool, decision, rule, reason, counters, decision_us, latency, outcome, args, raw, hash, hash FROM records WHERE seq = 5",
            6,
            "beyond the chain's head",
        ),
        (
            "edited head",
            "UPDATE chain SET head_hash = replace(head_hash, substr(head_hash, 1, 1), 'x')",
            5,
            "head hash",
        ),
        ("deleted chain row", "DELETE FROM chain", 1, "head and anchor are missing"),
        (
            "two edits",
            "INSERT INTO strings (text) VALUES ('mallory'); UPDATE records SET grant = (SELECT id FROM strings WHERE text = 'mallory') WHERE seq IN (3, 4)",
            3,
            "hash does not match",
        ),
        (
            "renumbered after a deletion",
            "DELETE FROM records WHERE seq = 2; UPDATE records SET seq = seq - 1 WHERE seq > 2",
            2,
            "prev_hash is not the hash of record 1",
        ),
    ];
    for (name, sql, seq, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(dir.path(), &five());
        store.verify().unwrap();
        raw(dir.path()).execute_batch(sql).unwrap();
        let (got_seq, got_why) = broken_at(store.verify());
        assert_eq!(got_seq, *seq, "{name}: {got_why}");
        assert!(got_why.contains(why), "{name}: {got_why:?} lacks {why:?}");
    }
}

#[test]
fn a_record_rewritten_with_a_fresh_hash_breaks_the_link_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), &five());
    let db = raw(dir.path());
    let prev: String = db
        .query_row(
            "SELECT lower(hex(hash)) FROM records WHERE seq = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut forged = five()[1].clone();
    forged["decision"] = json!("allow");
    forged["outcome"] = json!("ok");
    db.execute(
        "UPDATE records SET decision = (SELECT id FROM strings WHERE text = 'allow'),
           outcome = (SELECT id FROM strings WHERE text = 'ok'), hash = unhex(?1) WHERE seq = 2",
        rusqlite::params![chain_hash(&prev, &forged)],
    )
    .unwrap();
    let (seq, why) = broken_at(store.verify());
    assert_eq!(seq, 3, "{why}");
    assert!(
        why.contains("prev_hash is not the hash of record 2"),
        "{why}"
    );
}

#[test]
fn the_chain_goes_on_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), &five()[..2]));
    let mut store = store_with(dir.path(), &five()[2..]);
    assert_eq!(store.verify().unwrap().records, 5);
    assert_eq!(
        seqs(&store.query(&Filter::default()).unwrap()),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn open_existing_refuses_a_directory_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    match AuditStore::open_existing(&missing) {
        Err(AuditError::Missing { path }) => assert_eq!(path, missing.join(DB_FILE)),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(!missing.exists(), "open_existing made the directory");
    drop(store_with(dir.path(), &five()));
    let mut store = AuditStore::open_existing(dir.path()).unwrap();
    assert_eq!(store.verify().unwrap().records, 5);
}

#[test]
fn a_store_from_a_newer_toolgate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(AuditStore::open(dir.path()).unwrap());
    raw(dir.path())
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    match AuditStore::open(dir.path()) {
        Err(e @ AuditError::NewerSchema { found: 99, .. }) => {
            assert!(e.to_string().contains("schema version 99"), "{e}")
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn the_store_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    drop(AuditStore::open(dir.path()).unwrap());
    let mode: String = raw(dir.path())
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

// ---- several writers ------------------------------------------------------

const CHILD_DIR: &str = "TOOLGATE_AUDIT_TEST_CHILD_DIR";
const CHILD_NAME: &str = "TOOLGATE_AUDIT_TEST_CHILD_NAME";
const PER_WRITER: u64 = 60;

/// Appends `PER_WRITER` records as writer `name`: singly and in batches of three.
fn append_as(dir: &Path, name: &str) {
    let mut store = AuditStore::open(dir).unwrap();
    let mut i = 0;
    while i < PER_WRITER {
        let r = |i: u64| record(T0 + i, name, Some("srv"), &format!("tool{i}"), "allow");
        if i % 4 == 0 {
            store.append_all(&[r(i), r(i + 1), r(i + 2)]).unwrap();
            i += 3;
        } else {
            store.append(&r(i)).unwrap();
            i += 1;
        }
    }
}

/// Not a test on its own: the child process of
/// `appends_from_several_processes_make_one_chain` (does nothing otherwise).
#[test]
fn child_appender() {
    if let (Some(dir), Some(name)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_NAME).ok()) {
        append_as(Path::new(&dir), &name);
    }
}

fn check_writers(dir: &Path, names: &[String]) {
    let mut store = AuditStore::open(dir).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.records, PER_WRITER * names.len() as u64);
    assert_eq!(report.last_seq, Some(report.records));
    for name in names {
        let mine = store
            .query(&Filter {
                grant: Some(name.clone()),
                ..Filter::default()
            })
            .unwrap();
        let tools: Vec<String> = mine
            .iter()
            .map(|r| r.record["tool"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..PER_WRITER).map(|i| format!("tool{i}")).collect();
        assert_eq!(tools, expected, "writer {name}");
    }
}

#[test]
fn appends_from_several_processes_make_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let names: Vec<String> = (0..4).map(|i| format!("proc{i}")).collect();
    // The children start together on a directory with no store yet: they
    // race to make it, too.
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_appender", "--test-threads=1", "--quiet"])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_NAME, name)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child appender failed");
    }
    check_writers(dir.path(), &names);
}

#[test]
fn appends_from_several_threads_make_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..3).map(|i| format!("thread{i}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            let dir = dir.path();
            s.spawn(move || append_as(dir, name));
        }
    });
    check_writers(dir.path(), &names);
}

// ---- pruning ---------------------------------------------------------------

#[test]
fn prune_removes_old_records_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), &five());
    let report = store.prune(T0 + 3000).unwrap();
    assert_eq!((report.removed, report.pruned_through), (2, 2));
    let verified = store.verify().unwrap();
    assert_eq!((verified.records, verified.first_seq), (3, Some(3)));
    assert_eq!(verified.pruned_through, 2);
    assert_eq!(
        seqs(&store.query(&Filter::default()).unwrap()),
        vec![3, 4, 5]
    );
    // Nothing more to prune at the same cut.
    assert_eq!(store.prune(T0 + 3000).unwrap().removed, 0);
    // The chain goes on from its head.
    assert_eq!(
        store
            .append(&record(T0 + 6000, "a", None, "t", "deny"))
            .unwrap(),
        6
    );
    assert_eq!(store.verify().unwrap().records, 4);
    // Pruning everything leaves an empty chain that still verifies, and
    // appending goes on after it.
    let report = store.prune(T0 + 60_000).unwrap();
    assert_eq!((report.removed, report.pruned_through), (4, 6));
    let verified = store.verify().unwrap();
    assert_eq!((verified.records, verified.pruned_through), (0, 6));
    assert_eq!(
        store.append(&record(T0, "a", None, "t", "allow")).unwrap(),
        7
    );
    assert_eq!(store.verify().unwrap().first_seq, Some(7));
}

#[test]
fn prune_stops_at_the_first_record_to_keep() {
    // Times are not always in seq order (several processes); pruning takes
    // only a prefix of the chain, so it leaves no gap.
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(
        dir.path(),
        &[
            record(T0 + 1000, "a", None, "t", "allow"),
            record(T0 + 9000, "a", None, "t", "allow"),
            record(T0 + 2000, "a", None, "t", "allow"),
        ],
    );
    assert_eq!(store.prune(T0 + 5000).unwrap().removed, 1);
    assert_eq!(store.verify().unwrap().first_seq, Some(2));
}

#[test]
fn tampering_after_a_prune_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), &five());
    store.prune(T0 + 3000).unwrap();
    raw(dir.path())
        .execute_batch("DELETE FROM records WHERE seq = 3")
        .unwrap();
    let (seq, why) = broken_at(store.verify());
    assert_eq!(seq, 3, "{why}");
    assert!(why.contains("pruned through 2"), "{why}");

    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), &five());
    store.prune(T0 + 3000).unwrap();
    raw(dir.path())
        .execute_batch("UPDATE chain SET anchor_hash = head_hash")
        .unwrap();
    let (seq, why) = broken_at(store.verify());
    assert_eq!(seq, 3, "{why}");
    assert!(why.contains("anchor"), "{why}");
}

#[test]
fn prune_refuses_a_broken_chain_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(dir.path(), &five());
    raw(dir.path())
        .execute_batch("UPDATE strings SET text = 'eve' WHERE text = 'alice'")
        .unwrap();
    let (seq, _) = broken_at(store.prune(T0 + 60_000));
    assert_eq!(seq, 1);
    let count: i64 = raw(dir.path())
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 5);
}

#[test]
fn a_record_of_another_shape_is_kept_whole_and_its_columns_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut odd = record(T0 + 1000, "alice", Some("fs"), "read_file", "allow");
    odd["args"] = json!({"path": "/etc/hosts"});
    let mut store = store_with(dir.path(), &[odd.clone()]);
    let all = store.query(&Filter::default()).unwrap();
    assert_eq!(all[0].record.to_string(), odd.to_string());
    assert_eq!(store.verify().unwrap().records, 1);
    let kept: Option<String> = raw(dir.path())
        .query_row("SELECT raw FROM records WHERE seq = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept.as_deref(), Some(odd.to_string().as_str()));
    raw(dir.path())
        .execute_batch("INSERT INTO strings (text) VALUES ('deny'); UPDATE records SET decision = (SELECT id FROM strings WHERE text = 'deny')")
        .unwrap();
    let (seq, why) = broken_at(store.verify());
    assert_eq!(seq, 1);
    assert!(why.contains("columns"), "{why}");
}

/// The schema of version 1: each row the record's JSON text, hex hashes.
const SCHEMA_V1: &str = "
CREATE TABLE records (
    seq INTEGER PRIMARY KEY, time TEXT NOT NULL, time_ms INTEGER NOT NULL,
    grant TEXT NOT NULL, server TEXT, tool TEXT NOT NULL, decision TEXT NOT NULL,
    record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX records_time ON records (time_ms);
CREATE TABLE chain (
    id INTEGER PRIMARY KEY CHECK (id = 1), anchor_seq INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL, head_seq INTEGER NOT NULL, head_hash TEXT NOT NULL
);
PRAGMA user_version = 1;
";

/// A store of version 1 holding `records`, written as toolgate wrote it;
/// `edit` is done to it after.
fn store_v1(dir: &Path, records: &[Value], edit: &str) {
    let db = raw(dir);
    db.execute_batch(SCHEMA_V1).unwrap();
    let mut prev = GENESIS_HASH.to_string();
    for (i, r) in records.iter().enumerate() {
        let hash = chain_hash(&prev, r);
        db.execute(
            "INSERT INTO records VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                i as i64 + 1,
                r["time"].as_str(),
                toolgate_audit_store::parse_rfc3339(r["time"].as_str().unwrap()).unwrap() as i64,
                r["grant"].as_str(),
                r["server"].as_str(),
                r["tool"].as_str(),
                r["decision"].as_str(),
                r.to_string(),
                prev,
                hash
            ],
        )
        .unwrap();
        prev = hash;
    }
    db.execute(
        "INSERT INTO chain VALUES (1, 0, ?1, ?2, ?3)",
        rusqlite::params![GENESIS_HASH, records.len() as i64, prev],
    )
    .unwrap();
    db.execute_batch(edit).unwrap();
}

#[test]
fn a_store_of_version_1_is_migrated_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    store_v1(dir.path(), &five(), "");
    let mut store = AuditStore::open_existing(dir.path()).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.records, 5);
    let all = store.query(&Filter::default()).unwrap();
    assert_eq!(
        all.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
        five()
    );
    assert_eq!(store.append(&five()[0]).unwrap(), 6);
    assert_eq!(store.verify().unwrap().records, 6);
    let version: i64 = raw(dir.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[test]
fn a_version_1_store_edited_before_the_migration_still_shows_it() {
    for (edit, seq, why) in [
        (
            "UPDATE records SET record = replace(record, '\"deny\"', '\"allow\"') WHERE seq = 2",
            2,
            "hash does not match",
        ),
        (
            "UPDATE records SET grant = 'carol' WHERE seq = 4",
            4,
            "columns",
        ),
        (
            "DELETE FROM records WHERE seq = 3",
            3,
            "chain goes from 2 to 4",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        store_v1(dir.path(), &five(), edit);
        let mut store = AuditStore::open_existing(dir.path()).unwrap();
        let (got, got_why) = broken_at(store.verify());
        assert_eq!(got, seq, "{edit}: {got_why}");
        assert!(got_why.contains(why), "{edit}: {got_why}");
    }
}
