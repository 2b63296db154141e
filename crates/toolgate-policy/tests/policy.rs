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

    /// A call as the gateways make it: with the JSON text of the arguments.
    fn call(&self, tool: &str, arguments: Value, now: u64) -> Decision {
        let text = arguments.to_string();
        self.call_with(tool, &arguments, Some(&text), now)
    }

    /// A call with the arguments' text as given (`None`: only the value).
    fn call_with(&self, tool: &str, arguments: &Value, text: Option<&str>, now: u64) -> Decision {
        let call = Call {
            tool,
            arguments,
            arguments_text: text,
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
    let text = arguments.to_string();
    policy.evaluate(&Call {
        tool,
        arguments: &arguments,
        arguments_text: Some(&text),
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
policy.json:4:3: unknown field "tool" (expected $schema, version, default, description, tools, all_tools or pins)
policy.json:7:7: tools.send_text: unknown field "limit" (expected action, reason, description, limits, conditions or approval)
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
        r#"policy.yaml:5:5: tools.a: unknown field "limit" (expected action, reason, description, limits, conditions or approval)"#,
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
            "all_tools",
            "pins"
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
        "calls to \"pay\" require approval"
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

// ---------------------------------------------------------------- conditions

/// Each case: (op, value, arguments, holds?). `value: None` leaves it out.
#[test]
fn conditions_of_each_op() {
    let cases: &[(&str, Option<Value>, Value, bool)] = &[
        ("eq", Some(json!(5)), json!({"x": 5}), true),
        ("eq", Some(json!(5)), json!({"x": 5.0}), true),
        ("eq", Some(json!(5)), json!({"x": "5"}), false),
        (
            "eq",
            Some(json!({"a": [1]})),
            json!({"x": {"a": [1.0]}}),
            true,
        ),
        ("eq", Some(json!(null)), json!({"x": null}), true),
        ("eq", Some(json!(null)), json!({}), false),
        ("neq", Some(json!("a")), json!({"x": "b"}), true),
        ("neq", Some(json!("a")), json!({"x": "a"}), false),
        ("neq", Some(json!("a")), json!({}), false), // missing: fail closed
        ("in", Some(json!(["a", 2])), json!({"x": 2.0}), true),
        ("in", Some(json!(["a", 2])), json!({"x": "b"}), false),
        ("in", Some(json!([])), json!({"x": "b"}), false),
        ("not_in", Some(json!(["a"])), json!({"x": "b"}), true),
        ("not_in", Some(json!(["a"])), json!({"x": "a"}), false),
        ("not_in", Some(json!(["a"])), json!({}), false), // missing: fail closed
        ("lt", Some(json!(10)), json!({"x": 9.5}), true),
        ("lt", Some(json!(10)), json!({"x": 10}), false),
        ("lt", Some(json!(10)), json!({"x": "9"}), false), // type mismatch
        ("lte", Some(json!(10)), json!({"x": 10}), true),
        ("lte", Some(json!(10)), json!({"x": 11}), false),
        ("gt", Some(json!(0)), json!({"x": 1}), true),
        ("gt", Some(json!(0)), json!({"x": 0}), false),
        ("gte", Some(json!(0)), json!({"x": 0}), true),
        ("gte", Some(json!(0)), json!({"x": -1}), false),
        ("gte", Some(json!(0)), json!({"x": [1]}), false),
        (
            "regex",
            Some(json!("^\\+1[0-9]{10}$")),
            json!({"x": "+15551234567"}),
            true,
        ),
        (
            "regex",
            Some(json!("^\\+1[0-9]{10}$")),
            json!({"x": "+445551234567"}),
            false,
        ),
        ("regex", Some(json!("a")), json!({"x": 1}), false),
        (
            "contains",
            Some(json!("lo w")),
            json!({"x": "hello world"}),
            true,
        ),
        (
            "contains",
            Some(json!("bye")),
            json!({"x": "hello world"}),
            false,
        ),
        ("contains", Some(json!("b")), json!({"x": ["a", "b"]}), true),
        ("contains", Some(json!(2)), json!({"x": [1, 2.0]}), true),
        ("contains", Some(json!(3)), json!({"x": [1, 2]}), false),
        ("contains", Some(json!(1)), json!({"x": 1}), false),
        ("exists", None, json!({"x": null}), true),
        ("exists", None, json!({}), false),
        ("exists", Some(json!(true)), json!({"x": 0}), true),
        ("exists", Some(json!(false)), json!({}), true),
        ("exists", Some(json!(false)), json!({"x": 0}), false),
        ("exists", None, Value::Null, false), // no arguments at all
    ];
    let mut failures = Vec::new();
    for (op, value, arguments, holds) in cases {
        let mut condition = json!({"path": "args.x", "op": op});
        if let Some(value) = value {
            condition["value"] = value.clone();
        }
        let policy = load(&with_rule("t", json!({"conditions": [condition]})));
        let kind = Agent::new(&policy).kind("t", arguments.clone(), T0);
        let expected = if *holds { "allow" } else { "deny" };
        if kind != expected {
            failures.push(format!(
                "{op} {value:?} on {arguments}: got {kind}, expected {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nested_paths_and_array_indexes() {
    let policy = load(&with_rule(
        "t",
        json!({"conditions": [
            {"path": "args.to.0.domain", "op": "eq", "value": "example.com"},
            {"path": "args", "op": "exists"}
        ]}),
    ));
    let agent = Agent::new(&policy);
    assert_eq!(
        agent.kind("t", json!({"to": [{"domain": "example.com"}]}), T0),
        "allow"
    );
    assert_eq!(
        agent.kind("t", json!({"to": [{"domain": "evil.com"}]}), T0),
        "deny"
    );
    assert_eq!(agent.kind("t", json!({"to": []}), T0), "deny");
    assert_eq!(agent.kind("t", json!(null), T0), "deny");
}

/// What a call decides: "allow", "deny" (the condition is false), or
/// "inexact" (denied because the number cannot be compared exactly).
fn outcome(decision: &Decision) -> &'static str {
    match decision {
        Decision::Deny { reason, .. } if reason.contains("cannot be compared exactly") => "inexact",
        other => other.kind(),
    }
}

/// A policy whose bound is written as `bound` (number text, kept as is).
fn bound_policy(op: &str, bound: &str) -> String {
    format!(
        r#"{{"version": "1", "default": "deny", "tools": {{"t": {{"conditions": [{{"path": "args.x", "op": "{op}", "value": {bound}}}]}}}}}}"#
    )
}

/// `{"x": TOKEN}` as a client writes it, and the value serde_json reads from
/// it. serde_json refuses a number beyond the f64 range (so no gateway ever
/// hands one to the engine): for those the value is the largest f64, and
/// only the text path is checked.
fn client_arguments(token: &str) -> (String, Option<Value>) {
    let text = format!(r#"{{"x": {token}}}"#);
    match serde_json::from_str(&text) {
        Ok(value) => (text, Some(value)),
        Err(_) => (text, None),
    }
}

/// Each case: (op, bound as written, argument as written, outcome with the
/// arguments' text, outcome with only the value serde_json read, or "-"
/// when serde_json cannot read the argument).
#[test]
fn numbers_are_compared_exactly() {
    let digits = "0".repeat(10_000);
    let nines = "9".repeat(10_000);
    let long_above = format!("100.{digits}1");
    let long_below = format!("99.{nines}");
    let long_integer = format!("1{digits}");
    let long_bound = format!("100.{digits}1");
    let cases: Vec<(&str, &str, &str, &str, &str)> = vec![
        // The findings: f64 comparison admitted these.
        ("lte", "100", "100.00000000000001", "deny", "inexact"),
        (
            "lte",
            "9007199254740992",
            "9007199254740993",
            "deny",
            "deny",
        ),
        ("eq", "9007199254740992", "9007199254740993", "deny", "deny"),
        (
            "neq",
            "9007199254740992",
            "9007199254740993",
            "allow",
            "allow",
        ),
        (
            "in",
            "[9007199254740992]",
            "9007199254740993",
            "deny",
            "deny",
        ),
        (
            "not_in",
            "[9007199254740992]",
            "9007199254740993",
            "allow",
            "allow",
        ),
        (
            "lte",
            "9007199254740992",
            "9007199254740992.5",
            "deny",
            "inexact",
        ),
        (
            "lt",
            "100.00000000000002",
            "100.00000000000001",
            "allow",
            "inexact",
        ),
        (
            "lte",
            "100.00000000000001",
            "100.00000000000001",
            "allow",
            "inexact",
        ),
        (
            "lte",
            "100.00000000000001",
            "100.00000000000002",
            "deny",
            "inexact",
        ),
        // Written differently, the same number.
        ("lte", "100", "100", "allow", "allow"),
        ("lte", "100", "100.0", "allow", "inexact"),
        ("lte", "100", "99.5", "allow", "allow"),
        ("lte", "100", "1e2", "allow", "inexact"),
        ("lte", "100", "1E+2", "allow", "inexact"),
        ("lt", "100", "1e2", "deny", "inexact"),
        ("eq", "100", "1e2", "allow", "inexact"),
        ("eq", "100", "100.000", "allow", "inexact"),
        ("eq", "1e2", "100", "allow", "allow"),
        ("eq", "100.0", "100", "allow", "allow"),
        ("neq", "100", "1e2", "deny", "inexact"),
        ("in", "[1, 100]", "1e2", "allow", "inexact"),
        ("in", "[1, 2]", "1e2", "deny", "deny"),
        ("not_in", "[1, 100]", "1e2", "deny", "inexact"),
        ("eq", "0.1", "0.1", "allow", "inexact"),
        ("lt", "0.3", "0.1", "allow", "allow"),
        ("gt", "0.1", "0.10000000000000001", "allow", "inexact"),
        // Zero and its signs.
        ("lte", "0", "-0", "allow", "inexact"),
        ("gte", "0", "-0", "allow", "inexact"),
        ("lt", "0", "-0", "deny", "inexact"),
        ("eq", "0", "-0", "allow", "inexact"),
        ("eq", "0", "-0.0e5", "allow", "inexact"),
        ("eq", "-0", "0", "allow", "allow"),
        ("gt", "-1", "-0", "allow", "allow"),
        // Beyond the f64 range, and below it.
        ("gt", "100", "1e400", "allow", "-"),
        ("lte", "100", "1e400", "deny", "-"),
        ("lte", "100", "-1e400", "allow", "-"),
        ("gt", "0", "1e-400", "allow", "inexact"),
        ("lte", "0", "1e-400", "deny", "inexact"),
        ("gte", "0", "-1e-400", "deny", "inexact"),
        ("eq", "0", "1e-400", "deny", "inexact"),
        ("gt", "0", "1e-99999999999999999999999", "allow", "inexact"),
        ("lt", "1", "1e99999999999999999999999", "deny", "-"),
        // Ten thousand digits.
        ("lte", "100", &long_above, "deny", "inexact"),
        ("lte", "100", &long_below, "allow", "inexact"),
        ("gt", "99", &long_below, "allow", "allow"),
        ("lte", "100", &long_integer, "deny", "-"),
        ("lte", &long_bound, &long_above, "allow", "inexact"),
        ("lt", &long_bound, "100", "allow", "allow"),
        // Numbers inside values compared with eq and contains.
        (
            "eq",
            r#"{"a": 100}"#,
            r#"{"a": 100.00000000000001}"#,
            "deny",
            "inexact",
        ),
        ("eq", r#"{"a": 100}"#, r#"{"a": 1e2}"#, "allow", "inexact"),
        (
            "eq",
            r#"{"a": 100}"#,
            r#"{"a": 1e2, "b": 1}"#,
            "deny",
            "deny",
        ),
        ("eq", "[100, 2]", "[1e2, 3.5]", "deny", "deny"),
        ("contains", "100", "[100.00000000000001]", "deny", "inexact"),
        ("contains", "100", "[1, 1e2]", "allow", "inexact"),
        ("contains", "100", "[1, 100]", "allow", "allow"),
        // Not numbers: as before.
        ("lte", "100", r#""99""#, "deny", "deny"),
        ("eq", "100", r#""100""#, "deny", "deny"),
    ];
    let mut failures = Vec::new();
    for (op, bound, token, with_text, value_only) in &cases {
        let policy = load(&bound_policy(op, bound));
        let agent = Agent::new(&policy);
        let (text, value) = client_arguments(token);
        let largest = if token.starts_with('-') {
            -f64::MAX
        } else {
            f64::MAX
        };
        let stand_in = json!({ "x": largest });
        let read = value.as_ref().unwrap_or(&stand_in);
        let got = outcome(&agent.call_with("t", read, Some(&text), T0));
        if got != *with_text {
            failures.push(format!(
                "{op} {bound:.40} on {token:.40} with its text: got {got}, expected {with_text}"
            ));
        }
        let got = match &value {
            Some(value) => outcome(&agent.call_with("t", value, None, T0)),
            None => "-",
        };
        if got != *value_only {
            failures.push(format!(
                "{op} {bound:.40} on {token:.40} without its text: got {got}, expected {value_only}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same bounds written in YAML keep their exact value too.
#[test]
fn yaml_bounds_are_kept_as_written() {
    let policy = load_yaml(
        "version: \"1\"\ndefault: deny\ntools:\n  t:\n    conditions:\n      - {path: args.x, op: lte, value: 100}\n  u:\n    conditions:\n      - {path: args.x, op: lte, value: 1e2}\n  v:\n    conditions:\n      - {path: args.x, op: lt, value: 100.00000000000002}\n  w:\n    conditions:\n      - {path: args.x, op: eq, value: 9007199254740993}\n",
    );
    let agent = Agent::new(&policy);
    let with_text = |tool: &str, token: &str| {
        let (text, value) = client_arguments(token);
        outcome(&agent.call_with(tool, &value.unwrap(), Some(&text), T0))
    };
    assert_eq!(with_text("t", "100.00000000000001"), "deny");
    assert_eq!(with_text("t", "1e2"), "allow");
    assert_eq!(with_text("u", "100.00000000000001"), "deny");
    assert_eq!(with_text("u", "100.0"), "allow");
    assert_eq!(with_text("v", "100.00000000000001"), "allow");
    assert_eq!(with_text("v", "100.00000000000002"), "deny");
    assert_eq!(with_text("w", "9007199254740993"), "allow");
    assert_eq!(with_text("w", "9007199254740992"), "deny");
}

/// An inexact comparison says why, after the condition's own reason.
#[test]
fn an_inexact_number_is_refused_with_a_reason() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "pay": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]},
            "pay2": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100, "reason": "at most 100"}]},
            "pay3": {"reason": "payments are restricted", "conditions": [{"path": "args.amount", "op": "lte", "value": 100.50}]}}}"#,
    );
    let agent = Agent::new(&policy);
    let amount = json!({"amount": 100.0});
    assert_eq!(
        reason(&agent.call_with("pay", &amount, None, T0)),
        "condition failed: args.amount lte 100: the number at args.amount cannot be compared exactly"
    );
    assert_eq!(
        reason(&agent.call_with("pay2", &amount, None, T0)),
        "at most 100 (the number at args.amount cannot be compared exactly)"
    );
    assert_eq!(
        reason(&agent.call_with("pay3", &json!({"amount": 100.5}), None, T0)),
        "payments are restricted (condition failed: args.amount lte 100.5: the number at args.amount cannot be compared exactly)"
    );
    // With the text, the same calls are decided.
    assert_eq!(agent.kind("pay", amount.clone(), T0), "allow");
    assert_eq!(agent.kind("pay3", json!({"amount": 100.5}), T0), "allow");
}

/// Arguments' text that does not hold what the value holds is not trusted:
/// the value decides (failing closed where it cannot).
#[test]
fn text_that_disagrees_with_the_value_is_not_used() {
    let policy = load(&bound_policy("lte", "100"));
    let agent = Agent::new(&policy);
    let value = json!({"x": 100.0});
    for text in [
        r#"{"x": 5.0}"#,
        r#"{"y": 5.0}"#,
        r#"{"x": "5"}"#,
        "not json",
        r#"{"x": 1.0, "x": 1.0}"#,
    ] {
        assert_eq!(
            outcome(&agent.call_with("t", &value, Some(text), T0)),
            "inexact",
            "{text}"
        );
    }
}

/// A number of 100,000 digits, or an exponent of as many, is decided in
/// time linear in its length: ten times longer takes at most ~10 times as
/// long (asserted with a generous margin).
#[test]
fn long_numbers_are_decided_in_linear_time() {
    let policy = load(&bound_policy("lte", "100"));
    let agent = Agent::new(&policy);
    let time = |n: usize| {
        let cases = [
            format!("100.{}1", "0".repeat(n)),
            format!("99.{}", "9".repeat(n)),
            format!("1e-{}", "9".repeat(n)),
        ];
        // toolgate-clock depends on this crate: the one monotonic read of its own tests.
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now();
        for token in &cases {
            let (text, value) = client_arguments(token);
            let value = value.unwrap();
            for _ in 0..5 {
                std::hint::black_box(agent.call_with("t", &value, Some(&text), T0));
            }
        }
        started.elapsed()
    };
    let small = time(10_000);
    let large = time(100_000);
    assert!(
        large < small * 40 + std::time::Duration::from_millis(50),
        "10x longer numbers took {large:?} against {small:?}"
    );
}

#[test]
fn the_first_failing_condition_gives_the_reason() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "pay": {"conditions": [
                {"path": "args.amount", "op": "lte", "value": 100},
                {"path": "args.currency", "op": "in", "value": ["EUR", "USD"], "reason": "only EUR and USD"}
            ]},
            "pay2": {"reason": "payments are restricted", "conditions": [
                {"path": "args.amount", "op": "lte", "value": 100}
            ]}}}"#,
    );
    let agent = Agent::new(&policy);
    assert_eq!(
        reason(&agent.call("pay", json!({"amount": 500, "currency": "GBP"}), T0)),
        "condition failed: args.amount lte 100"
    );
    assert_eq!(
        reason(&agent.call("pay", json!({"amount": 5, "currency": "GBP"}), T0)),
        "only EUR and USD"
    );
    assert_eq!(
        agent.kind("pay", json!({"amount": 5, "currency": "EUR"}), T0),
        "allow"
    );
    assert_eq!(
        reason(&agent.call("pay2", json!({"amount": 500}), T0)),
        "payments are restricted (condition failed: args.amount lte 100)"
    );
}

#[test]
fn require_approval_checks_conditions_first() {
    let policy = load(&with_rule(
        "wire",
        json!({"action": "require_approval", "conditions": [{"path": "args.amount", "op": "gt", "value": 0}]}),
    ));
    let agent = Agent::new(&policy);
    assert_eq!(agent.kind("wire", json!({"amount": 0}), T0), "deny");
    assert_eq!(
        agent.kind("wire", json!({"amount": 10}), T0),
        "approval_required"
    );
}

// ---------------------------------------------------------------- limits

fn limited(limits: Value) -> Policy {
    load(&with_rule("t", json!({"limits": limits})))
}

#[test]
fn no_double_burst_across_a_minute_boundary() {
    let policy = limited(json!([{"counter": "c", "window": "minute", "max": 30}]));
    let agent = Agent::new(&policy);
    assert_eq!(agent.burst("t", 30, T0 + 59_900), 30);
    assert_eq!(agent.burst("t", 30, T0 + 60_100), 0);
    // The whole burst frees up exactly one window after it was taken.
    assert_eq!(agent.burst("t", 30, T0 + 59_900 + MINUTE - 1), 0);
    assert_eq!(agent.burst("t", 31, T0 + 59_900 + MINUTE), 30);
}

#[test]
fn sparse_calls_are_admitted_exactly() {
    // max 3 per 10 s, calls 2 s apart: each refused call is exactly the one
    // that would make 4 in some 10 s interval.
    let policy = limited(json!([{"counter": "c", "window": 10, "max": 3}]));
    let agent = Agent::new(&policy);
    let kinds: Vec<&str> = (0..12)
        .map(|i| agent.kind("t", json!({}), T0 + i * 2 * SECOND))
        .collect();
    // t=0,2,4 allowed; 6,8 refused; 10 (0 expired) ok; 12 ok (2 expired); 14 ok; 16,18 refused; 20,22 ok.
    assert_eq!(
        kinds,
        [
            "allow",
            "allow",
            "allow",
            "rate_limited",
            "rate_limited",
            "allow",
            "allow",
            "allow",
            "rate_limited",
            "rate_limited",
            "allow",
            "allow"
        ]
    );
}

#[test]
fn a_refused_call_consumes_nothing() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "t": {"limits": [
                {"counter": "wide", "window": "hour", "max": 100},
                {"counter": "narrow", "window": "minute", "max": 2}
            ]}}}"#,
    );
    let agent = Agent::new(&policy);
    assert_eq!(agent.burst("t", 50, T0), 2);
    assert_eq!(agent.store.used("wide\u{1f}grant\u{1f}local", T0), 2.0);
    let decision = agent.call("t", json!({}), T0);
    let Decision::RateLimited { counter, .. } = &decision else {
        panic!("{decision:?}")
    };
    assert_eq!(counter, "narrow");
    // Refusals by the second limit took nothing from the first.
    assert_eq!(agent.store.used("wide\u{1f}grant\u{1f}local", T0), 2.0);
    assert_eq!(agent.burst("t", 50, T0 + MINUTE), 2);
    assert_eq!(
        agent.store.used("wide\u{1f}grant\u{1f}local", T0 + MINUTE),
        4.0
    );
}

#[test]
fn release_gives_quota_back() {
    let policy = limited(json!([{"counter": "c", "window": "minute", "max": 2}]));
    let agent = Agent::new(&policy);
    let Decision::Allow { grant, .. } = agent.call("t", json!({}), T0) else {
        panic!()
    };
    assert_eq!(grant.taken.len(), 1);
    assert_eq!(grant.taken[0].used, 1.0);
    assert_eq!(grant.taken[0].key, "c\u{1f}grant\u{1f}local");
    assert_eq!(agent.kind("t", json!({}), T0 + 1), "allow");
    assert_eq!(agent.kind("t", json!({}), T0 + 2), "rate_limited");
    agent.store.release(&grant);
    assert_eq!(agent.kind("t", json!({}), T0 + 3), "allow");
    assert_eq!(agent.kind("t", json!({}), T0 + 4), "rate_limited");
    // Released quota of a call whose entry has expired is not given back.
    let Decision::Allow { grant, .. } = agent.call("t", json!({}), T0 + MINUTE + 10) else {
        panic!()
    };
    assert_eq!(
        agent
            .store
            .used("c\u{1f}grant\u{1f}local", T0 + 2 * MINUTE + 10),
        0.0
    );
    agent.store.release(&grant);
    assert_eq!(agent.burst("t", 5, T0 + 2 * MINUTE + 10), 2);
}

#[test]
fn cost_from_arguments() {
    let policy = limited(
        json!([{"counter": "sms", "window": "day", "max": 10, "cost": "args.recipients.count"}]),
    );
    let agent = Agent::new(&policy);
    assert_eq!(
        agent.kind("t", json!({"recipients": {"count": 6}}), T0),
        "allow"
    );
    assert_eq!(
        agent.kind("t", json!({"recipients": {"count": 5}}), T0),
        "rate_limited"
    );
    assert_eq!(
        agent.kind("t", json!({"recipients": {"count": 4}}), T0),
        "allow"
    );
    assert_eq!(
        agent.kind("t", json!({"recipients": {"count": 0}}), T0),
        "allow"
    );
    assert_eq!(
        reason(&agent.call("t", json!({"recipients": {"count": -1}}), T0)),
        "limit \"sms\" takes its cost from args.recipients.count, which must be a number ≥ 0, found -1"
    );
    assert_eq!(
        reason(&agent.call("t", json!({"recipients": {"count": "3"}}), T0)),
        "limit \"sms\" takes its cost from args.recipients.count, which must be a number ≥ 0, found \"3\""
    );
    assert_eq!(
        reason(&agent.call("t", json!({}), T0)),
        "limit \"sms\" takes its cost from args.recipients.count, which is missing"
    );
    // A cost above max never fits: retry after a whole window.
    let limited = agent.call("t", json!({"recipients": {"count": 11}}), T0 + DAY_LATER);
    let Decision::RateLimited { retry_after_ms, .. } = limited else {
        panic!("{limited:?}")
    };
    assert_eq!(retry_after_ms, 86_400_000);
}
const DAY_LATER: u64 = 86_400_000;

#[test]
fn fixed_and_fractional_costs() {
    let policy = limited(json!([{"counter": "c", "window": "minute", "max": 1, "cost": 0.1}]));
    let agent = Agent::new(&policy);
    assert_eq!(agent.burst("t", 20, T0), 10);
}

#[test]
fn scopes_partition_budgets() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "g": {"limits": [{"counter": "g", "window": "minute", "max": 1, "scope": "global"}]},
            "s": {"limits": [{"counter": "s", "window": "minute", "max": 1, "scope": "session"}]},
            "a": {"limits": [{"counter": "a", "window": "minute", "max": 1, "scope": "arg:to"}]},
            "d": {"limits": [{"counter": "d", "window": "minute", "max": 1}]}}}"#,
    );
    let mut agent = Agent::new(&policy);
    for tool in ["g", "s", "a", "d"] {
        assert_eq!(agent.kind(tool, json!({"to": "+1"}), T0), "allow");
    }
    // Another grant, same session.
    agent.grant = "other";
    assert_eq!(agent.kind("g", json!({}), T0), "rate_limited");
    assert_eq!(agent.kind("s", json!({}), T0), "rate_limited");
    assert_eq!(agent.kind("d", json!({}), T0), "allow");
    // Another session.
    agent.session = "s2";
    assert_eq!(agent.kind("s", json!({}), T0), "allow");
    // arg: buckets by the argument's value, in canonical form; missing is its own bucket.
    assert_eq!(agent.kind("a", json!({"to": "+1"}), T0), "rate_limited");
    assert_eq!(agent.kind("a", json!({"to": "+2"}), T0), "allow");
    assert_eq!(agent.kind("a", json!({}), T0), "allow");
    assert_eq!(agent.kind("a", json!(null), T0), "rate_limited");
    assert_eq!(
        agent.kind("a", json!({"to": {"n": 1, "c": 2}}), T0),
        "allow"
    );
    assert_eq!(
        agent.kind("a", json!({"to": {"c": 2.0, "n": 1}}), T0),
        "rate_limited"
    );
    let Evaluation::Proceed { draws, .. } = evaluate(&policy, "a", json!({"to": "+1"})) else {
        panic!()
    };
    assert_eq!(draws[0].key, "a\u{1f}arg:to\u{1f}\"+1\"");
    let Evaluation::Proceed { draws, .. } = evaluate(&policy, "a", json!({})) else {
        panic!()
    };
    assert_eq!(draws[0].key, "a\u{1f}arg:to\u{1f}\u{0}missing");
    let Evaluation::Proceed { draws, .. } = evaluate(&policy, "g", json!({})) else {
        panic!()
    };
    assert_eq!(draws[0].key, "g\u{1f}global\u{1f}");
}

#[test]
fn shared_counters_draw_from_one_budget() {
    let policy = load(
        r#"{"version": "1", "default": "deny", "tools": {
            "send_sms": {"limits": [{"counter": "messages", "window": "minute", "max": 3}]},
            "send_*": {"limits": [{"counter": "messages", "window": 60, "max": 3}]}}}"#,
    );
    let agent = Agent::new(&policy);
    assert_eq!(agent.kind("send_sms", json!({}), T0), "allow");
    assert_eq!(agent.kind("send_email", json!({}), T0), "allow");
    assert_eq!(agent.kind("send_fax", json!({}), T0), "allow");
    assert_eq!(agent.kind("send_sms", json!({}), T0), "rate_limited");
    assert_eq!(agent.kind("send_email", json!({}), T0), "rate_limited");
}

#[test]
fn all_tools_limits_come_after_the_rule_limits() {
    let policy = load(
        r#"{"version": "1", "default": "allow",
            "tools": {"t": {"limits": [{"counter": "t", "window": "minute", "max": 5}]},
                      "free": {}},
            "all_tools": {"limits": [{"counter": "everything", "window": "minute", "max": 3}]}}"#,
    );
    let Evaluation::Proceed { draws, .. } = evaluate(&policy, "t", json!({})) else {
        panic!()
    };
    let order: Vec<(&str, &str)> = draws
        .iter()
        .map(|d| (d.counter.as_str(), d.rule.as_str()))
        .collect();
    assert_eq!(order, [("t", "tools[\"t\"]"), ("everything", "all_tools")]);
    let agent = Agent::new(&policy);
    assert_eq!(agent.kind("t", json!({}), T0), "allow");
    assert_eq!(agent.kind("free", json!({}), T0), "allow");
    assert_eq!(agent.kind("unlisted", json!({}), T0), "allow");
    let refused = agent.call("t", json!({}), T0);
    let Decision::RateLimited {
        rule,
        counter,
        reason,
        ..
    } = &refused
    else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (rule.as_str(), counter.as_str()),
        ("all_tools", "everything")
    );
    assert_eq!(
        reason,
        "rate limit \"everything\" reached: 3 of 3 used in the last minute; retry in 60.0s"
    );
    // The refused call took nothing from the rule's own counter.
    assert_eq!(agent.store.used("t\u{1f}grant\u{1f}local", T0), 1.0);
}

#[test]
fn yaml_equivalents_behave_the_same() {
    let yaml = load_yaml(
        r#"
version: "1"
default: deny
description: caps for messaging
tools:
  "delete_*":
    action: deny
    reason: never delete
  send_text:
    reason: sending is capped
    conditions:
      - path: args.to
        op: regex
        value: '^\+1'
    limits:
      - {counter: send_text_rate, window: minute, max: 2}
      - counter: send_text_daily
        window: 86400
        max: 100
        scope: arg:to
all_tools:
  limits:
    - counter: all
      window: hour
      max: 1000
      scope: global
"#,
    );
    assert_eq!(yaml.description(), Some("caps for messaging"));
    assert_eq!(
        yaml.counters().collect::<Vec<_>>(),
        [
            ("send_text_rate", MINUTE),
            ("send_text_daily", 86_400_000),
            ("all", 3_600_000)
        ]
    );
    assert_eq!(
        yaml.summary("p.yaml"),
        "p.yaml: valid policy (version 1, default deny, 2 tool rules, 3 counters)"
    );
    let agent = Agent::new(&yaml);
    assert_eq!(
        reason(&agent.call("delete_all", json!({}), T0)),
        "never delete"
    );
    assert_eq!(agent.kind("send_text", json!({"to": "+44"}), T0), "deny");
    assert_eq!(agent.kind("send_text", json!({"to": "+1555"}), T0), "allow");
    assert_eq!(agent.kind("send_text", json!({"to": "+1556"}), T0), "allow");
    assert_eq!(
        agent.kind("send_text", json!({"to": "+1557"}), T0),
        "rate_limited"
    );
}

#[test]
fn public_types_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shareable::<Policy>();
    shareable::<Decision>();
    shareable::<Evaluation>();
    shareable::<toolgate_policy::Grant>();
    fn store<T: CounterStore + Default>() {}
    store::<MemoryStore>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<toolgate_policy::Diagnostics>();
}

#[test]
fn diagnostics_display_one_per_line_and_without_an_empty_path() {
    let error = parse_policy("{\"version\": \"1\"}", Format::Json, "dir/p.json").unwrap_err();
    assert_eq!(error.0.len(), 1);
    assert_eq!(error.0[0].path, "");
    assert_eq!(
        error.to_string(),
        "dir/p.json:1:1: missing field \"default\""
    );
}

#[test]
fn approval_settings_are_validated() {
    check_errors(
        &with_rule(
            "pay",
            json!({"action": "allow", "approval": {"hold": "30s"}}),
        ),
        r#"policy.json:1:77: tools.pay.approval: approval settings need "action": "require_approval""#,
    );
    let policy = load(&with_rule(
        "pay",
        json!({"action": "require_approval", "approval": {"via": ["admin"], "hold": 5, "expires": "1h"}}),
    ));
    let args = json!({});
    let call = Call {
        tool: "pay",
        arguments: &args,
        arguments_text: None,
        grant: "g",
        session: "s",
    };
    match policy.evaluate(&call) {
        Evaluation::ApprovalRequired { approval, .. } => {
            assert!(!approval.via_client && approval.via_admin);
            assert_eq!((approval.hold_ms, approval.expires_ms), (5_000, 3_600_000));
        }
        other => panic!("{other:?}"),
    }
    for (approval, message) in [
        (json!({"via": []}), "expected a non-empty array"),
        (
            json!({"via": ["email"]}),
            "unknown approval channel \"email\"",
        ),
        (json!({"hold": "10x"}), "expected a duration"),
        (json!({"hold": "301s"}), "hold must be at most 300 seconds"),
        (
            json!({"hold": "60s", "expires": "30s"}),
            "expires must not be shorter than hold",
        ),
        (json!({"colour": "red"}), "unknown field \"colour\""),
    ] {
        let text = with_rule(
            "pay",
            json!({"action": "require_approval", "approval": approval}),
        );
        let err = parse_policy(&text, Format::Json, "policy.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{approval}: {err}");
    }
}

#[test]
fn pins_on_change() {
    assert!(load(r#"{"version": "1", "default": "deny"}"#).blocks_changed_tools());
    assert!(
        !load(r#"{"version": "1", "default": "deny", "pins": {"on_change": "warn"}}"#)
            .blocks_changed_tools()
    );
    check_errors(
        r#"{"version": "1", "default": "deny", "pins": {"on_change": "ignore"}}"#,
        r#"policy.json:1:59: pins.on_change: unknown on_change "ignore" (expected block or warn)"#,
    );
}
