//! Strict parsing: a JSON text with a duplicate key anywhere is refused.
//!
//! serde_json keeps the last of two equal keys; an MCP server written in
//! another language may keep the first. A gateway that decides on one reading
//! while the server acts on the other would let `{"name":"echo","name":"delete_all"}`
//! through, so such a message never gets past this module.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StrictError {
    /// Not JSON, not UTF-8, or trailing garbage.
    #[error("parse error: {0}")]
    Syntax(String),
    /// Valid JSON, but an object repeats a key.
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
}

/// A parsed message: one value, or a batch (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Single(Value),
    Batch(Vec<Value>),
}

const DUP_PREFIX: &str = "\u{0}toolgate-duplicate-key:";

/// Parses one framed JSON-RPC message, refusing duplicate keys at any depth.
pub fn parse_strict(bytes: &[u8]) -> Result<Parsed, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(match value {
        Value::Array(items) => Parsed::Batch(items),
        other => Parsed::Single(other),
    })
}

/// A request body that must be one JSON object with no repeated key, read
/// into `T` (which may refuse unknown fields); the error says why not, for a
/// 400 answer.
pub fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match parse_strict(body) {
        Ok(Parsed::Single(value @ Value::Object(_))) => {
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
        Ok(_) => Err("expected a JSON object".into()),
        Err(StrictError::DuplicateKey(key)) => Err(format!("the key {key:?} is repeated")),
        Err(e) => Err(e.to_string()),
    }
}

fn classify(e: serde_json::Error) -> StrictError {
    let text = e.to_string();
    match text.strip_prefix(DUP_PREFIX) {
        Some(rest) => {
            // serde_json appends " at line L column C"; keep only the key.
            let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
            StrictError::DuplicateKey(key.to_owned())
        }
        None => StrictError::Syntax(text),
    }
}

struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(StrictSeed)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // Room for a JSON-RPC envelope's four members from the start: growing
        // an index map rehashes it.
        let mut out = Map::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictSeed)?;
            match out.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(taken) => {
                    return Err(de::Error::custom(format_args!(
                        "{DUP_PREFIX}{}",
                        taken.key()
                    )));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: &[u8], expected: Result<Parsed, StrictError>) {
        assert_eq!(
            parse_strict(input),
            expected,
            "input: {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn accepts_ordinary_messages() {
        check(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            Ok(Parsed::Single(
                json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}),
            )),
        );
        check(
            br#"[{"a":1},{"a":2}]"#,
            Ok(Parsed::Batch(vec![json!({"a":1}), json!({"a":2})])),
        );
        check(
            b"  {\"a\":\"\\u00e9\"}  ",
            Ok(Parsed::Single(json!({"a":"é"}))),
        );
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        check(
            br#"{"params":{"name":"echo","name":"delete_all"}}"#,
            Err(StrictError::DuplicateKey("name".into())),
        );
        check(
            br#"{"params":{"arguments":{"x":[{"to":"a","to":"b"}]}}}"#,
            Err(StrictError::DuplicateKey("to".into())),
        );
        // Two spellings of one key: the escape decodes to the same string.
        check(
            br#"{"name":1,"n\u0061me":2}"#,
            Err(StrictError::DuplicateKey("name".into())),
        );
        check(
            br#"[{"id":1},{"id":1,"id":2}]"#,
            Err(StrictError::DuplicateKey("id".into())),
        );
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            &b"{"[..],
            b"{\"a\":1} x",
            b"\xff\xfe",
            b"{\"a\":\"\xc3\x28\"}",
            b"{\"a\":\"\\ud800\"}",
            b"",
            b"{'a':1}",
        ] {
            assert!(
                matches!(parse_strict(bad), Err(StrictError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn request_bodies_are_one_object_without_repeated_or_unknown_keys() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            reason: Option<String>,
        }
        assert_eq!(
            parse_object::<Body>(br#"{"reason":"ok"}"#),
            Ok(Body {
                reason: Some("ok".into())
            })
        );
        assert_eq!(
            parse_object::<Body>(br#"{"reason":"a","reason":"b"}"#),
            Err(r#"the key "reason" is repeated"#.to_string())
        );
        assert!(parse_object::<Body>(br#"{"reason":"a","by":"x"}"#)
            .unwrap_err()
            .contains("unknown field `by`"));
        for not_an_object in [&b"[]"[..], b"[{}]", b"\"x\"", b"null", b"1"] {
            assert_eq!(
                parse_object::<Body>(not_an_object),
                Err("expected a JSON object".to_string()),
                "{:?}",
                String::from_utf8_lossy(not_an_object)
            );
        }
        assert!(parse_object::<Body>(b"{")
            .unwrap_err()
            .contains("parse error"));
    }
}
