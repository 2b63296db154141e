//! Reads a config's text into the policy crate's spanned tree, whatever its
//! syntax: YAML and JSON through the policy crate's readers, TOML through
//! `toml_edit` (whose spans are turned into 1-based lines and columns counted
//! in characters). Duplicate keys are refused in every syntax: by the tree's
//! dedup pass for YAML and JSON, by the TOML parser itself for TOML.

use toolgate_policy::document::{
    quote, read_json, read_yaml, Member, Node, Pos, Problem, Read, Value,
};

use crate::ConfigFormat;

pub(crate) fn read(source: &str, format: ConfigFormat) -> Read {
    match format {
        ConfigFormat::Yaml => read_yaml(source, "config"),
        ConfigFormat::Json => read_json(source),
        ConfigFormat::Toml => read_toml(source),
    }
}

/// The keys of the top-level object, when some syntax reads the text.
pub(crate) fn top_level_keys(source: &str) -> Option<Vec<String>> {
    let formats = if source.trim_start().starts_with('{') {
        [ConfigFormat::Json, ConfigFormat::Yaml, ConfigFormat::Toml]
    } else {
        [ConfigFormat::Yaml, ConfigFormat::Toml, ConfigFormat::Json]
    };
    formats
        .into_iter()
        .find_map(|format| match read(source, format).root {
            Some(Node {
                value: Value::Object(members),
                ..
            }) => Some(members.into_iter().map(|m| m.key).collect()),
            _ => None,
        })
}

/// Byte offsets → 1-based line and character column.
struct Lines<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(source: &'a str) -> Lines<'a> {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Lines { source, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Pos { line, column }
    }

    fn span(&self, span: Option<std::ops::Range<usize>>) -> Option<Pos> {
        span.map(|s| self.pos(s.start))
    }
}

fn read_toml(source: &str) -> Read {
    let lines = Lines::new(source);
    let document = match toml_edit::Document::parse(source) {
        Ok(document) => document,
        Err(error) => {
            let mut message = format!("invalid TOML: {}", error.message().trim_end());
            // toml_edit says only "duplicate key"; name it, as the other readers do.
            if let Some(key) = error.span().and_then(|span| source.get(span)) {
                if message.ends_with("duplicate key") && !key.trim().is_empty() {
                    message = format!("duplicate key {}", quote(key.trim().trim_matches('"')));
                }
            }
            return Read {
                root: None,
                errors: vec![Problem {
                    pos: lines.span(error.span()).unwrap_or(Pos::START),
                    path: String::new(),
                    message,
                }],
            };
        }
    };
    let mut reader = TomlReader {
        lines,
        errors: Vec::new(),
    };
    let root = reader.table(&document, Pos::START);
    if reader.errors.is_empty() {
        Read {
            root: Some(root),
            errors: Vec::new(),
        }
    } else {
        Read {
            root: None,
            errors: reader.errors,
        }
    }
}

struct TomlReader<'a> {
    lines: Lines<'a>,
    errors: Vec<Problem>,
}

impl TomlReader<'_> {
    fn table(&mut self, table: &toml_edit::Table, fallback: Pos) -> Node {
        let pos = self.lines.span(table.span()).unwrap_or(fallback);
        Node {
            pos,
            value: self.members(table, pos),
        }
    }

    /// The members of a table, `[header]` or `{ inline }`, each at its key.
    fn members(&mut self, table: &dyn toml_edit::TableLike, pos: Pos) -> Value {
        let mut members = Vec::new();
        for (key, item) in table.iter() {
            let key_pos = self
                .lines
                .span(table.key(key).and_then(|k| k.span()))
                .unwrap_or(pos);
            if let Some(value) = self.item(item, key_pos) {
                members.push(Member {
                    key: key.to_string(),
                    key_pos,
                    value,
                });
            }
        }
        Value::Object(members)
    }

    fn item(&mut self, item: &toml_edit::Item, fallback: Pos) -> Option<Node> {
        match item {
            toml_edit::Item::None => None,
            toml_edit::Item::Value(value) => Some(self.value(value, fallback)),
            toml_edit::Item::Table(table) => Some(self.table(table, fallback)),
            toml_edit::Item::ArrayOfTables(tables) => {
                let pos = self.lines.span(tables.span()).unwrap_or(fallback);
                let items = tables.iter().map(|t| self.table(t, pos)).collect();
                Some(Node {
                    pos,
                    value: Value::Array(items),
                })
            }
        }
    }

    fn value(&mut self, value: &toml_edit::Value, fallback: Pos) -> Node {
        use toml_edit::Value as T;
        let pos = self.lines.span(value.span()).unwrap_or(fallback);
        let value = match value {
            T::String(s) => Value::String(s.value().clone()),
            T::Integer(i) => Value::Number((*i.value()).into()),
            T::Float(f) => match serde_json::Number::from_f64(*f.value()) {
                Some(n) => Value::Number(n.into()),
                None => {
                    self.errors.push(Problem {
                        pos,
                        path: String::new(),
                        message: format!(
                            "{} is not a number a config can hold (no infinities or NaN)",
                            f.value()
                        ),
                    });
                    Value::Null
                }
            },
            T::Boolean(b) => Value::Bool(*b.value()),
            T::Datetime(_) => {
                self.errors.push(Problem {
                    pos,
                    path: String::new(),
                    message:
                        "TOML dates and times are not supported in a config (quote it as a string)"
                            .to_string(),
                });
                Value::Null
            }
            T::Array(array) => Value::Array(array.iter().map(|v| self.value(v, pos)).collect()),
            T::InlineTable(table) => self.members(table, pos),
        };
        Node { pos, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_positions_count_characters() {
        let read = read_toml("# é\nlisten = \"x\"\n[servers.a]\ncommand = \"é\"\n");
        assert!(read.errors.is_empty(), "{:?}", read.errors);
        let root = read.root.unwrap();
        let top = root.members();
        assert_eq!(top[0].positions(), (Pos::new(2, 1), Pos::new(2, 10)));
        let a = top[1].value.members()[0].value.members();
        assert_eq!(a[0].positions(), (Pos::new(4, 1), Pos::new(4, 11)));
    }

    #[test]
    fn top_level_keys_in_every_syntax() {
        let keys = |s: &str| top_level_keys(s).unwrap();
        assert_eq!(keys("servers: {}\nlisten: x\n"), ["servers", "listen"]);
        assert_eq!(keys("{\"servers\": {}}"), ["servers"]);
        assert_eq!(keys("[servers.a]\ncommand = \"x\"\n"), ["servers"]);
    }
}
