//! Differential fuzzing of the request reader (bounded, seeded, in `cargo
//! test`): random and adversarial heads against httparse and a reference
//! reading of the framing headers, and chunked bodies against a small
//! reference decoder, each fed whole and split at every byte. The reader
//! must agree with the reference or refuse; it must never read a message a
//! different way.

use super::*;
use proptest::prelude::*;
use toolgate_fuzz::runner;

/// Header lines that make framing trouble, and ordinary ones.
fn header_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"Host: a".to_vec()),
        (0u64..40).prop_map(|n| format!("Content-Length: {n}").into_bytes()),
        Just(b"Content-Length: 5, 5".to_vec()),
        Just(b"Content-Length: 5, 6".to_vec()),
        Just(b"Content-Length: +5".to_vec()),
        Just(b"Content-Length: 5 ".to_vec()),
        Just(b"Content-Length:".to_vec()),
        Just(b"Content-Length: 99999999999999999999".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"Transfer-Encoding: Chunked ".to_vec()),
        Just(b"Transfer-Encoding: gzip, chunked".to_vec()),
        Just(b"Transfer-Encoding: chunked, gzip".to_vec()),
        Just(b"Transfer-Encoding: identity".to_vec()),
        Just(b"Transfer-Encoding : chunked".to_vec()),
        Just(b" Transfer-Encoding: chunked".to_vec()),
        Just(b"X: a\r\n b".to_vec()),
        Just(b"X: a\r\n\tb".to_vec()),
        Just(b"Expect: 100-continue".to_vec()),
        Just(b"Connection: close".to_vec()),
        Just(b"X-\xff: y".to_vec()),
        Just(b"X: \xe9".to_vec()),
        "[A-Za-z-]{1,8}: [ -~]{0,8}".prop_map(String::into_bytes),
    ]
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![Just("POST"), Just("GET"), Just("HEAD"), Just("P OST")];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2.0")];
    let eol = prop_oneof![8 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])];
    (
        method,
        version,
        proptest::collection::vec((header_line(), eol), 0..6),
    )
        .prop_map(|(method, version, headers)| {
            let mut out = format!("{method} /mcp {version}\r\n").into_bytes();
            for (line, eol) in headers {
                out.extend_from_slice(&line);
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(b"\r\n");
            out
        })
}

/// The framing RFC 9112 gives a head httparse read, or `None` where it
/// says to refuse (or where a reader may choose to).
fn reference_framing(req: &httparse::Request<'_, '_>) -> Option<Framing> {
    let mut length = None;
    let mut codings = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            for part in std::str::from_utf8(h.value).ok()?.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u64 = part.parse().ok()?;
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for c in std::str::from_utf8(h.value).ok()?.split(',') {
                codings.push(c.trim().to_ascii_lowercase());
            }
        }
    }
    match (codings.is_empty(), length) {
        (true, length) => Some(Framing::Length(length.unwrap_or(0))),
        // Both: a smuggling shape, refused.
        (false, Some(_)) => None,
        (false, None) if codings == ["chunked"] && req.version == Some(1) => Some(Framing::Chunked),
        (false, None) => None,
    }
}

fn check_head(bytes: &[u8]) {
    let ours = parse_head(&mut BytesMut::from(bytes));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut theirs = httparse::Request::new(&mut headers);
    let status = theirs.parse(bytes);
    match ours {
        Head::Complete { req, framing, .. } => {
            let Ok(httparse::Status::Complete(_)) = status else {
                panic!("read a head httparse does not: {bytes:?}");
            };
            assert_eq!(Some(req.method().as_str()), theirs.method, "{bytes:?}");
            assert_eq!(Some(req.uri().path()), theirs.path, "{bytes:?}");
            assert_eq!(req.headers().len(), theirs.headers.len(), "{bytes:?}");
            assert_eq!(
                Some(framing),
                reference_framing(&theirs),
                "another framing: {bytes:?}"
            );
        }
        Head::Partial => assert!(matches!(status, Ok(httparse::Status::Partial)), "{bytes:?}"),
        Head::Refused(..) => {}
    }
    // Split at every byte: partial until the whole head, then the same.
    for cut in 0..bytes.len() {
        if let Head::Complete { .. } = parse_head(&mut BytesMut::from(&bytes[..cut])) {
            assert!(
                matches!(
                    httparse::Request::new(&mut [httparse::EMPTY_HEADER; MAX_HEADERS])
                        .parse(&bytes[..cut]),
                    Ok(httparse::Status::Complete(_))
                ),
                "complete early at {cut}: {bytes:?}"
            );
        }
    }
}

#[test]
fn heads_read_as_httparse_and_rfc_9112_read_them_or_are_refused() {
    runner(2000)
        .run(&request(), |bytes| {
            check_head(&bytes);
            Ok(())
        })
        .unwrap();
    // Raw noise too.
    runner(1000)
        .run(&proptest::collection::vec(any::<u8>(), 0..200), |bytes| {
            check_head(&bytes);
            Ok(())
        })
        .unwrap();
}

/// A whole chunked body, decoded strictly: `Some((body, used))`.
fn reference_dechunk(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    let line = |at: usize| -> Option<(usize, usize)> {
        let end = input[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((end, end + 2))
    };
    loop {
        let (end, next) = line(at)?;
        let size_text = input[at..end].split(|&b| b == b';').next()?;
        let size_text = std::str::from_utf8(size_text).ok()?.trim_end();
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let size = usize::from_str_radix(size_text, 16).ok()?;
        at = next;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                let (end, next) = line(at)?;
                let empty = end == at;
                at = next;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if input.len() < at + size + 2 || &input[at + size..at + size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&input[at..at + size]);
        at += size + 2;
    }
}

fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..20),
        prop_oneof![Just(""), Just(";ext=1"), Just(";a;b=\"c\""), Just(" ")],
        prop_oneof![6 => Just(false), 1 => Just(true)],
    );
    let trailer = prop_oneof![Just(""), Just("T: x\r\n"), Just("T: x\r\nU: y\r\n")];
    (
        proptest::collection::vec(chunk, 0..5),
        trailer,
        0usize..8,
        any::<u8>(),
    )
        .prop_map(|(chunks, trailer, corrupt, byte)| {
            let mut out = Vec::new();
            for (data, ext, upper) in chunks {
                let size = if upper {
                    format!("{:X}", data.len())
                } else {
                    format!("{:x}", data.len())
                };
                out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
            // Sometimes one byte is changed (bare LF, a bad size, ...).
            if corrupt < out.len() && corrupt % 3 == 0 {
                out[corrupt] = byte;
            }
            out
        })
}

#[test]
fn chunked_bodies_read_as_the_reference_reads_them_in_any_split() {
    runner(2000)
        .run(&(chunked_body(), 1usize..9), |(input, step)| {
            let reference = reference_dechunk(&input);
            // Fed `step` bytes at a time, and whole.
            for piece in [step, input.len().max(1)] {
                let mut chunked = Chunked::new(1 << 20);
                let mut buf = BytesMut::new();
                let mut got = None;
                for part in input.chunks(piece) {
                    buf.extend_from_slice(part);
                    match chunked.step(&mut buf) {
                        Ok(None) => {}
                        Ok(Some(body)) => {
                            got = Some(Ok((body, input.len() - buf.len())));
                            break;
                        }
                        Err(e) => {
                            got = Some(Err(e));
                            break;
                        }
                    }
                }
                if let Some(Ok((body, used))) = got {
                    let (want, want_used) = reference
                        .clone()
                        .unwrap_or_else(|| panic!("read what the reference refuses: {input:?}"));
                    prop_assert_eq!(&body, &want, "another body: {:?}", input);
                    prop_assert_eq!(used, want_used, "another end: {:?}", input);
                }
            }
            Ok(())
        })
        .unwrap();
}
