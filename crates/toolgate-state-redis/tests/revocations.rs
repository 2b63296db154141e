//! RedisRevocations against a real redis-server started on a free loopback
//! port: the shared suite, another replica seeing a revocation, the key's
//! expiry, and an unreachable server refusing to answer (never "not
//! revoked").

use redis::Commands;
use toolgate_revocations::{RevocationError, RevocationStore};
use toolgate_state_redis::server::{quick_options, unique_prefix, RedisServer};
use toolgate_state_redis::RedisRevocations;

/// A prefix no other store in this run uses.
fn prefix() -> String {
    unique_prefix("rev")
}

fn store(server: &RedisServer, prefix: &str) -> RedisRevocations {
    RedisRevocations::connect_with(&server.url(), prefix, quick_options()).expect("store")
}

#[test]
fn passes_the_suite() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    toolgate_revocations::suite::run(&|| Box::new(store(&server, &prefix())));
}

#[test]
fn a_revocation_is_seen_by_another_replica_and_expires_with_the_session() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let prefix = prefix();
    let (one, other) = (store(&server, &prefix), store(&server, &prefix));
    let now = 1_700_000_000_000;
    one.revoke("s1", now, now + 60_000).unwrap();
    assert_eq!(other.is_revoked("s1", now + 1), Ok(true));
    assert_eq!(other.is_revoked("s2", now + 1), Ok(false));
    let mut plain = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .unwrap();
    let ttl: i64 = plain.pttl(one.key("s1")).unwrap();
    assert!(
        (59_000..=60_000).contains(&ttl),
        "PEXPIRE at the session's end: {ttl}"
    );
}

#[test]
fn an_unreachable_server_is_unavailable_not_unrevoked() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let revocations = store(&server, &prefix());
    revocations.revoke("s1", 1_000, 90_000).unwrap();
    server.stop();
    assert!(matches!(
        revocations.is_revoked("s1", 2_000),
        Err(RevocationError::Unavailable(_))
    ));
    assert!(matches!(
        revocations.is_revoked("s2", 2_000),
        Err(RevocationError::Unavailable(_))
    ));
}
