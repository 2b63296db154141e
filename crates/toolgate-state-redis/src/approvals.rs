//! [`RedisApprovals`]: the [`ApprovalStore`] on a Redis server, shared by
//! every gateway replica (and `toolgate approvals`) using the same server
//! and prefix.
//!
//! Keys, under the deployment's prefix:
//!
//! - `{prefix}:apr:{id}`: the request, as JSON (a string). Its head holds
//!   what the scripts decide on, then the request as the gateway made it:
//!   `{"expires_ms":N,"state":"pending","decided":null,"used_at_ms":null,
//!   "request":{"id":...,"key":...,"grant":...,"arguments":...}}`. A
//!   decision rewrites only the head (`"state":"approved","decided":{...}`),
//!   consumption too (`"state":"used",...,"used_at_ms":N`), so the Lua
//!   scripts never re-encode the call's arguments (Lua's JSON would lose
//!   number precision, key order and empty arrays).
//! - `{prefix}:aprkey:{key}`: the id of the live request of a call key
//!   (`toolgate_approvals::call_key`); deleted when it is consumed.
//! - `{prefix}:aprs`: a sorted set of ids for `list`, scored by when their
//!   record expires (gateway clock); ids whose records are gone are dropped
//!   by the next `request` or `list`.
//!
//! Both keys of a request expire [`GRACE_MS`] (one day) after the request
//! does, on the Redis clock (`PX`), so expired and decided requests stay
//! visible to `toolgate approvals show` and `list --all` for a day.
//!
//! `request`, `decide`, `consume` and `list` are each one Lua script, atomic
//! on the server; `get` is one `GET`. Like the counters, the scripts use the
//! `now` the caller passes in: replicas must keep their clocks in step.
//! Redis Cluster is not supported (the scripts touch keys they compute).

use redis::Value;
use serde::{Deserialize, Serialize};
use toolgate_approvals::{
    call_key, is_open, pending, sort_newest_first, ApprovalError, ApprovalRequest, ApprovalStore,
    Asked, Decided, NewRequest, Status,
};

use crate::link::{ConnectionOptions, Link, LinkError};
use crate::script::{Invocation, Lua};
use crate::StateError;

/// How long a request stays stored after it expired: one day.
pub const GRACE_MS: u64 = 24 * 60 * 60 * 1000;

static REQUEST: Lua = Lua::new(
    "approvals/request.lua",
    include_str!("approvals/request.lua"),
);
static DECIDE: Lua = Lua::new("approvals/decide.lua", include_str!("approvals/decide.lua"));
static CONSUME: Lua = Lua::new(
    "approvals/consume.lua",
    include_str!("approvals/consume.lua"),
);
static LIST: Lua = Lua::new("approvals/list.lua", include_str!("approvals/list.lua"));
static GET: Lua = Lua::new("approvals/get.lua", include_str!("approvals/get.lua"));

/// The scripts, loaded on every new connection.
static SCRIPTS: [&Lua; 5] = [&REQUEST, &DECIDE, &CONSUME, &LIST, &GET];

/// Approval requests on a Redis server. See the module docs for the keys.
pub struct RedisApprovals {
    link: Link,
    /// `"{prefix}:apr:"`.
    records: String,
    /// `"{prefix}:aprkey:"`.
    live: String,
    /// `"{prefix}:aprs"`.
    index: String,
    /// `HOST:PORT`, for messages.
    address: String,
}

impl std::fmt::Debug for RedisApprovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisApprovals")
            .field("address", &self.address)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl RedisApprovals {
    /// The store on the Redis at `url`, its keys under `prefix`, with the
    /// default [`ConnectionOptions`]. Only a malformed URL is an error: while
    /// the server cannot be reached every operation returns
    /// [`ApprovalError::Unavailable`], and the store reconnects by itself.
    pub fn connect(url: &str, prefix: &str) -> Result<RedisApprovals, StateError> {
        RedisApprovals::connect_with(url, prefix, ConnectionOptions::default())
    }

    /// [`RedisApprovals::connect`] with other timeouts and cooldown.
    pub fn connect_with(
        url: &str,
        prefix: &str,
        options: ConnectionOptions,
    ) -> Result<RedisApprovals, StateError> {
        let (link, address) = Link::connect(url, options, &SCRIPTS)?;
        Ok(RedisApprovals {
            link,
            records: format!("{prefix}:apr:"),
            live: format!("{prefix}:aprkey:"),
            index: format!("{prefix}:aprs"),
            address,
        })
    }

    /// `HOST:PORT` of the server.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The Redis key of request `id`'s record; for operators and tests.
    pub fn record_key(&self, id: &str) -> String {
        format!("{}{id}", self.records)
    }

    /// The Redis key holding the live request id of call key `key`.
    pub fn live_key(&self, key: &str) -> String {
        format!("{}{key}", self.live)
    }

    fn run(
        &self,
        lua: &'static Lua,
        keys: &[&str],
        args: &[String],
    ) -> Result<Value, ApprovalError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(lua.sha()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(arg.as_str());
        }
        self.link
            .run_blocking(Invocation { lua, cmd })
            .map_err(|e| {
                ApprovalError::Unavailable(match e {
                    LinkError::Unreachable(e) => {
                        format!("redis at {} unreachable: {e}", self.address)
                    }
                    LinkError::Failed(e) => format!("redis at {} failed: {e}", self.address),
                })
            })
    }

    fn odd(&self, lua: &Lua, reply: &Value) -> ApprovalError {
        ApprovalError::Unavailable(format!(
            "redis at {} answered {} oddly: {reply:?}",
            self.address, lua.name
        ))
    }

    fn read(&self, bytes: &[u8]) -> Result<ApprovalRequest, ApprovalError> {
        from_record(bytes).map_err(|e| {
            ApprovalError::Unavailable(format!(
                "redis at {}: a stored approval request is not readable: {e}",
                self.address
            ))
        })
    }
}

impl ApprovalStore for RedisApprovals {
    fn request(&self, new: &NewRequest, now: u64) -> Result<ApprovalRequest, ApprovalError> {
        let key = call_key(&new.grant, new.server.as_deref(), &new.tool, &new.arguments);
        let r = pending(new, now);
        debug_assert_eq!(r.key, key);
        let record = to_record(&r)?;
        let gone_at = r.expires_ms.saturating_add(GRACE_MS);
        let ttl = gone_at.saturating_sub(now).max(1);
        let reply = self.run(
            &REQUEST,
            &[&self.live_key(&key), &self.record_key(&r.id), &self.index],
            &[
                now.to_string(),
                self.records.clone(),
                r.id.clone(),
                record,
                ttl.to_string(),
                gone_at.to_string(),
            ],
        )?;
        match &reply {
            Value::BulkString(bytes) => self.read(bytes),
            other => Err(self.odd(&REQUEST, other)),
        }
    }

    fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApprovalError> {
        match self.run(&GET, &[&self.record_key(id)], &[])? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => self.read(&bytes).map(Some),
            other => Err(self.odd(&GET, &other)),
        }
    }

    fn list(&self, pending_only: bool, now: u64) -> Result<Vec<ApprovalRequest>, ApprovalError> {
        let reply = self.run(
            &LIST,
            &[&self.index],
            &[now.to_string(), self.records.clone()],
        )?;
        let Value::Array(items) = &reply else {
            return Err(self.odd(&LIST, &reply));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::BulkString(bytes) = item else {
                return Err(self.odd(&LIST, &reply));
            };
            let r = self.read(bytes)?;
            if !pending_only || is_open(&r, now) {
                out.push(r);
            }
        }
        sort_newest_first(&mut out);
        Ok(out)
    }

    fn decide(
        &self,
        id: &str,
        approve: bool,
        decided: Decided,
        now: u64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let decision = serde_json::to_string(&decided)
            .map_err(|e| ApprovalError::Unavailable(format!("cannot encode the decision: {e}")))?;
        let state = if approve { "approved" } else { "denied" };
        let reply = self.run(
            &DECIDE,
            &[&self.record_key(id)],
            &[now.to_string(), state.to_string(), decision],
        )?;
        let Value::Array(items) = &reply else {
            return Err(self.odd(&DECIDE, &reply));
        };
        match items.as_slice() {
            [Value::Int(1), Value::BulkString(bytes)] => self.read(bytes),
            [Value::Int(0)] => Err(ApprovalError::Unknown(id.to_string())),
            [Value::Int(2)] => Err(ApprovalError::Expired(id.to_string())),
            [Value::Int(3), Value::BulkString(state)] => Err(ApprovalError::AlreadyDecided {
                id: id.to_string(),
                status: status_name(state),
            }),
            _ => Err(self.odd(&DECIDE, &reply)),
        }
    }

    fn consume(&self, key: &str, now: u64) -> Result<Option<ApprovalRequest>, ApprovalError> {
        let reply = self.run(
            &CONSUME,
            &[&self.live_key(key)],
            &[now.to_string(), self.records.clone()],
        )?;
        match &reply {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => self.read(bytes).map(Some),
            other => Err(self.odd(&CONSUME, other)),
        }
    }
}

/// The head of a record, then the request (field order is the layout the
/// scripts rely on: see the module docs).
#[derive(Serialize, Deserialize)]
struct Record {
    expires_ms: u64,
    state: String,
    decided: Option<Decided>,
    used_at_ms: Option<u64>,
    request: Asked,
}

/// The record of a new (pending) request.
fn to_record(r: &ApprovalRequest) -> Result<String, ApprovalError> {
    let record = Record {
        expires_ms: r.expires_ms,
        state: r.status.name().to_string(),
        decided: None,
        used_at_ms: None,
        request: Asked::of(r),
    };
    serde_json::to_string(&record)
        .map_err(|e| ApprovalError::Unavailable(format!("cannot encode the request: {e}")))
}

fn from_record(bytes: &[u8]) -> Result<ApprovalRequest, String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let decided = || {
        record
            .decided
            .clone()
            .ok_or_else(|| format!("state {} without a decision", record.state))
    };
    let status = match record.state.as_str() {
        "pending" => Status::Pending,
        "approved" => Status::Approved(decided()?),
        "denied" => Status::Denied(decided()?),
        "used" => Status::Used {
            decided: decided()?,
            used_at_ms: record.used_at_ms.ok_or("state used without used_at_ms")?,
        },
        other => return Err(format!("unknown state {other:?}")),
    };
    record.request.into_request(record.expires_ms, status)
}

/// A state name from a script as the `&'static str` of [`Status::name`].
fn status_name(state: &[u8]) -> &'static str {
    match state {
        b"pending" => "pending",
        b"approved" => "approved",
        b"denied" => "denied",
        b"used" => "used",
        _ => "decided",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use toolgate_approvals::Via;

    fn request() -> ApprovalRequest {
        pending(
            &NewRequest {
                grant: "g".into(),
                server: None,
                tool: "t".into(),
                arguments: json!({"b": [], "a": 0.1}),
                reason: "r".into(),
                rule: "tools[\"t\"]".into(),
                expires_in_ms: 10,
            },
            1_700_000_000_000,
        )
    }

    #[test]
    fn a_new_record_starts_with_the_head_the_scripts_read() {
        let r = request();
        let text = to_record(&r).unwrap();
        let head = format!(
            "{{\"expires_ms\":{},\"state\":\"pending\",\"decided\":null,\"used_at_ms\":null,\"request\":{{",
            r.expires_ms
        );
        assert!(text.starts_with(&head), "{text}");
        assert_eq!(from_record(text.as_bytes()).unwrap(), r);
    }

    #[test]
    fn a_decision_serializes_as_one_object_the_scripts_copy() {
        let d = Decided {
            by: "a \"quoted\" name".into(),
            via: Via::Cli,
            at_ms: 5,
            reason: Some(",\"used_at_ms\":null,".into()),
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.starts_with('{') && text.ends_with('}'));
        assert!(!text.contains(",\"used_at_ms\":null,"), "{text}");
    }
}
