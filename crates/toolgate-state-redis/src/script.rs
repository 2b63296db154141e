//! The two Lua scripts (`acquire.lua`, `release.lua`, each run after
//! `log.lua`, what they share), the key names they work on, and the
//! translation between draws and grants and the scripts' arguments and
//! replies. No IO: `link` sends what this module builds.

use std::sync::OnceLock;

use redis::{Cmd, Value};
use toolgate_policy::{lease, Draw, Exhausted, Grant, Taken};

/// A Lua script run with EVALSHA; `link` loads it when the server does not
/// know it (NOSCRIPT).
pub(crate) struct Lua {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
    sha: OnceLock<String>,
}

impl Lua {
    pub(crate) const fn new(name: &'static str, source: &'static str) -> Lua {
        Lua {
            name,
            source,
            sha: OnceLock::new(),
        }
    }

    /// The SHA-1 the server knows the script by.
    pub(crate) fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| redis::Script::new(self.source).get_hash().to_string())
    }
}

pub(crate) static ACQUIRE: Lua = Lua::new(
    "acquire.lua",
    concat!(include_str!("log.lua"), include_str!("acquire.lua")),
);
pub(crate) static RELEASE: Lua = Lua::new(
    "release.lua",
    concat!(include_str!("log.lua"), include_str!("release.lua")),
);

/// Both scripts, loaded on every new connection of a [`crate::RedisStore`].
pub(crate) static ALL: [&Lua; 2] = [&ACQUIRE, &RELEASE];

/// One script run: the script and its EVALSHA command.
pub(crate) struct Invocation {
    pub(crate) lua: &'static Lua,
    pub(crate) cmd: Cmd,
}

/// Key names under one deployment prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `"{prefix}:c:"`.
    counters: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            counters: format!("{prefix}:c:"),
        }
    }

    /// The log of a draw key: `{prefix}:c:{escaped key}`. Escaping keeps
    /// `:` out of the escaped part, so `{log}:sum` never names another log.
    pub(crate) fn log(&self, draw_key: &str) -> String {
        let mut key = String::with_capacity(self.counters.len() + draw_key.len() + 8);
        key.push_str(&self.counters);
        escape(draw_key, &mut key);
        key
    }

    /// The running sum beside a log.
    pub(crate) fn sum(log: &str) -> String {
        format!("{log}:sum")
    }
}

/// Percent-escapes every byte except ASCII letters, digits and `-_.~/`
/// (draw keys join their parts with U+001F, which becomes `%1F`).
fn escape(raw: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
    }
}

/// What one draw of an acquire asks of slices (see `acquire.lua`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Ahead {
    /// Units to take ahead (0: none).
    pub(crate) slice: f64,
    /// The unspent units of a slice taken at `.0` to give back first.
    pub(crate) back: Option<(u64, f64)>,
}

/// The EVALSHA of `acquire.lua` for `draws` at `now`, `ahead` (one per
/// draw, or none) asking for slices.
pub(crate) fn acquire(keys: &Keys, draws: &[Draw], ahead: &[Ahead], now: u64) -> Invocation {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(ACQUIRE.sha()).arg(draws.len() * 2);
    for draw in draws {
        let log = keys.log(&draw.key);
        let sum = Keys::sum(&log);
        cmd.arg(log).arg(sum);
    }
    cmd.arg(now);
    for (i, draw) in draws.iter().enumerate() {
        let ahead = ahead.get(i).copied().unwrap_or_default();
        let (back_start, back_units) = ahead.back.unwrap_or((0, 0.0));
        cmd.arg(draw.window.max(1))
            .arg(number(draw.max))
            .arg(number(draw.cost))
            .arg(number(ahead.slice))
            .arg(number(lease::ceiling(draw.max)))
            .arg(now.saturating_add(lease::span(draw.window)))
            .arg(back_start)
            .arg(number(back_units));
    }
    Invocation { lua: &ACQUIRE, cmd }
}

/// The EVALSHA of `release.lua` for what `grant` took (`None` when it took
/// nothing).
pub(crate) fn release(keys: &Keys, grant: &Grant) -> Option<Invocation> {
    let taken: Vec<&Taken> = grant.taken.iter().filter(|t| t.cost > 0.0).collect();
    if taken.is_empty() {
        return None;
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(RELEASE.sha()).arg(taken.len() * 2);
    for t in &taken {
        let log = keys.log(&t.key);
        let sum = Keys::sum(&log);
        cmd.arg(log).arg(sum);
    }
    for t in &taken {
        cmd.arg(t.at).arg(number(t.cost));
    }
    Some(Invocation { lua: &RELEASE, cmd })
}

/// A cost or maximum as Lua's `tonumber` reads it (exact: Rust prints the
/// shortest text that reads back as the same `f64`).
fn number(x: f64) -> String {
    format!("{x:?}")
}

/// The reply of `acquire.lua`, read against the draws it was asked about:
/// the grant and the units each draw took ahead.
pub(crate) fn acquired(
    reply: &Value,
    draws: &[Draw],
    now: u64,
) -> Result<Result<(Grant, Vec<f64>), Exhausted>, String> {
    let Value::Array(items) = reply else {
        return Err(format!("acquire.lua answered {reply:?}, not an array"));
    };
    match items.first().map(integer) {
        Some(Ok(1)) if items.len() == 2 * draws.len() + 1 => {
            let mut taken = Vec::with_capacity(draws.len());
            for (draw, used) in draws.iter().zip(&items[1..]) {
                taken.push(Taken {
                    key: draw.key.clone(),
                    counter: draw.counter.clone(),
                    at: now,
                    cost: draw.cost,
                    used: float(used)?,
                    max: draw.max,
                    window: draw.window,
                });
            }
            let slices = items[draws.len() + 1..]
                .iter()
                .map(float)
                .collect::<Result<Vec<f64>, String>>()?;
            Ok(Ok((Grant { taken }, slices)))
        }
        Some(Ok(0)) if items.len() == 4 => {
            let index = integer(&items[1])?;
            let draw = usize::try_from(index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| draws.get(i))
                .ok_or_else(|| format!("acquire.lua refused draw {index} of {}", draws.len()))?;
            let retry_after_ms = u64::try_from(integer(&items[2])?).unwrap_or(0).max(1);
            Ok(Err(Exhausted {
                counter: draw.counter.clone(),
                rule: draw.rule.clone(),
                retry_after_ms,
                used: float(&items[3])?,
                max: draw.max,
            }))
        }
        _ => Err(format!(
            "acquire.lua answered {reply:?} for {} draws",
            draws.len()
        )),
    }
}

fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

fn float(value: &Value) -> Result<f64, String> {
    let text = match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text.as_str()),
        Value::Int(i) => return Ok(*i as f64),
        _ => None,
    };
    text.and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| format!("expected a number, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_policy::RuleRef;

    fn draw(key: &str, max: f64, cost: f64) -> Draw {
        Draw {
            counter: key.to_string(),
            key: format!("{key}\u{1f}grant\u{1f}g"),
            window: 60_000,
            max,
            cost,
            rule: RuleRef::from_static("tools[\"t\"]"),
        }
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn draw_keys_are_escaped_under_the_prefix() {
        let keys = Keys::new("toolgate");
        let cases = [
            (
                "rate\u{1f}grant\u{1f}local",
                "toolgate:c:rate%1Fgrant%1Flocal",
            ),
            ("a:b", "toolgate:c:a%3Ab"),
            ("x:sum", "toolgate:c:x%3Asum"),
            ("100%", "toolgate:c:100%25"),
            ("é ", "toolgate:c:%C3%A9%20"),
            ("a-b_c.d~e/f", "toolgate:c:a-b_c.d~e/f"),
        ];
        for (raw, expected) in cases {
            assert_eq!(keys.log(raw), expected, "{raw:?}");
        }
        assert_eq!(Keys::sum("toolgate:c:a"), "toolgate:c:a:sum");
    }

    #[test]
    fn numbers_read_back_exactly() {
        for x in [1.0, 0.1, 1.0 / 3.0, 1e-300, 1e300, 30.0] {
            assert_eq!(number(x).parse::<f64>().unwrap(), x);
        }
    }

    #[test]
    fn a_taken_reply_becomes_a_grant() {
        let draws = [draw("a", 3.0, 1.0), draw("b", 10.0, 2.5)];
        let reply = Value::Array(vec![
            Value::Int(1),
            bulk("1"),
            bulk("7.5"),
            bulk("0"),
            bulk("24"),
        ]);
        let (grant, slices) = acquired(&reply, &draws, 42).unwrap().unwrap();
        assert_eq!(slices, [0.0, 24.0]);
        assert_eq!(grant.taken.len(), 2);
        assert_eq!(grant.taken[1].used, 7.5);
        assert_eq!(grant.taken[1].at, 42);
        assert_eq!(grant.taken[1].key, "b\u{1f}grant\u{1f}g");
    }

    #[test]
    fn a_refused_reply_names_the_draw() {
        let draws = [draw("a", 3.0, 1.0), draw("b", 10.0, 2.5)];
        let reply = Value::Array(vec![Value::Int(0), Value::Int(2), Value::Int(0), bulk("9")]);
        let exhausted = acquired(&reply, &draws, 42).unwrap().unwrap_err();
        assert_eq!(exhausted.counter, "b");
        assert_eq!(exhausted.retry_after_ms, 1, "at least 1 ms");
        assert_eq!(exhausted.used, 9.0);
        assert_eq!(exhausted.max, 10.0);
    }

    #[test]
    fn malformed_replies_are_errors() {
        let draws = [draw("a", 3.0, 1.0)];
        let cases = [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(1), bulk("x")]),
            Value::Array(vec![Value::Int(0), Value::Int(5), Value::Int(1), bulk("1")]),
            Value::Array(vec![Value::Int(7), bulk("1")]),
        ];
        for reply in cases {
            assert!(acquired(&reply, &draws, 0).is_err(), "{reply:?}");
        }
    }

    #[test]
    fn a_grant_without_cost_needs_no_release() {
        let keys = Keys::new("p");
        assert!(release(&keys, &Grant::default()).is_none());
    }
}
