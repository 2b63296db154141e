//! `decide_layers`: several policies that must all let a call through
//! (`toolgate serve`: the gateway's or grant's policy over gateway names, and a
//! server's own policy over the server's names).

use serde_json::{json, Value};
use toolgate_policy::{
    decide_layers, parse_policy, Call, Decision, Format, Layer, MemoryStore, Policy,
};

fn load(value: Value) -> Policy {
    parse_policy(&value.to_string(), Format::Json, "test.json").expect("valid policy")
}

fn call<'a>(tool: &'a str, arguments: &'a Value) -> Call<'a> {
    Call {
        tool,
        arguments,
        arguments_text: None,
        grant: "alice",
        session: "s1",
    }
}

fn decide(
    gateway: &Policy,
    server: &Policy,
    gateway_name: &str,
    own_name: &str,
    store: &MemoryStore,
    now: u64,
) -> Decision {
    let args = json!({});
    let layers = [
        Layer {
            policy: gateway,
            call: call(gateway_name, &args),
            key_prefix: "",
        },
        Layer {
            policy: server,
            call: call(own_name, &args),
            key_prefix: "srv\u{1e}",
        },
    ];
    decide_layers(&layers, store, now)
}

#[test]
fn every_layer_must_allow() {
    let allow_all = load(json!({"version": "1", "default": "allow"}));
    let deny_send = load(
        json!({"version": "1", "default": "allow", "tools": {"send": {"action": "deny", "reason": "no"}}}),
    );
    let store = MemoryStore::new();
    assert_eq!(
        decide(&allow_all, &allow_all, "srv__send", "send", &store, 0).kind(),
        "allow"
    );
    assert_eq!(
        decide(&allow_all, &deny_send, "srv__send", "send", &store, 0).kind(),
        "deny"
    );
    assert_eq!(
        decide(&deny_send, &allow_all, "send", "send", &store, 0).kind(),
        "deny"
    );
}

#[test]
fn hidden_in_any_layer_is_unknown_even_if_another_denies() {
    let hide =
        load(json!({"version": "1", "default": "allow", "tools": {"send": {"action": "hide"}}}));
    let deny = load(json!({"version": "1", "default": "deny"}));
    let store = MemoryStore::new();
    // The server's policy denies by default (unknown); the gateway policy would deny with a reason.
    assert_eq!(
        decide(&hide, &deny, "send", "send", &store, 0).kind(),
        "unknown"
    );
    assert_eq!(
        decide(&deny, &hide, "x", "send", &store, 0).kind(),
        "unknown"
    );
}

#[test]
fn limits_of_both_layers_are_drawn_together_and_kept_apart() {
    let limit = |max: u32| {
        load(json!({"version": "1", "default": "deny", "tools": {"*": {
        "limits": [{"counter": "c", "window": "minute", "max": max, "scope": "grant"}]}}}))
    };
    let gateway = limit(3);
    let server = limit(2);
    let store = MemoryStore::new();
    assert_eq!(
        decide(&gateway, &server, "srv__a", "a", &store, 0).kind(),
        "allow"
    );
    assert_eq!(
        decide(&gateway, &server, "srv__a", "a", &store, 1).kind(),
        "allow"
    );
    // The server's own counter "c" (2 per minute) is full; the gateway's "c" (3) is not the same counter.
    let third = decide(&gateway, &server, "srv__a", "a", &store, 2);
    assert_eq!(third.kind(), "rate_limited", "{third:?}");
    // Nothing was taken by the refused call: the gateway's counter has 1 left after 2 calls.
    let other_server = limit(10);
    assert_eq!(
        decide(&gateway, &other_server, "o__a", "a", &store, 3).kind(),
        "allow"
    );
    assert_eq!(
        decide(&gateway, &other_server, "o__a", "a", &store, 4).kind(),
        "rate_limited"
    );
}

#[test]
fn a_single_layer_decides_as_the_policy_alone() {
    let policy = load(
        json!({"version": "1", "default": "deny", "tools": {"send_text": {
        "limits": [{"counter": "r", "window": "minute", "max": 1, "scope": "grant"}]}}}),
    );
    let args = json!({});
    let alone = MemoryStore::new();
    let layered = MemoryStore::new();
    for now in 0..3 {
        let a = policy.decide(&call("send_text", &args), &alone, now);
        let b = decide_layers(
            &[Layer {
                policy: &policy,
                call: call("send_text", &args),
                key_prefix: "",
            }],
            &layered,
            now,
        );
        assert_eq!(a, b);
    }
}

#[test]
fn approval_settings_of_every_layer_must_hold() {
    let grant = load(
        json!({"version": "1", "default": "deny", "tools": {"srv__pay": {"action": "require_approval"}}}),
    );
    let server = load(json!({"version": "1", "default": "deny", "tools": {"pay": {
        "action": "require_approval", "approval": {"via": ["admin"], "hold": "5s", "expires": "1h"}}}}));
    let args = json!({});
    let layers = [
        Layer {
            policy: &grant,
            call: call("srv__pay", &args),
            key_prefix: "",
        },
        Layer {
            policy: &server,
            call: call("pay", &args),
            key_prefix: "srv\u{1e}",
        },
    ];
    match toolgate_policy::plan_layers(&layers) {
        toolgate_policy::Planned::Decided(Decision::ApprovalRequired { approval, .. }) => {
            assert!(
                !approval.via_client,
                "the server's policy allows no client approval"
            );
            assert!(approval.via_admin);
            // The shortest hold and expiry of the two (the grant's default expiry is 10 minutes).
            assert_eq!((approval.hold_ms, approval.expires_ms), (5_000, 600_000));
        }
        other => panic!("{other:?}"),
    }
}
