//! A small strict JSON reader (RFC 8259) that keeps the position of every
//! value and key. Syntax errors stop reading and are reported with line and
//! column; duplicate keys are reported afterwards and do not stop reading.

use crate::decimal::Decimal;
use crate::tree::{dedup_tree, Member, Node, Number, Pos, Problem, Read, Value};

/// Deepest nesting accepted, so hostile input cannot exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 128;

pub(crate) fn read(source: &str) -> Read {
    let mut reader = Reader {
        chars: source
            .strip_prefix('\u{feff}')
            .unwrap_or(source)
            .chars()
            .peekable(),
        pos: Pos::START,
    };
    let mut root = match reader.document() {
        Ok(node) => node,
        Err(error) => {
            return Read {
                root: None,
                errors: vec![error],
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

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

type Result<T> = std::result::Result<T, Problem>;

/// The object or array opened at `open` has no `close` before the end.
fn unclosed(open: Pos, close: char, what: &str) -> Problem {
    error(
        open,
        format!("this {what} is not closed (expected '{close}' before the end of the file)"),
    )
}

fn error(pos: Pos, message: impl Into<String>) -> Problem {
    Problem {
        pos,
        path: String::new(),
        message: message.into(),
    }
}

fn describe(c: Option<char>) -> String {
    match c {
        None => "the end of the file".to_string(),
        Some(c) if c.is_control() => format!("character U+{:04X}", c as u32),
        Some(c) => format!("{c:?}"),
    }
}

impl Reader<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn skip_whitespace(&mut self) {
        while let Some(' ' | '\t' | '\n' | '\r') = self.peek() {
            self.bump();
        }
    }

    fn document(&mut self) -> Result<Node> {
        self.skip_whitespace();
        if self.peek().is_none() {
            return Err(error(self.pos, "the document is empty"));
        }
        let node = self.value(0)?;
        self.skip_whitespace();
        if self.peek().is_some() {
            let found = describe(self.peek());
            return Err(error(
                self.pos,
                format!("unexpected {found} after the end of the document"),
            ));
        }
        Ok(node)
    }

    fn value(&mut self, depth: usize) -> Result<Node> {
        let pos = self.pos;
        let value = match self.peek() {
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Value::String(self.string()?),
            Some('-' | '0'..='9') => Value::Number(self.number()?),
            Some('t') => self.literal("true", Value::Bool(true))?,
            Some('f') => self.literal("false", Value::Bool(false))?,
            Some('n') => self.literal("null", Value::Null)?,
            other => {
                return Err(error(
                    pos,
                    format!("expected a value, found {}", describe(other)),
                ))
            }
        };
        Ok(Node { pos, value })
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value> {
        let pos = self.pos;
        for expected in word.chars() {
            if self.peek() != Some(expected) {
                return Err(error(
                    pos,
                    format!("expected a value (did you mean {word}?)"),
                ));
            }
            self.bump();
        }
        if matches!(self.peek(), Some(c) if c.is_alphanumeric()) {
            return Err(error(pos, "expected a value"));
        }
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<Value> {
        let members = self.items(depth, '}', "object", |reader| {
            let key_pos = reader.pos;
            if reader.peek() != Some('"') {
                return Err(error(
                    key_pos,
                    format!(
                        "expected a string key in double quotes, found {}",
                        describe(reader.peek())
                    ),
                ));
            }
            let key = reader.string()?;
            reader.skip_whitespace();
            if reader.peek() != Some(':') {
                return Err(error(
                    reader.pos,
                    format!(
                        "expected ':' after a key, found {}",
                        describe(reader.peek())
                    ),
                ));
            }
            reader.bump();
            reader.skip_whitespace();
            let value = reader.value(depth + 1)?;
            Ok(Member {
                key,
                key_pos,
                value,
            })
        })?;
        Ok(Value::Object(members))
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        let items = self.items(depth, ']', "array", |reader| reader.value(depth + 1))?;
        Ok(Value::Array(items))
    }

    /// The members of an object or the items of an array, each read by
    /// `each` (at its first character), up to `close`.
    fn items<T>(
        &mut self,
        depth: usize,
        close: char,
        what: &str,
        mut each: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let (open, empty) = self.enter(depth, close)?;
        let mut items = Vec::new();
        if empty {
            return Ok(items);
        }
        loop {
            self.skip_whitespace();
            if self.peek().is_none() {
                return Err(unclosed(open, close, what));
            }
            items.push(each(self)?);
            if self.after_item(open, close, what)? {
                return Ok(items);
            }
        }
    }

    /// Steps into an object or array at its opening bracket: where it
    /// opens, and whether `close` follows at once (it is empty).
    fn enter(&mut self, depth: usize, close: char) -> Result<(Pos, bool)> {
        let open = self.pos;
        if depth >= MAX_DEPTH {
            return Err(error(open, "the document is nested too deeply"));
        }
        self.bump();
        self.skip_whitespace();
        let empty = self.peek() == Some(close);
        if empty {
            self.bump();
        }
        Ok((open, empty))
    }

    /// After a member or an item: `,` and more (a trailing comma is
    /// refused), or `close`; whether the object or array ended.
    fn after_item(&mut self, open: Pos, close: char, what: &str) -> Result<bool> {
        self.skip_whitespace();
        match self.peek() {
            Some(',') => {
                self.bump();
                self.skip_whitespace();
                if self.peek() == Some(close) {
                    return Err(error(self.pos, format!("trailing comma before '{close}'")));
                }
                Ok(false)
            }
            Some(c) if c == close => {
                self.bump();
                Ok(true)
            }
            None => Err(unclosed(open, close, what)),
            other => Err(error(
                self.pos,
                format!(
                    "expected ',' or '{close}' after a value, found {}",
                    describe(other)
                ),
            )),
        }
    }

    fn string(&mut self) -> Result<String> {
        let open = self.pos;
        self.bump(); // "
        let mut out = String::new();
        loop {
            let pos = self.pos;
            match self.bump() {
                None => return Err(error(open, "this string is not closed")),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let c = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(pos)?,
                        other => {
                            return Err(error(
                                pos,
                                format!(
                                    "invalid escape: backslash followed by {}",
                                    describe(other)
                                ),
                            ))
                        }
                    };
                    out.push(c);
                }
                Some(c) if (c as u32) < 0x20 => {
                    return Err(error(
                        pos,
                        format!(
                            "{} inside a string (write it as an escape such as \\n)",
                            describe(Some(c))
                        ),
                    ))
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self, escape: Pos) -> Result<u32> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self.peek().and_then(|c| c.to_digit(16)).ok_or_else(|| {
                error(
                    escape,
                    "invalid \\u escape (expected four hexadecimal digits)",
                )
            })?;
            self.bump();
            code = code * 16 + digit;
        }
        Ok(code)
    }

    fn unicode_escape(&mut self, escape: Pos) -> Result<char> {
        let first = self.hex4(escape)?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.bump() != Some('\\') || self.bump() != Some('u') {
                return Err(error(escape, "unpaired surrogate in \\u escape"));
            }
            let second = self.hex4(escape)?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(error(escape, "unpaired surrogate in \\u escape"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| error(escape, "unpaired surrogate in \\u escape"))
    }

    fn number(&mut self) -> Result<Number> {
        let pos = self.pos;
        let mut text = String::new();
        let bad = |what: &str| error(pos, format!("invalid number: {what}"));
        if self.peek() == Some('-') {
            text.push('-');
            self.bump();
        }
        match self.peek() {
            Some('0') => {
                text.push('0');
                self.bump();
                if matches!(self.peek(), Some('0'..='9')) {
                    return Err(bad("leading zeros are not allowed"));
                }
            }
            Some('1'..='9') => self.digits(&mut text),
            _ => return Err(bad("expected a digit")),
        }
        if self.peek() == Some('.') {
            text.push('.');
            self.bump();
            if !matches!(self.peek(), Some('0'..='9')) {
                return Err(bad("expected a digit after '.'"));
            }
            self.digits(&mut text);
        }
        if let Some(e @ ('e' | 'E')) = self.peek() {
            text.push(e);
            self.bump();
            if let Some(sign @ ('+' | '-')) = self.peek() {
                text.push(sign);
                self.bump();
            }
            if !matches!(self.peek(), Some('0'..='9')) {
                return Err(bad("expected a digit in the exponent"));
            }
            self.digits(&mut text);
        }
        if matches!(self.peek(), Some(c) if c.is_alphanumeric() || c == '.') {
            return Err(bad("unexpected character after the number"));
        }
        let json = parse_number(&text)
            .ok_or_else(|| error(pos, format!("number {text} is out of range")))?;
        let exact = Decimal::parse(&text).ok_or_else(|| bad("expected a digit"))?;
        Ok(Number::new(json, exact))
    }

    fn digits(&mut self, text: &mut String) {
        while let Some(c @ '0'..='9') = self.peek() {
            text.push(c);
            self.bump();
        }
    }
}

/// Parses number text that is already known to be valid JSON number syntax.
pub(crate) fn parse_number(text: &str) -> Option<serde_json::Number> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Number(n)) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(source: &str, expected: &str) {
        let mut errors = read(source).errors;
        errors.sort_by_key(|e| e.pos);
        let got: Vec<String> = errors
            .iter()
            .map(|e| match e.path.as_str() {
                "" => format!("{}:{}: {}", e.pos.line, e.pos.column, e.message),
                path => format!("{}:{}: {}: {}", e.pos.line, e.pos.column, path, e.message),
            })
            .collect();
        assert_eq!(got.join("\n"), expected, "source: {source:?}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        check_error("", "1:1: the document is empty");
        check_error(
            "{",
            "1:1: this object is not closed (expected '}' before the end of the file)",
        );
        check_error("{\"a\": 1,}", "1:9: trailing comma before '}'");
        check_error("{\"a\" 1}", "1:6: expected ':' after a key, found '1'");
        check_error("[1 2]", "1:4: expected ',' or ']' after a value, found '2'");
        check_error(
            "{\n  \"a\": tru\n}",
            "2:8: expected a value (did you mean true?)",
        );
        check_error("{}\nx", "2:1: unexpected 'x' after the end of the document");
        check_error(
            "\"a\nb\"",
            "1:3: character U+000A inside a string (write it as an escape such as \\n)",
        );
        check_error("01", "1:1: invalid number: leading zeros are not allowed");
        check_error("1e999", "1:1: number 1e999 is out of range");
        check_error("\"\\x\"", "1:2: invalid escape: backslash followed by 'x'");
        check_error(
            "{'a': 1}",
            "1:2: expected a string key in double quotes, found '\\''",
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let read = read("{\"é\": [\"ü\", 2]}");
        let root = read.root.unwrap();
        let Value::Object(members) = root.value else {
            panic!()
        };
        assert_eq!(members[0].key_pos, Pos { line: 1, column: 2 });
        let Value::Array(items) = &members[0].value.value else {
            panic!()
        };
        assert_eq!(
            items[1].pos,
            Pos {
                line: 1,
                column: 13
            }
        );
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_key() {
        check_error(
            "{\"a\": 1,\n \"b\": {\"c\": 1, \"c\": 2},\n \"a\": 3}",
            "2:16: b: duplicate key \"c\"\n3:2: duplicate key \"a\"",
        );
    }

    #[test]
    fn escapes_and_surrogates() {
        let read = read(r#""\u00e9\ud83d\ude00\n""#);
        assert_eq!(read.root.unwrap().to_json(), serde_json::json!("é😀\n"));
        check_error(r#""\ud83d""#, "1:2: unpaired surrogate in \\u escape");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let source = "[".repeat(200);
        assert!(read(&source).errors[0]
            .message
            .contains("nested too deeply"));
    }
}
