//! Spans and their OTLP encodings: the `ExportTraceServiceRequest` built
//! from opentelemetry-proto's generated messages, encoded by prost
//! (`http/protobuf`) or by their serde mapping (`http/json`, the OTLP/JSON
//! one: ids in hex, enums as numbers, 64-bit numbers as strings).
//!
//! Only this module and the exporter know the wire types: the rest of the
//! crate builds a [`Span`].

use crate::trace_context::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as proto;
use prost::Message;

/// `SpanKind.SPAN_KIND_SERVER`.
pub const KIND_SERVER: u64 = 2;

/// `Span.flags`: whether the parent is remote is known (bit 8).
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags`: the parent is remote (bit 9).
const FLAGS_IS_REMOTE: u32 = 0x200;

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

fn key_value(key: &str, value: &AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The OTLP `Span` of `span`. Its status is always present (an unset one is
/// an empty message), and its flags say whether the parent is remote.
fn proto_span(span: &Span) -> proto::Span {
    let mut flags = u32::from(span.flags) | FLAGS_HAS_IS_REMOTE;
    if span.parent_span_id.is_some() {
        flags |= FLAGS_IS_REMOTE;
    }
    proto::Span {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        trace_state: span.trace_state.clone().unwrap_or_default(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: span.name.clone(),
        kind: i32::try_from(span.kind).unwrap_or(0),
        start_time_unix_nano: span.start_unix_ns,
        end_time_unix_nano: span.end_unix_ns,
        attributes: span
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        status: Some(proto::Status {
            message: span.status_message.clone().unwrap_or_default(),
            code: span.status as i32,
        }),
        ..Default::default()
    }
}

/// The `ExportTraceServiceRequest` carrying `spans`: one resource
/// (`service.name`, `service.version`) and one scope (`toolgate`, the
/// version).
pub fn request(source: &Source, spans: &[Span]) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            key_value("service.name", &AttrValue::Str(source.service_name.clone())),
            key_value(
                "service.version",
                &AttrValue::Str(source.service_version.clone()),
            ),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "toolgate".into(),
        version: source.service_version.clone(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(scope),
                spans: spans.iter().map(proto_span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The protobuf `ExportTraceServiceRequest` carrying `spans`.
pub fn encode_protobuf(source: &Source, spans: &[Span]) -> Vec<u8> {
    request(source, spans).encode_to_vec()
}

/// The OTLP/JSON `ExportTraceServiceRequest` carrying `spans`.
pub fn encode_json(source: &Source, spans: &[Span]) -> Vec<u8> {
    serde_json::to_vec(&request(source, spans)).expect("serialisable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    /// A root span with every optional part set and every kind of value.
    fn root_span() -> Span {
        Span {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            parent_span_id: None,
            trace_state: Some("k=v".into()),
            name: "tools/call u".into(),
            kind: KIND_SERVER,
            start_unix_ns: u64::MAX - 1,
            end_unix_ns: u64::MAX,
            attributes: vec![
                ("b", AttrValue::Bool(false)),
                ("d", AttrValue::Double(0.25)),
                ("i", AttrValue::Int(i64::MIN)),
                ("s", AttrValue::Str(String::new())),
            ],
            status: StatusCode::Ok,
            status_message: Some("fine".into()),
            flags: 0,
        }
    }

    fn source() -> Source {
        Source {
            service_name: "svc".into(),
            service_version: "1.2.3".into(),
        }
    }

    fn value(v: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(v) })
    }

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value(v),
            key_strindex: 0,
        }
    }

    #[test]
    fn a_span_in_protobuf_field_by_field() {
        let s = proto_span(&span()).encode_to_vec();
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
    fn the_request_decodes_field_by_field() {
        let body = encode_protobuf(&source(), &[span(), root_span()]);
        let got = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue("svc".into())),
                        kv(
                            "service.version",
                            any_value::Value::StringValue("1.2.3".into()),
                        ),
                    ],
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_spans: vec![proto::ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "toolgate".into(),
                        version: "1.2.3".into(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans: vec![
                        proto::Span {
                            trace_id: vec![0x11; 16],
                            span_id: vec![0x22; 8],
                            trace_state: String::new(),
                            parent_span_id: vec![0x33; 8],
                            flags: 0x301,
                            name: "tools/call t".into(),
                            kind: proto::span::SpanKind::Server as i32,
                            start_time_unix_nano: 1,
                            end_time_unix_nano: 300,
                            attributes: vec![
                                kv("a", any_value::Value::StringValue("x".into())),
                                kv("n", any_value::Value::IntValue(-1)),
                            ],
                            status: Some(proto::Status {
                                message: String::new(),
                                code: proto::status::StatusCode::Error as i32,
                            }),
                            // No events, links or dropped counts.
                            ..proto::Span::default()
                        },
                        proto::Span {
                            trace_id: vec![0xab; 16],
                            span_id: vec![0xcd; 8],
                            trace_state: "k=v".into(),
                            parent_span_id: Vec::new(),
                            // Sampled flag clear; the parent is known not remote.
                            flags: 0x100,
                            name: "tools/call u".into(),
                            kind: proto::span::SpanKind::Server as i32,
                            start_time_unix_nano: u64::MAX - 1,
                            end_time_unix_nano: u64::MAX,
                            attributes: vec![
                                kv("b", any_value::Value::BoolValue(false)),
                                kv("d", any_value::Value::DoubleValue(0.25)),
                                kv("i", any_value::Value::IntValue(i64::MIN)),
                                kv("s", any_value::Value::StringValue(String::new())),
                            ],
                            status: Some(proto::Status {
                                message: "fine".into(),
                                code: proto::status::StatusCode::Ok as i32,
                            }),
                            // No events, links or dropped counts.
                            ..proto::Span::default()
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(got, expected);
        // Nothing but what the schema knows, in its canonical encoding.
        assert_eq!(got.encode_to_vec(), body);
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

    #[test]
    fn json_is_otlp_json_field_by_field() {
        let body: Value = serde_json::from_slice(&encode_json(&source(), &[root_span()])).unwrap();
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][1],
            serde_json::json!({"key": "service.version", "value": {"stringValue": "1.2.3"}})
        );
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "toolgate");
        assert_eq!(rs["scopeSpans"][0]["scope"]["version"], "1.2.3");
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "ab".repeat(16));
        assert_eq!(s["spanId"], "cd".repeat(8));
        assert_eq!(s["parentSpanId"], "");
        assert_eq!(s["traceState"], "k=v");
        assert_eq!(s["name"], "tools/call u");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], (u64::MAX - 1).to_string());
        assert_eq!(s["endTimeUnixNano"], u64::MAX.to_string());
        assert_eq!(s["flags"], 0x100);
        assert_eq!(
            s["attributes"],
            serde_json::json!([
                {"key": "b", "value": {"boolValue": false}},
                {"key": "d", "value": {"doubleValue": 0.25}},
                {"key": "i", "value": {"intValue": i64::MIN.to_string()}},
                {"key": "s", "value": {"stringValue": ""}},
            ])
        );
        assert_eq!(
            s["status"],
            serde_json::json!({"message": "fine", "code": 1})
        );
        // And it reads back as the same request.
        let back: ExportTraceServiceRequest = serde_json::from_value(body).unwrap();
        assert_eq!(back, request(&source(), &[root_span()]));
    }
}
