use super::headers::*;
use super::*;
use hyper::header::HeaderName;

#[test]
fn heads_are_read_as_single_lookups_would_read_them() {
    let mut headers = HeaderMap::new();
    headers.append(&MCP_METHOD, HeaderValue::from_static("tools/call"));
    headers.append(&MCP_METHOD, HeaderValue::from_static("tools/list"));
    headers.append(&MCP_NAME, HeaderValue::from_bytes(b"caf\xe9").unwrap());
    headers.append(&MCP_NAME, HeaderValue::from_static("echo"));
    headers.append(&MCP_SESSION_ID, HeaderValue::from_static("token"));
    headers.append("x-other", HeaderValue::from_static("ignored"));
    let heads = Heads::of(&headers);
    // The first value, as `header` reads it: not valid UTF-8 is no value.
    assert_eq!(Heads::get(heads.mcp_method), header(&headers, &MCP_METHOD));
    assert_eq!(Heads::get(heads.mcp_method), Some("tools/call"));
    assert_eq!(Heads::get(heads.mcp_name), header(&headers, &MCP_NAME));
    assert_eq!(Heads::get(heads.mcp_name), None);
    assert_eq!(Heads::get(heads.session_id), Some("token"));
    assert_eq!(Heads::get(heads.protocol_version), None);
    assert_eq!(Heads::get(heads.traceparent), None);
    assert_eq!(heads.routing_counts, [2, 2, 0]);
}

#[test]
fn an_unreadable_routing_header_is_a_mismatch() {
    let params = json!({"name": "echo"});
    let check = |name: &HeaderName, value: &[u8]| {
        let mut headers = HeaderMap::new();
        headers.append(name, HeaderValue::from_bytes(value).unwrap());
        check_routing_headers(&Heads::of(&headers), &json!(1), "tools/call", &params).is_ok()
    };
    assert!(check(&MCP_NAME, b"echo"));
    assert!(check(&MCP_METHOD, b"tools/call"));
    assert!(!check(&MCP_NAME, b"delete\xe9all"), "not ASCII: not absent");
    assert!(!check(&MCP_METHOD, b"tools/call\xff"));
    assert!(!check(&MCP_PROTOCOL_VERSION, b"2026-07-28\x80"));
    assert!(!check(&MCP_NAME, b"other"));
}

#[test]
fn loopback_hosts() {
    for host in [
        "localhost",
        "localhost:8080",
        "127.0.0.1:9",
        "[::1]:80",
        "[::1]",
    ] {
        assert!(toolgate_listen::is_loopback_host(host), "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "127.0.0.2",
        "",
    ] {
        assert!(!toolgate_listen::is_loopback_host(host), "{host}");
    }
}

#[test]
fn header_values_decode() {
    assert_eq!(decode_header_value("echo").as_deref(), Some("echo"));
    assert_eq!(
        decode_header_value("=?base64?w6ljaG8=?=").as_deref(),
        Some("écho")
    );
    assert_eq!(decode_header_value("=?base64?***?="), None);
}
