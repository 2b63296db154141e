//! Bounded, seeded fuzzing of the strict reader and of what the gateway
//! forwards (runs in `cargo test`, a few seconds).
//!
//! The differential property: whatever the gateway would forward (each
//! message of a line it accepts, through `one_line`) reads the same under
//! serde_json as the gateway read it, and is one line to a line reader that
//! splits on CR, LF and CRLF (Python's universal newlines) or on every
//! separator `str.splitlines` knows. Inputs are structured JSON-RPC messages
//! written with random whitespace (bare CRs included), then mutated.

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use toolgate_jsonrpc::{
    check_strict, incoming, one_line, parse_strict, read_message, Id, Incoming, Read, StrictError,
};

fn runner(cases: u32) -> TestRunner {
    toolgate_fuzz::runner_with(cases, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// JSON whitespace, and the characters line readers break on besides.
fn space() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![" ", "\t", "\r", "", "", ""]),
        0..3,
    )
    .prop_map(|v| v.concat())
}

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "é", "\u{2028}", "\u{2029}", "\u{85}", "\\r", "\\n", "\\u0041", "\\\"", "“", "/",
            "\\u2028", " ",
        ]),
        0..6,
    )
    .prop_map(|v| format!("\"{}\"", v.concat()))
}

fn number() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0",
        "-0",
        "1",
        "1e2",
        "1.0",
        "-7.50",
        "123456789012345678901",
        "9007199254740993",
        "1E+2",
        "0.1",
        "1e400",
        "-1e-400",
    ])
    .prop_map(str::to_string)
}

fn value(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        string(),
        number(),
        Just("true".to_string()),
        Just("null".to_string())
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => (prop::collection::vec((string(), value(depth - 1), space()), 0..4)).prop_map(|members| {
            let inner: Vec<String> = members
                .into_iter()
                .map(|(k, v, s)| format!("{s}{k}{s}:{s}{v}{s}"))
                .collect();
            format!("{{{}}}", inner.join(","))
        }),
        1 => prop::collection::vec((value(depth - 1), space()), 0..4).prop_map(|items| {
            let inner: Vec<String> = items.into_iter().map(|(v, s)| format!("{s}{v}{s}")).collect();
            format!("[{}]", inner.join(","))
        }),
    ]
    .boxed()
}

/// A JSON-RPC-shaped message: request, notification, response or junk.
fn message() -> impl Strategy<Value = String> {
    (
        prop::option::of(prop_oneof![number(), string(), Just("null".to_string())]),
        prop::option::of(prop::sample::select(vec![
            "\"tools/call\"",
            "\"tools/list\"",
            "\"ping\"",
            "\"notifications/cancelled\"",
            "5",
        ])),
        prop::option::of(value(3)),
        prop::option::of(prop::sample::select(vec!["result", "error"])),
        space(),
    )
        .prop_map(|(id, method, params, answer, s)| {
            let mut members = vec![format!("{s}\"jsonrpc\"{s}:{s}\"2.0\"")];
            if let Some(id) = id {
                members.push(format!("{s}\"id\"{s}:{s}{id}{s}"));
            }
            if let Some(m) = method {
                members.push(format!("\"method\":{s}{m}"));
            }
            if let Some(p) = params {
                members.push(format!("\"params\":{s}{p}{s}"));
            }
            if let Some(a) = answer {
                members.push(format!("\"{a}\":{{}}"));
            }
            format!("{s}{{{}}}{s}", members.join(","))
        })
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    let one = message();
    let batch = prop::collection::vec(prop_oneof![message(), value(2)], 0..4)
        .prop_map(|items| format!("[{}]", items.join(",")));
    (
        prop_oneof![3 => one, 1 => batch],
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..3),
    )
        .prop_map(|(text, mutations)| {
            let mut bytes = text.into_bytes();
            for (at, byte, kind) in mutations {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    2 => {
                        bytes.remove(i);
                    }
                    _ => {
                        let dup = bytes[i];
                        bytes.insert(i, dup);
                    }
                }
            }
            bytes
        })
}

/// The lines a reader that breaks on `breaks` sees.
fn lines_of<'a>(text: &'a str, breaks: &[char]) -> Vec<&'a str> {
    text.split(|c| breaks.contains(&c))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Checks one message the gateway would forward.
fn check_forwarded(original: &[u8]) -> Result<(), TestCaseError> {
    let out = one_line(original);
    let text = std::str::from_utf8(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let before: Value = serde_json::from_slice(original).expect("read strictly already");
    let after: Value = serde_json::from_str(text).map_err(|e| {
        TestCaseError::fail(format!("forwarded text does not parse: {e}: {text:?}"))
    })?;
    prop_assert_eq!(&before, &after);
    let universal = lines_of(text, &['\r', '\n']);
    prop_assert!(universal.len() <= 1, "universal newlines split {:?}", text);
    let splitlines = lines_of(
        text,
        &[
            '\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}',
            '\u{2029}',
        ],
    );
    prop_assert!(splitlines.len() <= 1, "str.splitlines splits {:?}", text);
    if let Some(only) = universal.first() {
        let reread: Value = serde_json::from_str(only).expect("one line, the whole text");
        prop_assert_eq!(&reread, &before);
    }
    Ok(())
}

#[test]
fn what_the_gateway_forwards_reads_one_way() {
    let accepted = std::cell::Cell::new(0u32);
    runner(4000)
        .run(&line(), |bytes| {
            let tree = parse_strict(&bytes).map(|_| ());
            match read_message(&bytes) {
                Err(e) => {
                    // The fast reader refuses what the tree parser refuses (a
                    // text with a repeated key and a syntax error may be
                    // refused for either); a repeated key it names is one.
                    prop_assert!(
                        tree.is_err(),
                        "walk refused ({:?}) what the tree accepted",
                        e
                    );
                    if let (StrictError::DuplicateKey(_), Err(StrictError::Syntax(s))) = (&e, &tree)
                    {
                        prop_assert!(false, "walk saw a repeated key where the tree saw {}", s);
                    }
                }
                Ok(read) => {
                    prop_assert!(
                        tree.is_ok(),
                        "walk accepted what the tree refused: {:?}",
                        tree
                    );
                    accepted.set(accepted.get() + 1);
                    match read {
                        Read::Single(_) => check_forwarded(&bytes)?,
                        Read::Batch(items) => {
                            for item in items {
                                // Each element is routed on its own.
                                let _ = incoming(item.get()).expect("an element of a strict batch");
                                check_forwarded(item.get().as_bytes())?;
                            }
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.get();
    assert!(
        accepted > 500,
        "too few valid inputs to mean anything: {accepted}"
    );
}

#[test]
fn request_ids_read_as_every_parser_reads_them() {
    runner(2000)
        .run(&message(), |text| {
            let Ok(Read::Single(Incoming::Request { id, raw_id, .. })) =
                read_message(text.as_bytes())
            else {
                return Ok(());
            };
            // The id is the id of the parsed value wherever a Value is exact.
            let parsed: Value = serde_json::from_str(raw_id).unwrap();
            if Id::is_plain(raw_id) {
                prop_assert_eq!(Some(id.clone()), Id::of(&parsed));
                // And a plain id reads the same after a round trip through a double.
                if let Some(f) = parsed.as_f64() {
                    if parsed.is_number() {
                        prop_assert_eq!(Id::from_raw(&format!("{f}")), Some(id));
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_strict_reader_is_linear_in_depth_and_width() {
    // Deep nesting is refused (serde_json's recursion limit), not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(check_strict(deep.as_bytes()).is_err());
    let deep_obj = "{\"a\":".repeat(50_000) + &"}".repeat(50_000);
    assert!(check_strict(deep_obj.as_bytes()).is_err());
    // One huge key.
    let huge_key = format!("{{\"{}\":1}}", "k".repeat(4_000_000));
    assert!(check_strict(huge_key.as_bytes()).is_ok());
}
