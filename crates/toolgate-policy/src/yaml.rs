//! Reads a YAML policy into the same spanned tree as JSON, using the
//! yaml-rust2 event parser. Scalars are typed by the YAML 1.2 core schema
//! (quoted scalars are always strings). Anchors, aliases and tags are
//! refused: a policy should read the same to a person as to the gateway.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::decimal::Decimal;
use crate::tree::{dedup_tree, Member, Node, Number, Pos, Problem, Read, Value};

pub(crate) fn read(source: &str) -> Read {
    read_as(source, "policy")
}

/// Reads a YAML document; `what` names the kind of file in messages
/// ("YAML anchors are not supported in a policy").
pub(crate) fn read_as(source: &str, what: &'static str) -> Read {
    let mut builder = Builder {
        what,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(source);
    // Event by event, not `Parser::load`: that recurses once per level of
    // nesting (a deep document overflowed the stack), and it reads on after
    // the builder has found a problem.
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((event, mark)) => {
                builder.on_event(event, mark);
                if builder.error.is_some() {
                    break;
                }
            }
            Err(scan) => {
                let mark = scan.marker();
                return Read {
                    root: None,
                    errors: vec![Problem {
                        pos: position(mark),
                        path: String::new(),
                        message: format!("invalid YAML: {}", scan.info()),
                    }],
                };
            }
        }
    }
    if let Some(error) = builder.error {
        return Read {
            root: None,
            errors: vec![error],
        };
    }
    let mut root = match (builder.documents.len(), builder.documents.pop()) {
        (1, Some(root)) => root,
        (0, _) => {
            return Read {
                root: None,
                errors: vec![Problem {
                    pos: Pos::START,
                    path: String::new(),
                    message: "the document is empty".to_string(),
                }],
            }
        }
        (_, _) => {
            return Read {
                root: None,
                errors: vec![Problem {
                    pos: builder.second_document.unwrap_or(Pos::START),
                    path: String::new(),
                    message: format!("a {what} file holds one YAML document, found more than one"),
                }],
            }
        }
    };
    let mut errors = Vec::new();
    dedup_tree(&mut root, "", &mut errors);
    Read {
        root: Some(root),
        errors,
    }
}

fn position(mark: &Marker) -> Pos {
    // yaml-rust2 markers have 1-based lines and 0-based columns (in characters).
    Pos {
        line: mark.line().max(1),
        column: mark.col() + 1,
    }
}

enum Frame {
    Sequence(Pos, Vec<Node>),
    /// A mapping and the key waiting for its value.
    Mapping(Pos, Vec<Member>, Option<(String, Pos)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    documents: Vec<Node>,
    second_document: Option<Pos>,
    error: Option<Problem>,
    /// "policy", "config": the kind of file, for messages.
    what: &'static str,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(Problem {
                pos,
                path: String::new(),
                message: message.to_string(),
            });
        }
    }

    /// Adds a finished node to the innermost open collection (or as a document).
    fn add(&mut self, node: Node, key_text: Option<String>) {
        match self.stack.last_mut() {
            None => {
                if self.documents.len() == 1 && self.second_document.is_none() {
                    self.second_document = Some(node.pos);
                }
                self.documents.push(node);
            }
            Some(Frame::Sequence(_, items)) => items.push(node),
            Some(Frame::Mapping(_, members, pending)) => match pending.take() {
                Some((key, key_pos)) => members.push(Member {
                    key,
                    key_pos,
                    value: node,
                }),
                None => match key_text {
                    Some(key) => *pending = Some((key, node.pos)),
                    None => {
                        let pos = node.pos;
                        self.fail(pos, "mapping keys must be plain strings, not collections");
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = position(&mark);
        match event {
            Event::Alias(_) => {
                let message = format!("YAML aliases are not supported in a {}", self.what);
                self.fail(pos, &message)
            }
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _)
                if anchor > 0 =>
            {
                let message = format!("YAML anchors are not supported in a {}", self.what);
                self.fail(pos, &message)
            }
            Event::Scalar(_, _, _, Some(_))
            | Event::SequenceStart(_, Some(_))
            | Event::MappingStart(_, Some(_)) => {
                let message = format!("YAML tags are not supported in a {}", self.what);
                self.fail(pos, &message)
            }
            Event::Scalar(text, style, _, None) => match scalar(&text, style, self.what) {
                Ok(value) => self.add(Node { pos, value }, Some(text)),
                Err(message) => self.fail(pos, &message),
            },
            // The JSON reader's limit: deeper nesting would recurse (in
            // validation, in dropping the tree) until the stack overflows.
            Event::SequenceStart(..) | Event::MappingStart(..)
                if self.stack.len() >= crate::json::MAX_DEPTH =>
            {
                self.fail(pos, "the document is nested too deeply")
            }
            Event::SequenceStart(_, None) => self.stack.push(Frame::Sequence(pos, Vec::new())),
            Event::MappingStart(_, None) => self.stack.push(Frame::Mapping(pos, Vec::new(), None)),
            Event::SequenceEnd => {
                if let Some(Frame::Sequence(pos, items)) = self.stack.pop() {
                    self.add(
                        Node {
                            pos,
                            value: Value::Array(items),
                        },
                        None,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Mapping(pos, members, _)) = self.stack.pop() {
                    self.add(
                        Node {
                            pos,
                            value: Value::Object(members),
                        },
                        None,
                    );
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Types a scalar by the YAML 1.2 core schema.
fn scalar(text: &str, style: TScalarStyle, what: &str) -> Result<Value, String> {
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(
        unsigned,
        ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
    ) {
        return Err(format!(
            "{text} is not a number a {what} can hold (no infinities or NaN)"
        ));
    }
    if let Some(octal) = text.strip_prefix("0o") {
        if !octal.is_empty() && octal.chars().all(|c| c.is_digit(8)) {
            return radix(text, octal, 8);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return radix(text, hex, 16);
        }
    }
    // The exact value is the text's; the serde_json value is what other
    // fields (counts, durations) read.
    let exact = |json: serde_json::Number| {
        Decimal::parse(text)
            .map(|exact| Value::Number(Number::new(json, exact)))
            .ok_or_else(|| format!("number {text} is out of range"))
    };
    if is_core_int(text) {
        let trimmed = text.strip_prefix('+').unwrap_or(text);
        return crate::json::parse_number(trimmed)
            .or_else(|| {
                trimmed
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
            })
            .ok_or_else(|| format!("number {text} is out of range"))
            .and_then(exact);
    }
    if is_core_float(text) {
        return match text.parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
                .ok_or_else(|| format!("number {text} is out of range"))
                .and_then(exact),
            _ => Err(format!("number {text} is out of range")),
        };
    }
    Ok(Value::String(text.to_string()))
}

fn radix(text: &str, digits: &str, base: u32) -> Result<Value, String> {
    u64::from_str_radix(digits, base)
        .map(|n| Value::Number(Number::from(n)))
        .map_err(|_| format!("number {text} is out of range"))
}

/// `[-+]?[0-9]+`
fn is_core_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()),
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

/// A JSON value as a block-style YAML document (no `---` line), for writing
/// policies: keys in their order, strings quoted where YAML needs it.
pub(crate) fn write(value: &serde_json::Value) -> Result<String, String> {
    use yaml_rust2::Yaml;
    fn convert(value: &serde_json::Value) -> Yaml {
        use serde_json::Value as J;
        match value {
            J::Null => Yaml::Null,
            J::Bool(b) => Yaml::Boolean(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            J::String(s) => Yaml::String(s.clone()),
            J::Array(a) => Yaml::Array(a.iter().map(convert).collect()),
            J::Object(o) => {
                let mut hash = yaml_rust2::yaml::Hash::new();
                for (k, v) in o {
                    hash.insert(Yaml::String(k.clone()), convert(v));
                }
                Yaml::Hash(hash)
            }
        }
    }
    let mut text = String::new();
    yaml_rust2::YamlEmitter::new(&mut text)
        .dump(&convert(value))
        .map_err(|e| format!("cannot write YAML: {e:?}"))?;
    let text = text.strip_prefix("---\n").unwrap_or(&text).to_string();
    Ok(text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(source: &str) -> serde_json::Value {
        let read = read(source);
        assert!(read.errors.is_empty(), "{:?}", read.errors);
        read.root.unwrap().to_json()
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(
            json("a: 1\nb: -2.5\nc: true\nd: ~\ne: '1'\nf: hello\ng: 0x1F\nh: 1e3\ni: \"true\"\nj: .5\n"),
            serde_json::json!({"a": 1, "b": -2.5, "c": true, "d": null, "e": "1", "f": "hello",
                "g": 31, "h": 1000.0, "i": "true", "j": 0.5})
        );
    }

    #[test]
    fn positions_are_one_based() {
        let read = read("version: \"1\"\ntools:\n  send_text:\n    action: deny\n");
        let root = read.root.unwrap();
        let members = root.members();
        assert_eq!(members[0].positions(), (Pos::new(1, 1), Pos::new(1, 10)));
        let tools = members[1].value.members();
        assert_eq!(tools[0].key_pos, Pos::new(3, 3));
        let rule = tools[0].value.members();
        assert_eq!(rule[0].value.pos, Pos::new(4, 13));
    }

    #[test]
    fn refusals() {
        let message = |s: &str| read(s).errors[0].message.clone();
        assert_eq!(
            message("a: &x 1\nb: *x\n"),
            "YAML anchors are not supported in a policy"
        );
        assert_eq!(
            message("a: !!str 1\n"),
            "YAML tags are not supported in a policy"
        );
        assert_eq!(
            message("a: 1\n---\nb: 2\n"),
            "a policy file holds one YAML document, found more than one"
        );
        assert_eq!(message(""), "the document is empty");
        assert_eq!(
            message("a: .inf\n"),
            ".inf is not a number a policy can hold (no infinities or NaN)"
        );
        assert!(message("a: [1, 2\n").starts_with("invalid YAML: "));
        assert_eq!(message("a: 1\na: 2\n"), "duplicate key \"a\"");
    }
}
