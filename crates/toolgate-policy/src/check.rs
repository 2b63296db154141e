//! The checks every validator of a spanned tree makes: an object with known
//! fields, a string, a boolean, a required field. Each reports through
//! [`Checker::problem`] at the node it is about and returns `None` when the
//! node is not what was expected. The policy loader and the gateway
//! config's validator both check with these.

use crate::tree::{push_index, quote, Member, Node, Pos, Value};

/// A validator that collects problems; the checks come with it.
pub trait Checker {
    /// Records one problem at `pos` (`path` is the document path).
    fn problem(&mut self, pos: Pos, path: &str, message: impl Into<String>);

    /// `expected {expected}, found {kind}` at `node`.
    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let found = node.value.kind();
        self.problem(
            node.pos,
            path,
            format!("expected {expected}, found {found}"),
        );
    }

    /// Checks that `node` is an object with only `allowed` keys.
    fn object<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<&'n [Member]> {
        let members = self.members(node, path)?;
        for member in members {
            if !allowed.contains(&member.key.as_str()) {
                self.problem(
                    member.key_pos,
                    path,
                    format!(
                        "unknown field {} (expected {})",
                        quote(&member.key),
                        list(allowed)
                    ),
                );
            }
        }
        Some(members)
    }

    /// Checks that `node` is an object (any keys).
    fn members<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Member]> {
        match &node.value {
            Value::Object(members) => Some(members),
            _ => {
                self.wrong_type(node, path, "an object");
                None
            }
        }
    }

    /// The field `name` of an object; `missing field "name"` at `at` (the
    /// object, or its key), followed by ` (hint)` when there is a hint.
    fn required<'n>(
        &mut self,
        at: Pos,
        members: &'n [Member],
        path: &str,
        name: &str,
        hint: Option<&str>,
    ) -> Option<&'n Node> {
        let found = field(members, name);
        if found.is_none() {
            let message = match hint {
                None => format!("missing field {}", quote(name)),
                Some(hint) => format!("missing field {} ({hint})", quote(name)),
            };
            self.problem(at, path, message);
        }
        found
    }

    /// Checks that `node` is an array (`expected` names it in the message)
    /// and each item with `each` (given the item and its path); every item
    /// is checked, and the items only come back when all of them passed.
    fn array<T>(
        &mut self,
        node: &Node,
        path: &str,
        expected: &str,
        mut each: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>>
    where
        Self: Sized,
    {
        let Value::Array(items) = &node.value else {
            self.wrong_type(node, path, expected);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            match each(self, item, &push_index(path, index)) {
                Some(value) => out.push(value),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.value {
            Value::String(s) => Some(s),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(node, path, "a boolean");
                None
            }
        }
    }
}

/// The value of the member `name`.
pub fn field<'n>(members: &'n [Member], name: &str) -> Option<&'n Node> {
    member(members, name).map(|m| &m.value)
}

/// The member `name`.
pub fn member<'n>(members: &'n [Member], name: &str) -> Option<&'n Member> {
    members.iter().find(|m| m.key == name)
}

/// "a, b, c or d"
pub fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
