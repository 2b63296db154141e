//! Revoked sessions: a session a client ended (`DELETE /mcp`) is refused by
//! every gateway process that shares the session key, until it would have
//! expired anyway.
//!
//! A session token is sealed state (toolgate-serve's `session.rs`): any
//! process holding the key opens it, so ending a session cannot be a matter
//! of forgetting it in one process. [`RevocationStore`] records the ended
//! session's id until its expiry; the gateway asks it on every request
//! that names a session.
//!
//! A tour:
//! - [`RevocationStore`]: `revoke(id, now_ms, until_ms)` and
//!   `is_revoked(id, now_ms)`;
//! - [`MemoryRevocations`]: one process (`--state memory`);
//! - [`suite`]: the behaviour every store must have; the embedded
//!   (toolgate-state-sqlite, `revocations.db`) and Redis
//!   (toolgate-state-redis, `PREFIX:rev:ID`) stores run it too.
//!
//! **Invariants:** a revocation is kept at least until `until_ms` (it may be
//! forgotten after); a store that cannot answer says so
//! ([`RevocationError::Unavailable`]) and never answers "not revoked" for
//! want of an answer: the gateway then refuses the request (fails closed).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The store cannot be reached or read now.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// Where ended sessions are recorded. Times are milliseconds since the Unix
/// epoch, on the gateway's clock.
pub trait RevocationStore: Send + Sync {
    /// Session `id` is refused from `now_ms` until `until_ms` (its expiry).
    /// Revoking again keeps the later end. (`now_ms` lets a store expire
    /// the record by itself: Redis keys get `PEXPIRE until_ms - now_ms`.)
    fn revoke(&self, id: &str, now_ms: u64, until_ms: u64) -> Result<(), RevocationError>;
    /// Whether session `id` was revoked and `now_ms` is before its end.
    fn is_revoked(&self, id: &str, now_ms: u64) -> Result<bool, RevocationError>;
}

/// Revocations of one process, forgotten on exit. Expired entries are
/// dropped as new ones come.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    revoked: Mutex<Revoked>,
}

#[derive(Debug, Default)]
struct Revoked {
    until: HashMap<String, u64>,
    /// The latest `now` asked about: entries ending before it can go.
    seen_now: u64,
}

impl MemoryRevocations {
    pub fn new() -> MemoryRevocations {
        MemoryRevocations::default()
    }
}

impl RevocationStore for MemoryRevocations {
    fn revoke(&self, id: &str, now_ms: u64, until_ms: u64) -> Result<(), RevocationError> {
        let mut revoked = self.revoked.lock().expect("revocations lock");
        revoked.seen_now = revoked.seen_now.max(now_ms);
        // Swept now and then: the map follows the sessions ended lately.
        let len = revoked.until.len();
        if len >= 1024 && len.is_power_of_two() {
            let now = revoked.seen_now;
            revoked.until.retain(|_, until| *until > now);
        }
        let until = revoked.until.entry(id.to_string()).or_insert(until_ms);
        *until = (*until).max(until_ms);
        Ok(())
    }

    fn is_revoked(&self, id: &str, now_ms: u64) -> Result<bool, RevocationError> {
        let mut revoked = self.revoked.lock().expect("revocations lock");
        revoked.seen_now = revoked.seen_now.max(now_ms);
        Ok(revoked.until.get(id).is_some_and(|&until| now_ms < until))
    }
}

/// The behavioural suite: `fresh` makes an empty store (each call a new one,
/// or at least one no other test touches: ids are the test's own).
pub mod suite {
    use super::RevocationStore;

    /// Runs every case against stores from `fresh`. Time only moves on,
    /// from case to case too (a store may forget what has ended).
    pub fn run(fresh: &dyn Fn() -> Box<dyn RevocationStore>) {
        a_revoked_session_is_refused_until_its_end(&*fresh());
        revoking_again_keeps_the_later_end(&*fresh());
        sessions_are_apart(&*fresh());
    }

    pub fn a_revoked_session_is_refused_until_its_end(store: &dyn RevocationStore) {
        let id = "suite-a";
        assert_eq!(store.is_revoked(id, 1_000), Ok(false));
        store.revoke(id, 1_000, 5_000).unwrap();
        assert_eq!(store.is_revoked(id, 1_000), Ok(true));
        assert_eq!(store.is_revoked(id, 4_999), Ok(true));
        assert_eq!(store.is_revoked(id, 5_000), Ok(false), "ends at its expiry");
        assert_eq!(store.is_revoked(id, 9_000), Ok(false));
    }

    pub fn revoking_again_keeps_the_later_end(store: &dyn RevocationStore) {
        let id = "suite-b";
        store.revoke(id, 10_000, 18_000).unwrap();
        store.revoke(id, 10_000, 13_000).unwrap();
        assert_eq!(store.is_revoked(id, 15_000), Ok(true));
        store.revoke(id, 15_000, 20_000).unwrap();
        assert_eq!(store.is_revoked(id, 19_000), Ok(true));
    }

    pub fn sessions_are_apart(store: &dyn RevocationStore) {
        store.revoke("suite-c1", 21_000, 25_000).unwrap();
        assert_eq!(store.is_revoked("suite-c1", 21_000), Ok(true));
        assert_eq!(store.is_revoked("suite-c2", 21_000), Ok(false));
        assert_eq!(store.is_revoked("suite-c", 21_000), Ok(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_passes_the_suite() {
        suite::run(&|| Box::new(MemoryRevocations::new()));
    }
}
