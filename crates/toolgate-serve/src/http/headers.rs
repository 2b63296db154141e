//! The request headers the front decides on: read in one pass, and the
//! 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`,
//! `MCP-Protocol-Version`) checked against the body they travel with.

use super::{rpc_error, Body};
use crate::gateway::HEADER_MISMATCH;
use base64::Engine;
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Response, StatusCode};
use serde_json::Value;

// Header names, parsed once (a lookup by `&str` parses the name each time).
pub(super) static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub(super) static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
pub(super) static MCP_PROTOCOL_VERSION: HeaderName =
    HeaderName::from_static("mcp-protocol-version");
pub(super) static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub(super) static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
pub(super) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(super) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The headers a message is decided on, read in one pass over the request's
/// headers (a lookup each would cost more). Each is the first value given,
/// as [`header`] reads it.
#[derive(Default)]
pub(crate) struct Heads<'a> {
    pub(super) mcp_method: Option<Option<&'a str>>,
    pub(super) mcp_name: Option<Option<&'a str>>,
    pub(super) protocol_version: Option<Option<&'a str>>,
    pub(super) session_id: Option<Option<&'a str>>,
    pub(super) traceparent: Option<Option<&'a str>>,
    pub(super) tracestate: Option<Option<&'a str>>,
    /// How often `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` came.
    pub(super) routing_counts: [u8; 3],
    /// The message came over the legacy HTTP+SSE transport (2024-11-05).
    pub(crate) legacy: bool,
    /// The text of a single `tools/call`'s arguments, when they hold a
    /// non-integer number (see `inexact_arguments_text`).
    pub(crate) arguments_text: Option<Box<str>>,
}

impl<'a> Heads<'a> {
    pub(crate) fn of(headers: &'a HeaderMap) -> Heads<'a> {
        let mut heads = Heads::default();
        for (name, value) in headers {
            let (slot, routing) = if *name == MCP_METHOD {
                (&mut heads.mcp_method, Some(0))
            } else if *name == MCP_NAME {
                (&mut heads.mcp_name, Some(1))
            } else if *name == MCP_PROTOCOL_VERSION {
                (&mut heads.protocol_version, Some(2))
            } else if *name == MCP_SESSION_ID {
                (&mut heads.session_id, None)
            } else if *name == TRACEPARENT {
                (&mut heads.traceparent, None)
            } else if *name == TRACESTATE {
                (&mut heads.tracestate, None)
            } else {
                continue;
            };
            if let Some(i) = routing {
                heads.routing_counts[i] = heads.routing_counts[i].saturating_add(1);
            }
            if slot.is_none() {
                *slot = Some(value.to_str().ok());
            }
        }
        heads
    }

    pub(super) fn get(slot: Option<Option<&'a str>>) -> Option<&'a str> {
        slot.flatten()
    }
}

/// Decodes an `Mcp-Name` header (`=?base64?...?=` for values that do not fit a header).
pub(super) fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(payload) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_string()),
    }
}

fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The routing headers must agree with the body: the gateway decides on the
/// body, and a proxy or server in front that routes on headers must not see
/// a different call.
pub(super) fn check_routing_headers(
    heads: &Heads<'_>,
    id: &Value,
    method: &str,
    params: &Value,
) -> Result<(), Response<Body>> {
    let mismatch = |what: &str| {
        Err(rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            HEADER_MISMATCH,
            &format!("Header mismatch: {what}"),
            None,
        ))
    };
    for ((name, count), slot) in [&MCP_METHOD, &MCP_NAME, &MCP_PROTOCOL_VERSION]
        .into_iter()
        .zip(heads.routing_counts)
        .zip([heads.mcp_method, heads.mcp_name, heads.protocol_version])
    {
        if count > 1 {
            return mismatch(&format!("{name} is repeated"));
        }
        // Present but not visible ASCII: a header that a proxy in front may
        // read one way and the gateway another is no header to route on
        // (a value that cannot be sent as text is base64-wrapped).
        if slot == Some(None) {
            return mismatch(&format!("{name} is not readable (not visible ASCII)"));
        }
    }
    if let Some(m) = Heads::get(heads.mcp_method) {
        if m != method {
            return mismatch("Mcp-Method does not match the body's method");
        }
    }
    if let Some(key) = name_param(method) {
        let body = params.get(key).and_then(Value::as_str);
        match (Heads::get(heads.mcp_name), body) {
            (Some(h), Some(b)) if decode_header_value(h).as_deref() != Some(b) => {
                return mismatch(&format!("Mcp-Name does not match the body's {key}"));
            }
            (Some(_), None) => {
                return mismatch(&format!("Mcp-Name is set but the body has no {key}"))
            }
            _ => {}
        }
    }
    Ok(())
}
