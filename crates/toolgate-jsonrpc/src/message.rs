//! Classifying JSON-RPC messages, and building the answers the gateway sends itself.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A request id as the server reads it: two spellings of one number (`1`,
/// `1.0`, `1e0`; `0` and `-0`) or of one string (`"a"`, `"\u0061"`) are the
/// same [`Id`], a string and a number never are. Used to match a server's
/// answer to the request it answers, whatever spelling the server echoes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id(Box<str>);

impl Id {
    /// The id of a value, if it has a valid one (string or number).
    pub fn of(value: &Value) -> Option<Id> {
        match value {
            Value::String(s) => Some(Id(serde_json::to_string(s).ok()?.into())),
            Value::Number(n) => canonical_number(&n.to_string()).map(|k| Id(k.into())),
            _ => None,
        }
    }
    /// The id from its JSON text as it stood in a message; the same [`Id`] as
    /// [`Id::of`] gives for the parsed value, whatever the spelling (and, for
    /// numbers a `Value` cannot hold exactly, the exact one).
    pub fn from_raw(raw: &str) -> Option<Id> {
        let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        let b = raw.as_bytes();
        match b.first()? {
            b'"' if b.len() >= 2 && b[b.len() - 1] == b'"' && !b.contains(&b'\\') => {
                Some(Id(raw.into()))
            }
            b'"' => Id::of(&Value::String(serde_json::from_str(raw).ok()?)),
            b'-' | b'0'..=b'9' => canonical_number(raw).map(|k| Id(k.into())),
            _ => None,
        }
    }

    /// Whether an id spelled `raw` reads the same to every JSON parser: an
    /// integer of at most 15 digits (exact in a double) without leading
    /// zeros and not `-0`, or a string without escapes. Any other spelling
    /// (`-0`, `1e2`, `1.0`, big integers, escaped strings) may come back from
    /// a server spelled otherwise, or mean another number to it.
    pub fn is_plain(raw: &str) -> bool {
        let b = raw.as_bytes();
        if b.len() >= 2 && b[0] == b'"' {
            return b[b.len() - 1] == b'"' && !b.contains(&b'\\');
        }
        let digits = b.strip_prefix(b"-").unwrap_or(b);
        !digits.is_empty()
            && digits.len() <= 15
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || (digits.len() == 1 && b.len() == 1))
    }

    /// The id as JSON (a number as the nearest value a `Value` holds), for
    /// messages that have no spelling of it to echo.
    pub fn to_value(&self) -> Value {
        if self.0.starts_with('"') {
            return serde_json::from_str(&self.0).unwrap_or(Value::Null);
        }
        let (mantissa, exp) = self.0.split_once('e').unwrap_or((&self.0, "0"));
        if let Ok(exp @ 0..=18) = exp.parse::<u32>() {
            if let Ok(m) = mantissa.parse::<i64>() {
                if let Some(n) = 10i64.checked_pow(exp).and_then(|p| m.checked_mul(p)) {
                    return Value::from(n);
                }
            }
        }
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
    /// The canonical key (a JSON string, or `DIGITSeEXP` for a number).
    pub fn key(&self) -> &str {
        &self.0
    }
}

/// A JSON number's value in one spelling: `[-]DIGITSeEXP` with no leading or
/// trailing zeros in DIGITS, and `0` for zero. `None` for text that is not a
/// JSON number. Linear in the length of the text.
fn canonical_number(text: &str) -> Option<String> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if int.is_empty()
        || !all_digits(int)
        || !all_digits(frac)
        || (int.len() > 1 && int.starts_with('0'))
        || (mantissa.contains('.') && frac.is_empty())
    {
        return None;
    }
    // The exponent, exactly: a huge one is kept as text would be, but no
    // JSON-RPC id needs more than i64 (past it the id is refused).
    let exp: i128 = match exp {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) || digits.len() > 18 {
                return None;
            }
            e.parse().ok()?
        }
    };
    let joined;
    let digits = if frac.is_empty() {
        int
    } else {
        joined = format!("{int}{frac}");
        &joined
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some("0".into());
    }
    let trimmed = digits.trim_end_matches('0');
    let exp = exp - frac.len() as i128 + (digits.len() - trimmed.len()) as i128;
    Some(format!("{}{trimmed}e{exp}", if neg { "-" } else { "" }))
}

/// `bytes` with the JSON value `old` (a slice of `bytes`, as a borrowed
/// `RawValue` of it is) replaced by `new`.
pub fn replace_raw(bytes: &[u8], old: &str, new: &str) -> Vec<u8> {
    let start = (old.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
    assert!(
        start <= bytes.len() && start + old.len() <= bytes.len(),
        "replace_raw: the value is not a slice of the message"
    );
    let mut out = Vec::with_capacity(bytes.len() - old.len() + new.len());
    out.extend_from_slice(&bytes[..start]);
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&bytes[start + old.len()..]);
    out
}

/// A message of the gateway's own, serialised with its top-level `id`
/// written as `id` (JSON text, as the client spelled it) instead of the
/// value it holds.
pub fn to_vec_with_id(message: &Value, id: &str) -> Vec<u8> {
    let Value::Object(map) = message else {
        return serde_json::to_vec(message).expect("serialisable");
    };
    let mut out = Vec::with_capacity(128);
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).expect("serialisable");
        out.push(b':');
        if key == "id" {
            out.extend_from_slice(id.as_bytes());
        } else {
            serde_json::to_writer(&mut out, value).expect("serialisable");
        }
    }
    out.push(b'}');
    out
}

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    Request {
        id: &'a Value,
        method: &'a str,
        params: Option<&'a Value>,
    },
    Notification {
        method: &'a str,
        params: Option<&'a Value>,
    },
    Response {
        id: &'a Value,
    },
    /// Not a JSON-RPC 2.0 message shape.
    Invalid,
}

impl<'a> Message<'a> {
    pub fn classify(value: &'a Value) -> Message<'a> {
        let Value::Object(obj) = value else {
            return Message::Invalid;
        };
        let params = obj.get("params");
        match (obj.get("method"), obj.get("id")) {
            (Some(Value::String(method)), Some(id)) if Id::of(id).is_some() => {
                Message::Request { id, method, params }
            }
            (Some(Value::String(method)), None) => Message::Notification { method, params },
            (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
                Message::Response { id }
            }
            _ => Message::Invalid,
        }
    }
}

/// The `id` and `method` of a message, read without building a tree.
#[derive(Debug, Deserialize, Default)]
pub struct Peek<'a> {
    #[serde(default, borrow)]
    pub id: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub error: Option<&'a serde_json::value::RawValue>,
}

impl Peek<'_> {
    /// The id, in the same spelling as [`Id::of`] gives for the parsed value.
    pub fn id(&self) -> Option<Id> {
        Id::from_raw(self.id?.get())
    }
}

/// Reads the id and method of one message; `None` for a batch or non-JSON.
pub fn peek(bytes: &[u8]) -> Option<Peek<'_>> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: &'a serde_json::value::RawValue,
}

/// The id of a message that may not parse strictly (for example one that
/// repeats a key other than `id`), so that an error can still name it.
/// `None` when the id is missing, invalid, or itself repeated.
pub fn peek_id(bytes: &[u8]) -> Option<Id> {
    let only: IdOnly<'_> = serde_json::from_slice(bytes).ok()?;
    Id::from_raw(only.id.get())
}

/// [`peek_id`]'s id as it was spelled (JSON text, a slice of `bytes`).
pub fn peek_raw_id(bytes: &[u8]) -> Option<&str> {
    let only: IdOnly<'_> = serde_json::from_slice(bytes).ok()?;
    let raw = only.id.get();
    Id::from_raw(raw).map(|_| raw)
}

/// A JSON-RPC error response.
pub fn error_response(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = Map::with_capacity(3);
    error.insert("code".into(), Value::from(code));
    error.insert("message".into(), Value::String(message.into()));
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    let mut response = Map::with_capacity(3);
    response.insert("jsonrpc".into(), Value::String("2.0".into()));
    response.insert("id".into(), id.clone());
    response.insert("error".into(), Value::Object(error));
    Value::Object(response)
}

/// A JSON-RPC success response.
pub fn result_response(id: &Value, result: Value) -> Value {
    // Built by hand: `json!` would copy `result` through its serialiser.
    let mut response = Map::with_capacity(3);
    response.insert("jsonrpc".into(), Value::String("2.0".into()));
    response.insert("id".into(), id.clone());
    response.insert("result".into(), result);
    Value::Object(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies() {
        let req = json!({"jsonrpc":"2.0","id":"a","method":"tools/call","params":{}});
        assert!(matches!(
            Message::classify(&req),
            Message::Request {
                method: "tools/call",
                ..
            }
        ));
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        assert!(matches!(
            Message::classify(&note),
            Message::Notification { .. }
        ));
        let resp = json!({"jsonrpc":"2.0","id":3,"result":{}});
        assert!(matches!(Message::classify(&resp), Message::Response { .. }));
        let bad_id = json!({"jsonrpc":"2.0","id":{"x":1},"method":"m"});
        assert_eq!(Message::classify(&bad_id), Message::Invalid);
        assert_eq!(Message::classify(&json!(3)), Message::Invalid);
    }

    #[test]
    fn raw_ids_match_parsed_ids() {
        for raw in [
            "1",
            "-1",
            "0",
            "-0",
            "1.0",
            "1e2",
            "123456789012345678",
            r#""a""#,
            r#""""#,
            r#""\u0041""#,
            r#""é""#,
            r#""a\"b""#,
        ] {
            let parsed: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(Id::from_raw(raw), Id::of(&parsed), "{raw}");
        }
        assert_eq!(Id::from_raw("null"), None);
        assert_eq!(Id::from_raw("[1]"), None);
        // A number a `Value` cannot hold exactly keeps its exact value from
        // the text (serde_json would read it as the nearest double).
        assert_ne!(
            Id::from_raw("123456789012345678901"),
            Id::from_raw("123456789012345680000")
        );
    }

    #[test]
    fn spellings_of_one_id_are_one_id() {
        let same: &[&[&str]] = &[
            &["0", "-0", "0.0", "0e5", "-0.000e-3"],
            &["100", "1e2", "1E2", "100.0", "1000e-1", "0.1e3", "1e+2"],
            &["-7", "-7.00", "-0.7e1"],
            &["9007199254740993", "9007199254740993.0"],
            &[r#""a""#, r#""\u0061""#, " \"a\" "],
        ];
        for group in same {
            for raw in *group {
                assert_eq!(Id::from_raw(raw), Id::from_raw(group[0]), "{raw}");
            }
        }
        assert_ne!(
            Id::from_raw("9007199254740993"),
            Id::from_raw("9007199254740992")
        );
        assert_ne!(Id::from_raw("1"), Id::from_raw(r#""1""#));
        for bad in [
            "01",
            "1.",
            ".5",
            "1e",
            "--1",
            "1e99999999999999999999",
            "+1",
            "true",
        ] {
            assert_eq!(Id::from_raw(bad), None, "{bad}");
        }
        assert_eq!(Id::from_raw("1e2").unwrap().to_value(), json!(100));
        assert_eq!(Id::from_raw("-0").unwrap().to_value(), json!(0));
        assert_eq!(Id::from_raw(r#""\u0061""#).unwrap().to_value(), json!("a"));
        // Linear: a long number costs its length.
        let long = format!("1{}", "0".repeat(100_000));
        assert_eq!(Id::from_raw(&long).unwrap().key(), "1e100000");
    }

    #[test]
    fn plain_ids_read_the_same_everywhere() {
        for plain in [
            "0",
            "1",
            "-1",
            "123456789012345",
            r#""a""#,
            r#""é""#,
            r#""""#,
        ] {
            assert!(Id::is_plain(plain), "{plain}");
        }
        for not in ["-0", "1e2", "1.0", "01", "1234567890123456", r#""\u0061""#] {
            assert!(!Id::is_plain(not), "{not}");
        }
    }

    #[test]
    fn gateway_messages_echo_the_id_as_spelled() {
        let answer = error_response(&Value::Null, -32600, "no", None);
        assert_eq!(
            String::from_utf8(to_vec_with_id(&answer, "1e2")).unwrap(),
            r#"{"jsonrpc":"2.0","id":1e2,"error":{"code":-32600,"message":"no"}}"#
        );
        let line = br#"{"id": -0 ,"result":{}}"#;
        let p = peek(line).unwrap();
        let raw = p.id.unwrap().get();
        assert_eq!(
            replace_raw(line, raw, r#""x""#),
            br#"{"id": "x" ,"result":{}}"#
        );
    }

    #[test]
    fn ids_keep_their_type() {
        assert_ne!(Id::of(&json!(1)), Id::of(&json!("1")));
        assert_eq!(Id::of(&json!(1)).unwrap().to_value(), json!(1));
        assert_eq!(Id::of(&json!(null)), None);
    }

    #[test]
    fn peeks_id_and_method() {
        let p = peek(br#"{"jsonrpc":"2.0","id":"x\"y","result":{"big":[1,2,3]}}"#).unwrap();
        assert_eq!(p.id(), Id::of(&json!("x\"y")));
        assert!(p.method.is_none());
        let p =
            peek(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#).unwrap();
        assert_eq!(p.method.as_deref(), Some("notifications/progress"));
        assert!(peek(b"[1]").is_none());
    }

    #[test]
    fn peeks_id_of_messages_with_repeated_keys() {
        let id = peek_id(br#"{"jsonrpc":"2.0","id":7,"method":"a","method":"b"}"#);
        assert_eq!(id, Id::of(&json!(7)));
        assert_eq!(peek_id(br#"{"id":7,"id":8}"#), None);
        assert_eq!(peek_id(br#"{"method":"a"}"#), None);
    }
}
