//! The validated policy and the pure policy step: which rule applies to a
//! call, whether its conditions hold, and which limits it must draw on.
//! [`Policy::decide`] adds the one stateful step, drawing on a
//! [`CounterStore`].

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde_json::Value;

use crate::condition::{canonical_json, ArgPath, Arguments, Condition, Outcome};
use crate::glob::Pattern;
use crate::store::{CounterStore, Exhausted, Grant, Refusal};
use crate::{Millis, WindowMs};

/// What happens to a tool that no rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    /// Allowed, with no limits but those of `all_tools`.
    Allow,
    /// Answered as an unknown tool, and not listed.
    Deny,
}

impl DefaultAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultAction::Allow => "allow",
            DefaultAction::Deny => "deny",
        }
    }
}

/// One `tools/call` as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub tool: &'a str,
    /// The tools/call `arguments` (an object, or `Null` when absent).
    pub arguments: &'a Value,
    /// The JSON text `arguments` was read from, when the caller has it.
    /// Conditions then compare the numbers in it exactly as the client
    /// wrote them; without it, a number serde_json read as an f64 satisfies
    /// a condition only if every decimal that reads as that f64 would
    /// (`lte 100` is not satisfied by an f64 100.0: fail closed).
    pub arguments_text: Option<&'a str>,
    /// Agent credential name ("local" in stdio mode).
    pub grant: &'a str,
    /// MCP session id.
    pub session: &'a str,
}

/// Which rule made a decision, printable: `tools["send_text"]`,
/// `tools["delete_*"]`, `default`, `all_tools`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RuleRef(Arc<str>);

impl RuleRef {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A rule name of the caller's own, for decisions made outside a policy
    /// (e.g. "unknown" for a tool no server offers).
    pub fn from_static(name: &'static str) -> RuleRef {
        RuleRef(name.into())
    }

    pub(crate) fn tool(key: &str) -> RuleRef {
        RuleRef(format!("tools[{}]", crate::tree::quote(key)).into())
    }

    pub(crate) fn default_rule() -> RuleRef {
        RuleRef("default".into())
    }

    pub(crate) fn all_tools() -> RuleRef {
        RuleRef("all_tools".into())
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleRef({})", self.0)
    }
}

/// The pure policy step's answer, before any counter is touched.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// The call may go ahead if it can draw on these limits.
    Proceed {
        rule: RuleRef,
        draws: Vec<Draw>,
    },
    Deny {
        rule: RuleRef,
        reason: String,
    },
    /// Hidden tool (action hide) or a name the policy does not name under
    /// default deny: answer exactly as for a tool that does not exist.
    Unknown {
        rule: RuleRef,
    },
    /// The call may go ahead once a person approves it; then it draws on
    /// `draws` (quota is taken only when the call runs).
    ApprovalRequired {
        rule: RuleRef,
        reason: String,
        approval: Approval,
        draws: Vec<Draw>,
    },
}

/// One limit a call draws on, fully resolved for this call.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// Counter name as written.
    pub counter: String,
    /// Store key: counter name, scope kind and scope value joined by U+001F,
    /// e.g. `"send_text_rate\u{1f}grant\u{1f}local"`.
    pub key: String,
    pub window: WindowMs,
    pub max: f64,
    pub cost: f64,
    /// The rule (or `all_tools`) the limit is written in.
    pub rule: RuleRef,
}

/// The final answer for a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Go ahead; give the quota back with `store.release(&grant)` if the
    /// upstream answers with a JSON-RPC error.
    Allow {
        rule: RuleRef,
        grant: Grant,
    },
    Deny {
        rule: RuleRef,
        reason: String,
    },
    Unknown {
        rule: RuleRef,
    },
    /// Held for a person's decision; once approved, conclude `plan` with the
    /// store's answer to `plan.draws`.
    ApprovalRequired {
        rule: RuleRef,
        reason: String,
        approval: Approval,
        plan: Plan,
    },
    RateLimited {
        rule: RuleRef,
        counter: String,
        retry_after_ms: u64,
        reason: String,
    },
    /// The call needs counters and the counter store cannot be reached
    /// (fail closed).
    Unavailable {
        rule: RuleRef,
        reason: String,
    },
}

impl Decision {
    /// "allow" | "deny" | "unknown" | "approval_required" | "rate_limited" |
    /// "state_unavailable"
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Unknown { .. } => "unknown",
            Decision::ApprovalRequired { .. } => "approval_required",
            Decision::RateLimited { .. } => "rate_limited",
            Decision::Unavailable { .. } => "state_unavailable",
        }
    }

    /// The rule that made the decision.
    pub fn rule(&self) -> &RuleRef {
        match self {
            Decision::Allow { rule, .. }
            | Decision::Deny { rule, .. }
            | Decision::Unknown { rule }
            | Decision::ApprovalRequired { rule, .. }
            | Decision::RateLimited { rule, .. }
            | Decision::Unavailable { rule, .. } => rule,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Allow,
    Deny,
    Hide,
    RequireApproval,
}

#[derive(Debug, Clone)]
pub(crate) enum Scope {
    Grant,
    Session,
    Global,
    Arg(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Cost {
    Fixed(f64),
    Arg(ArgPath),
}

#[derive(Debug, Clone)]
pub(crate) struct Limit {
    pub counter: String,
    pub window: WindowMs,
    pub max: f64,
    pub scope: Scope,
    pub cost: Cost,
    /// `counter \x1f kind \x1f`, the part of the key every call shares.
    pub key_prefix: String,
}

impl Limit {
    pub(crate) fn new(
        counter: String,
        window: WindowMs,
        max: f64,
        scope: Scope,
        cost: Cost,
    ) -> Limit {
        let kind = match &scope {
            Scope::Grant => "grant".to_string(),
            Scope::Session => "session".to_string(),
            Scope::Global => "global".to_string(),
            Scope::Arg(name) => format!("arg:{name}"),
        };
        let key_prefix = format!("{counter}\u{1f}{kind}\u{1f}");
        Limit {
            counter,
            window,
            max,
            scope,
            cost,
            key_prefix,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub rule_ref: RuleRef,
    pub action: Action,
    pub reason: Option<String>,
    pub limits: Vec<Limit>,
    pub conditions: Vec<Condition>,
    /// For `require_approval`: who may decide, how long a call is held, how
    /// long a request lives.
    pub approval: Approval,
}

/// How a `require_approval` rule is decided (the rule's `approval` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    /// Ask the agent's own user through MCP elicitation, when the client can.
    pub via_client: bool,
    /// Wait for an approver (CLI, admin API, webhook).
    pub via_admin: bool,
    /// How long the call is held waiting for an out-of-band decision.
    pub hold_ms: u64,
    /// How long a request can be decided, and an approval used by a retry.
    pub expires_ms: u64,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            via_client: true,
            via_admin: true,
            hold_ms: 30_000,
            expires_ms: 600_000,
        }
    }
}

/// A validated policy. Build one with [`crate::parse_policy`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) default: DefaultAction,
    pub(crate) rules: Vec<Rule>,
    /// Exact tool names → index into `rules`.
    pub(crate) exact: HashMap<Box<str>, usize, BuildHasherDefault<FxHasher>>,
    /// Patterns, most specific first, each with its index into `rules`.
    pub(crate) patterns: Vec<(Pattern, usize)>,
    pub(crate) all_tools: Vec<Limit>,
    /// Declared counters in order of first use.
    pub(crate) counters: Vec<(String, WindowMs)>,
    pub(crate) description: Option<String>,
    /// Built once, so a call does not allocate them.
    pub(crate) default_ref: RuleRef,
    pub(crate) all_tools_ref: RuleRef,
    /// `pins.on_change`: hold back a tool whose definition changed (`block`,
    /// the default), or only warn.
    pub(crate) pins_block: bool,
}

impl Policy {
    /// Whether a tool whose definition changed since it was pinned is held
    /// back (`pins.on_change: block`, the default) rather than only reported.
    pub fn blocks_changed_tools(&self) -> bool {
        self.pins_block
    }

    /// e.g. `policy.json: valid policy (version 1, default deny, 3 tool rules, 2 counters)`
    pub fn summary(&self, file: &str) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{file}: valid policy (version 1, default {}, {}, {})",
            self.default.as_str(),
            plural(self.rules.len(), "tool rule", "tool rules"),
            plural(self.counters.len(), "counter", "counters"),
        )
    }

    pub fn default_action(&self) -> DefaultAction {
        self.default
    }

    /// The policy's `description`, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Whether a tool of this name appears in tools/list: false for rules
    /// with action hide, and for names no rule matches when default is deny.
    pub fn is_listed(&self, tool: &str) -> bool {
        match self.lookup(tool) {
            Some(rule) => rule.action != Action::Hide,
            None => self.default == DefaultAction::Allow,
        }
    }

    /// The rule that applies to a tool name (`None`: the default applies).
    pub fn rule_for(&self, tool: &str) -> Option<RuleRef> {
        self.lookup(tool).map(|rule| rule.rule_ref.clone())
    }

    /// All counters declared (name, window), in order of first use.
    pub fn counters(&self) -> impl Iterator<Item = (&str, WindowMs)> {
        self.counters
            .iter()
            .map(|(name, window)| (name.as_str(), *window))
    }

    fn lookup(&self, tool: &str) -> Option<&Rule> {
        if let Some(&index) = self.exact.get(tool) {
            return Some(&self.rules[index]);
        }
        if self.patterns.is_empty() {
            return None;
        }
        let name: Vec<char> = tool.chars().collect();
        self.patterns
            .iter()
            .find(|(pattern, _)| pattern.matches(&name))
            .map(|&(_, index)| &self.rules[index])
    }

    /// Pure policy step: which rule applies, conditions, what limits the
    /// call must draw on.
    pub fn evaluate(&self, call: &Call<'_>) -> Evaluation {
        self.evaluate_rule(call).0
    }

    fn evaluate_rule(&self, call: &Call<'_>) -> (Evaluation, Option<&Rule>) {
        let Some(rule) = self.lookup(call.tool) else {
            let evaluation = match self.default {
                DefaultAction::Deny => Evaluation::Unknown {
                    rule: self.default_ref.clone(),
                },
                DefaultAction::Allow => {
                    let mut draws = Vec::with_capacity(self.all_tools.len());
                    let rule = self.default_ref.clone();
                    if let Err(reason) =
                        self.push_draws(&self.all_tools, &self.all_tools_ref, call, &mut draws)
                    {
                        return (Evaluation::Deny { rule, reason }, None);
                    }
                    Evaluation::Proceed { rule, draws }
                }
            };
            return (evaluation, None);
        };
        let rule_ref = rule.rule_ref.clone();
        let evaluation = match rule.action {
            Action::Hide => Evaluation::Unknown { rule: rule_ref },
            Action::Deny => Evaluation::Deny {
                rule: rule_ref,
                reason: rule.reason.clone().unwrap_or_else(|| {
                    format!("tool {} is denied by policy", crate::tree::quote(call.tool))
                }),
            },
            Action::Allow | Action::RequireApproval => {
                let arguments = Arguments {
                    value: call.arguments,
                    text: call.arguments_text,
                };
                let failed = rule
                    .conditions
                    .iter()
                    .find_map(|c| match c.check(arguments) {
                        Outcome::Holds => None,
                        outcome => Some((c, outcome)),
                    });
                if let Some((failed, outcome)) = failed {
                    let mut default_reason = failed.default_reason();
                    if outcome == Outcome::Inexact {
                        default_reason = format!("{default_reason}: {}", failed.inexact_note());
                    }
                    let reason = match (&failed.reason, &rule.reason) {
                        (Some(reason), _) if outcome == Outcome::Inexact => {
                            format!("{reason} ({})", failed.inexact_note())
                        }
                        (Some(reason), _) => reason.clone(),
                        (None, Some(rule_reason)) => format!("{rule_reason} ({default_reason})"),
                        (None, None) => default_reason,
                    };
                    Evaluation::Deny {
                        rule: rule_ref,
                        reason,
                    }
                } else if rule.action == Action::RequireApproval {
                    let mut draws = Vec::with_capacity(rule.limits.len() + self.all_tools.len());
                    let drawn = self
                        .push_draws(&rule.limits, &rule_ref, call, &mut draws)
                        .and_then(|()| {
                            self.push_draws(&self.all_tools, &self.all_tools_ref, call, &mut draws)
                        });
                    match drawn {
                        Ok(()) => Evaluation::ApprovalRequired {
                            rule: rule_ref,
                            reason: rule.reason.clone().unwrap_or_else(|| {
                                format!(
                                    "calls to {} require approval",
                                    crate::tree::quote(call.tool)
                                )
                            }),
                            approval: rule.approval,
                            draws,
                        },
                        Err(reason) => Evaluation::Deny {
                            rule: rule_ref,
                            reason,
                        },
                    }
                } else {
                    let mut draws = Vec::with_capacity(rule.limits.len() + self.all_tools.len());
                    let drawn = self
                        .push_draws(&rule.limits, &rule_ref, call, &mut draws)
                        .and_then(|()| {
                            self.push_draws(&self.all_tools, &self.all_tools_ref, call, &mut draws)
                        });
                    match drawn {
                        Ok(()) => Evaluation::Proceed {
                            rule: rule_ref,
                            draws,
                        },
                        Err(reason) => Evaluation::Deny {
                            rule: rule_ref,
                            reason,
                        },
                    }
                }
            }
        };
        (evaluation, Some(rule))
    }

    /// Resolves limits for this call; `Err(reason)` when a cost taken from
    /// the arguments is not a number ≥ 0 (fail closed).
    fn push_draws(
        &self,
        limits: &[Limit],
        rule: &RuleRef,
        call: &Call<'_>,
        draws: &mut Vec<Draw>,
    ) -> Result<(), String> {
        for limit in limits {
            let cost = match &limit.cost {
                Cost::Fixed(cost) => *cost,
                Cost::Arg(path) => match path.resolve(call.arguments) {
                    Some(value) => match value.as_f64() {
                        Some(n) if n >= 0.0 && n.is_finite() => n,
                        _ => {
                            return Err(format!(
                            "limit {} takes its cost from {}, which must be a number ≥ 0, found {}",
                            crate::tree::quote(&limit.counter),
                            path.text,
                            value
                        ))
                        }
                    },
                    None => {
                        return Err(format!(
                            "limit {} takes its cost from {}, which is missing",
                            crate::tree::quote(&limit.counter),
                            path.text
                        ))
                    }
                },
            };
            let mut key = String::with_capacity(limit.key_prefix.len() + 16);
            key.push_str(&limit.key_prefix);
            match &limit.scope {
                Scope::Grant => key.push_str(call.grant),
                Scope::Session => key.push_str(call.session),
                Scope::Global => {}
                Scope::Arg(name) => match call.arguments.get(name.as_str()) {
                    Some(value) => canonical_json(value, &mut key),
                    None => key.push_str("\u{0}missing"),
                },
            }
            draws.push(Draw {
                counter: limit.counter.clone(),
                key,
                window: limit.window,
                max: limit.max,
                cost,
                rule: rule.clone(),
            });
        }
        Ok(())
    }

    /// evaluate + draw on counters atomically (all limits of the rule plus
    /// all_tools, all-or-nothing).
    pub fn decide(&self, call: &Call<'_>, store: &dyn CounterStore, now: Millis) -> Decision {
        let (evaluation, matched) = self.evaluate_rule(call);
        match evaluation {
            Evaluation::Deny { rule, reason } => Decision::Deny { rule, reason },
            Evaluation::Unknown { rule } => Decision::Unknown { rule },
            Evaluation::ApprovalRequired {
                rule,
                reason,
                approval,
                draws,
            } => {
                let reasons = vec![None; draws.len()];
                Decision::ApprovalRequired {
                    plan: Plan {
                        rule: rule.clone(),
                        draws,
                        reasons,
                    },
                    rule,
                    reason,
                    approval,
                }
            }
            Evaluation::Proceed { rule, draws } => {
                if draws.is_empty() {
                    return Decision::Allow {
                        rule,
                        grant: Grant::default(),
                    };
                }
                let reason = matched.and_then(|m| m.reason.clone());
                let plan = Plan {
                    rule,
                    reasons: draws
                        .iter()
                        .map(|d| {
                            reason
                                .clone()
                                .filter(|_| matched.is_some_and(|m| m.rule_ref == d.rule))
                        })
                        .collect(),
                    draws,
                };
                let result = store.acquire(&plan.draws, now);
                plan.conclude(result)
            }
        }
    }
}

/// `rate limit "send_text_rate" reached: 30 of 30 used in the last minute; retry in 1.5s`
fn rate_limit_reason(prefix: Option<&str>, exhausted: &Exhausted, draws: &[Draw]) -> String {
    let window = draws
        .iter()
        .find(|d| d.counter == exhausted.counter)
        .map(|d| d.window)
        .unwrap_or(0);
    let message = format!(
        "rate limit {} reached: {} of {} used in the last {}; retry in {}",
        crate::tree::quote(&exhausted.counter),
        number(exhausted.used),
        number(exhausted.max),
        window_name(window),
        duration(exhausted.retry_after_ms),
    );
    match prefix {
        Some(prefix) => format!("{prefix}: {message}"),
        None => message,
    }
}

/// A window in words: `minute`, `hour`, `90 seconds`.
pub(crate) fn window_name(ms: WindowMs) -> String {
    match ms {
        1_000 => "second".to_string(),
        60_000 => "minute".to_string(),
        3_600_000 => "hour".to_string(),
        86_400_000 => "day".to_string(),
        ms if ms % 1000 == 0 => format!("{} seconds", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// A number without a needless fraction: `30`, `2.5`.
pub(crate) fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// FxHash (as in rustc): fast for the trusted tool names of a policy. The
/// counter store, whose keys hold agent-chosen values, keeps the default
/// randomly seeded hasher.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// One of several policies that must all let a call through (in `serve`:
/// the gateway's or grant's policy over gateway names, and a server's own
/// policy over that server's names).
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    pub policy: &'a Policy,
    pub call: Call<'a>,
    /// Prepended to every counter key of this layer, so that two servers'
    /// policies that happen to use the same counter name do not share it.
    /// Empty for the gateway's own policy.
    pub key_prefix: &'a str,
}

/// What is left to decide once every policy let a call through: the draws
/// to take from the counter store, in one atomic step.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The rule that admitted the call (the first layer's).
    pub rule: RuleRef,
    pub draws: Vec<Draw>,
    /// For each draw, the reason text of the rule it belongs to (prefixed
    /// to a rate-limit message).
    reasons: Vec<Option<String>>,
}

impl Plan {
    /// The decision, given what the store said.
    pub fn conclude(self, result: Result<Grant, Refusal>) -> Decision {
        match result {
            Ok(grant) => Decision::Allow {
                rule: self.rule,
                grant,
            },
            Err(Refusal::Exhausted(exhausted)) => {
                let prefix = self
                    .draws
                    .iter()
                    .zip(&self.reasons)
                    .find(|(d, _)| d.rule == exhausted.rule && d.counter == exhausted.counter)
                    .and_then(|(_, reason)| reason.as_deref());
                let reason = rate_limit_reason(prefix, &exhausted, &self.draws);
                Decision::RateLimited {
                    rule: exhausted.rule,
                    counter: exhausted.counter,
                    retry_after_ms: exhausted.retry_after_ms,
                    reason,
                }
            }
            Err(Refusal::Unavailable(why)) => Decision::Unavailable {
                rule: self.rule,
                reason: format!("the counter state is unavailable ({why}); calls with limits are refused until it is back"),
            },
        }
    }
}

/// What the pure part of deciding leaves: draws to take, or the decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Take these draws (all or none), then [`Plan::conclude`].
    Draw(Plan),
    /// Decided without the counter store (unknown, denied, held for approval).
    Decided(Decision),
}

/// The pure part of [`decide_layers`]: a tool hidden (or unknown) in any layer
/// is unknown, then the first denial or approval requirement wins; otherwise
/// the draws of every layer, to be taken together.
pub fn plan_layers(layers: &[Layer<'_>]) -> Planned {
    let mut evaluations = Vec::with_capacity(layers.len());
    for layer in layers {
        let (evaluation, matched) = layer.policy.evaluate_rule(&layer.call);
        if let Evaluation::Unknown { rule } = evaluation {
            return Planned::Decided(Decision::Unknown { rule });
        }
        evaluations.push((evaluation, matched, layer.key_prefix));
    }
    let mut draws = Vec::new();
    let mut reasons = Vec::new();
    let mut first_rule = None;
    let mut refusal = None;
    let mut held: Option<(RuleRef, String, Approval)> = None;
    for (evaluation, matched, prefix) in evaluations {
        match evaluation {
            Evaluation::Unknown { .. } => unreachable!("returned above"),
            Evaluation::Deny { rule, reason } => {
                if !matches!(refusal, Some(Decision::Deny { .. })) {
                    refusal = Some(Decision::Deny { rule, reason });
                }
            }
            Evaluation::ApprovalRequired {
                rule,
                reason,
                approval,
                draws: own,
            } => {
                // Every layer's settings must hold: an approver one layer does
                // not allow is not allowed, and the shortest times win.
                held = Some(match held {
                    None => (rule.clone(), reason, approval),
                    Some((first_rule, first_reason, a)) => (
                        first_rule,
                        first_reason,
                        Approval {
                            via_client: a.via_client && approval.via_client,
                            via_admin: a.via_admin && approval.via_admin,
                            hold_ms: a.hold_ms.min(approval.hold_ms),
                            expires_ms: a.expires_ms.min(approval.expires_ms),
                        },
                    ),
                });
                first_rule.get_or_insert(rule);
                for mut draw in own {
                    if !prefix.is_empty() {
                        draw.key.insert_str(0, prefix);
                    }
                    reasons.push(None);
                    draws.push(draw);
                }
            }
            Evaluation::Proceed { rule, draws: own } => {
                first_rule.get_or_insert(rule);
                for mut draw in own {
                    if !prefix.is_empty() {
                        draw.key.insert_str(0, prefix);
                    }
                    reasons.push(
                        matched
                            .filter(|m| m.rule_ref == draw.rule)
                            .and_then(|m| m.reason.clone()),
                    );
                    draws.push(draw);
                }
            }
        }
    }
    if let Some(refusal) = refusal {
        return Planned::Decided(refusal);
    }
    let plan = Plan {
        rule: first_rule.unwrap_or_else(RuleRef::default_rule),
        draws,
        reasons,
    };
    match held {
        // Every layer lets the call through once a person approves it.
        Some((rule, reason, approval)) => Planned::Decided(Decision::ApprovalRequired {
            rule,
            reason,
            approval,
            plan,
        }),
        None => Planned::Draw(plan),
    }
}

/// Decides a call against every layer ([`plan_layers`]), then takes the
/// draws of all layers in one atomic step.
pub fn decide_layers(layers: &[Layer<'_>], store: &dyn CounterStore, now: Millis) -> Decision {
    match plan_layers(layers) {
        Planned::Decided(decision) => decision,
        Planned::Draw(plan) if plan.draws.is_empty() => plan.conclude(Ok(Grant::default())),
        Planned::Draw(plan) => {
            let result = store.acquire(&plan.draws, now);
            plan.conclude(result)
        }
    }
}
