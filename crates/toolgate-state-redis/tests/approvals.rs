//! RedisApprovals against a real redis-server that each test starts on a
//! free loopback port (and kills when it ends). Without redis-server
//! installed these tests fail, saying to run ./scripts/setup.sh.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use redis::Commands;
use serde_json::json;
use toolgate_approvals::{ApprovalError, ApprovalStore, Decided, NewRequest, Status, Via};
use toolgate_state_redis::server::{free_port, quick_options, unique_prefix, RedisServer};
use toolgate_state_redis::{RedisApprovals, GRACE_MS};

const T0: u64 = 1_700_000_000_000;

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// A prefix no other store in this run uses.
fn prefix() -> String {
    unique_prefix("apr")
}

fn store(server: &RedisServer, prefix: &str) -> RedisApprovals {
    RedisApprovals::connect_with(&server.url(), prefix, quick_options()).expect("store")
}

fn redis(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("a plain connection to the test server")
}

fn new(arguments: serde_json::Value) -> NewRequest {
    NewRequest {
        grant: "alice".into(),
        server: Some("bank".into()),
        tool: "transfer".into(),
        arguments,
        reason: "transfers need approval".into(),
        rule: "tools[\"transfer\"]".into(),
        expires_in_ms: 60_000,
    }
}

fn by(name: &str, reason: Option<&str>) -> Decided {
    Decided {
        by: name.into(),
        via: Via::Cli,
        at_ms: T0 + 1,
        reason: reason.map(str::to_string),
    }
}

#[test]
fn the_redis_approvals_pass_the_suite() {
    let server = server();
    toolgate_approvals::suite::run_all(&|| Arc::new(store(&server, &prefix())));
}

#[test]
fn two_replicas_request_decide_and_consume_once() {
    let server = server();
    let prefix = prefix();
    let a = Arc::new(store(&server, &prefix));
    let b = Arc::new(store(&server, &prefix));

    let r = a
        .request(&new(json!({"amount": 7})), T0)
        .expect("request on a");
    assert_eq!(
        b.request(&new(json!({"amount": 7})), T0 + 1)
            .expect("request on b")
            .id,
        r.id,
        "the same call on another replica is the same request"
    );
    let listed = b.list(true, T0 + 1).expect("list on b");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], r);

    b.decide(&r.id, true, by("carol", Some("fine")), T0 + 2)
        .expect("approve on b");
    assert!(matches!(
        a.decide(&r.id, false, by("dave", None), T0 + 3),
        Err(ApprovalError::AlreadyDecided {
            status: "approved",
            ..
        })
    ));

    // 8 threads on each replica race for the one approval.
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = r.key.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store.consume(&key, T0 + 4).expect("consume").is_some() as usize
            })
        })
        .collect();
    let winners: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(winners, 1, "an approval runs exactly one call");

    let used = a.get(&r.id).expect("get").expect("kept");
    match &used.status {
        Status::Used {
            decided,
            used_at_ms,
        } => {
            assert_eq!(*used_at_ms, T0 + 4);
            assert_eq!(decided.by, "carol");
            assert_eq!(decided.reason.as_deref(), Some("fine"));
        }
        other => panic!("expected used, got {other:?}"),
    }
    assert_ne!(
        b.request(&new(json!({"amount": 7})), T0 + 5).unwrap().id,
        r.id,
        "after use the same call needs a new approval"
    );
}

#[test]
fn arguments_and_reasons_are_kept_exactly() {
    let server = server();
    let store = store(&server, &prefix());
    // Text that looks like the record's own head must not confuse the scripts.
    let arguments = json!({
        "z": [], "a": {}, "float": 0.30000000000000004, "big": u64::MAX,
        "neg": -1.5e300, "text": "quote \" and \\ and \u{1f600} and \u{0}",
        "state": "approved", "decided": null, "used_at_ms": null,
        "nested": [{"expires_ms": 1, "state": "pending"}]
    });
    let r = store.request(&new(arguments.clone()), T0).expect("request");
    let tricky = ",\"used_at_ms\":null,\"request\":{\"id\":\"x\"}";
    store
        .decide(&r.id, true, by("a \"quoted\" person", Some(tricky)), T0 + 1)
        .expect("approve");
    let used = store
        .consume(&r.key, T0 + 2)
        .expect("consume")
        .expect("used");
    assert_eq!(used.arguments, arguments);
    assert_eq!(
        serde_json::to_string(&used.arguments).unwrap(),
        serde_json::to_string(&arguments).unwrap(),
        "key order kept"
    );
    let back = store.get(&r.id).expect("get").expect("kept");
    assert_eq!(back, used);
    match back.status {
        Status::Used { decided, .. } => {
            assert_eq!(decided.by, "a \"quoted\" person");
            assert_eq!(decided.reason.as_deref(), Some(tricky));
        }
        other => panic!("expected used, got {other:?}"),
    }
}

#[test]
fn keys_are_named_under_the_prefix_and_expire_a_day_after_the_request() {
    let server = server();
    let store = store(&server, "tg");
    let r = store.request(&new(json!({"n": 1})), T0).expect("request");
    assert_eq!(store.record_key(&r.id), format!("tg:apr:{}", r.id));
    assert_eq!(store.live_key(&r.key), format!("tg:aprkey:{}", r.key));

    let mut raw = redis(&server);
    let record: String = raw.get(store.record_key(&r.id)).expect("GET record");
    let parsed: serde_json::Value = serde_json::from_str(&record).expect("JSON");
    assert_eq!(parsed["request"]["arguments"], json!({"n": 1}));
    assert_eq!(parsed["state"], "pending");
    let live: String = raw.get(store.live_key(&r.key)).expect("GET live");
    assert_eq!(live, r.id);

    let expected = (60_000 + GRACE_MS) as i64;
    for key in [
        store.record_key(&r.id),
        store.live_key(&r.key),
        "tg:aprs".into(),
    ] {
        let ttl: i64 = raw.pttl(&key).expect("PTTL");
        assert!(
            ttl > expected - 5_000 && ttl <= expected,
            "{key}: PTTL {ttl}, expected about {expected}"
        );
    }

    // A decision keeps the expiry; consumption drops the live key.
    store.decide(&r.id, true, by("c", None), T0 + 1).unwrap();
    let ttl: i64 = raw.pttl(store.record_key(&r.id)).unwrap();
    assert!(ttl > expected - 5_000, "KEEPTTL: {ttl}");
    store.consume(&r.key, T0 + 2).unwrap().expect("used");
    let exists: bool = raw.exists(store.live_key(&r.key)).unwrap();
    assert!(!exists, "no live request after use");
}

#[test]
fn records_gone_from_redis_leave_the_list() {
    let server = server();
    let store = store(&server, &prefix());
    let a = store.request(&new(json!({"n": 1})), T0).unwrap();
    let b = store.request(&new(json!({"n": 2})), T0 + 1).unwrap();
    let mut raw = redis(&server);
    let _: () = raw.del(store.record_key(&a.id)).unwrap();
    let all = store.list(false, T0 + 2).unwrap();
    assert_eq!(all.iter().map(|r| &r.id).collect::<Vec<_>>(), vec![&b.id]);
    assert!(store.get(&a.id).unwrap().is_none());
    // Listing later than a day after expiry drops the rest from the index.
    assert!(store
        .list(false, T0 + 60_002 + GRACE_MS)
        .unwrap()
        .is_empty());
}

#[test]
fn every_operation_is_unavailable_while_redis_is_down_and_works_when_it_is_back() {
    let mut server = server();
    let store = store(&server, &prefix());
    let r = store.request(&new(json!({"n": 1})), T0).unwrap();
    server.stop();

    let unavailable = |result: Result<(), ApprovalError>, what: &str| match result {
        Err(ApprovalError::Unavailable(why)) => {
            assert!(why.contains("redis at 127.0.0.1:"), "{what}: {why}")
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    };
    unavailable(
        store.request(&new(json!({"n": 2})), T0).map(drop),
        "request",
    );
    unavailable(store.get(&r.id).map(drop), "get");
    unavailable(store.list(true, T0).map(drop), "list");
    unavailable(
        store.decide(&r.id, true, by("c", None), T0 + 1).map(drop),
        "decide",
    );
    unavailable(store.consume(&r.key, T0 + 1).map(drop), "consume");

    server.restart().expect("restart");
    let deadline = toolgate_clock::monotonic_now() + Duration::from_secs(5);
    loop {
        match store.request(&new(json!({"n": 3})), T0) {
            Ok(_) => break,
            Err(ApprovalError::Unavailable(why)) => {
                assert!(
                    toolgate_clock::monotonic_now() < deadline,
                    "still down: {why}"
                );
                toolgate_clock::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Nothing was persisted: the restarted server knows no old request.
    assert!(store.get(&r.id).unwrap().is_none());
}

#[test]
fn a_server_that_never_answers_is_unavailable_at_once() {
    let port = free_port().expect("port");
    let store = RedisApprovals::connect(&format!("redis://127.0.0.1:{port}/0"), "t").expect("url");
    assert_eq!(store.address(), format!("127.0.0.1:{port}"));
    let started = toolgate_clock::monotonic_now();
    assert!(matches!(
        store.list(true, T0),
        Err(ApprovalError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(RedisApprovals::connect("http://nope", "t").is_err());
}

#[test]
fn a_flushed_script_cache_is_loaded_again() {
    let server = server();
    let store = store(&server, &prefix());
    let r = store.request(&new(json!({"n": 1})), T0).unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis(&server))
        .unwrap();
    store.decide(&r.id, true, by("c", None), T0 + 1).unwrap();
    assert!(store.consume(&r.key, T0 + 2).unwrap().is_some());
}
