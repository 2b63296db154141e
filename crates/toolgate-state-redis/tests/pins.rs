//! RedisPins against the shared pin suite on a real redis-server started on
//! a free loopback port, and an unreachable server being an error.

use std::sync::Arc;
use toolgate_pins::{suite, PinStore};
use toolgate_state_redis::server::RedisServer;
use toolgate_state_redis::RedisPins;

#[test]
fn redis_pins() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let counter = std::sync::atomic::AtomicU32::new(0);
    suite::run_all(&|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(RedisPins::connect(&url, &format!("test{n}")).unwrap())
    });
    let down = RedisPins::connect("redis://127.0.0.1:1/0", "x").unwrap();
    assert!(
        down.list().is_err(),
        "an unreachable Redis is an error, not an empty list"
    );
}
