//! The spanned document tree that both the JSON and the YAML reader produce.
//!
//! Every value and every object key carries the 1-based line and column
//! (counted in characters) where its token starts, so validation can point at
//! the exact spot of a problem. Object members keep their order; duplicate
//! keys are reported by the readers and dropped before a tree is built.

use std::fmt;

use crate::decimal::Decimal;

/// A 1-based position in the source text (column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    pub const fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<Member>),
}

/// A number as read: its serde_json value (for fields that take a count or
/// a duration; dereferences to it) and its exact decimal value (for the
/// bounds of conditions, which are compared exactly as written).
#[derive(Debug, Clone)]
pub struct Number {
    json: serde_json::Number,
    pub(crate) exact: Decimal,
}

impl Number {
    /// `exact` is the value of the text the number was read from.
    pub(crate) fn new(json: serde_json::Number, exact: Decimal) -> Number {
        Number { json, exact }
    }

    pub fn json(&self) -> &serde_json::Number {
        &self.json
    }
}

impl std::ops::Deref for Number {
    type Target = serde_json::Number;

    fn deref(&self) -> &serde_json::Number {
        &self.json
    }
}

/// A number read without its text (TOML): integers are exact, a float is
/// taken as its shortest text.
impl From<serde_json::Number> for Number {
    fn from(json: serde_json::Number) -> Number {
        let exact = Decimal::from_json(&json);
        Number { json, exact }
    }
}

impl From<i64> for Number {
    fn from(n: i64) -> Number {
        Number {
            json: n.into(),
            exact: Decimal::from_i64(n),
        }
    }
}

impl From<u64> for Number {
    fn from(n: u64) -> Number {
        Number {
            json: n.into(),
            exact: Decimal::from_u64(n),
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.json, f)
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// The members of an object (none for any other value).
    pub fn members(&self) -> &[Member] {
        match &self.value {
            Value::Object(members) => members,
            _ => &[],
        }
    }
}

impl Member {
    /// Where the key and where the value start.
    pub fn positions(&self) -> (Pos, Pos) {
        (self.key_pos, self.value.pos)
    }
}

impl Value {
    /// "a string", "an object", ... for messages like `expected a string, found a number`.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        })
    }
}

impl Node {
    /// The plain JSON value of this node (positions dropped).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.json.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|m| (m.key.clone(), m.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// One problem found while reading or validating, before it gets a file name.
#[derive(Debug, Clone)]
pub struct Problem {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

/// The result of reading a document: a tree (absent after a syntax error)
/// and the problems found on the way (duplicate keys do not stop reading).
pub struct Read {
    pub root: Option<Node>,
    pub errors: Vec<Problem>,
}

/// Appends `.key` or `["key"]` to a document path.
pub fn push_key(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    if simple {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    } else {
        format!("{path}[{}]", quote(key))
    }
}

pub fn push_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Removes duplicate object keys everywhere in the tree, keeping the first
/// occurrence and reporting each later one at its key.
pub fn dedup_tree(node: &mut Node, path: &str, errors: &mut Vec<Problem>) {
    match &mut node.value {
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                dedup_tree(item, &push_index(path, index), errors);
            }
        }
        Value::Object(members) => {
            let mut seen = std::collections::HashSet::new();
            members.retain(|member| {
                if seen.insert(member.key.clone()) {
                    true
                } else {
                    errors.push(Problem {
                        pos: member.key_pos,
                        path: path.to_string(),
                        message: format!("duplicate key {}", quote(&member.key)),
                    });
                    false
                }
            });
            for member in members.iter_mut() {
                let child = push_key(path, &member.key);
                dedup_tree(&mut member.value, &child, errors);
            }
        }
        _ => {}
    }
}

/// A string as a JSON string literal, for messages: `"send_text"`.
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
