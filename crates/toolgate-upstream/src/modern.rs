//! The stateless protocol generation (MCP 2026-07-28) from the client's side,
//! for a Streamable HTTP server that speaks nothing else: how such a server's
//! refusal of `initialize` is recognised, the `server/discover` request and
//! what its result says, and what every request carries instead of a session
//! (the `_meta` envelope, and the `MCP-Protocol-Version`, `Mcp-Method` and
//! `Mcp-Name` headers). No IO here: `http` and `conn` send what this builds.

use crate::{RpcError, ServerInfo};
use base64::Engine;
use hyper::header::HeaderValue;
use serde_json::{json, Map, Value};

/// The stateless protocol version toolgate speaks to a modern-only server.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// JSON-RPC code of "unsupported protocol version" (2026-07-28).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The versions of the initialize handshake (a server that lists one of them
/// still speaks the handshake, whatever else it says).
const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The `_meta` keys of a stateless request's envelope.
pub const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
pub const CLIENT_INFO_KEY: &str = "io.modelcontextprotocol/clientInfo";
const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// Whether a refusal of `initialize` says the server speaks only the
/// stateless generation: `-32022` whose `data.supported` names
/// [`STATELESS_VERSION`] and no version of the handshake. Anything else
/// (another code, no list, a list with a handshake version) is not.
pub(crate) fn refuses_handshake(error: &RpcError) -> bool {
    if error.code != UNSUPPORTED_PROTOCOL_VERSION {
        return false;
    }
    let Some(supported) = error
        .data
        .as_ref()
        .and_then(|d| d.get("supported"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    let versions: Vec<&str> = supported.iter().filter_map(Value::as_str).collect();
    versions.len() == supported.len()
        && versions.contains(&STATELESS_VERSION)
        && !versions.iter().any(|v| HANDSHAKE_VERSIONS.contains(v))
}

/// What a `server/discover` result says, as the [`ServerInfo`] of a server
/// spoken to statelessly; `None` when it does not list [`STATELESS_VERSION`].
pub(crate) fn discovered(result: &Value) -> Option<ServerInfo> {
    let supported = result.get("supportedVersions")?.as_array()?;
    if !supported.iter().any(|v| v == STATELESS_VERSION) {
        return None;
    }
    // The server's name travels in the result's `_meta` (older drafts put
    // it beside the capabilities).
    let server_info = result
        .get("_meta")
        .and_then(|m| m.get(SERVER_INFO_KEY))
        .or_else(|| result.get("serverInfo"))
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    Some(ServerInfo {
        protocol_version: STATELESS_VERSION.to_owned(),
        capabilities: result
            .get("capabilities")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
        server_info,
        instructions: result
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Puts the per-request envelope into a request's `params._meta` (creating
/// both when absent): the protocol version, the client's capabilities (those
/// the gateway declares in the handshake: it takes a server's input
/// requests to its clients, unless the caller put others there) and who the
/// client is. The caller's own `_meta` members stay.
pub(crate) fn stamp(params: Option<Value>) -> Option<Value> {
    let mut params = match params {
        None => Value::Object(Map::new()),
        Some(Value::Object(p)) => Value::Object(p),
        // Not an object: nothing to stamp; the server refuses it as it is.
        Some(other) => return Some(other),
    };
    let p = params.as_object_mut().expect("an object");
    let meta = p
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let meta = meta.as_object_mut().expect("an object");
    meta.insert(PROTOCOL_VERSION_KEY.into(), json!(STATELESS_VERSION));
    // A caller that knows its client's own (a 2026-07-28 client's, passed
    // on) has put them there already.
    meta.entry(CLIENT_CAPABILITIES_KEY)
        .or_insert_with(|| json!({"sampling": {}, "elicitation": {}, "roots": {}}));
    meta.insert(
        CLIENT_INFO_KEY.into(),
        json!({"name": "toolgate", "version": env!("CARGO_PKG_VERSION")}),
    );
    Some(params)
}

/// The routing headers of one stateless request: `Mcp-Method`, and
/// `Mcp-Name` for the methods that name a tool, prompt or resource.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    pub(crate) method: HeaderValue,
    pub(crate) name: Option<HeaderValue>,
}

/// The [`Route`] of `method` with `params`; `None` when the method is not a
/// valid header value (then the request is not sent: the server would
/// refuse it anyway).
pub(crate) fn route(method: &str, params: Option<&Value>) -> Option<Route> {
    let method_value = HeaderValue::from_str(method).ok()?;
    let key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    let name = key
        .and_then(|k| params?.get(k)?.as_str())
        .and_then(|n| HeaderValue::from_str(&header_text(n)).ok());
    Some(Route {
        method: method_value,
        name,
    })
}

/// A value as an `Mcp-Name` header: printable ASCII without edge spaces as
/// it is, anything else as `=?base64?…?=` (the form the server decodes).
pub(crate) fn header_text(value: &str) -> String {
    let printable = value.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let looks_encoded = value.starts_with("=?base64?") && value.ends_with("?=");
    if printable && value.trim() == value && !looks_encoded {
        value.to_owned()
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        format!("=?base64?{encoded}?=")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: i64, data: Option<Value>) -> RpcError {
        RpcError {
            code,
            message: "Unsupported protocol version".into(),
            data,
        }
    }

    #[test]
    fn only_a_modern_only_version_list_is_a_refusal_of_the_handshake() {
        let cases: &[(i64, Option<Value>, bool)] = &[
            (-32022, Some(json!({"supported": ["2026-07-28"]})), true),
            (
                -32022,
                Some(json!({"supported": ["2026-07-28"], "requested": "2025-11-25"})),
                true,
            ),
            (
                -32022,
                Some(json!({"supported": ["2026-07-28", "2027-01-01"]})),
                true,
            ),
            // Still speaks the handshake: a version mismatch to negotiate, not an era.
            (
                -32022,
                Some(json!({"supported": ["2026-07-28", "2025-11-25"]})),
                false,
            ),
            (-32022, Some(json!({"supported": ["2025-06-18"]})), false),
            // Only versions toolgate does not speak.
            (-32022, Some(json!({"supported": ["2027-01-01"]})), false),
            (-32022, Some(json!({"supported": []})), false),
            (-32022, Some(json!({"supported": "2026-07-28"})), false),
            (-32022, Some(json!({"supported": ["2026-07-28", 7]})), false),
            (-32022, None, false),
            (-32602, Some(json!({"supported": ["2026-07-28"]})), false),
            (-32601, None, false),
        ];
        for (code, data, expected) in cases {
            assert_eq!(
                refuses_handshake(&error(*code, data.clone())),
                *expected,
                "{code} {data:?}"
            );
        }
    }

    #[test]
    fn a_discover_result_must_list_the_stateless_version() {
        let result = json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {"listChanged": false}},
            "instructions": "be kind",
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern", "version": "1"}},
        });
        let info = discovered(&result).expect("stateless");
        assert_eq!(info.protocol_version, STATELESS_VERSION);
        assert_eq!(info.capabilities, json!({"tools": {"listChanged": false}}));
        assert_eq!(info.server_info, json!({"name": "modern", "version": "1"}));
        assert_eq!(info.instructions.as_deref(), Some("be kind"));
        let bare = discovered(&json!({"supportedVersions": ["2026-07-28"]})).unwrap();
        assert_eq!(
            (bare.capabilities, bare.server_info, bare.instructions),
            (json!({}), json!({}), None)
        );
        for other in [
            json!({"supportedVersions": ["2025-11-25"]}),
            json!({"supportedVersions": "2026-07-28"}),
            json!({"capabilities": {}}),
            json!(null),
        ] {
            assert_eq!(discovered(&other), None, "{other}");
        }
    }

    #[test]
    fn the_envelope_joins_what_meta_already_holds() {
        let stamped = stamp(Some(json!({
            "name": "echo",
            "_meta": {"progressToken": "toolgate-3", "io.modelcontextprotocol/protocolVersion": "x"},
        })))
        .unwrap();
        let meta = &stamped["_meta"];
        assert_eq!(stamped["name"], "echo");
        assert_eq!(meta["progressToken"], "toolgate-3");
        assert_eq!(meta[PROTOCOL_VERSION_KEY], STATELESS_VERSION);
        assert_eq!(
            meta[CLIENT_CAPABILITIES_KEY],
            json!({"sampling": {}, "elicitation": {}, "roots": {}})
        );
        assert_eq!(meta[CLIENT_INFO_KEY]["name"], "toolgate");
        let bare = stamp(None).unwrap();
        assert_eq!(bare["_meta"][PROTOCOL_VERSION_KEY], STATELESS_VERSION);
        let bad_meta = stamp(Some(json!({"_meta": 3}))).unwrap();
        assert_eq!(bad_meta["_meta"][PROTOCOL_VERSION_KEY], STATELESS_VERSION);
        let own = stamp(Some(
            json!({"_meta": {CLIENT_CAPABILITIES_KEY: {"roots": {}}}}),
        ))
        .unwrap();
        assert_eq!(own["_meta"][CLIENT_CAPABILITIES_KEY], json!({"roots": {}}));
        assert_eq!(stamp(Some(json!([1]))), Some(json!([1])));
    }

    #[test]
    fn routes_name_the_tool_prompt_or_resource() {
        let cases: &[(&str, Value, Option<&str>)] = &[
            ("tools/call", json!({"name": "echo"}), Some("echo")),
            ("prompts/get", json!({"name": "greet"}), Some("greet")),
            (
                "resources/read",
                json!({"uri": "file:///a b"}),
                Some("file:///a b"),
            ),
            ("tools/list", json!({"name": "echo"}), None),
            ("tools/call", json!({"name": 3}), None),
            ("tools/call", json!({}), None),
        ];
        for (method, params, name) in cases {
            let r = route(method, Some(params)).unwrap();
            assert_eq!(r.method, *method);
            assert_eq!(
                r.name.as_ref().map(|v| v.to_str().unwrap()),
                *name,
                "{method} {params}"
            );
        }
        assert!(route("tools/call", None).unwrap().name.is_none());
        assert!(route("bad\nmethod", None).is_none());
    }

    #[test]
    fn names_a_header_cannot_carry_are_base64_encoded() {
        let cases = [
            ("echo", "echo"),
            ("a b", "a b"),
            (" echo", "=?base64?IGVjaG8=?="),
            ("écho", "=?base64?w6ljaG8=?="),
            ("tab\t", "=?base64?dGFiCQ==?="),
            ("=?base64?eA==?=", "=?base64?PT9iYXNlNjQ/ZUE9PT89?="),
        ];
        for (value, header) in cases {
            assert_eq!(header_text(value), header, "{value:?}");
        }
    }
}
