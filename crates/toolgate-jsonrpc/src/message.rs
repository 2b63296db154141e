//! Classifying JSON-RPC messages, and building the answers the gateway sends itself.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A request id, kept as the JSON value it was (a string and a number are different ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id(String);

impl Id {
    /// The id of a value, if it has a valid one (string or number).
    pub fn of(value: &Value) -> Option<Id> {
        match value {
            Value::String(_) | Value::Number(_) => Some(Id(value.to_string())),
            _ => None,
        }
    }
    /// The id from its JSON text as it stood in a message; the same [`Id`] as
    /// [`Id::of`] gives for the parsed value, whatever the spelling.
    pub fn from_raw(raw: &str) -> Option<Id> {
        let b = raw.as_bytes();
        // Fast paths: a plain integer, or a string without escapes, is
        // already in serde_json's spelling.
        let plain_int = {
            let digits = b.strip_prefix(b"-").unwrap_or(b);
            !digits.is_empty()
                && digits.len() < 19
                && digits.iter().all(u8::is_ascii_digit)
                && (digits[0] != b'0' || (digits.len() == 1 && b.len() == 1))
        };
        let plain_str =
            b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' && !b.contains(&b'\\');
        if plain_int || plain_str {
            return Some(Id(raw.to_owned()));
        }
        Id::of(&serde_json::from_str(raw).ok()?)
    }

    /// The id as JSON, for writing it back.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
    /// The id's JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
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
            "123456789012345678901",
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
