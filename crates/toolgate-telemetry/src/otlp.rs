//! Spans and their OTLP encodings: the `ExportTraceServiceRequest` of
//! opentelemetry-proto as protobuf (`http/protobuf`, written here field by
//! field: a few varints and length-delimited fields) and as OTLP/JSON
//! (`http/json`: ids in hex, enums as numbers, 64-bit numbers as strings).

use crate::trace_context::{SpanId, TraceId};
use serde_json::{json, Value};

/// `SpanKind.SPAN_KIND_SERVER`.
pub const KIND_SERVER: u64 = 2;

/// A span's status (`Status.StatusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: Option<String>,
    pub name: String,
    pub kind: u64,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: StatusCode,
    pub status_message: Option<String>,
    /// W3C trace flags (the low byte of `Span.flags`).
    pub flags: u8,
}

/// Who sends the spans: the resource and the instrumentation scope.
#[derive(Debug, Clone)]
pub struct Source {
    pub service_name: String,
    pub service_version: String,
}

// --- protobuf ---------------------------------------------------------------

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A length-delimited field whose contents `write` produces.
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes_field(out, field, &inner);
}

fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &AttrValue) {
    message(out, field, |kv| {
        bytes_field(kv, 1, k.as_bytes());
        message(kv, 2, |any| match v {
            AttrValue::Str(s) => bytes_field(any, 1, s.as_bytes()),
            AttrValue::Bool(b) => {
                key(any, 2, VARINT);
                varint(any, u64::from(*b));
            }
            AttrValue::Int(i) => {
                key(any, 3, VARINT);
                varint(any, *i as u64);
            }
            AttrValue::Double(d) => {
                key(any, 4, FIXED64);
                any.extend_from_slice(&d.to_le_bytes());
            }
        });
    });
}

/// The protobuf `ExportTraceServiceRequest` carrying `spans`.
pub fn encode_protobuf(source: &Source, spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::new();
    // ExportTraceServiceRequest.resource_spans = 1
    message(&mut out, 1, |rs| {
        // ResourceSpans.resource = 1 { attributes = 1 }
        message(rs, 1, |resource| {
            key_value(
                resource,
                1,
                "service.name",
                &AttrValue::Str(source.service_name.clone()),
            );
            key_value(
                resource,
                1,
                "service.version",
                &AttrValue::Str(source.service_version.clone()),
            );
        });
        // ResourceSpans.scope_spans = 2
        message(rs, 2, |ss| {
            // ScopeSpans.scope = 1 { name = 1, version = 2 }
            message(ss, 1, |scope| {
                bytes_field(scope, 1, b"toolgate");
                bytes_field(scope, 2, source.service_version.as_bytes());
            });
            for span in spans {
                // ScopeSpans.spans = 2
                message(ss, 2, |s| encode_span(s, span));
            }
        });
    });
    out
}

fn encode_span(s: &mut Vec<u8>, span: &Span) {
    bytes_field(s, 1, &span.trace_id);
    bytes_field(s, 2, &span.span_id);
    if let Some(state) = &span.trace_state {
        bytes_field(s, 3, state.as_bytes());
    }
    if let Some(parent) = &span.parent_span_id {
        bytes_field(s, 4, parent);
    }
    bytes_field(s, 5, span.name.as_bytes());
    key(s, 6, VARINT);
    varint(s, span.kind);
    key(s, 7, FIXED64);
    s.extend_from_slice(&span.start_unix_ns.to_le_bytes());
    key(s, 8, FIXED64);
    s.extend_from_slice(&span.end_unix_ns.to_le_bytes());
    for (k, v) in &span.attributes {
        key_value(s, 9, k, v);
    }
    // Span.status = 15 { message = 2, code = 3 }
    message(s, 15, |status| {
        if let Some(m) = &span.status_message {
            bytes_field(status, 2, m.as_bytes());
        }
        if span.status != StatusCode::Unset {
            key(status, 3, VARINT);
            varint(status, span.status as u64);
        }
    });
    // Span.flags = 16 (fixed32): the W3C trace flags, and bit 8 says whether
    // the parent is remote (bit 9) is known.
    let mut flags = u32::from(span.flags) | 0x100;
    if span.parent_span_id.is_some() {
        flags |= 0x200;
    }
    key(s, 16, FIXED32);
    s.extend_from_slice(&flags.to_le_bytes());
}

// --- JSON -------------------------------------------------------------------

fn json_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({"stringValue": s}),
        AttrValue::Bool(b) => json!({"boolValue": b}),
        AttrValue::Int(i) => json!({"intValue": i.to_string()}),
        AttrValue::Double(d) => json!({"doubleValue": d}),
    }
}

fn json_attrs<'a>(attrs: impl Iterator<Item = (&'a str, &'a AttrValue)>) -> Value {
    Value::Array(
        attrs
            .map(|(k, v)| json!({"key": k, "value": json_value(v)}))
            .collect(),
    )
}

/// The OTLP/JSON `ExportTraceServiceRequest` carrying `spans`.
pub fn encode_json(source: &Source, spans: &[Span]) -> Vec<u8> {
    let resource = [
        ("service.name", AttrValue::Str(source.service_name.clone())),
        (
            "service.version",
            AttrValue::Str(source.service_version.clone()),
        ),
    ];
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut v = json!({
                "traceId": hex::encode(span.trace_id),
                "spanId": hex::encode(span.span_id),
                "name": span.name,
                "kind": span.kind,
                "startTimeUnixNano": span.start_unix_ns.to_string(),
                "endTimeUnixNano": span.end_unix_ns.to_string(),
                "attributes": json_attrs(span.attributes.iter().map(|(k, v)| (*k, v))),
                "status": {"code": span.status as u64},
            });
            if let Some(parent) = &span.parent_span_id {
                v["parentSpanId"] = json!(hex::encode(parent));
            }
            if let Some(state) = &span.trace_state {
                v["traceState"] = json!(state);
            }
            if let Some(m) = &span.status_message {
                v["status"]["message"] = json!(m);
            }
            let mut flags = u32::from(span.flags) | 0x100;
            if span.parent_span_id.is_some() {
                flags |= 0x200;
            }
            v["flags"] = json!(flags);
            v
        })
        .collect();
    let body = json!({
        "resourceSpans": [{
            "resource": {"attributes": json_attrs(resource.iter().map(|(k, v)| (*k, v)))},
            "scopeSpans": [{
                "scope": {"name": "toolgate", "version": source.service_version},
                "spans": spans,
            }],
        }],
    });
    serde_json::to_vec(&body).expect("serialisable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            trace_id: [0x11; 16],
            span_id: [0x22; 8],
            parent_span_id: Some([0x33; 8]),
            trace_state: None,
            name: "tools/call t".into(),
            kind: KIND_SERVER,
            start_unix_ns: 1,
            end_unix_ns: 300,
            attributes: vec![("a", AttrValue::Str("x".into())), ("n", AttrValue::Int(-1))],
            status: StatusCode::Error,
            status_message: None,
            flags: 1,
        }
    }

    #[test]
    fn varints() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            varint(&mut out, v);
        }
        assert_eq!(
            out,
            [
                0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0x01
            ]
        );
    }

    #[test]
    fn a_span_in_protobuf_field_by_field() {
        let mut s = Vec::new();
        encode_span(&mut s, &span());
        let mut expected = vec![0x0a, 16];
        expected.extend([0x11; 16]);
        expected.extend([0x12, 8]);
        expected.extend([0x22; 8]);
        expected.extend([0x22, 8]);
        expected.extend([0x33; 8]);
        expected.extend([0x2a, 12]);
        expected.extend(b"tools/call t");
        expected.extend([0x30, 2]); // kind = SERVER
        expected.extend([0x39, 1, 0, 0, 0, 0, 0, 0, 0]); // start
        expected.extend([0x41, 0x2c, 1, 0, 0, 0, 0, 0, 0]); // end = 300
                                                            // attributes: {key "a", value {string_value "x"}}
        expected.extend([0x4a, 8, 0x0a, 1, b'a', 0x12, 3, 0x0a, 1, b'x']);
        // {key "n", value {int_value -1}}: ten-byte varint
        expected.extend([0x4a, 16, 0x0a, 1, b'n', 0x12, 11, 0x18]);
        expected.extend([0xff; 9]);
        expected.push(0x01);
        expected.extend([0x7a, 2, 0x18, 2]); // status { code = ERROR }
        expected.extend([0x85, 0x01, 0x01, 0x03, 0, 0]); // flags = 0x301
        assert_eq!(s, expected);
    }

    #[test]
    fn json_uses_hex_ids_and_string_times() {
        let source = Source {
            service_name: "svc".into(),
            service_version: "1".into(),
        };
        let body: Value = serde_json::from_slice(&encode_json(&source, &[span()])).unwrap();
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "11".repeat(16));
        assert_eq!(s["parentSpanId"], "33".repeat(8));
        assert_eq!(s["endTimeUnixNano"], "300");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["attributes"][1]["value"]["intValue"], "-1");
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "svc"
        );
    }
}
