//! [`RedisRevocations`]: the [`RevocationStore`] of ended sessions on a
//! Redis server, shared by every gateway replica using the same server and
//! prefix (and session key).
//!
//! One key per ended session, `{prefix}:rev:{id}`, holding the session's
//! end (ms, gateway clock) and expiring then (`PEXPIRE`, Redis clock). A
//! revocation and a check are one script each (`revoke.lua`, which keeps
//! the later end, and `revoked.lua`). While the server cannot be reached,
//! both return [`RevocationError::Unavailable`] (the gateway refuses the
//! request: a session that may have been ended is never taken as live).

use redis::Value;
use toolgate_revocations::{RevocationError, RevocationStore};

use crate::link::{ConnectionOptions, Link, LinkError};
use crate::script::{Invocation, Lua};
use crate::StateError;

static REVOKE: Lua = Lua::new("revoke.lua", include_str!("revoke.lua"));
static REVOKED: Lua = Lua::new("revoked.lua", include_str!("revoked.lua"));
static SCRIPTS: [&Lua; 2] = [&REVOKE, &REVOKED];

/// Ended sessions on a Redis server. See the module docs for the keys.
pub struct RedisRevocations {
    link: Link,
    /// `"{prefix}:rev:"`.
    keys: String,
    /// `HOST:PORT`, for messages.
    address: String,
}

impl std::fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("address", &self.address)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisRevocations {
    /// The store on the Redis at `url`, its keys under `prefix`. Only a
    /// malformed URL is an error; the store reconnects by itself.
    pub fn connect(url: &str, prefix: &str) -> Result<RedisRevocations, StateError> {
        RedisRevocations::connect_with(url, prefix, ConnectionOptions::default())
    }

    /// [`RedisRevocations::connect`] with other timeouts and cooldown.
    pub fn connect_with(
        url: &str,
        prefix: &str,
        options: ConnectionOptions,
    ) -> Result<RedisRevocations, StateError> {
        let (link, address) = Link::connect(url, options, &SCRIPTS)?;
        Ok(RedisRevocations {
            link,
            keys: format!("{prefix}:rev:"),
            address,
        })
    }

    /// The Redis key of session `id`'s revocation; for operators and tests.
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.keys)
    }

    fn run(&self, lua: &'static Lua, id: &str, args: &[u64]) -> Result<Value, RevocationError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(lua.sha()).arg(1).arg(self.key(id));
        for arg in args {
            cmd.arg(*arg);
        }
        self.link
            .run_blocking(Invocation { lua, cmd })
            .map_err(|e| {
                RevocationError::Unavailable(match e {
                    LinkError::Unreachable(e) => {
                        format!("redis at {} unreachable: {e}", self.address)
                    }
                    LinkError::Failed(e) => format!("redis at {} failed: {e}", self.address),
                })
            })
    }

    fn odd(&self, lua: &Lua, reply: &Value) -> RevocationError {
        RevocationError::Unavailable(format!(
            "redis at {} answered {} oddly: {reply:?}",
            self.address, lua.name
        ))
    }
}

impl RevocationStore for RedisRevocations {
    fn revoke(&self, id: &str, now_ms: u64, until_ms: u64) -> Result<(), RevocationError> {
        let ttl = until_ms.saturating_sub(now_ms).max(1);
        match self.run(&REVOKE, id, &[until_ms, ttl])? {
            Value::Int(1) => Ok(()),
            other => Err(self.odd(&REVOKE, &other)),
        }
    }

    fn is_revoked(&self, id: &str, now_ms: u64) -> Result<bool, RevocationError> {
        match self.run(&REVOKED, id, &[now_ms])? {
            Value::Int(n) => Ok(n == 1),
            other => Err(self.odd(&REVOKED, &other)),
        }
    }
}
