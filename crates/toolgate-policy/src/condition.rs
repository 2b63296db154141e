//! Conditions on a call's arguments: a path into `args`, an operator and a
//! value. Evaluation fails closed: a missing path or a value of the wrong
//! type makes every operator false, except `exists: false`.

use regex::Regex;
use serde_json::Value;

/// A validated path into the call's arguments: `args` or `args.a.0.b`.
#[derive(Debug, Clone)]
pub(crate) struct ArgPath {
    /// As written, for messages.
    pub text: String,
    pub segments: Vec<String>,
}

impl ArgPath {
    /// Parses `args` / `args.a.b`; `None` when the text is not such a path.
    pub(crate) fn parse(text: &str) -> Option<ArgPath> {
        let rest = text.strip_prefix("args")?;
        let segments = if rest.is_empty() {
            Vec::new()
        } else {
            let rest = rest.strip_prefix('.')?;
            let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
            if segments.iter().any(String::is_empty) {
                return None;
            }
            segments
        };
        Some(ArgPath {
            text: text.to_string(),
            segments,
        })
    }

    /// The value at this path, or `None` when it is missing. Absent arguments
    /// (`Null` at the root) count as missing.
    pub(crate) fn resolve<'v>(&self, arguments: &'v Value) -> Option<&'v Value> {
        if arguments.is_null() {
            return None;
        }
        let mut current = arguments;
        for segment in &self.segments {
            current = match current {
                Value::Object(map) => map.get(segment.as_str())?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    Regex(Regex),
    Contains(Value),
    Exists(bool),
}

pub(crate) const OP_NAMES: &str =
    "eq, neq, in, not_in, lt, lte, gt, gte, regex, contains or exists";

#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub path: ArgPath,
    pub op: Op,
    /// The op and value as written, for the default reason: `lte 100`.
    pub shown: String,
    pub reason: Option<String>,
}

impl Condition {
    pub(crate) fn holds(&self, arguments: &Value) -> bool {
        let found = self.path.resolve(arguments);
        let Some(actual) = found else {
            return matches!(self.op, Op::Exists(false));
        };
        match &self.op {
            Op::Exists(expected) => *expected,
            Op::Eq(v) => json_eq(actual, v),
            Op::Neq(v) => !json_eq(actual, v),
            Op::In(vs) => vs.iter().any(|v| json_eq(actual, v)),
            Op::NotIn(vs) => !vs.iter().any(|v| json_eq(actual, v)),
            Op::Lt(n) => actual.as_f64().is_some_and(|a| a < *n),
            Op::Lte(n) => actual.as_f64().is_some_and(|a| a <= *n),
            Op::Gt(n) => actual.as_f64().is_some_and(|a| a > *n),
            Op::Gte(n) => actual.as_f64().is_some_and(|a| a >= *n),
            Op::Regex(re) => actual.as_str().is_some_and(|s| re.is_match(s)),
            Op::Contains(v) => match (actual, v) {
                (Value::String(haystack), Value::String(needle)) => {
                    haystack.contains(needle.as_str())
                }
                (Value::Array(items), v) => items.iter().any(|item| json_eq(item, v)),
                _ => false,
            },
        }
    }

    /// `condition failed: args.amount lte 100`
    pub(crate) fn default_reason(&self) -> String {
        format!("condition failed: {} {}", self.path.text, self.shown)
    }
}

/// JSON equality with numbers compared by value (`1 == 1.0`) and objects
/// compared regardless of key order.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// Canonical JSON text of a value: object keys sorted, whole numbers written
/// without a fraction, so equal values (by [`json_eq`]) give equal text.
pub(crate) fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.push_str(&n.to_string());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    out.push_str(&format!("{}", f as i64));
                } else {
                    out.push_str(&n.to_string());
                }
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key.as_str()], out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let args = json!({"a": {"b": [10, {"c": "x"}]}, "1": "one"});
        let get = |p: &str| ArgPath::parse(p).unwrap().resolve(&args).cloned();
        assert_eq!(get("args"), Some(args.clone()));
        assert_eq!(get("args.a.b.0"), Some(json!(10)));
        assert_eq!(get("args.a.b.1.c"), Some(json!("x")));
        assert_eq!(get("args.a.b.2"), None);
        assert_eq!(get("args.1"), Some(json!("one")));
        assert_eq!(get("args.a.b.x"), None);
        assert!(ArgPath::parse("arg.a").is_none());
        assert!(ArgPath::parse("args.").is_none());
        assert!(ArgPath::parse("args..a").is_none());
        assert!(ArgPath::parse("argsx").is_none());
        assert_eq!(
            ArgPath::parse("args.x").unwrap().resolve(&Value::Null),
            None
        );
    }

    #[test]
    fn equality_is_numeric_and_order_free() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!(-3), &json!(-3.0)));
        assert!(!json_eq(&json!(1), &json!("1")));
        assert!(json_eq(
            &json!({"a": 1, "b": [2.0]}),
            &json!({"b": [2], "a": 1.0})
        ));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    #[test]
    fn canonical_text() {
        let text = |v: Value| {
            let mut s = String::new();
            canonical_json(&v, &mut s);
            s
        };
        assert_eq!(
            text(json!({"b": 1.0, "a": [true, null, "x"]})),
            r#"{"a":[true,null,"x"],"b":1}"#
        );
        assert_eq!(text(json!(1.5)), "1.5");
        assert_eq!(text(json!("a\u{1f}b")), r#""a\u001fb""#);
    }
}
