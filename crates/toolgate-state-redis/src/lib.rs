//! toolgate's Redis counter store: [`RedisStore`] implements
//! [`toolgate_policy::CounterStore`] on a Redis server, so that several
//! gateway replicas share one budget per counter key.
//!
//! Large limits are leased ([`toolgate_policy::lease`]): the script that
//! admits a call on a limit of `max` 16,384 or more (above its last 1%)
//! also takes a slice of `max / 4096` units, and this replica admits the
//! calls after it from the slice in memory; the next round trip on the key
//! gives the slice's unspent units back. One slice request per key is in
//! flight at a time (concurrent callers meanwhile go one round trip each),
//! so replicas sharing a key are refused at most `max / 4096` units per
//! other replica early, and never admit more than `max`. A slice whose
//! answer is lost, or held by a replica that stops, stays counted until it
//! expires (the safe side).
//!
//! A tour of the crate:
//!
//! - `acquire.lua` and `release.lua` are the whole counting logic. A
//!   decision not paid from a slice (below) is one round trip: `EVALSHA`
//!   of `acquire.lua`, which expires,
//!   checks and takes every draw of the call in one atomic step on the
//!   server (all or none). Each counter key has a sliding log, a sorted set
//!   `{prefix}:c:{draw key}` (the draw key percent-escaped) whose entries
//!   are scored by their last admission time and carry their units in the
//!   member, beside its running sum `{prefix}:c:{draw key}:sum`. Admissions
//!   closer than `window / 64` merge into one entry, exactly as in
//!   toolgate-policy's in-memory log, so a key holds at most about 65
//!   entries and the two stores decide alike, call for call (merged units
//!   count up to `window / 64` longer than they need to, never shorter). A
//!   limit never admits more than `max` units in any interval of `window`
//!   length. Both keys get `PEXPIRE` = the window on every write (plus the
//!   time the caller's clock is behind the newest entry, at most one more
//!   window), so a key vanishes once its window has passed.
//! - `script` builds the scripts' arguments from draws and reads their
//!   replies into [`Grant`]s and [`Exhausted`](toolgate_policy::Exhausted)
//!   refusals (no IO).
//! - `link` owns the connection: one `redis` multiplexed connection, with
//!   every caller's requests pipelined on it, driven by a small tokio
//!   runtime on a thread of its own. The blocking [`CounterStore::acquire`]
//!   works from any thread and [`CounterStore::acquire_async`] from any
//!   runtime without blocking it. Scripts are loaded once per connection
//!   and again on `NOSCRIPT`.
//! - `approvals`: [`RedisApprovals`], the
//!   [`toolgate_approvals::ApprovalStore`] of calls held for a person's
//!   decision: each request JSON under `{prefix}:apr:{id}`, the live request
//!   of a call key under `{prefix}:aprkey:{key}`, both expiring a day after
//!   the request does; `request`, `decide`, `consume` and `list` are Lua
//!   scripts (`src/approvals/*.lua`), so replicas decide and consume each
//!   request exactly once. It has its own connection (and thread).
//! - [`server`] starts a throwaway `redis-server` for tests and the bench
//!   (`src/bin/redis-state-bench.rs`).
//!
//! **Time.** The scripts count with the `now` the gateway passes in, not the
//! Redis clock, so replicas must keep their clocks in step: a replica whose
//! clock runs `d` ms behind the others sees their admissions as up to `d` ms
//! newer than they are (it refuses a little longer), and one running ahead
//! sees them expire up to `d` ms early (in the worst case a window then
//! admits up to `max` more units across a `d` ms overlap). NTP-synchronised
//! hosts (skew of a few ms) are fine for windows of seconds and more. Key
//! expiry (`PEXPIRE`) uses the Redis clock, but only as a sweep: a key
//! expires a full window after its last write.
//!
//! **Outages.** When Redis cannot be reached, [`FailMode::Closed`] refuses
//! calls that draw on counters with [`Refusal::Unavailable`] ("redis at
//! HOST:PORT unreachable: ...") and [`FailMode::Open`] admits them without
//! counting. No call waits longer than the connect timeout or the response
//! timeout ([`ConnectionOptions`]); after a failed attempt to connect, calls
//! fail at once for a short cooldown, then the next call tries again, so the
//! store recovers by itself when Redis is back. A Redis restarted without
//! persistence starts every budget afresh.
//!
//! **Server.** Redis 6.0 or newer (`SET ... KEEPTTL`), one server or a
//! primary; Redis Cluster is not supported (a call's keys are not given a
//! common hash slot).
//!
//! Invariants: every decision is one script run, atomic on the server (no
//! read followed by a separate write); a refused call takes nothing; a
//! grant admitted uncounted (fail open) has nothing to release.

#![forbid(unsafe_code)]

mod approvals;
mod link;
mod pins;
mod revocations;
mod script;
pub mod server;

pub use approvals::{RedisApprovals, GRACE_MS};
pub use pins::RedisPins;
pub use revocations::RedisRevocations;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use toolgate_policy::lease::{self, Lease, Leases};
use toolgate_policy::{BoxFuture, CounterStore, Draw, FailMode, Grant, Millis, Refusal};

pub use link::ConnectionOptions;
use link::{Link, LinkError};
use script::{Ahead, Keys};

/// Why a [`RedisStore`] or [`RedisApprovals`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The URL is not a Redis URL this store can use.
    #[error("invalid redis url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The connection thread could not be started.
    #[error("cannot start the redis connection thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A [`CounterStore`] on a Redis server, shared by every gateway replica
/// that uses the same server and prefix. See the crate documentation for
/// the layout of the keys and the behaviour during outages.
pub struct RedisStore {
    link: Link,
    keys: Keys,
    fail: FailMode,
    /// `HOST:PORT`, for messages.
    address: String,
    /// Slices of large limits held by this replica.
    held: Mutex<Held>,
}

/// The slices a store holds, and the keys it is asking a slice for (one
/// request per key at a time: other calls on the key meanwhile go one round
/// trip each, so concurrent callers never take several slices at once).
#[derive(Debug, Default)]
struct Held {
    leases: Leases,
    fetching: HashSet<String>,
}

/// Clears the keys of slice requests when their answer has been read, or
/// the call dropped.
struct Fetching<'a> {
    held: &'a Mutex<Held>,
    keys: Vec<String>,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            held.fetching.remove(key);
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("keys", &self.keys)
            .field("fail", &self.fail)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://HOST:PORT/DB`, optionally
    /// with `USER:PASSWORD@`), its keys under `prefix` (the deployment's
    /// name, e.g. `"toolgate"`), with the default [`ConnectionOptions`].
    ///
    /// Only a malformed URL is an error: a server that cannot be reached now
    /// is tried again by later calls (which meanwhile follow `fail`).
    pub fn connect(url: &str, prefix: &str, fail: FailMode) -> Result<RedisStore, StateError> {
        RedisStore::connect_with(url, prefix, fail, ConnectionOptions::default())
    }

    /// [`RedisStore::connect`] with other timeouts and cooldown.
    pub fn connect_with(
        url: &str,
        prefix: &str,
        fail: FailMode,
        options: ConnectionOptions,
    ) -> Result<RedisStore, StateError> {
        let (link, address) = Link::connect(url, options, &script::ALL)?;
        Ok(RedisStore {
            link,
            keys: Keys::new(prefix),
            fail,
            address,
            held: Mutex::new(Held::default()),
        })
    }

    /// `HOST:PORT` of the server.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The Redis key of the sliding log of `draw_key` (its running sum is
    /// this name followed by `:sum`); for operators and tests.
    pub fn log_key(&self, draw_key: &str) -> String {
        self.keys.log(draw_key)
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Every update leaves the map consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The grant when slices pay for the whole call; otherwise what the
    /// round trip asks of slices. The slices of the call's keys are given
    /// back in that round trip and dropped now, before its answer (if it is
    /// lost, their units stay counted: the safe side).
    fn prepare(&self, draws: &[Draw], now: Millis) -> Result<Grant, (Vec<Ahead>, Fetching<'_>)> {
        let mut held = self.held();
        if let Some(grant) = held.leases.spend(draws, now) {
            return Ok(grant);
        }
        let mut ahead = vec![Ahead::default(); draws.len()];
        let mut fetching = Fetching {
            held: &self.held,
            keys: Vec::new(),
        };
        let leases = lease::call_leases(draws);
        for (i, draw) in draws.iter().enumerate() {
            if draws[..i].iter().any(|d| d.key == draw.key) {
                continue;
            }
            if let Some(old) = held.leases.remove(&draw.key) {
                if old.left > 0.0 {
                    ahead[i].back = Some((old.start, old.left));
                }
            }
            if leases && held.fetching.insert(draw.key.clone()) {
                ahead[i].slice = lease::slice_size(draw.max);
                fetching.keys.push(draw.key.clone());
            }
        }
        Err((ahead, fetching))
    }

    fn decide(
        &self,
        answer: Result<redis::Value, LinkError>,
        draws: &[Draw],
        now: Millis,
        fetching: Fetching<'_>,
    ) -> Result<Grant, Refusal> {
        let why = match answer {
            Ok(reply) => match script::acquired(&reply, draws, now) {
                Ok(Ok((grant, slices))) => {
                    let mut held = self.held();
                    for ((draw, taken), &units) in draws.iter().zip(&grant.taken).zip(&slices) {
                        if units > 0.0 {
                            let slice = Lease::new(draw, now, units, taken.used + units);
                            held.leases.insert(&draw.key, slice);
                        }
                    }
                    drop(held);
                    drop(fetching);
                    return Ok(grant);
                }
                Ok(Err(exhausted)) => return Err(Refusal::Exhausted(exhausted)),
                Err(e) => format!("redis at {} answered oddly: {e}", self.address),
            },
            Err(LinkError::Unreachable(e)) => format!("redis at {} unreachable: {e}", self.address),
            Err(LinkError::Failed(e)) => format!("redis at {} failed: {e}", self.address),
        };
        match self.fail {
            FailMode::Closed => Err(Refusal::Unavailable(why)),
            FailMode::Open => Ok(Grant::default()),
        }
    }
}

impl CounterStore for RedisStore {
    fn acquire(&self, draws: &[Draw], now: Millis) -> Result<Grant, Refusal> {
        if draws.is_empty() {
            return Ok(Grant::default());
        }
        let (ahead, fetching) = match self.prepare(draws, now) {
            Ok(grant) => return Ok(grant),
            Err(asked) => asked,
        };
        let answer = self
            .link
            .run_blocking(script::acquire(&self.keys, draws, &ahead, now));
        self.decide(answer, draws, now, fetching)
    }

    /// Gives back what `grant` took. Called from a thread outside any async
    /// runtime it waits for the answer; called on a runtime it does not
    /// block but queues the release ahead of every later call. Best effort:
    /// when Redis cannot be reached the quota stays taken.
    fn release(&self, grant: &Grant) {
        let Some(invocation) = script::release(&self.keys, grant) else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.link.run_detached(invocation);
        } else {
            let _ = self.link.run_blocking(invocation);
        }
    }

    fn acquire_async<'a>(
        &'a self,
        draws: Vec<Draw>,
        now: Millis,
    ) -> BoxFuture<'a, Result<Grant, Refusal>> {
        if draws.is_empty() {
            return Box::pin(std::future::ready(Ok(Grant::default())));
        }
        let (ahead, fetching) = match self.prepare(&draws, now) {
            Ok(grant) => return Box::pin(std::future::ready(Ok(grant))),
            Err(asked) => asked,
        };
        let answer = self
            .link
            .run_async(script::acquire(&self.keys, &draws, &ahead, now));
        Box::pin(async move {
            let answer = answer.await;
            self.decide(answer, &draws, now, fetching)
        })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_out_of_messages() {
        let cases = [
            ("redis://:secret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://user:secret@host/1", "redis://***@host/1"),
            ("redis://host:6379", "redis://host:6379"),
            ("nonsense", "nonsense"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact(url), expected);
        }
    }

    #[test]
    fn malformed_urls_are_refused_and_unreachable_servers_are_not() {
        for url in [
            "",
            "http://host:6379",
            "redis://host:notaport/0",
            "not a url",
        ] {
            match RedisStore::connect(url, "t", FailMode::Closed) {
                Err(StateError::InvalidUrl { .. }) => {}
                other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
            }
        }
        let store = RedisStore::connect("redis://127.0.0.1:1/0", "t", FailMode::Closed)
            .expect("an unreachable server is not an error");
        assert_eq!(store.address(), "127.0.0.1:1");
    }
}
