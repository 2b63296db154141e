//! A server that speaks both generations (a fake with a stateless twin):
//! asked once, its stateless-only tools are listed to 2026-07-28 clients
//! only, go over the stateless link, and stay under the policy.

use super::{gateway_under, request_in};
use crate::upstreams::fake::FakeServer;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use toolgate_call::answer::Era;
use toolgate_upstream::UpstreamEvent;

/// `a__modern` exists only on `a`'s stateless side; `a__blocked` is denied
/// there with a reason, `a__secret` hidden by default.
const POLICY: &str = "version: \"1\"\ndefault: deny\ntools:\n  a__echo: {}\n  a__modern: {}\n  \
                      b__add: {}\n  a__blocked:\n    action: deny\n    reason: never\n";

fn names(answer: &Value) -> Vec<String> {
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {answer}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// `a` speaks both generations (its twin lists more), `b` only the handshake.
async fn dual() -> (
    FakeServer,
    FakeServer,
    FakeServer,
    Arc<crate::gateway::Gateway>,
) {
    let twin = FakeServer::with_tools(&["echo", "modern", "blocked", "secret"]).stateless();
    let a = FakeServer::with_tools(&["echo", "secret"]).with_twin(&twin);
    let b = FakeServer::with_tools(&["add"]);
    let gateway = gateway_under(&a, &b, POLICY).await;
    (a, twin, b, gateway)
}

#[tokio::test]
async fn each_server_is_asked_once_and_a_stateless_only_tool_is_listed_to_2026_clients_only() {
    let (a, _twin, b, gateway) = dual().await;
    assert_eq!(a.probes.load(Ordering::SeqCst), 1);
    assert_eq!(b.probes.load(Ordering::SeqCst), 1);
    let old = request_in(&gateway, Era::Handshake, "tools/list", json!({})).await;
    assert_eq!(names(&old), ["a__echo", "b__add"]);
    let new = request_in(&gateway, Era::Stateless, "tools/list", json!({})).await;
    // A denied tool is listed (calls to it are refused), a hidden one is not.
    assert_eq!(
        names(&new),
        ["a__echo", "a__modern", "a__blocked", "b__add"]
    );
    let fetched = |f: &FakeServer| f.received.lock().unwrap().len();
    let before = (fetched(&a), fetched(&b));

    // Down and back: the lists are fetched again, the servers not asked again.
    for fake in [&a, &b] {
        let events = fake
            .events
            .lock()
            .unwrap()
            .clone()
            .expect("the gateway's channel");
        let server = if std::ptr::eq(fake, &a) { "a" } else { "b" };
        events
            .send(UpstreamEvent::Down {
                server: server.into(),
                reason: "test".into(),
            })
            .unwrap();
        events
            .send(UpstreamEvent::Ready {
                server: server.into(),
                info: crate::upstreams::Upstream::info(fake).unwrap(),
            })
            .unwrap();
    }
    for _ in 0..100 {
        if fetched(&a) > before.0 && fetched(&b) > before.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        fetched(&a) > before.0 && fetched(&b) > before.1,
        "fetched again"
    );
    assert_eq!(a.probes.load(Ordering::SeqCst), 1);
    assert_eq!(b.probes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_2026_client_is_served_over_the_stateless_link_and_a_2025_client_over_the_handshake() {
    let (a, twin, b, gateway) = dual().await;
    let call = json!({"name": "a__echo", "arguments": {"x": 1}});
    let answer = request_in(&gateway, Era::Stateless, "tools/call", call.clone()).await;
    assert_eq!(answer["result"]["content"][0]["text"], json!("called echo"));
    assert_eq!(twin.calls().len(), 1, "{:?}", twin.calls());
    assert!(a.calls().is_empty());
    // The client's own capabilities go with it (it declared none here), so
    // the server asks nothing of it that it could not answer.
    let meta = &twin.calls()[0].1["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        json!({}),
        "{meta}"
    );
    request_in(&gateway, Era::Handshake, "tools/call", call).await;
    assert_eq!(a.calls().len(), 1);
    assert_eq!(twin.calls().len(), 1);

    let modern = json!({"name": "a__modern", "arguments": {}});
    let answer = request_in(&gateway, Era::Stateless, "tools/call", modern.clone()).await;
    assert_eq!(
        answer["result"]["content"][0]["text"],
        json!("called modern")
    );
    // Not listed to a 2025 client: unknown to it, and nothing is sent.
    let answer = request_in(&gateway, Era::Handshake, "tools/call", modern).await;
    assert_eq!(answer["error"]["code"], json!(-32602), "{answer}");
    assert_eq!(a.calls().len(), 1);
    assert_eq!(twin.calls().len(), 2);
    assert!(b.calls().is_empty());
}

#[tokio::test]
async fn a_stateless_only_tool_the_policy_refuses_never_reaches_the_server() {
    let (a, twin, b, gateway) = dual().await;
    for era in [Era::Stateless, Era::Handshake] {
        let blocked = json!({"name": "a__blocked", "arguments": {}});
        let answer = request_in(&gateway, era, "tools/call", blocked).await;
        if era == Era::Stateless {
            assert_eq!(answer["result"]["isError"], json!(true), "{answer}");
            let decision = &answer["result"]["structuredContent"]["toolgate"]["decision"];
            assert_eq!(decision, &json!("deny"), "{answer}");
        } else {
            assert!(answer.get("error").is_some() || answer["result"]["isError"] == json!(true));
        }
        let secret = json!({"name": "a__secret", "arguments": {}});
        let answer = request_in(&gateway, era, "tools/call", secret).await;
        assert_eq!(answer["error"]["code"], json!(-32602), "{answer}");
    }
    assert!(twin.calls().is_empty(), "{:?}", twin.calls());
    assert!(a.calls().is_empty() && b.calls().is_empty());
}

#[tokio::test]
async fn a_2026_clients_capabilities_and_instructions_come_from_the_stateless_link() {
    let twin = FakeServer::with_tools(&["echo"])
        .stateless()
        .saying(json!({"tools": {}, "prompts": {}}), "the stateless side");
    let a = FakeServer::with_tools(&["echo"])
        .saying(json!({"tools": {}}), "the handshake side")
        .with_twin(&twin);
    let b = FakeServer::with_tools(&["add"]);
    let gateway = gateway_under(&a, &b, POLICY).await;
    let discovered = request_in(&gateway, Era::Stateless, "server/discover", json!({})).await;
    let result = &discovered["result"];
    assert!(result["capabilities"].get("prompts").is_some(), "{result}");
    assert_eq!(result["instructions"], json!("the stateless side"));
    let server_info = &result["_meta"]["io.modelcontextprotocol/serverInfo"];
    assert_eq!(server_info["name"], json!("toolgate"), "{result}");
    let caller = gateway.authenticate(None).expect("anonymous");
    let caps = gateway.capabilities(&caller, Era::Handshake);
    assert!(caps.get("prompts").is_none(), "{caps}");
    assert_eq!(
        gateway.instructions(&caller, Era::Handshake).as_deref(),
        Some("the handshake side")
    );
}

#[tokio::test]
async fn a_resource_no_server_has_is_not_found_in_each_eras_words() {
    let (a, twin, b, gateway) = dual().await;
    let read = json!({"uri": "nowhere://x"});
    let new = request_in(&gateway, Era::Stateless, "resources/read", read.clone()).await;
    assert_eq!(new["error"]["code"], json!(-32602), "{new}");
    assert_eq!(new["error"]["data"]["uri"], json!("nowhere://x"));
    let old = request_in(&gateway, Era::Handshake, "resources/read", read).await;
    assert_eq!(old["error"]["code"], json!(-32002), "{old}");
    assert!(a.calls().is_empty() && twin.calls().is_empty() && b.calls().is_empty());
}
