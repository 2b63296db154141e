//! Validation: walks the spanned tree, collects every problem at once (each
//! with its position and document path) and builds a [`Policy`] only when
//! there are none. Nothing half-valid leaves this module.

use std::collections::HashMap;

use regex::RegexBuilder;
use serde_json::Value as Json;

use crate::check::{field, Checker};
use crate::condition::{ArgPath, Condition, Op, Operand, OP_NAMES};
use crate::decimal::Bound;
use crate::duration;
use crate::glob::{is_pattern, Pattern};
use crate::policy::{
    number, window_name, Action, Approval, Cost, DefaultAction, Limit, Policy, Rule, RuleRef, Scope,
};
use crate::tree::{push_index, push_key, quote, Node, Pos, Problem, Value};
use crate::WindowMs;

/// The longest window: 365 days, in seconds.
pub(crate) const MAX_WINDOW_SECONDS: u64 = duration::MAX_SECONDS;
/// Compiled-size limit for condition regexes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const TOP_FIELDS: &[&str] = &[
    "$schema",
    "version",
    "default",
    "description",
    "tools",
    "all_tools",
    "pins",
];
const PINS_FIELDS: &[&str] = &["on_change"];
const RULE_FIELDS: &[&str] = &[
    "action",
    "reason",
    "description",
    "limits",
    "conditions",
    "approval",
];
const APPROVAL_FIELDS: &[&str] = &["via", "hold", "expires"];
/// The longest a call may be held waiting for a decision.
const MAX_HOLD_MS: u64 = 300_000;
const LIMIT_FIELDS: &[&str] = &["counter", "window", "max", "scope", "cost"];
const CONDITION_FIELDS: &[&str] = &["path", "op", "value", "reason"];
const ALL_TOOLS_FIELDS: &[&str] = &["limits"];

pub(crate) fn load(root: &Node) -> Result<Policy, Vec<Problem>> {
    let mut v = Validator::default();
    let policy = v.policy(root);
    match policy {
        Some(policy) if v.problems.is_empty() => Ok(policy),
        _ => Err(v.problems),
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    /// Counter name → (window, where it was first declared).
    counters: HashMap<String, (WindowMs, String)>,
    counter_order: Vec<(String, WindowMs)>,
}

impl Checker for Validator {
    fn problem(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }
}

impl Validator {
    fn policy(&mut self, root: &Node) -> Option<Policy> {
        let members = self.object(root, "", TOP_FIELDS)?;
        let mut ok = true;

        if let Some(node) = self.required(root.pos, members, "", "version", None) {
            match &node.value {
                Value::String(s) if s == "1" => {}
                Value::String(s) => {
                    self.problem(
                        node.pos,
                        "version",
                        format!("unsupported version {} (expected \"1\")", quote(s)),
                    );
                }
                _ => self.wrong_type(node, "version", "the string \"1\""),
            }
        }

        let default = match self.required(root.pos, members, "", "default", None) {
            Some(node) => match self.string(node, "default") {
                Some("allow") => Some(DefaultAction::Allow),
                Some("deny") => Some(DefaultAction::Deny),
                Some(other) => {
                    self.problem(
                        node.pos,
                        "default",
                        format!("unknown default {} (expected allow or deny)", quote(other)),
                    );
                    None
                }
                None => None,
            },
            None => None,
        };

        let mut description = None;
        let mut rules = Vec::new();
        let mut all_tools = Vec::new();
        let mut pins_block = true;
        for member in members {
            let path = push_key("", &member.key);
            match member.key.as_str() {
                "$schema" => {
                    self.string(&member.value, &path);
                }
                "description" => {
                    description = self.string(&member.value, &path).map(str::to_string)
                }
                "tools" => {
                    let Some(entries) = self.members(&member.value, &path) else {
                        ok = false;
                        continue;
                    };
                    for entry in entries {
                        let rule_path = push_key(&path, &entry.key);
                        if entry.key.is_empty() {
                            self.problem(entry.key_pos, &path, "tool name must not be empty");
                        }
                        let rule_ref = RuleRef::tool(&entry.key);
                        match self.rule(&entry.value, &rule_path, rule_ref) {
                            Some(rule) => rules.push((entry.key.clone(), rule)),
                            None => ok = false,
                        }
                    }
                }
                "pins" => {
                    let Some(fields) = self.object(&member.value, &path, PINS_FIELDS) else {
                        ok = false;
                        continue;
                    };
                    if let Some(value) = field(fields, "on_change") {
                        let on_change_path = push_key(&path, "on_change");
                        match self.string(value, &on_change_path) {
                            Some("block") => pins_block = true,
                            Some("warn") => pins_block = false,
                            Some(other) => {
                                self.problem(
                                    value.pos,
                                    &on_change_path,
                                    format!(
                                        "unknown on_change {} (expected block or warn)",
                                        quote(other)
                                    ),
                                );
                                ok = false;
                            }
                            None => ok = false,
                        }
                    }
                }
                "all_tools" => {
                    let Some(fields) = self.object(&member.value, &path, ALL_TOOLS_FIELDS) else {
                        ok = false;
                        continue;
                    };
                    if let Some(limits) = field(fields, "limits") {
                        let limits_path = push_key(&path, "limits");
                        match self.limits(limits, &limits_path) {
                            Some(limits) => all_tools = limits,
                            None => ok = false,
                        }
                    }
                }
                _ => {}
            }
        }

        let default = default?;
        if !ok {
            return None;
        }

        let mut policy = Policy {
            default,
            rules: Vec::with_capacity(rules.len()),
            exact: HashMap::default(),
            patterns: Vec::new(),
            all_tools,
            counters: std::mem::take(&mut self.counter_order),
            description,
            default_ref: RuleRef::default_rule(),
            all_tools_ref: RuleRef::all_tools(),
            pins_block,
        };
        policy.exact.reserve(rules.len());
        for (index, (key, rule)) in rules.into_iter().enumerate() {
            if is_pattern(&key) {
                policy.patterns.push((Pattern::new(&key), index));
            } else {
                policy.exact.insert(key.into_boxed_str(), index);
            }
            policy.rules.push(rule);
        }
        // Most literal characters first, then fewest stars; the stable sort
        // keeps file order for ties.
        policy
            .patterns
            .sort_by_key(|(pattern, _)| (std::cmp::Reverse(pattern.literals), pattern.stars));
        Some(policy)
    }

    fn rule(&mut self, node: &Node, path: &str, rule_ref: RuleRef) -> Option<Rule> {
        let members = self.object(node, path, RULE_FIELDS)?;
        let mut ok = true;
        let mut action = Action::Allow;
        if let Some(value) = field(members, "action") {
            let action_path = push_key(path, "action");
            match self.string(value, &action_path) {
                Some("allow") => action = Action::Allow,
                Some("deny") => action = Action::Deny,
                Some("hide") => action = Action::Hide,
                Some("require_approval") => action = Action::RequireApproval,
                Some(other) => {
                    self.problem(
                        value.pos,
                        &action_path,
                        format!(
                            "unknown action {} (expected allow, deny, hide or require_approval)",
                            quote(other)
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut reason = None;
        if let Some(value) = field(members, "reason") {
            match self.string(value, &push_key(path, "reason")) {
                Some(s) => reason = Some(s.to_string()),
                None => ok = false,
            }
        }
        if let Some(value) = field(members, "description") {
            ok &= self.string(value, &push_key(path, "description")).is_some();
        }
        let action_name = match action {
            Action::Deny => Some("deny"),
            Action::Hide => Some("hide"),
            Action::Allow | Action::RequireApproval => None,
        };
        let mut limits = Vec::new();
        if let Some(value) = field(members, "limits") {
            let limits_path = push_key(path, "limits");
            if let Some(name) = action_name {
                self.problem(
                    value.pos,
                    &limits_path,
                    format!("a rule with action {name} cannot have limits (its calls are never admitted)"),
                );
                ok = false;
            }
            match self.limits(value, &limits_path) {
                Some(found) => {
                    limits = found;
                }
                None => ok = false,
            }
        }
        let mut conditions = Vec::new();
        if let Some(value) = field(members, "conditions") {
            let conditions_path = push_key(path, "conditions");
            if let Some(name) = action_name {
                self.problem(
                    value.pos,
                    &conditions_path,
                    format!("a rule with action {name} cannot have conditions (its calls are never admitted)"),
                );
                ok = false;
            }
            match self.conditions(value, &conditions_path) {
                Some(found) => conditions = found,
                None => ok = false,
            }
        }
        let mut approval = Approval::default();
        if let Some(value) = field(members, "approval") {
            let approval_path = push_key(path, "approval");
            if action != Action::RequireApproval {
                self.problem(
                    value.pos,
                    &approval_path,
                    "approval settings need \"action\": \"require_approval\"",
                );
                ok = false;
            }
            match self.approval(value, &approval_path) {
                Some(found) => approval = found,
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(Rule {
            rule_ref,
            action,
            reason,
            limits,
            conditions,
            approval,
        })
    }

    fn approval(&mut self, node: &Node, path: &str) -> Option<Approval> {
        let members = self.object(node, path, APPROVAL_FIELDS)?;
        let mut approval = Approval::default();
        let mut ok = true;
        if let Some(value) = field(members, "via") {
            let via_path = push_key(path, "via");
            match &value.value {
                Value::Array(items) if !items.is_empty() => {
                    approval.via_client = false;
                    approval.via_admin = false;
                    for (index, item) in items.iter().enumerate() {
                        match self.string(item, &push_index(&via_path, index)) {
                            Some("client") => approval.via_client = true,
                            Some("admin") => approval.via_admin = true,
                            Some(other) => {
                                self.problem(
                                    item.pos,
                                    &push_index(&via_path, index),
                                    format!(
                                        "unknown approval channel {} (expected client or admin)",
                                        quote(other)
                                    ),
                                );
                                ok = false;
                            }
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.wrong_type(
                        value,
                        &via_path,
                        "a non-empty array of \"client\" and \"admin\"",
                    );
                    ok = false;
                }
            }
        }
        for (name, slot) in [
            ("hold", &mut approval.hold_ms),
            ("expires", &mut approval.expires_ms),
        ] {
            if let Some(value) = field(members, name) {
                match self.duration_ms(value, &push_key(path, name)) {
                    Some(ms) => *slot = ms,
                    None => ok = false,
                }
            }
        }
        if ok && approval.hold_ms > MAX_HOLD_MS {
            let node = field(members, "hold").unwrap_or(node);
            self.problem(
                node.pos,
                &push_key(path, "hold"),
                "hold must be at most 300 seconds (a client waits that long for its answer)",
            );
            ok = false;
        }
        if ok && approval.expires_ms < approval.hold_ms {
            let node = field(members, "expires").unwrap_or(node);
            self.problem(
                node.pos,
                &push_key(path, "expires"),
                "expires must not be shorter than hold",
            );
            ok = false;
        }
        ok.then_some(approval)
    }

    /// "30s", "10m", "2h", "1d" or a whole number of seconds; 0 is allowed (no hold).
    fn duration_ms(&mut self, node: &Node, path: &str) -> Option<u64> {
        const EXPECTED: &str = "a duration such as \"30s\", \"10m\", \"1h\" or a number of seconds";
        let ms = match &node.value {
            Value::Number(n) => n
                .as_f64()
                .filter(|s| s.fract() == 0.0 && *s >= 0.0)
                .map(|s| s as u64 * 1000),
            Value::String(text) => duration::parse(text)
                .filter(|written| written.unit != duration::Unit::Millis)
                .and_then(|written| written.whole_millis()),
            _ => None,
        };
        match ms {
            Some(ms) if ms <= MAX_WINDOW_SECONDS * 1000 => Some(ms),
            _ => {
                let found = match &node.value {
                    Value::String(text) => quote(text),
                    Value::Number(n) => n.to_string(),
                    other => other.kind().to_string(),
                };
                self.problem(
                    node.pos,
                    path,
                    format!("expected {EXPECTED}, found {found}"),
                );
                None
            }
        }
    }

    fn limits(&mut self, node: &Node, path: &str) -> Option<Vec<Limit>> {
        self.array(node, path, "an array of limits", Self::limit)
    }

    fn limit(&mut self, node: &Node, path: &str) -> Option<Limit> {
        let members = self.object(node, path, LIMIT_FIELDS)?;
        let problems_before = self.problems.len();

        let counter = self
            .required(node.pos, members, path, "counter", None)
            .and_then(|value| {
                let counter_path = push_key(path, "counter");
                let name = self.string(value, &counter_path)?;
                if name.is_empty() {
                    self.problem(value.pos, &counter_path, "counter name must not be empty");
                    None
                } else if name.chars().any(char::is_control) {
                    self.problem(
                        value.pos,
                        &counter_path,
                        "counter name must not contain control characters",
                    );
                    None
                } else {
                    Some((name.to_string(), value.pos))
                }
            });

        let window = self
            .required(node.pos, members, path, "window", None)
            .and_then(|value| {
                self.window(value, &push_key(path, "window"))
                    .map(|w| (w, value.pos))
            });

        let max = self
            .required(node.pos, members, path, "max", None)
            .and_then(|value| {
                let max_path = push_key(path, "max");
                match &value.value {
                    Value::Number(n) => match n.as_f64() {
                        Some(max) if max > 0.0 && max.is_finite() => Some(max),
                        _ => {
                            self.problem(
                                value.pos,
                                &max_path,
                                format!("max must be greater than 0, found {n}"),
                            );
                            None
                        }
                    },
                    _ => {
                        self.wrong_type(value, &max_path, "a number");
                        None
                    }
                }
            });

        let scope = match field(members, "scope") {
            None => Some(Scope::Grant),
            Some(value) => {
                let scope_path = push_key(path, "scope");
                match self.string(value, &scope_path) {
                    Some("grant") => Some(Scope::Grant),
                    Some("session") => Some(Scope::Session),
                    Some("global") => Some(Scope::Global),
                    Some(other) if other.starts_with("arg:") => {
                        let name = &other["arg:".len()..];
                        if name.is_empty() {
                            self.problem(
                                value.pos,
                                &scope_path,
                                "scope \"arg:\" needs an argument name, as in arg:phone",
                            );
                            None
                        } else if name.chars().any(char::is_control) {
                            self.problem(
                                value.pos,
                                &scope_path,
                                "scope argument name must not contain control characters",
                            );
                            None
                        } else {
                            Some(Scope::Arg(name.to_string()))
                        }
                    }
                    Some(other) => {
                        self.problem(
                            value.pos,
                            &scope_path,
                            format!(
                                "unknown scope {} (expected grant, session, global or arg:NAME)",
                                quote(other)
                            ),
                        );
                        None
                    }
                    None => None,
                }
            }
        };

        let cost = match field(members, "cost") {
            None => Some(Cost::Fixed(1.0)),
            Some(value) => {
                let cost_path = push_key(path, "cost");
                match &value.value {
                    Value::Number(n) => match n.as_f64() {
                        Some(cost) if cost >= 0.0 && cost.is_finite() => match max {
                            Some(max) if cost > max => {
                                self.problem(
                                        value.pos,
                                        &cost_path,
                                        format!(
                                            "cost {} is more than max {}, so no call could ever be admitted",
                                            number(cost),
                                            number(max)
                                        ),
                                    );
                                None
                            }
                            _ => Some(Cost::Fixed(cost)),
                        },
                        _ => {
                            self.problem(
                                value.pos,
                                &cost_path,
                                format!("cost must not be negative, found {n}"),
                            );
                            None
                        }
                    },
                    Value::String(text) => match ArgPath::parse(text) {
                        Some(arg_path) if !arg_path.segments.is_empty() => {
                            Some(Cost::Arg(arg_path))
                        }
                        _ => {
                            self.problem(
                                value.pos,
                                &cost_path,
                                format!("invalid cost path {} (expected an argument path such as \"args.count\")", quote(text)),
                            );
                            None
                        }
                    },
                    _ => {
                        self.wrong_type(
                            value,
                            &cost_path,
                            "a number or an argument path such as \"args.count\"",
                        );
                        None
                    }
                }
            }
        };

        // A counter has one window wherever it is used.
        if let (Some((name, _)), Some((window, window_pos))) = (&counter, &window) {
            match self.counters.get(name) {
                Some((first_window, first_path)) if first_window != window => {
                    let message = format!(
                        "counter {} already has window {} (at {first_path}); every use of a counter must have the same window",
                        quote(name),
                        describe_window(*first_window),
                    );
                    self.problem(*window_pos, &push_key(path, "window"), message);
                }
                Some(_) => {}
                None => {
                    self.counters
                        .insert(name.clone(), (*window, push_key(path, "window")));
                    self.counter_order.push((name.clone(), *window));
                }
            }
        }

        if self.problems.len() > problems_before {
            return None;
        }
        Some(Limit::new(counter?.0, window?.0, max?, scope?, cost?))
    }

    fn window(&mut self, node: &Node, path: &str) -> Option<WindowMs> {
        const EXPECTED: &str = "second, minute, hour, day or a number of seconds";
        match &node.value {
            Value::String(s) => match s.as_str() {
                "second" => Some(1_000),
                "minute" => Some(60_000),
                "hour" => Some(3_600_000),
                "day" => Some(86_400_000),
                other => {
                    self.problem(
                        node.pos,
                        path,
                        format!("unknown window {} (expected {EXPECTED})", quote(other)),
                    );
                    None
                }
            },
            Value::Number(n) => {
                let seconds = n.as_f64().unwrap_or(f64::NAN);
                if seconds.fract() == 0.0 && seconds >= 1.0 && seconds <= MAX_WINDOW_SECONDS as f64
                {
                    Some(seconds as u64 * 1000)
                } else {
                    self.problem(
                        node.pos,
                        path,
                        format!("window must be a whole number of seconds from 1 to {MAX_WINDOW_SECONDS}, found {n}"),
                    );
                    None
                }
            }
            _ => {
                self.wrong_type(node, path, &format!("a window ({EXPECTED})"));
                None
            }
        }
    }

    fn conditions(&mut self, node: &Node, path: &str) -> Option<Vec<Condition>> {
        self.array(node, path, "an array of conditions", Self::condition)
    }

    fn condition(&mut self, node: &Node, path: &str) -> Option<Condition> {
        let members = self.object(node, path, CONDITION_FIELDS)?;
        let problems_before = self.problems.len();

        let arg_path = self.required(node.pos, members, path, "path", None).and_then(|value| {
            let path_path = push_key(path, "path");
            let text = self.string(value, &path_path)?;
            let parsed = ArgPath::parse(text);
            if parsed.is_none() {
                self.problem(
                    value.pos,
                    &path_path,
                    format!("invalid path {} (expected args or an argument path such as \"args.amount\")", quote(text)),
                );
            }
            parsed
        });

        let reason = field(members, "reason").and_then(|value| {
            self.string(value, &push_key(path, "reason"))
                .map(str::to_string)
        });

        let value_node = field(members, "value");
        let value_path = push_key(path, "value");
        let op = self
            .required(node.pos, members, path, "op", None)
            .and_then(|op_node| {
                let op_path = push_key(path, "op");
                let name = self.string(op_node, &op_path)?;
                let known = [
                    "eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains",
                    "exists",
                ];
                if !known.contains(&name) {
                    self.problem(
                        op_node.pos,
                        &op_path,
                        format!("unknown op {} (expected {OP_NAMES})", quote(name)),
                    );
                    return None;
                }
                if name == "exists" {
                    return match value_node {
                        None => Some((Op::Exists(true), name)),
                        Some(Node {
                            value: Value::Bool(b),
                            ..
                        }) => Some((Op::Exists(*b), name)),
                        Some(other) => {
                            self.wrong_type(other, &value_path, "a boolean (op exists)");
                            None
                        }
                    };
                }
                let Some(value) = value_node else {
                    self.problem(
                        node.pos,
                        path,
                        format!("missing field \"value\" (op {name} needs a value)"),
                    );
                    return None;
                };
                let op = match name {
                    "eq" => Op::Eq(Operand::of(value)),
                    "neq" => Op::Neq(Operand::of(value)),
                    "contains" => Op::Contains(Operand::of(value)),
                    "in" | "not_in" => {
                        let Value::Array(items) = &value.value else {
                            self.wrong_type(value, &value_path, &format!("an array (op {name})"));
                            return None;
                        };
                        let items = items.iter().map(Operand::of).collect();
                        if name == "in" {
                            Op::In(items)
                        } else {
                            Op::NotIn(items)
                        }
                    }
                    "lt" | "lte" | "gt" | "gte" => {
                        let n = match &value.value {
                            Value::Number(n) => Bound::new(n.exact.clone()),
                            _ => {
                                self.wrong_type(
                                    value,
                                    &value_path,
                                    &format!("a number (op {name})"),
                                );
                                return None;
                            }
                        };
                        match name {
                            "lt" => Op::Lt(n),
                            "lte" => Op::Lte(n),
                            "gt" => Op::Gt(n),
                            _ => Op::Gte(n),
                        }
                    }
                    _ => {
                        // regex
                        let Value::String(pattern) = &value.value else {
                            self.wrong_type(value, &value_path, "a string (op regex)");
                            return None;
                        };
                        match RegexBuilder::new(pattern)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .dfa_size_limit(REGEX_SIZE_LIMIT)
                            .build()
                        {
                            Ok(re) => Op::Regex(re),
                            Err(error) => {
                                self.problem(
                                    value.pos,
                                    &value_path,
                                    format!("invalid regex: {}", regex_message(&error)),
                                );
                                return None;
                            }
                        }
                    }
                };
                Some((op, name))
            });

        if self.problems.len() > problems_before {
            return None;
        }
        let (op, name) = op?;
        let shown = match (&op, value_node.map(|v| &v.value)) {
            (Op::Exists(b), _) => format!("{name} {b}"),
            // A number as written (its exact value), not as an f64 shows it.
            (_, Some(Value::Number(n))) => format!("{name} {}", n.exact),
            _ => format!(
                "{name} {}",
                value_node.map(Node::to_json).unwrap_or(Json::Null)
            ),
        };
        Some(Condition {
            path: arg_path?,
            op,
            shown,
            reason,
        })
    }
}

fn describe_window(ms: WindowMs) -> String {
    window_name(ms)
}

/// The one-line cause of a regex error (its syntax errors span lines).
fn regex_message(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or("syntax error")
            .to_string(),
        regex::Error::CompiledTooBig(_) => "the pattern is too large once compiled".to_string(),
        other => other.to_string(),
    }
}
