//! A record as a row, and back: the compact form `records` keeps.
//!
//! A record of the gateway's shape (its keys in the order the gateway writes
//! them, each of the type it writes) is kept as columns: its strings as ids
//! in the `strings` table (grant, session, server, tool, decision, rule,
//! reason, outcome and counter names repeat from call to call), its time as
//! milliseconds, its timings in thousandths, the arguments' SHA-256 as 32
//! bytes. [`decode`] builds the very same JSON value again (keys, order,
//! number kinds), so the chain hashes what the gateway wrote. Anything else
//! (an imported record with other keys, a time not written as the gateway
//! writes it, stored arguments) is kept whole as its JSON text in `raw`.

use crate::time::parse_rfc3339;
use serde_json::{Map, Number, Value};

/// The keys of a gateway's record, in the order it writes them.
const KEYS: [&str; 13] = [
    "time",
    "grant",
    "session",
    "server",
    "tool",
    "decision",
    "rule",
    "reason",
    "counters",
    "decision_us",
    "latency_ms",
    "outcome",
    "args_sha256",
];

/// A record's columns, its strings as text (the store turns them into ids).
/// `None` is a key the record does not have.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Row<S> {
    pub time_ms: i64,
    pub grant: S,
    pub session: Option<S>,
    pub server: Option<S>,
    pub tool: S,
    pub decision: S,
    pub rule: Option<S>,
    pub reason: Option<S>,
    /// Each counter's name, and its `used` and `max` as their JSON text.
    pub counters: Option<Vec<(S, String, String)>>,
    pub decision_us: Option<i64>,
    pub latency: Option<i64>,
    pub outcome: Option<S>,
    pub args: Option<Vec<u8>>,
    /// The whole record's JSON text when it is not of the gateway's shape:
    /// then only `time_ms`, `grant`, `server`, `tool` and `decision` are set
    /// (for queries) and the rest is `None`.
    pub raw: Option<String>,
}

/// The columns of `record`, or why it cannot be stored (it must be an
/// object with string `time` (RFC 3339), `grant`, `tool` and `decision`,
/// and an optional string `server`).
pub(crate) fn encode(record: &Value) -> Result<Row<&str>, String> {
    let obj = record
        .as_object()
        .ok_or("the record is not a JSON object")?;
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the record has no string \"{key}\""))
    };
    let time = text("time")?;
    let time_ms = parse_rfc3339(time)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| format!("the record's \"time\" is not an RFC 3339 time: {time:?}"))?;
    let server = match obj.get("server") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("the record's \"server\" is not a string".into()),
    };
    let (grant, tool, decision) = (text("grant")?, text("tool")?, text("decision")?);
    if let Some(row) = columns(obj, time_ms) {
        return Ok(row);
    }
    Ok(Row {
        time_ms,
        grant,
        server,
        tool,
        decision,
        raw: Some(record.to_string()),
        ..Row::default()
    })
}

/// The columns of a record of the gateway's shape; `None` for any other.
fn columns(obj: &Map<String, Value>, time_ms: i64) -> Option<Row<&str>> {
    let mut row = Row {
        time_ms,
        ..Row::default()
    };
    let mut next = 0;
    for (key, value) in obj {
        next += KEYS[next..].iter().position(|k| k == key)? + 1;
        let text = || value.as_str();
        match key.as_str() {
            "time" => {
                let ms = u64::try_from(time_ms).ok()?;
                (value.as_str()? == toolgate_clock::rfc3339(ms)).then_some(())?;
            }
            "grant" => row.grant = text()?,
            "session" => row.session = Some(text()?),
            "server" => row.server = Some(text()?),
            "tool" => row.tool = text()?,
            "decision" => row.decision = text()?,
            "rule" => row.rule = Some(text()?),
            "reason" => row.reason = Some(text()?),
            "counters" => row.counters = Some(counters(value)?),
            "decision_us" => row.decision_us = Some(thousandths(value)?),
            "latency_ms" => row.latency = Some(thousandths(value)?),
            "outcome" => row.outcome = Some(text()?),
            "args_sha256" => row.args = Some(sha256_hex(text()?)?),
            _ => return None,
        }
    }
    // `time` is the first key: without it the loop found nothing else.
    obj.contains_key("grant").then_some(row)
}

fn counters(value: &Value) -> Option<Vec<(&str, String, String)>> {
    value
        .as_array()?
        .iter()
        .map(|c| {
            let c = c.as_object()?;
            let mut entries = c.iter();
            let mut entry = |key: &str| entries.next().filter(|(k, _)| *k == key).map(|e| e.1);
            let name = entry("counter")?.as_str()?;
            let used = entry("used")?.as_number()?.to_string();
            let max = entry("max")?.as_number()?.to_string();
            (c.len() == 3).then_some((name, used, max))
        })
        .collect()
}

/// A float the gateway rounded to three decimals, in thousandths, when it
/// comes back exactly as it was.
fn thousandths(value: &Value) -> Option<i64> {
    let number = value.as_number().filter(|n| n.is_f64())?;
    let f = number.as_f64()?;
    let t = (f * 1000.0).round();
    if !t.is_finite() || t.abs() >= 9.0e15 {
        return None;
    }
    let t = t as i64;
    ((t as f64 / 1000.0).to_bits() == f.to_bits()).then_some(t)
}

fn sha256_hex(text: &str) -> Option<Vec<u8>> {
    let lower = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (text.len() == 64 && lower)
        .then(|| hex::decode(text).ok())
        .flatten()
}

/// The record a row of columns holds (not a `raw` one).
pub(crate) fn decode<S: AsRef<str>>(row: &Row<S>) -> Value {
    let mut m = Map::new();
    let s = |v: &S| Value::String(v.as_ref().to_string());
    let ms = u64::try_from(row.time_ms).unwrap_or(0);
    m.insert("time".into(), Value::String(toolgate_clock::rfc3339(ms)));
    m.insert("grant".into(), s(&row.grant));
    if let Some(v) = &row.session {
        m.insert("session".into(), s(v));
    }
    if let Some(v) = &row.server {
        m.insert("server".into(), s(v));
    }
    m.insert("tool".into(), s(&row.tool));
    m.insert("decision".into(), s(&row.decision));
    if let Some(v) = &row.rule {
        m.insert("rule".into(), s(v));
    }
    if let Some(v) = &row.reason {
        m.insert("reason".into(), s(v));
    }
    if let Some(counters) = &row.counters {
        let number = |text: &str| text.parse::<Number>().map_or(Value::Null, Value::Number);
        let list = counters
            .iter()
            .map(|(name, used, max)| {
                let mut c = Map::new();
                c.insert("counter".into(), s(name));
                c.insert("used".into(), number(used));
                c.insert("max".into(), number(max));
                Value::Object(c)
            })
            .collect();
        m.insert("counters".into(), Value::Array(list));
    }
    let float = |t: i64| Number::from_f64(t as f64 / 1000.0).map_or(Value::Null, Value::Number);
    if let Some(t) = row.decision_us {
        m.insert("decision_us".into(), float(t));
    }
    if let Some(t) = row.latency {
        m.insert("latency_ms".into(), float(t));
    }
    if let Some(v) = &row.outcome {
        m.insert("outcome".into(), s(v));
    }
    if let Some(args) = &row.args {
        m.insert("args_sha256".into(), Value::String(hex::encode(args)));
    }
    Value::Object(m)
}

/// A row's counters as the `counters` column keeps them: `id used max` for
/// each, joined by `;` (the ids are the names' in `strings`).
pub(crate) fn counters_text(counters: &[(i64, &str, &str)]) -> String {
    let mut text = String::new();
    for (i, (id, used, max)) in counters.iter().enumerate() {
        if i > 0 {
            text.push(';');
        }
        text.push_str(&format!("{id} {used} {max}"));
    }
    text
}

/// The `counters` column read back: `None` when it is not of that form.
pub(crate) fn parse_counters(text: &str) -> Option<Vec<(i64, String, String)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(';')
        .map(|c| {
            let mut parts = c.split(' ');
            let id = parts.next()?.parse().ok()?;
            let used = parts.next()?.to_string();
            let max = parts.next()?.to_string();
            parts.next().is_none().then_some((id, used, max))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway_record() -> Value {
        json!({
            "time": "2026-11-21T23:00:00.123Z",
            "grant": "local",
            "session": "0123456789abcdef0123456789abcdef",
            "server": "echo",
            "tool": "echo",
            "decision": "allow",
            "rule": "tools.echo",
            "counters": [{"counter": "calls", "used": 17.0, "max": 1e9}],
            "decision_us": 3.125,
            "latency_ms": 0.153,
            "outcome": "ok",
            "args_sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        })
    }

    fn round_trip(record: &Value) -> (bool, Value) {
        let row = encode(record).unwrap();
        match &row.raw {
            Some(text) => (false, serde_json::from_str(text).unwrap()),
            None => (true, decode(&row)),
        }
    }

    #[test]
    fn a_gateway_record_is_kept_as_columns_and_comes_back_the_same() {
        let record = gateway_record();
        let (columns, back) = round_trip(&record);
        assert!(columns);
        assert_eq!(back, record);
        assert_eq!(
            back.to_string(),
            record.to_string(),
            "key order and numbers"
        );
        let refused = json!({
            "time": "2026-11-21T23:00:00.000Z",
            "grant": "local",
            "session": "s",
            "tool": "delete_all",
            "decision": "deny",
            "rule": "default",
            "reason": "not listed",
            "counters": [],
            "decision_us": 12.0,
            "outcome": "refused",
            "args_sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        });
        let (columns, back) = round_trip(&refused);
        assert!(columns);
        assert_eq!(back.to_string(), refused.to_string());
    }

    #[test]
    fn other_shapes_are_kept_whole() {
        let base = gateway_record();
        let with = |key: &str, value: Value| {
            let mut r = base.clone();
            r[key] = value;
            r
        };
        for odd in [
            with("args", json!({"text": "x"})),
            with("decision_us", json!(3)),
            with("decision_us", json!(0.1234)),
            with("time", json!("2026-11-21T23:00:00Z")),
            with("args_sha256", json!("00")),
            with(
                "counters",
                json!([{"used": 1.0, "counter": "c", "max": 2.0}]),
            ),
            with("server", Value::Null),
            json!({"tool": "t", "time": "2026-11-21T23:00:00.000Z", "grant": "g", "decision": "d"}),
        ] {
            let (columns, back) = round_trip(&odd);
            assert!(!columns, "{odd}");
            assert_eq!(back.to_string(), odd.to_string());
        }
    }

    #[test]
    fn counters_text_round_trips() {
        let text = counters_text(&[(3, "17.0", "1000000000.0"), (4, "1", "2")]);
        assert_eq!(text, "3 17.0 1000000000.0;4 1 2");
        assert_eq!(
            parse_counters(&text).unwrap(),
            vec![
                (3, "17.0".into(), "1000000000.0".into()),
                (4, "1".into(), "2".into())
            ]
        );
        assert_eq!(parse_counters(""), Some(vec![]));
        assert_eq!(parse_counters("x"), None);
    }
}
