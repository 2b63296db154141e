//! Data-driven tests of the public API: loading (JSON and YAML), every
//! validation error, rule lookup, conditions, limits and counters.

use serde_json::{json, Value};
use toolgate_policy::{
    parse_policy, Call, CounterStore, Decision, DefaultAction, Evaluation, Format, MemoryStore,
    Policy,
};

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60_000;
/// A fixed, realistic epoch time so tests never start at 0.
const T0: u64 = 1_700_000_000_000;

fn load(text: &str) -> Policy {
    parse_policy(text, Format::Json, "policy.json").unwrap_or_else(|e| panic!("{e}"))
}

fn load_yaml(text: &str) -> Policy {
    parse_policy(text, Format::Yaml, "policy.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the exact diagnostics of an invalid JSON policy.
fn check_errors(text: &str, expected: &str) {
    match parse_policy(text, Format::Json, "policy.json") {
        Ok(_) => panic!("expected errors, policy loaded:\n{text}"),
        Err(diagnostics) => assert_eq!(diagnostics.to_string(), expected.trim(), "policy:\n{text}"),
    }
}

fn check_yaml_errors(text: &str, expected: &str) {
    match parse_policy(text, Format::Yaml, "policy.yaml") {
        Ok(_) => panic!("expected errors, policy loaded:\n{text}"),
        Err(diagnostics) => assert_eq!(diagnostics.to_string(), expected.trim(), "policy:\n{text}"),
    }
}

/// A one-rule policy with default deny.
fn with_rule(tool: &str, rule: Value) -> String {
    json!({"version": "1", "default": "deny", "tools": {tool: rule}}).to_string()
}

struct Agent<'p> {
    policy: &'p Policy,
    store: MemoryStore,
    grant: &'static str,
    session: &'static str,
}

impl<'p> Agent<'p> {
    fn new(policy: &'p Policy) -> Self {
        Agent {
            policy,
            store: MemoryStore::new(),
            grant: "local",
            session: "s1",
        }
    }

    fn call(&self, tool: &str, arguments: Value, now: u64) -> Decision {
        let call = Call {
            tool,
            arguments: &arguments,
            grant: self.grant,
            session: self.session,
        };
        self.policy.decide(&call, &self.store, now)
    }

    fn kind(&self, tool: &str, arguments: Value, now: u64) -> &'static str {
        self.call(tool, arguments, now).kind()
    }

    /// Calls `n` times at `now`; returns how many were allowed.
    fn burst(&self, tool: &str, n: usize, now: u64) -> usize {
        (0..n)
            .filter(|_| self.kind(tool, json!({}), now) == "allow")
            .count()
    }
}

fn evaluate(policy: &Policy, tool: &str, arguments: Value) -> Evaluation {
    policy.evaluate(&Call {
        tool,
        arguments: &arguments,
        grant: "local",
        session: "s1",
    })
}

fn reason(decision: &Decision) -> &str {
    match decision {
        Decision::Deny { reason, .. }
        | Decision::ApprovalRequired { reason, .. }
        | Decision::RateLimited { reason, .. } => reason,
        other => panic!("no reason in {other:?}"),
    }
}

// ---------------------------------------------------------------- seeds

const SEEDS: &[(&str, &str, &str)] = &[
    (
        "send-message",
        "send-message_rate",
        include_str!("fixtures/seed_000_imessage_send_message.json"),
    ),
    (
        "send_message",
        "send_message_rate",
        include_str!("fixtures/seed_001_ap2_send_message.json"),
    ),
    (
        "send_text_message",
        "send_text_message_rate",
        include_str!("fixtures/seed_002_ap2_send_text_message.json"),
    ),
    (
        "send-message",
        "send-message_rate",
        include_str!("fixtures/seed_003_agentic_send_message.json"),
    ),
    (
        "send_text",
        "send_text_rate",
        include_str!("fixtures/seed_004_ap2_send_text.json"),
    ),
];

#[test]
fn every_seed_policy_loads_verbatim_and_means_30_per_minute_per_grant() {
    for &(tool, counter, text) in SEEDS {
        let policy = load(text);
        assert_eq!(policy.default_action(), DefaultAction::Deny);
        assert_eq!(
            policy.counters().collect::<Vec<_>>(),
            vec![(counter, MINUTE)]
        );
        assert_eq!(
            policy.summary("policy.json"),
            "policy.json: valid policy (version 1, default deny, 1 tool rule, 1 counter)"
        );
        assert!(policy.is_listed(tool));
        assert!(!policy.is_listed("delete_everything"));

        let mut agent = Agent::new(&policy);
        assert_eq!(agent.burst(tool, 40, T0), 30, "{tool}");
        let limited = agent.call(tool, json!({}), T0 + 1);
        assert_eq!(limited.kind(), "rate_limited");
        let Decision::RateLimited {
            counter: c,
            retry_after_ms,
            rule,
            ..
        } = &limited
        else {
            unreachable!()
        };
        assert_eq!(c, counter);
        assert_eq!(*retry_after_ms, MINUTE - 1);
        assert_eq!(rule.to_string(), format!("tools[\"{tool}\"]"));
        // Another grant has its own budget.
        agent.grant = "other";
        assert_eq!(agent.burst(tool, 40, T0 + 2), 30);
        // Unlisted tools are unknown under default deny.
        assert_eq!(agent.kind("delete_everything", json!({}), T0), "unknown");
        // A minute after the burst the budget is back.
        agent.grant = "local";
        assert_eq!(agent.burst(tool, 40, T0 + MINUTE), 30);
    }
}

#[test]
fn seed_policies_in_yaml_mean_the_same() {
    let policy = load_yaml(
        "version: \"1\"\ndefault: deny\ntools:\n  send_text:\n    limits:\n      - counter: send_text_rate\n        window: minute\n        max: 30\n        scope: grant\n",
    );
    assert_eq!(
        policy.counters().collect::<Vec<_>>(),
        vec![("send_text_rate", MINUTE)]
    );
    let agent = Agent::new(&policy);
    assert_eq!(agent.burst("send_text", 31, T0), 30);
}

// ---------------------------------------------------------------- diagnostics

#[test]
fn misspelt_window_names_the_value() {
    check_errors(
        r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "send_text": {
      "limits": [{
          "window": "minite",
          "counter": "send_text_rate",
          "max": 30
      }]
    }
  }
}"#,
        r#"policy.json:7:21: tools.send_text.limits[0].window: unknown window "minite" (expected second, minute, hour, day or a number of seconds)"#,
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    check_errors(
        r#"{
  "version": 1,
  "default": "maybe",
  "tool": {},
  "tools": {
    "send_text": {
      "limit": [],
      "action": "block",
      "reason": 5
    },
    "delete_*": {
      "limits": [{"counter": "", "window": 0, "max": 0, "scope": "user", "cost": -1}],
      "conditions": [{"path": "arg.x", "op": "like", "reason": "r"}]
    },
    "x": {"limits": {}, "conditions": [{"path": "args", "op": "lt", "value": "5"}]},
    "": {}
  },
  "all_tools": {"limits": [{"counter": "c"}], "extra": true}
}"#,
        r#"
policy.json:2:14: version: expected the string "1", found a number
policy.json:3:14: default: unknown default "maybe" (expected allow or deny)
policy.json:4:3: unknown field "tool" (expected $schema, version, default, description, tools or all_tools)
policy.json:7:7: tools.send_text: unknown field "limit" (expected action, reason, description, limits or conditions)
policy.json:8:17: tools.send_text.action: unknown action "block" (expected allow, deny, hide or require_approval)
policy.json:9:17: tools.send_text.reason: expected a string, found a number
policy.json:12:30: tools["delete_*"].limits[0].counter: counter name must not be empty
policy.json:12:44: tools["delete_*"].limits[0].window: window must be a whole number of seconds from 1 to 31536000, found 0
policy.json:12:54: tools["delete_*"].limits[0].max: max must be greater than 0, found 0
policy.json:12:66: tools["delete_*"].limits[0].scope: unknown scope "user" (expected grant, session, global or arg:NAME)
policy.json:12:82: tools["delete_*"].limits[0].cost: cost must not be negative, found -1
policy.json:13:31: tools["delete_*"].conditions[0].path: invalid path "arg.x" (expected args or an argument path such as "args.amount")
policy.json:13:46: tools["delete_*"].conditions[0].op: unknown op "like" (expected eq, neq, in, not_in, lt, lte, gt, gte, regex, contains or exists)
policy.json:15:21: tools.x.limits: expected an array of limits, found an object
policy.json:15:78: tools.x.conditions[0].value: expected a number (op lt), found a string
policy.json:16:5: tools: tool name must not be empty
policy.json:18:28: all_tools.limits[0]: missing field "window"
policy.json:18:28: all_tools.limits[0]: missing field "max"
policy.json:18:47: all_tools: unknown field "extra" (expected limits)
"#,
    );
}

/// Each case: a policy text and the exact diagnostics it must produce.
#[test]
fn validation_error_kinds() {
    let cases: &[(&str, &str)] = &[
        // Not an object / missing required fields: at the object.
        ("[]", "policy.json:1:1: expected an object, found an array"),
        ("{}", "policy.json:1:1: missing field \"version\"\npolicy.json:1:1: missing field \"default\""),
        (r#"{"version": "2", "default": "deny"}"#, r#"policy.json:1:13: version: unsupported version "2" (expected "1")"#),
        (r#"{"version": "1", "default": true}"#, "policy.json:1:29: default: expected a string, found a boolean"),
        (r#"{"version": "1", "default": "deny", "tools": []}"#, "policy.json:1:46: tools: expected an object, found an array"),
        (r#"{"version": "1", "default": "deny", "description": 1}"#, "policy.json:1:52: description: expected a string, found a number"),
        (r#"{"version": "1", "default": "deny", "$schema": null}"#, "policy.json:1:48: $schema: expected a string, found null"),
        (r#"{"version": "1", "default": "deny", "tools": {"a": "allow"}}"#, "policy.json:1:52: tools.a: expected an object, found a string"),
        // Limits.
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{}]}}}"#,
            "policy.json:1:64: tools.a.limits[0]: missing field \"counter\"\npolicy.json:1:64: tools.a.limits[0]: missing field \"window\"\npolicy.json:1:64: tools.a.limits[0]: missing field \"max\"",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 1.5, "max": 1}]}}}"#,
            "policy.json:1:91: tools.a.limits[0].window: window must be a whole number of seconds from 1 to 31536000, found 1.5",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 31536001, "max": 1}]}}}"#,
            "policy.json:1:91: tools.a.limits[0].window: window must be a whole number of seconds from 1 to 31536000, found 31536001",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": true, "max": 1}]}}}"#,
            "policy.json:1:91: tools.a.limits[0].window: expected a window (second, minute, hour, day or a number of seconds), found a boolean",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 60, "max": "30"}]}}}"#,
            "policy.json:1:102: tools.a.limits[0].max: expected a number, found a string",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 60, "max": 3, "cost": 4}]}}}"#,
            "policy.json:1:113: tools.a.limits[0].cost: cost 4 is more than max 3, so no call could ever be admitted",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 60, "max": 3, "cost": "count"}]}}}"#,
            r#"policy.json:1:113: tools.a.limits[0].cost: invalid cost path "count" (expected an argument path such as "args.count")"#,
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 60, "max": 3, "scope": "arg:"}]}}}"#,
            r#"policy.json:1:114: tools.a.limits[0].scope: scope "arg:" needs an argument name, as in arg:phone"#,
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c\u001f", "window": 60, "max": 3}]}}}"#,
            "policy.json:1:76: tools.a.limits[0].counter: counter name must not contain control characters",
        ),
        // Contradictions.
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"action": "deny", "limits": []}}}"#,
            "policy.json:1:81: tools.a.limits: a rule with action deny cannot have limits (its calls are never admitted)",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"action": "hide", "conditions": []}}}"#,
            "policy.json:1:85: tools.a.conditions: a rule with action hide cannot have conditions (its calls are never admitted)",
        ),
        // Conditions.
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"conditions": [{"path": "args.x", "op": "in", "value": 1}]}}}"#,
            "policy.json:1:108: tools.a.conditions[0].value: expected an array (op in), found a number",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"conditions": [{"path": "args.x", "op": "regex", "value": "("}]}}}"#,
            "policy.json:1:111: tools.a.conditions[0].value: invalid regex: unclosed group",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"conditions": [{"path": "args.x", "op": "exists", "value": "yes"}]}}}"#,
            "policy.json:1:112: tools.a.conditions[0].value: expected a boolean (op exists), found a string",
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"conditions": [{"path": "args..x", "op": "exists"}]}}}"#,
            r#"policy.json:1:77: tools.a.conditions[0].path: invalid path "args..x" (expected args or an argument path such as "args.amount")"#,
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"conditions": [{"path": "args.x", "op": "eq"}]}}}"#,
            r#"policy.json:1:68: tools.a.conditions[0]: missing field "value" (op eq needs a value)"#,
        ),
        (
            r#"{"version": "1", "default": "deny", "tools": {"a": {"conditions": {}}}}"#,
            "policy.json:1:67: tools.a.conditions: expected an array of conditions, found an object",
        ),
        // Keys that are not identifiers are quoted in paths.
        (
            r#"{"version": "1", "default": "deny", "tools": {"a.b": {"action": "nope"}}}"#,
            r#"policy.json:1:65: tools["a.b"].action: unknown action "nope" (expected allow, deny, hide or require_approval)"#,
        ),
        // Syntax errors stop reading.
        (r#"{"version": "1",}"#, "policy.json:1:17: trailing comma before '}'"),
        ("{\n  \"version\": \"1\"\n  \"default\": \"deny\"\n}", "policy.json:3:3: expected ',' or '}' after a value, found '\"'"),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        match parse_policy(text, Format::Json, "policy.json") {
            Ok(_) => failures.push(format!("loaded: {text}")),
            Err(d) if d.to_string() != *expected => {
                failures.push(format!("{text}\n  expected: {expected}\n  got:      {d}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn duplicate_keys_are_errors_at_the_second_key() {
    check_errors(
        r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "send_text": {"action": "deny"},
    "send_text": {"action": "allow"}
  },
  "default": "allow"
}"#,
        r#"
policy.json:6:5: tools: duplicate key "send_text"
policy.json:8:3: duplicate key "default"
"#,
    );
    check_yaml_errors(
        "version: \"1\"\ndefault: deny\ntools:\n  a: {}\n  a: {action: deny}\n",
        "policy.yaml:5:3: tools: duplicate key \"a\"",
    );
}

#[test]
fn counters_keep_one_window_and_the_second_use_is_reported() {
    check_errors(
        r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "a": {"limits": [{"counter": "shared", "window": "minute", "max": 5}]},
    "b": {"limits": [{"counter": "shared", "window": "hour", "max": 5}]}
  }
}"#,
        r#"policy.json:6:54: tools.b.limits[0].window: counter "shared" already has window minute (at tools.a.limits[0].window); every use of a counter must have the same window"#,
    );
    // The same window written two ways is the same window.
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "a": {"limits": [{"counter": "shared", "window": "minute", "max": 5}]},
            "b": {"limits": [{"counter": "shared", "window": 60, "max": 5}]}}}"#,
    );
    assert_eq!(
        policy.counters().collect::<Vec<_>>(),
        vec![("shared", MINUTE)]
    );
}

#[test]
fn yaml_diagnostics_point_at_values() {
    check_yaml_errors(
        "version: \"1\"\ndefault: deny\ntools:\n  send_text:\n    limits:\n      - counter: send_text_rate\n        window: minite\n        max: 30\n",
        r#"policy.yaml:7:17: tools.send_text.limits[0].window: unknown window "minite" (expected second, minute, hour, day or a number of seconds)"#,
    );
    check_yaml_errors(
        "version: 1\ndefault: deny\n",
        r#"policy.yaml:1:10: version: expected the string "1", found a number"#,
    );
    check_yaml_errors(
        "version: \"1\"\ndefault: deny\ntools:\n  a:\n    limit: []\n",
        r#"policy.yaml:5:5: tools.a: unknown field "limit" (expected action, reason, description, limits or conditions)"#,
    );
    check_yaml_errors(
        "version: \"1\"\ndefault: deny\nbase: &b {}\n",
        "policy.yaml:3:10: YAML anchors are not supported in a policy",
    );
    check_yaml_errors(
        "version: \"1\"\n  default: [\n",
        "policy.yaml:2:10: invalid YAML: while parsing a block mapping, did not find expected key",
    );
}

#[test]
fn format_comes_from_the_extension() {
    use std::path::Path;
    assert_eq!(
        Format::from_path(Path::new("p/policy.json")),
        Some(Format::Json)
    );
    assert_eq!(
        Format::from_path(Path::new("policy.yaml")),
        Some(Format::Yaml)
    );
    assert_eq!(
        Format::from_path(Path::new("policy.yml")),
        Some(Format::Yaml)
    );
    assert_eq!(Format::from_path(Path::new("policy.toml")), None);
    assert_eq!(Format::from_path(Path::new("policy")), None);
}

#[test]
fn json_schema_is_valid_json_that_names_every_field() {
    let schema: Value = serde_json::from_str(toolgate_policy::json_schema()).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    let top: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    assert_eq!(
        top,
        [
            "$schema",
            "version",
            "default",
            "description",
            "tools",
            "all_tools"
        ]
    );
    let rule = &schema["$defs"]["rule"]["properties"];
    for field in ["action", "reason", "description", "limits", "conditions"] {
        assert!(rule.get(field).is_some(), "rule.{field}");
    }
    let limit = &schema["$defs"]["limit"]["properties"];
    for field in ["counter", "window", "max", "scope", "cost"] {
        assert!(limit.get(field).is_some(), "limit.{field}");
    }
}

// ---------------------------------------------------------------- lookup

#[test]
fn lookup_precedence() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "*": {"action": "deny", "reason": "star"},
            "delete_*": {"action": "deny", "reason": "delete star"},
            "delete_*_file": {"action": "deny", "reason": "delete star file"},
            "delete_?": {"action": "deny", "reason": "delete one"},
            "delete_a*": {"action": "deny", "reason": "delete a first"},
            "delete_*a": {"action": "deny", "reason": "delete a last"},
            "delete_temp": {"reason": "exact"},
            "delete_tem*": {"action": "deny", "reason": "delete tem"}
        }}"#,
    );
    let cases = [
        ("delete_temp", "allow", "tools[\"delete_temp\"]"),
        ("delete_tempx", "deny", "tools[\"delete_tem*\"]"),
        ("delete_big_file", "deny", "tools[\"delete_*_file\"]"),
        ("delete_x", "deny", "tools[\"delete_?\"]"), // 7 literals, no star beats delete_*
        ("delete_ab", "deny", "tools[\"delete_a*\"]"), // same literals as delete_*a: earlier wins
        ("delete_ba", "deny", "tools[\"delete_*a\"]"),
        ("delete_", "deny", "tools[\"delete_*\"]"),
        ("anything", "deny", "tools[\"*\"]"),
        ("", "deny", "tools[\"*\"]"),
    ];
    for (tool, kind, rule) in cases {
        let agent = Agent::new(&policy);
        let decision = agent.call(tool, json!({}), T0);
        assert_eq!(
            (tool, decision.kind(), decision.rule().as_str()),
            (tool, kind, rule)
        );
    }
}

#[test]
fn fewer_stars_win_among_equal_literals() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "a*b*": {"action": "deny", "reason": "two"},
            "a*b": {"action": "deny", "reason": "one"}}}"#,
    );
    assert_eq!(policy.rule_for("axb").unwrap().as_str(), "tools[\"a*b\"]");
    assert_eq!(policy.rule_for("axbx").unwrap().as_str(), "tools[\"a*b*\"]");
}

#[test]
fn look_alike_names_are_different_tools() {
    let policy = load(&with_rule("send_text", json!({})));
    let agent = Agent::new(&policy);
    for name in [
        "send_tеxt",
        "Send_text",
        "send_text ",
        " send_text",
        "send_text\u{0}",
        "send_te\u{301}xt",
        "send＿text",
    ] {
        assert_eq!(agent.kind(name, json!({}), T0), "unknown", "{name:?}");
        assert!(!policy.is_listed(name), "{name:?}");
    }
    assert_eq!(agent.kind("send_text", json!({}), T0), "allow");
}

#[test]
fn default_allow_and_listing() {
    let policy = load(
        r#"{"version": "1", "default": "allow", "tools": {
            "secret": {"action": "hide"},
            "rm": {"action": "deny"},
            "pay": {"action": "require_approval"}}}"#,
    );
    let agent = Agent::new(&policy);
    assert!(policy.is_listed("anything"));
    assert!(!policy.is_listed("secret"));
    assert!(policy.is_listed("rm"));
    assert!(policy.is_listed("pay"));
    let allowed = agent.call("anything", json!({}), T0);
    assert_eq!(
        allowed,
        Decision::Allow {
            rule: allowed.rule().clone(),
            grant: Default::default()
        }
    );
    assert_eq!(allowed.rule().as_str(), "default");
    assert_eq!(agent.kind("secret", json!({}), T0), "unknown");
    assert_eq!(
        reason(&agent.call("rm", json!({}), T0)),
        "tool \"rm\" is denied by policy"
    );
    assert_eq!(
        reason(&agent.call("pay", json!({}), T0)),
        "calls to \"pay\" require approval, and approvals are not available in this gateway yet"
    );
    assert_eq!(
        evaluate(&policy, "nothing", json!(null)),
        Evaluation::Proceed {
            rule: allowed.rule().clone(),
            draws: vec![]
        }
    );
}

#[test]
fn reasons_written_in_the_policy_are_used() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "rm": {"action": "deny", "reason": "never delete"},
            "pay": {"action": "require_approval", "reason": "a human must approve payments"},
            "send": {"reason": "sending is capped",
                     "limits": [{"counter": "send", "window": "minute", "max": 1}]}}}"#,
    );
    let agent = Agent::new(&policy);
    assert_eq!(reason(&agent.call("rm", json!({}), T0)), "never delete");
    assert_eq!(
        reason(&agent.call("pay", json!({}), T0)),
        "a human must approve payments"
    );
    assert_eq!(agent.kind("send", json!({}), T0), "allow");
    assert_eq!(
        reason(&agent.call("send", json!({}), T0 + 30 * SECOND)),
        "sending is capped: rate limit \"send\" reached: 1 of 1 used in the last minute; retry in 30.0s"
    );
}

#[test]
fn ten_thousand_rules_load_and_look_up() {
    let mut tools = serde_json::Map::new();
    for i in 0..10_000 {
        tools.insert(format!("tool_{i}"), json!({"limits": [{"counter": format!("c{}", i % 1000), "window": "minute", "max": 1e9}]}));
        tools.insert(format!("pattern_{i}_*"), json!({"action": "deny"}));
    }
    let text = json!({"version": "1", "default": "deny", "tools": tools}).to_string();
    let policy = load(&text);
    assert_eq!(policy.counters().count(), 1000);
    assert_eq!(
        policy.rule_for("tool_9999").unwrap().as_str(),
        "tools[\"tool_9999\"]"
    );
    assert_eq!(
        policy.rule_for("pattern_42_x").unwrap().as_str(),
        "tools[\"pattern_42_*\"]"
    );
    assert_eq!(policy.rule_for("tool_10000"), None);
}
