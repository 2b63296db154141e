//! The fast path: read what the gateway needs from a client message without
//! building it.
//!
//! [`read_message`] first walks the whole text checking for repeated keys at
//! any depth (no tree is built; keys are borrowed), then reads only the
//! envelope (`id`, `method`, `params`) as borrowed slices of the input. A
//! batch is split into its elements' own texts, each read the same way.

use crate::message::Id;
use crate::strict::StrictError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// One message from a client, as the gateway routes it.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A request: it has a method and a valid id.
    Request {
        id: Id,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A notification: a method and no id.
    Notification {
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A method with an id that is neither a string nor a number.
    BadId { method: Cow<'a, str> },
    /// No method: a response to the server's request, or something the
    /// server will reject itself.
    Other,
}

/// A framed client message: one, or a batch of element texts.
#[derive(Debug)]
pub enum Read<'a> {
    Single(Incoming<'a>),
    Batch(Vec<&'a RawValue>),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

/// Reads one framed message strictly: a repeated key anywhere, invalid UTF-8
/// or a syntax error is an error.
pub fn read_message(bytes: &[u8]) -> Result<Read<'_>, StrictError> {
    check_strict(bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|e| StrictError::Syntax(e.to_string()))?;
    let first = text.trim_start().as_bytes().first().copied();
    if first == Some(b'[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| StrictError::Syntax(e.to_string()))?;
        return Ok(Read::Batch(items));
    }
    incoming(text).map(Read::Single)
}

/// Reads one (non-batch) message whose text is already known to be strict.
pub fn incoming(text: &str) -> Result<Incoming<'_>, StrictError> {
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Ok(Incoming::Other);
    }
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| StrictError::Syntax(e.to_string()))?;
    Ok(match (env.method, env.id) {
        (Some(method), Some(raw)) => match Id::from_raw(raw.get()) {
            Some(id) => Incoming::Request {
                id,
                method,
                params: env.params,
            },
            None => Incoming::BadId { method },
        },
        (Some(method), None) => Incoming::Notification {
            method,
            params: env.params,
        },
        (None, _) => Incoming::Other,
    })
}

/// Checks a JSON text for repeated object keys at any depth, without building it.
pub fn check_strict(bytes: &[u8]) -> Result<(), StrictError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = Walk.deserialize(&mut de).map_err(syntax)?;
    de.end().map_err(syntax)?;
    match found {
        Some(key) => Err(StrictError::DuplicateKey(key)),
        None => Ok(()),
    }
}

fn syntax(e: serde_json::Error) -> StrictError {
    StrictError::Syntax(e.to_string())
}

/// Walks a value; yields the first repeated key found, if any.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(WalkVisitor)
    }
}

struct WalkVisitor;

impl<'de> Visitor<'de> for WalkVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(f) = seq.next_element_seed(Walk)? {
            found = found.or(f);
        }
        Ok(found)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut found = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let inner = map.next_value_seed(Walk)?;
            if found.is_none() {
                if keys.contains(&key) {
                    found = Some(key.clone().into_owned());
                } else if inner.is_some() {
                    found = inner;
                }
            }
            keys.push(key);
        }
        Ok(found)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strict::parse_strict;
    use serde_json::json;

    #[test]
    fn agrees_with_the_tree_parser() {
        let cases: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            br#"{"params":{"name":"echo","name":"delete_all"}}"#,
            br#"{"a":{"x":[{"to":"a","to":"b"}]}}"#,
            br#"{"name":1,"n\u0061me":2}"#,
            br#"[{"id":1},{"id":1,"id":2}]"#,
            br#"{"a":{"b":1},"c":{"b":2}}"#,
            b"{",
            b"\xff",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":1} x",
        ];
        for &case in cases {
            let tree = parse_strict(case).map(|_| ());
            let walk = check_strict(case);
            match (&tree, &walk) {
                (Ok(()), Ok(())) => {}
                (Err(StrictError::DuplicateKey(a)), Err(StrictError::DuplicateKey(b))) => {
                    assert_eq!(a, b)
                }
                (Err(StrictError::Syntax(_)), Err(StrictError::Syntax(_))) => {}
                _ => panic!("{case:?}: tree {tree:?}, walk {walk:?}"),
            }
        }
    }

    #[test]
    fn reads_envelopes() {
        let msg = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#;
        match read_message(msg).unwrap() {
            Read::Single(Incoming::Request { id, method, params }) => {
                assert_eq!(id, Id::of(&json!("a")).unwrap());
                assert_eq!(method, "tools/call");
                assert_eq!(params.unwrap().get(), r#"{"name":"x"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_message(br#"{"jsonrpc":"2.0","method":"n"}"#).unwrap(),
            Read::Single(Incoming::Notification { .. })
        ));
        assert!(matches!(
            read_message(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/call"}"#).unwrap(),
            Read::Single(Incoming::BadId { .. })
        ));
        assert!(matches!(
            read_message(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap(),
            Read::Single(Incoming::Other)
        ));
        match read_message(br#"[{"id":1,"method":"a"}, {"method":"b"}]"#).unwrap() {
            Read::Batch(items) => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[1].get(), r#"{"method":"b"}"#);
            }
            other => panic!("{other:?}"),
        }
        // A method that is not a string is a syntax error for the envelope.
        assert!(read_message(br#"{"id":1,"method":5}"#).is_err());
    }
}
