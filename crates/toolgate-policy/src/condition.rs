//! Conditions on a call's arguments: a path into `args`, an operator and a
//! value. Evaluation fails closed: a missing path or a value of the wrong
//! type makes every operator false, except `exists: false`.
//!
//! Numbers are compared exactly, never as f64s: `lte 100` does not admit
//! `100.00000000000001`, nor `lte 9007199254740992` admit
//! `9007199254740993`, and `eq 100` admits `1e2` and `100.0` (numbers are
//! compared by value). A policy's numbers are kept as [`Decimal`]s, exactly
//! as written. An argument's number is exact when serde_json read it as an
//! integer (an i64 or u64 holds the value of its text); when it read an f64,
//! the value may have lost digits, so the number is taken from the JSON text
//! of the arguments (`Call::arguments_text`, which both gateways give): the
//! token at the condition's path is read as a `Decimal` (time linear in its
//! length, any exponent). Without that text, an f64 is compared only when
//! every decimal that can read as it gives the same answer
//! ([`compare_f64`]); otherwise the condition is not satisfied, and the
//! reason says the number cannot be compared exactly ([`Outcome::Inexact`]).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use regex::Regex;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::decimal::{compare_f64, Bound, Decimal};
use crate::tree;
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

/// A value from the policy that an argument is compared with: JSON, with
/// numbers kept exactly as written.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Null,
    Bool(bool),
    Number(Bound),
    String(String),
    Array(Vec<Operand>),
    Object(HashMap<String, Operand>),
}

impl Operand {
    /// The policy's value (duplicate keys were refused before).
    pub(crate) fn of(node: &tree::Node) -> Operand {
        match &node.value {
            tree::Value::Null => Operand::Null,
            tree::Value::Bool(b) => Operand::Bool(*b),
            tree::Value::Number(n) => Operand::Number(Bound::new(n.exact.clone())),
            tree::Value::String(s) => Operand::String(s.clone()),
            tree::Value::Array(items) => Operand::Array(items.iter().map(Operand::of).collect()),
            tree::Value::Object(members) => Operand::Object(
                members
                    .iter()
                    .map(|m| (m.key.clone(), Operand::of(&m.value)))
                    .collect(),
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Eq(Operand),
    Neq(Operand),
    In(Vec<Operand>),
    NotIn(Vec<Operand>),
    Lt(Bound),
    Lte(Bound),
    Gt(Bound),
    Gte(Bound),
    Regex(Regex),
    Contains(Operand),
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

/// The arguments a condition reads: the value, and the JSON text it was
/// read from when the caller has it (numbers are then read exactly).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arguments<'a> {
    pub value: &'a Value,
    pub text: Option<&'a str>,
}

/// Whether a condition is satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Holds,
    Fails,
    /// Not satisfied: the answer depends on digits of a number that were
    /// lost (an f64 without the text it was read from).
    Inexact,
}

/// `Some(answer)`, or `None` when it cannot be known exactly.
type Truth = Option<bool>;

/// Every one true: false as soon as one is certainly false, else unknown
/// if one is unknown.
fn all(truths: impl Iterator<Item = Truth>) -> Truth {
    let mut known = true;
    for truth in truths {
        match truth {
            Some(false) => return Some(false),
            None => known = false,
            Some(true) => {}
        }
    }
    known.then_some(true)
}

/// One of them true: true as soon as one is certainly true, else unknown
/// if one is unknown.
fn any(truths: impl Iterator<Item = Truth>) -> Truth {
    let not = |truth: Truth| truth.map(|b| !b);
    not(all(truths.map(not)))
}

/// The argument at a condition's path: as serde_json read it, or, when it
/// holds an f64 and the text is there, read exactly from its text.
enum Actual<'v> {
    Read(&'v Value),
    Exact(tree::Node),
}

impl Condition {
    pub(crate) fn check(&self, arguments: Arguments<'_>) -> Outcome {
        let Some(found) = self.path.resolve(arguments.value) else {
            return if matches!(self.op, Op::Exists(false)) {
                Outcome::Holds
            } else {
                Outcome::Fails
            };
        };
        let actual = || match arguments.text {
            Some(text) if has_float(found) => match exact_at(text, &self.path, found) {
                Some(node) => Actual::Exact(node),
                None => Actual::Read(found),
            },
            _ => Actual::Read(found),
        };
        let order = |bound: &Bound| match actual() {
            Actual::Read(Value::Number(n)) => order_of(n, bound),
            Actual::Exact(tree::Node {
                value: tree::Value::Number(n),
                ..
            }) => Some(n.exact.cmp(&bound.exact)),
            _ => None,
        };
        let is_number = found.is_number();
        let truth: Truth = match &self.op {
            Op::Exists(expected) => Some(*expected),
            Op::Eq(v) => equals(v, &actual()),
            Op::Neq(v) => equals(v, &actual()).map(|eq| !eq),
            Op::In(vs) => {
                let actual = actual();
                any(vs.iter().map(|v| equals(v, &actual)))
            }
            Op::NotIn(vs) => {
                let actual = actual();
                all(vs.iter().map(|v| equals(v, &actual).map(|eq| !eq)))
            }
            Op::Lt(b) if is_number => order(b).map(|o| o == Ordering::Less),
            Op::Lte(b) if is_number => order(b).map(|o| o != Ordering::Greater),
            Op::Gt(b) if is_number => order(b).map(|o| o == Ordering::Greater),
            Op::Gte(b) if is_number => order(b).map(|o| o != Ordering::Less),
            Op::Lt(_) | Op::Lte(_) | Op::Gt(_) | Op::Gte(_) => Some(false),
            Op::Regex(re) => Some(found.as_str().is_some_and(|s| re.is_match(s))),
            Op::Contains(v) => match (found, v) {
                (Value::String(haystack), Operand::String(needle)) => {
                    Some(haystack.contains(needle.as_str()))
                }
                (Value::Array(_), v) => match actual() {
                    Actual::Read(Value::Array(items)) => {
                        any(items.iter().map(|item| equals_read(v, item)))
                    }
                    Actual::Exact(tree::Node {
                        value: tree::Value::Array(items),
                        ..
                    }) => Some(items.iter().any(|item| equals_exact(v, item))),
                    _ => Some(false),
                },
                _ => Some(false),
            },
        };
        match truth {
            Some(true) => Outcome::Holds,
            Some(false) => Outcome::Fails,
            None => Outcome::Inexact,
        }
    }

    /// `condition failed: args.amount lte 100`
    pub(crate) fn default_reason(&self) -> String {
        format!("condition failed: {} {}", self.path.text, self.shown)
    }

    /// Why an [`Outcome::Inexact`] condition is not satisfied.
    pub(crate) fn inexact_note(&self) -> String {
        format!(
            "the number at {} cannot be compared exactly",
            self.path.text
        )
    }
}

/// How an argument's number (as serde_json read it) compares with a bound:
/// integers exactly, an f64 only when every decimal behind it agrees.
fn order_of(n: &serde_json::Number, bound: &Bound) -> Option<Ordering> {
    if let Some(i) = n.as_i64() {
        Some(Decimal::from_i64(i).cmp(&bound.exact))
    } else if let Some(u) = n.as_u64() {
        Some(Decimal::from_u64(u).cmp(&bound.exact))
    } else {
        compare_f64(n.as_f64()?, bound)
    }
}

fn equals(operand: &Operand, actual: &Actual<'_>) -> Truth {
    match actual {
        Actual::Read(value) => equals_read(operand, value),
        Actual::Exact(node) => Some(equals_exact(operand, node)),
    }
}

/// JSON equality with numbers compared by value (`1 == 1.0`) and objects
/// compared regardless of key order, against a value as serde_json read it.
fn equals_read(operand: &Operand, value: &Value) -> Truth {
    match (operand, value) {
        (Operand::Null, Value::Null) => Some(true),
        (Operand::Bool(a), Value::Bool(b)) => Some(a == b),
        (Operand::Number(bound), Value::Number(n)) => {
            order_of(n, bound).map(|o| o == Ordering::Equal)
        }
        (Operand::String(a), Value::String(b)) => Some(a == b),
        (Operand::Array(xs), Value::Array(ys)) => {
            if xs.len() != ys.len() {
                return Some(false);
            }
            all(xs.iter().zip(ys).map(|(x, y)| equals_read(x, y)))
        }
        (Operand::Object(xs), Value::Object(ys)) => {
            if xs.len() != ys.len() {
                return Some(false);
            }
            all(ys
                .iter()
                .map(|(k, y)| xs.get(k).map_or(Some(false), |x| equals_read(x, y))))
        }
        _ => Some(false),
    }
}

/// The same equality, against a value read exactly from its text.
fn equals_exact(operand: &Operand, node: &tree::Node) -> bool {
    match (operand, &node.value) {
        (Operand::Null, tree::Value::Null) => true,
        (Operand::Bool(a), tree::Value::Bool(b)) => a == b,
        (Operand::Number(bound), tree::Value::Number(n)) => bound.exact == n.exact,
        (Operand::String(a), tree::Value::String(b)) => a == b,
        (Operand::Array(xs), tree::Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| equals_exact(x, y))
        }
        (Operand::Object(xs), tree::Value::Object(ys)) => {
            xs.len() == ys.len()
                && ys
                    .iter()
                    .all(|m| xs.get(&m.key).is_some_and(|x| equals_exact(x, &m.value)))
        }
        _ => false,
    }
}

/// Whether a value holds a number serde_json read as an f64 (whose text
/// may say more than the f64 does).
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => !(n.is_i64() || n.is_u64()),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// The argument at `path` read exactly from the arguments' text; `None`
/// when the text does not hold it, or holds something else than `read`
/// (then the value as read is used, which fails closed where it must).
fn exact_at(text: &str, path: &ArgPath, read: &Value) -> Option<tree::Node> {
    let mut current = text;
    for segment in &path.segments {
        let mut de = serde_json::Deserializer::from_str(current);
        current = Child { segment }.deserialize(&mut de).ok()??.get();
    }
    let parsed = crate::json::read(current);
    let node = parsed.root.filter(|_| parsed.errors.is_empty())?;
    agrees(&node, read).then_some(node)
}

/// Whether a value read from text is the one serde_json read: the same
/// shape, and every number one that serde_json could have read that way.
fn agrees(node: &tree::Node, read: &Value) -> bool {
    match (&node.value, read) {
        (tree::Value::Null, Value::Null) => true,
        (tree::Value::Bool(a), Value::Bool(b)) => a == b,
        (tree::Value::String(a), Value::String(b)) => a == b,
        (tree::Value::Number(exact), Value::Number(n)) => match n.as_f64() {
            _ if n.is_i64() || n.is_u64() => Decimal::from_json(n) == exact.exact,
            Some(x) => compare_f64(x, &Bound::new(exact.exact.clone())).is_none(),
            None => false,
        },
        (tree::Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| agrees(x, y))
        }
        (tree::Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|m| ys.get(m.key.as_str()).is_some_and(|y| agrees(&m.value, y)))
        }
        _ => false,
    }
}

/// Finds one member (or item) of a JSON object (or array) in its text,
/// skipping the others without reading them; `None` when it is not there,
/// or a key is repeated (the text then reads two ways).
struct Child<'s> {
    segment: &'s str,
}

impl<'de> DeserializeSeed<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut repeated = false;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.segment {
                repeated |= found.is_some();
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.filter(|_| !repeated))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The same reading of an index as `ArgPath::resolve`.
        let wanted = self.segment.parse::<usize>().ok();
        let mut found = None;
        let mut index = 0;
        loop {
            if Some(index) == wanted {
                match seq.next_element::<&'de RawValue>()? {
                    Some(item) => found = Some(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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

    /// `a` from a policy, `b` an argument (by its text, and as serde_json
    /// reads it): whether `eq` holds.
    fn eq(a: &str, b: &str) -> Outcome {
        let operand = Operand::of(&crate::json::read(a).root.unwrap());
        let arguments: Value = serde_json::from_str(&format!("{{\"x\": {b}}}")).unwrap();
        let text = format!("{{\"x\": {b}}}");
        let condition = Condition {
            path: ArgPath::parse("args.x").unwrap(),
            op: Op::Eq(operand),
            shown: String::new(),
            reason: None,
        };
        condition.check(Arguments {
            value: &arguments,
            text: Some(&text),
        })
    }

    #[test]
    fn equality_is_numeric_and_order_free() {
        assert_eq!(eq("1", "1.0"), Outcome::Holds);
        assert_eq!(eq("-3", "-3.0"), Outcome::Holds);
        assert_eq!(eq("1", "\"1\""), Outcome::Fails);
        assert_eq!(
            eq(r#"{"a": 1, "b": [2.0]}"#, r#"{"b": [2], "a": 1.0}"#),
            Outcome::Holds
        );
        assert_eq!(eq(r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#), Outcome::Fails);
    }

    #[test]
    fn a_child_is_found_in_the_text() {
        let text = r#"{"a": {"b": [10, {"c": 1.50}]}, "\u0064": 2.0, "r": 1, "r": 2}"#;
        let at = |path: &str| {
            let path = ArgPath::parse(path).unwrap();
            let mut current = text;
            for segment in &path.segments {
                let mut de = serde_json::Deserializer::from_str(current);
                current = Child { segment }.deserialize(&mut de).ok()??.get();
            }
            Some(current)
        };
        assert_eq!(at("args.a.b.1.c"), Some("1.50"));
        assert_eq!(at("args.a.b.0"), Some("10"));
        assert_eq!(at("args.a.b.2"), None);
        assert_eq!(at("args.d"), Some("2.0"));
        assert_eq!(at("args.r"), None); // repeated: reads two ways
        assert_eq!(at("args.a.b.1.c.x"), None);
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
