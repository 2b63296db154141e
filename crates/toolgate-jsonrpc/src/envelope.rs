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
use std::collections::HashSet;
use std::fmt;

/// Objects up to this many keys are checked for repeats in a list.
const SMALL_OBJECT: usize = 16;

/// One message from a client, as the gateway routes it.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A request: it has a method and a valid id (`raw_id` is its text, a
    /// slice of the message).
    Request {
        id: Id,
        raw_id: &'a str,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A notification: a method and no id.
    Notification {
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A method with an id that is neither a string nor a number (`null`
    /// included: MCP ids are never null).
    BadId { method: Cow<'a, str> },
    /// No method, an id, and a `result` or an `error`: an answer to one of
    /// the server's (or the gateway's) requests.
    Response { raw_id: &'a str },
    /// Anything else: not an object, or an object that is neither a request,
    /// a notification nor a response.
    Invalid,
}

/// A framed client message: one, or a batch of element texts.
#[derive(Debug)]
pub enum Read<'a> {
    Single(Incoming<'a>),
    Batch(Vec<&'a RawValue>),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// A member that is there, even when it is `null` (serde reads a `null`
/// `Option` as absent).
fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
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
        return Ok(Incoming::Invalid);
    }
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| StrictError::Syntax(e.to_string()))?;
    let method = match env.method {
        Some(raw) => match serde_json::from_str::<Cow<'_, str>>(raw.get()) {
            Ok(method) => Some(method),
            // A method that is not a string: no request, notification or
            // response can have it.
            Err(_) => return Ok(Incoming::Invalid),
        },
        None => None,
    };
    Ok(match (method, env.id) {
        (Some(method), Some(raw)) => match Id::from_raw(raw.get()) {
            Some(id) => Incoming::Request {
                id,
                raw_id: raw.get(),
                method,
                params: env.params,
            },
            None => Incoming::BadId { method },
        },
        (Some(method), None) => Incoming::Notification {
            method,
            params: env.params,
        },
        (None, Some(raw)) if env.result.is_some() != env.error.is_some() => {
            Incoming::Response { raw_id: raw.get() }
        }
        (None, _) => Incoming::Invalid,
    })
}

/// The text of a strictly read message as the gateway forwards it: one line
/// that every JSON parser and every line reader reads as the gateway did.
///
/// A JSON text can hold a byte that a line reader takes for a line break
/// where a JSON parser sees none: a bare CR between tokens (JSON whitespace,
/// but a line break to Python's universal newlines), and U+0085, U+2028 and
/// U+2029 inside strings (line breaks to `str.splitlines`). The first becomes
/// a space, the others their `\u` escapes: the same JSON value, one line.
/// `bytes` must be a valid JSON text (a raw control character cannot be
/// inside a string, so every CR is between tokens). Allocates only when
/// there is something to change.
pub fn one_line(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = memchr::memchr3(b'\r', 0xC2, 0xE2, &bytes[i..]) {
        let at = i + at;
        let (len, with): (usize, &[u8]) = match &bytes[at..] {
            [b'\r', ..] => (1, b" "),
            [0xC2, 0x85, ..] => (2, b"\\u0085"),
            [0xE2, 0x80, 0xA8, ..] => (3, b"\\u2028"),
            [0xE2, 0x80, 0xA9, ..] => (3, b"\\u2029"),
            _ => {
                i = at + 1;
                continue;
            }
        };
        let o = out.get_or_insert_with(|| Vec::with_capacity(bytes.len() + 8));
        o.extend_from_slice(&bytes[copied..at]);
        o.extend_from_slice(with);
        copied = at + len;
        i = copied;
    }
    match out {
        Some(mut o) => {
            o.extend_from_slice(&bytes[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(bytes),
    }
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
        // A few keys are searched in a list; past that a hash set keeps the
        // walk linear in the size of the object.
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut set: HashSet<Cow<'de, str>> = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let inner = map.next_value_seed(Walk)?;
            if found.is_some() {
                continue;
            }
            let repeated = if set.is_empty() && keys.len() < SMALL_OBJECT {
                let repeated = keys.contains(&key);
                keys.push(key.clone());
                repeated
            } else {
                if set.is_empty() {
                    set.extend(keys.drain(..));
                }
                !set.insert(key.clone())
            };
            if repeated {
                found = Some(key.into_owned());
            } else if inner.is_some() {
                found = inner;
            }
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
            Read::Single(Incoming::Request {
                id,
                raw_id,
                method,
                params,
            }) => {
                assert_eq!(raw_id, r#""a""#);
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
            Read::Single(Incoming::Response { raw_id: "1" })
        ));
        // MCP ids are never null: a request with one is a bad id, not a
        // notification.
        assert!(matches!(
            read_message(br#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#).unwrap(),
            Read::Single(Incoming::BadId { .. })
        ));
        for invalid in [
            &br#"{"x":1}"#[..],
            br#"{"id":1}"#,
            br#"{"id":1,"result":{},"error":{}}"#,
            br#"{"result":{}}"#,
            b"5",
            br#""tools/call""#,
            b"null",
            br#"{"id":1,"method":5}"#,
        ] {
            assert!(
                matches!(
                    read_message(invalid).unwrap(),
                    Read::Single(Incoming::Invalid)
                ),
                "{}",
                String::from_utf8_lossy(invalid)
            );
        }
        match read_message(br#"[{"id":1,"method":"a"}, {"method":"b"}]"#).unwrap() {
            Read::Batch(items) => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[1].get(), r#"{"method":"b"}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_line_leaves_no_line_break_for_any_reader() {
        let cases: &[(&[u8], &[u8])] = &[
            (br#"{"a":1}"#, br#"{"a":1}"#),
            (b"{\"x\":\r{\"a\":1}\r}", b"{\"x\": {\"a\":1} }"),
            (
                "{\"t\":\"a\u{2028}b\u{2029}c\u{85}d\u{e9}\u{201c}\"}".as_bytes(),
                br#"{"t":"a\u2028b\u2029c\u0085d"#,
            ),
        ];
        for (input, prefix) in cases {
            let out = one_line(input);
            assert!(
                out.starts_with(prefix),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            let a: serde_json::Value = serde_json::from_slice(input).unwrap();
            let b: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(a, b);
        }
        assert!(matches!(one_line(br#"{"a":"\u00e9"}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn duplicate_key_check_is_linear() {
        // Regression (issue 13, finding 5): a linear search per key made an
        // object of N keys cost O(N^2).
        fn object(n: usize) -> Vec<u8> {
            let mut s = String::from("{");
            for i in 0..n {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&format!("\"k{i}\":{i}"));
            }
            s.push('}');
            s.into_bytes()
        }
        let small = object(20_000);
        let big = object(200_000);
        let time = |b: &[u8]| {
            let t = toolgate_clock::monotonic_now();
            check_strict(b).unwrap();
            t.elapsed()
        };
        let (ts, tb) = (time(&small), time(&big));
        // Ten times the keys: linear is ~10x; quadratic was ~100x.
        assert!(tb < ts * 40, "20,000 keys {ts:?}, 200,000 keys {tb:?}");
        let mut dup = object(50_000);
        dup.pop();
        dup.extend_from_slice(br#","k49999":0}"#);
        assert_eq!(
            check_strict(&dup),
            Err(StrictError::DuplicateKey("k49999".into()))
        );
    }
}
