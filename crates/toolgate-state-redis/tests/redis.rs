//! RedisStore against a real redis-server that each test starts on a free
//! loopback port (and kills when it ends). Without redis-server installed
//! these tests fail, saying to run ./scripts/setup.sh.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use toolgate_policy::{CounterStore, Draw, FailMode, Grant, MemoryStore, Refusal, RuleRef};
use toolgate_state_redis::server::{free_port, quick_options, unique_prefix, RedisServer};
use toolgate_state_redis::{ConnectionOptions, RedisStore};

const T0: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// A prefix no other store in this run uses.
fn prefix() -> String {
    unique_prefix("test")
}

fn store(server: &RedisServer, prefix: &str, fail: FailMode) -> RedisStore {
    RedisStore::connect_with(&server.url(), prefix, fail, quick_options()).expect("store")
}

fn draw(counter: &str, max: f64, cost: f64, window: u64) -> Draw {
    Draw {
        counter: counter.to_string(),
        key: format!("{counter}\u{1f}grant\u{1f}g"),
        window,
        max,
        cost,
        rule: RuleRef::from_static("tools[\"t\"]"),
    }
}

fn admitted(result: &Result<Grant, Refusal>) -> bool {
    match result {
        Ok(_) => true,
        Err(Refusal::Exhausted(_)) => false,
        Err(Refusal::Unavailable(why)) => panic!("store unavailable: {why}"),
    }
}

fn redis(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("a plain connection to the test server")
}

/// Calls `acquire` until Redis answers again (at most 5 s).
fn until_reachable(store: &RedisStore, d: &[Draw], now: u64) -> Result<Grant, Refusal> {
    let deadline = toolgate_clock::monotonic_now() + Duration::from_secs(5);
    loop {
        match store.acquire(d, now) {
            Err(Refusal::Unavailable(why)) => {
                assert!(
                    toolgate_clock::monotonic_now() < deadline,
                    "still unavailable: {why}"
                );
                toolgate_clock::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[test]
fn the_shared_suite_passes() {
    let server = server();
    let url = server.url();
    toolgate_policy::suite::run_all(&|| {
        Arc::new(RedisStore::connect(&url, &prefix(), FailMode::Closed).expect("store"))
    });
}

#[test]
fn replicas_on_one_server_pass_the_shared_suite() {
    let server = server();
    let url = server.url();
    toolgate_policy::suite::run_shared(&|n| {
        let prefix = prefix();
        (0..n)
            .map(|_| {
                Arc::new(RedisStore::connect(&url, &prefix, FailMode::Closed).expect("store"))
                    as Arc<dyn CounterStore>
            })
            .collect()
    });
}

/// Pseudo-random calls (several draws, repeated keys, fractional and zero
/// costs, releases, a clock that sometimes steps back) give the same answers, used units and retry times as
/// the in-memory store.
#[test]
fn decisions_match_the_memory_store() {
    let server = server();
    let redis_store = store(&server, &prefix(), FailMode::Closed);
    let memory = MemoryStore::new();
    let counters = [
        draw("m1", 5.0, 1.0, 10_000),
        draw("m2", 12.0, 1.0, 3_000),
        draw("m3", 2.0, 1.0, 64_000),
    ];
    let costs = [0.0, 0.5, 1.0, 1.0, 2.0, 3.0];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut now = T0;
    let mut grants: Vec<(Grant, Grant)> = Vec::new();
    let (mut admits, mut refusals, mut releases) = (0, 0, 0);
    for step in 0..1_500 {
        // Now and then the clock steps back a little (another replica's
        // clock, or a clock adjustment).
        if next(25) == 0 {
            now -= next(300);
        } else {
            now += next(700);
        }
        if next(10) == 0 && !grants.is_empty() {
            let (r, m) = grants.swap_remove(next(grants.len() as u64) as usize);
            redis_store.release(&r);
            memory.release(&m);
            releases += 1;
            continue;
        }
        let draws: Vec<Draw> = (0..=next(3))
            .map(|_| {
                let mut d = counters[next(3) as usize].clone();
                d.cost = costs[next(costs.len() as u64) as usize];
                d
            })
            .collect();
        let expected = memory.acquire(&draws, now);
        let actual = redis_store.acquire(&draws, now);
        match (&expected, &actual) {
            (Ok(m), Ok(r)) => {
                assert_eq!(r, m, "step {step}: grants differ for {draws:?}");
                grants.push((r.clone(), m.clone()));
                admits += 1;
            }
            (Err(Refusal::Exhausted(m)), Err(Refusal::Exhausted(r))) => {
                assert_eq!(r, m, "step {step}: refusals differ for {draws:?}");
                refusals += 1;
            }
            _ => panic!("step {step}: memory {expected:?}, redis {actual:?} for {draws:?}"),
        }
    }
    assert!(
        admits > 200 && refusals > 200 && releases > 50,
        "{admits} admits, {refusals} refusals, {releases} releases"
    );
}

#[test]
fn keys_expire_with_their_window() {
    let server = server();
    let store = store(&server, &prefix(), FailMode::Closed);
    let mut redis = redis(&server);
    let d = draw("e", 10.0, 1.0, 2_000);
    assert!(admitted(&store.acquire(std::slice::from_ref(&d), T0)));
    let log = store.log_key(&d.key);
    for key in [log.clone(), format!("{log}:sum")] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut redis).unwrap();
        assert!(ttl > 0 && ttl <= 2_000, "PTTL {key} = {ttl}");
    }

    let short = draw("short", 10.0, 1.0, 100);
    assert!(admitted(&store.acquire(std::slice::from_ref(&short), T0)));
    let log = store.log_key(&short.key);
    toolgate_clock::sleep(Duration::from_millis(300));
    let left: i64 = redis::cmd("EXISTS")
        .arg(&log)
        .arg(format!("{log}:sum"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(left, 0, "both keys are gone once the window has passed");
}

#[test]
fn key_names_are_the_prefix_and_the_escaped_draw_key() {
    let server = server();
    let store = store(&server, "deploy", FailMode::Closed);
    let mut redis = redis(&server);
    let d = draw("send:text", 10.0, 1.0, MINUTE);
    assert!(admitted(&store.acquire(&[d], T0)));
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("deploy:*")
        .query(&mut redis)
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "deploy:c:send%3Atext%1Fgrant%1Fg",
            "deploy:c:send%3Atext%1Fgrant%1Fg:sum"
        ]
    );
}

/// Two stores (two gateway replicas) on one server, 8 threads across
/// both, 100 calls each, against max 30: exactly 30 admitted.
#[test]
fn two_replicas_share_one_budget_exactly() {
    let server = server();
    let prefix = prefix();
    let replicas = [
        Arc::new(store(&server, &prefix, FailMode::Closed)),
        Arc::new(store(&server, &prefix, FailMode::Closed)),
    ];
    let d = Arc::new([
        draw("shared", 30.0, 1.0, MINUTE),
        draw("roomy", 1e6, 1.0, MINUTE),
    ]);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = replicas[(t % 2) as usize].clone();
            let d = d.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .filter(|i| admitted(&store.acquire(&d[..], T0 + t * 100 + i)))
                    .count()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 30, "exactly max calls admitted across both replicas");
    // The refused calls took nothing from the roomy counter either.
    let probe = [draw("roomy", 1e6, 1.0, MINUTE)];
    match replicas[0].acquire(&probe, T0 + 1_000) {
        Ok(grant) => assert_eq!(grant.taken[0].used, 31.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fails_closed_while_redis_is_down_and_recovers_on_restart() {
    let mut server = server();
    let store = store(&server, &prefix(), FailMode::Closed);
    let d = [draw("down", 2.0, 1.0, MINUTE)];
    assert!(admitted(&store.acquire(&d, T0)));

    server.stop();
    let expected = format!("redis at 127.0.0.1:{} unreachable: ", server.port());
    let started = toolgate_clock::monotonic_now();
    for i in 0..20 {
        match store.acquire(&d, T0 + 1 + i) {
            Err(Refusal::Unavailable(why)) => assert!(why.starts_with(&expected), "{why}"),
            other => panic!("call {i} while down: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "20 calls while down took {:?}",
        started.elapsed()
    );

    server.restart().expect("restart on the same port");
    // The same store, not a new one. The restarted server has no data and no
    // scripts: the budget starts afresh and the script is loaded again.
    assert!(admitted(&until_reachable(&store, &d, T0 + 100)));
    assert!(admitted(&store.acquire(&d, T0 + 101)));
    assert!(!admitted(&store.acquire(&d, T0 + 102)), "counting again");
}

#[test]
fn fails_open_while_redis_is_down_and_counts_again_on_restart() {
    let mut server = server();
    let store = store(&server, &prefix(), FailMode::Open);
    let d = [draw("open", 1.0, 1.0, MINUTE)];
    assert!(admitted(&store.acquire(&d, T0)));
    assert!(!admitted(&store.acquire(&d, T0 + 1)));

    server.stop();
    for i in 0..20 {
        match store.acquire(&d, T0 + 2 + i) {
            Ok(grant) => assert!(grant.taken.is_empty(), "admitted uncounted"),
            other => panic!("call {i} while down: {other:?}"),
        }
    }

    server.restart().expect("restart on the same port");
    // Fail open hides the outage, so wait for the counting to come back.
    let deadline = toolgate_clock::monotonic_now() + Duration::from_secs(5);
    loop {
        let grant = store.acquire(&d, T0 + 100).expect("fail open admits");
        if !grant.taken.is_empty() {
            break;
        }
        assert!(
            toolgate_clock::monotonic_now() < deadline,
            "never counted again"
        );
        toolgate_clock::sleep(Duration::from_millis(20));
    }
    assert!(!admitted(&store.acquire(&d, T0 + 101)), "counting again");
}

#[test]
fn a_server_that_is_not_up_yet_is_used_once_it_is() {
    let port = free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}/0");
    let store = RedisStore::connect_with(&url, &prefix(), FailMode::Closed, quick_options())
        .expect("an unreachable server is not an error");
    let d = [draw("late", 1.0, 1.0, MINUTE)];
    match store.acquire(&d, T0) {
        Err(Refusal::Unavailable(why)) => {
            assert!(why.starts_with(&format!("redis at 127.0.0.1:{port} unreachable: ")))
        }
        other => panic!("{other:?}"),
    }
    let _server = RedisServer::start_on(port).unwrap_or_else(|e| panic!("{e}"));
    assert!(admitted(&until_reachable(&store, &d, T0 + 1)));
    assert!(!admitted(&store.acquire(&d, T0 + 2)));
}

/// A server that accepts connections but never answers: the first call
/// waits at most about the connect timeout, the calls during the cooldown
/// not at all.
#[test]
fn waits_are_bounded_when_redis_does_not_answer() {
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let options = ConnectionOptions {
        connect_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(200),
        cooldown: Duration::from_secs(30),
    };
    let store = RedisStore::connect_with(&url, &prefix(), FailMode::Closed, options).unwrap();
    let d = [draw("silent", 1.0, 1.0, MINUTE)];
    let started = toolgate_clock::monotonic_now();
    match store.acquire(&d, T0) {
        Err(Refusal::Unavailable(why)) => assert!(why.contains("unreachable"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "first call took {:?}",
        started.elapsed()
    );
    for i in 0..20 {
        let started = toolgate_clock::monotonic_now();
        assert!(matches!(
            store.acquire(&d, T0 + i),
            Err(Refusal::Unavailable(_))
        ));
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "call {i} in the cooldown took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_flushed_script_cache_is_loaded_again() {
    let server = server();
    let store = store(&server, &prefix(), FailMode::Closed);
    let d = [draw("flush", 2.0, 1.0, MINUTE)];
    assert!(admitted(&store.acquire(&d, T0)));
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis(&server))
        .unwrap();
    match store.acquire(&d, T0 + 1) {
        Ok(grant) => assert_eq!(grant.taken[0].used, 2.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn release_gives_back_only_what_is_still_in_the_window() {
    let server = server();
    let store = store(&server, &prefix(), FailMode::Closed);
    let d = [draw("rel", 2.0, 1.0, 1_000)];
    let old = store.acquire(&d, T0).unwrap();
    let _recent = store.acquire(&d, T0 + 500).unwrap();
    let _ = store.acquire(&d, T0 + 1_000).unwrap(); // the first has expired
    store.release(&old); // its entry is gone: nothing to give back
    assert!(
        !admitted(&store.acquire(&d, T0 + 1_001)),
        "still 2 in the window"
    );
}

async fn admitted_async(store: Arc<RedisStore>, calls: u64) -> usize {
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let d = vec![draw("async", 30.0, 1.0, MINUTE)];
                admitted(&store.acquire_async(d, T0 + i).await)
            })
        })
        .collect();
    let mut count = 0;
    for task in tasks {
        count += usize::from(task.await.unwrap());
    }
    count
}

#[tokio::test(flavor = "current_thread")]
async fn acquire_async_on_a_current_thread_runtime() {
    let server = server();
    let store = Arc::new(store(&server, &prefix(), FailMode::Closed));
    assert_eq!(admitted_async(store.clone(), 200).await, 30);

    // A release on a runtime does not block; later calls see it.
    let d = vec![draw("async-release", 1.0, 1.0, MINUTE)];
    let grant = store.acquire_async(d.clone(), T0).await.unwrap();
    store.release(&grant);
    assert!(admitted(&store.acquire_async(d, T0 + 1).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_async_on_a_multi_thread_runtime() {
    let server = server();
    let store = Arc::new(store(&server, &prefix(), FailMode::Closed));
    assert_eq!(admitted_async(store, 200).await, 30);
}

/// While a decision waits on Redis, the caller's runtime runs other tasks
/// (here a timer, on a single-threaded runtime, while the store waits for
/// a server that never answers).
#[tokio::test(flavor = "current_thread")]
async fn acquire_async_does_not_block_the_runtime() {
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let store = RedisStore::connect(&url, &prefix(), FailMode::Closed).unwrap();
    let started = toolgate_clock::monotonic_now();
    let tick = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        started.elapsed()
    };
    let d = vec![draw("blocked", 1.0, 1.0, MINUTE)];
    let (ticked, result) = tokio::join!(tick, store.acquire_async(d, T0));
    assert!(matches!(result, Err(Refusal::Unavailable(_))), "{result:?}");
    assert!(
        ticked < Duration::from_millis(150),
        "the timer fired after {ticked:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
}
