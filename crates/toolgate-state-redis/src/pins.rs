//! [`RedisPins`]: the [`PinStore`] of pinned tool definitions on a Redis
//! server, shared by every gateway replica using the same server and prefix.
//!
//! One hash per server, `{prefix}:pin:{server}`, from tool name to the pin
//! as JSON. An observation and an acceptance are each a WATCH/MULTI
//! read-modify-write applying [`toolgate_pins::apply`] or
//! [`toolgate_pins::accepted`], retried while another writer interferes.
//! The store uses blocking connections of its own (made per operation);
//! any Redis error is [`PinError::Unavailable`].

use serde_json::{json, Value};
use toolgate_pins::{accepted, apply, tool_name, Observed, Pin, PinError, PinStore};

fn unavailable(e: impl std::fmt::Display) -> PinError {
    PinError::Unavailable(e.to_string())
}

/// Pins in Redis under `PREFIX:pin:SERVER` (a hash from tool name to pin),
/// shared by replicas; each operation is a WATCH/MULTI transaction.
pub struct RedisPins {
    client: redis::Client,
    prefix: String,
}

impl RedisPins {
    pub fn connect(url: &str, prefix: &str) -> Result<RedisPins, PinError> {
        Ok(RedisPins {
            client: redis::Client::open(url).map_err(unavailable)?,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, server: &str) -> String {
        format!("{}:pin:{server}", self.prefix)
    }

    fn conn(&self) -> Result<redis::Connection, PinError> {
        self.client
            .get_connection_with_timeout(std::time::Duration::from_millis(500))
            .map_err(unavailable)
    }

    /// Read-modify-write of one pin, retried while another writer interferes.
    fn update(
        &self,
        server: &str,
        tool: &str,
        f: impl Fn(Option<Pin>) -> Result<(Option<Pin>, Value), PinError>,
    ) -> Result<Value, PinError> {
        let mut conn = self.conn()?;
        let key = self.key(server);
        for _ in 0..20 {
            redis::cmd("WATCH")
                .arg(&key)
                .query::<()>(&mut conn)
                .map_err(unavailable)?;
            let text: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg(tool)
                .query(&mut conn)
                .map_err(unavailable)?;
            let existing = text
                .map(|t| serde_json::from_str(&t).map_err(unavailable))
                .transpose()?;
            let (write, out) = match f(existing) {
                Ok(x) => x,
                Err(e) => {
                    let _ = redis::cmd("UNWATCH").query::<()>(&mut conn);
                    return Err(e);
                }
            };
            let Some(pin) = write else {
                redis::cmd("UNWATCH")
                    .query::<()>(&mut conn)
                    .map_err(unavailable)?;
                return Ok(out);
            };
            let text = serde_json::to_string(&pin).map_err(unavailable)?;
            let done: Option<Vec<i64>> = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg(tool)
                .arg(text)
                .query(&mut conn)
                .map_err(unavailable)?;
            if done.is_some() {
                return Ok(out);
            }
        }
        Err(unavailable("too many concurrent updates of one pin"))
    }
}

impl PinStore for RedisPins {
    fn observe(&self, server: &str, tool: &Value, now: u64) -> Result<Observed, PinError> {
        let out = self.update(server, tool_name(tool), |existing| {
            let (pin, observed) = apply(existing, server, tool, now);
            let unchanged = observed == Observed::Same;
            let code = match observed {
                Observed::New => json!("new"),
                Observed::Same => json!("same"),
                Observed::Changed { first } => json!({"changed": first}),
            };
            Ok(((!unchanged).then_some(pin), code))
        })?;
        Ok(match out {
            Value::String(s) if s == "new" => Observed::New,
            Value::String(_) => Observed::Same,
            other => Observed::Changed {
                first: other["changed"].as_bool().unwrap_or(true),
            },
        })
    }

    fn list(&self) -> Result<Vec<Pin>, PinError> {
        let mut conn = self.conn()?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:pin:*", self.prefix))
            .query(&mut conn)
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for key in keys {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(&key)
                .query(&mut conn)
                .map_err(unavailable)?;
            for v in values {
                out.push(serde_json::from_str::<Pin>(&v).map_err(unavailable)?);
            }
        }
        out.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        Ok(out)
    }

    fn get(&self, server: &str, tool: &str) -> Result<Option<Pin>, PinError> {
        let mut conn = self.conn()?;
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.key(server))
            .arg(tool)
            .query(&mut conn)
            .map_err(unavailable)?;
        text.map(|t| serde_json::from_str(&t).map_err(unavailable))
            .transpose()
    }

    fn accept(&self, server: &str, tool: &str, expected: Option<&str>) -> Result<Pin, PinError> {
        let out = self.update(server, tool, |existing| {
            let pin = existing.ok_or_else(|| PinError::Unknown {
                server: server.into(),
                tool: tool.into(),
            })?;
            let pin = accepted(pin, expected)?;
            let value = serde_json::to_value(&pin).map_err(unavailable)?;
            Ok((Some(pin), value))
        })?;
        serde_json::from_value(out).map_err(unavailable)
    }
}
