//! Differential fuzzing of the answer reader, in `cargo test`: the same
//! answer bytes (random, and shaped to make framing trouble) are read by
//! `read_answer` and by hyper's HTTP/1.1 client connection over an in-memory
//! pipe. `raw` must read what hyper reads (status, the headers the gateway
//! keeps, the body, whether the connection can carry another request) or
//! refuse; never read something else. Its reading must not depend on how
//! the bytes are split into reads: whole, every split in two, 1 to 8 bytes
//! at a time. Seeded: every run tries the same cases.

use super::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::runtime::Runtime;
use toolgate_fuzz::runner;

/// A current-thread runtime whose clock runs only when every task waits:
/// the server side of hyper's pipe closes once the client is stuck.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The answer as a server sends it: these pieces, one per read (a read
/// smaller than a piece leaves the rest for the next), then the end of the
/// stream.
struct Script(VecDeque<Vec<u8>>);

impl Script {
    fn new<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Script {
        Script(
            pieces
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
        )
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                piece.drain(..n);
                self.0.push_front(piece);
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// What a reader made of an answer.
#[derive(Debug, PartialEq)]
struct Reading {
    status: u16,
    /// The headers `raw` keeps, in order.
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Whether the connection could carry the next request.
    reusable: bool,
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut kept = Vec::new();
    for name in ["content-type", "mcp-session-id"] {
        for value in headers.get_all(name) {
            kept.push((name.to_string(), value.as_bytes().to_vec()));
        }
    }
    kept
}

/// `raw`'s reading of `pieces`, `None` when it refuses the answer.
async fn raw_reads(pieces: &[&[u8]], head_only: bool) -> Option<Reading> {
    let idle: Idle<Script> = Arc::new(IdlePool::new());
    let authority = Authority::from_static("upstream");
    let conn = Conn {
        stream: Script::new(pieces.iter().copied()),
        buf: BytesMut::with_capacity(8 * 1024),
    };
    let response = read_answer(conn, &authority, &idle, head_only).await.ok()?;
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.poll_frame(cx)).await {
        if let Ok(data) = frame.ok()?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    // What `Conn::is_idle` sees on a socket: nothing more has arrived.
    let reusable = idle.take(&authority, |c| c.stream.0.is_empty()).is_some();
    Some(Reading {
        status: parts.status.as_u16(),
        headers: kept_headers(&parts.headers),
        body: bytes,
        reusable,
    })
}

/// hyper's reading of `pieces`, `None` when it refuses the answer. The
/// server side reads the request, writes the pieces, and closes the pipe
/// once the client waits for more.
async fn hyper_reads(pieces: &[&[u8]], head_only: bool) -> Option<Reading> {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
    let server = tokio::spawn(async move {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if server.read_exact(&mut byte).await.is_err() {
                return;
            }
            head.push(byte[0]);
        }
        for piece in pieces {
            if server.write_all(&piece).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let method = if head_only { "HEAD" } else { "POST" };
    let req = Request::builder()
        .method(method)
        .uri("/mcp")
        .header("host", "upstream")
        .body(Empty::new())
        .unwrap();
    let reading = async {
        let response = sender.send_request(req).await.ok()?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes().to_vec();
        // Let every task run out of work (bytes past the answer read, the
        // pipe still open), then ask whether a request could go out.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let reusable = matches!(
            tokio::time::timeout(Duration::from_millis(1), sender.ready()).await,
            Ok(Ok(()))
        );
        Some(Reading {
            status: parts.status.as_u16(),
            headers: kept_headers(&parts.headers),
            body,
            reusable,
        })
    }
    .await;
    drop(sender);
    let _ = server.await;
    let _ = driver.await;
    reading
}

/// Checks `raw` against hyper on `answer`, fed whole, split in `pieces`
/// (sizes, cycled), and split in two at every byte when `every_split`.
fn check(rt: &Runtime, answer: &[u8], pieces: &[usize], head_only: bool, every_split: bool) {
    let mut sizes = pieces.iter().copied().cycle();
    let mut split = Vec::new();
    let mut rest = answer;
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        split.push(&rest[..n]);
        rest = &rest[n..];
    }
    let reference = rt.block_on(hyper_reads(&split, head_only));
    let ours = rt.block_on(raw_reads(&[answer], head_only));
    if let Some(ours) = &ours {
        assert_eq!(
            Some(ours),
            reference.as_ref(),
            "raw reads what hyper does not: {:?}",
            String::from_utf8_lossy(answer)
        );
    }
    let mut feeds = vec![split];
    if every_split {
        feeds.extend((1..answer.len()).map(|cut| vec![&answer[..cut], &answer[cut..]]));
    }
    for feed in feeds {
        let again = rt.block_on(raw_reads(&feed, head_only));
        assert_eq!(
            again,
            ours,
            "another reading when read in pieces {:?}: {:?}",
            feed.iter().map(|p| p.len()).collect::<Vec<_>>(),
            String::from_utf8_lossy(answer)
        );
    }
}

/// Header lines that make framing trouble, and ordinary ones.
fn header_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => ordinary_header_line(),
        1 => framing_header_line(),
    ]
}

fn ordinary_header_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"Content-Type: application/json".to_vec()),
        Just(b"content-type: text/event-stream".to_vec()),
        Just(b"Mcp-Session-Id: s-1".to_vec()),
        Just(b"mcp-session-id:s-2 ".to_vec()),
        Just(b"Connection: keep-alive".to_vec()),
        "[A-Za-z-]{1,8}: [ -~]{0,8}".prop_map(String::into_bytes),
    ]
}

fn framing_header_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..12).prop_map(|n| format!("Content-Length: {n}").into_bytes()),
        Just(b"Content-Length: 2, 2".to_vec()),
        Just(b"Content-Length: 2, 3".to_vec()),
        Just(b"Content-Length: +2".to_vec()),
        Just(b"Content-Length: -2".to_vec()),
        Just(b"Content-Length: 002".to_vec()),
        Just(b"Content-Length: 2 ".to_vec()),
        Just(b"Content-Length: 2,".to_vec()),
        Just(b"Content-Length:".to_vec()),
        Just(b"Content-Length: 0x2".to_vec()),
        Just(b"Content-Length: 99999999999999999999".to_vec()),
        Just(b"Content-Length: 18446744073709551615".to_vec()),
        Just(b"Content-Length: 4611686018427387904".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"Transfer-Encoding: Chunked ".to_vec()),
        Just(b"Transfer-Encoding: gzip, chunked".to_vec()),
        Just(b"Transfer-Encoding: chunked, gzip".to_vec()),
        Just(b"Transfer-Encoding: chunked, chunked".to_vec()),
        Just(b"Transfer-Encoding: identity".to_vec()),
        Just(b"Transfer-Encoding:".to_vec()),
        Just(b"Transfer-Encoding : chunked".to_vec()),
        Just(b" Transfer-Encoding: chunked".to_vec()),
        Just(b"Connection: close".to_vec()),
        Just(b"Connection: keep-alive".to_vec()),
        Just(b"Connection: Keep-Alive, Close".to_vec()),
        Just(b"Connection: upgrade".to_vec()),
        Just(b"X: a\r\n b".to_vec()),
        Just(b"Content-Type: a\r\n\tb".to_vec()),
        Just(b"X-\xff: y".to_vec()),
        Just(b"Content-Type: \xe9".to_vec()),
        Just(b"Content-Type: a\x7fb".to_vec()),
        Just(b"Connection: close, \xe9".to_vec()),
    ]
}

fn status_line() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        24 => Just("HTTP/1.1 200 OK"),
        2 => Just("HTTP/1.1 202 Accepted"),
        1 => Just("HTTP/1.1 404 Not Found"),
        4 => Just("HTTP/1.0 200 OK"),
        3 => Just("HTTP/1.1 204 No Content"),
        3 => Just("HTTP/1.1 304 Not Modified"),
        1 => Just("HTTP/1.1 101 Switching Protocols"),
        1 => Just("HTTP/1.1 200"),
        1 => Just("HTTP/1.1 200 "),
        1 => Just("HTTP/1.1 099 Low"),
        1 => Just("HTTP/1.1 1000 High"),
        1 => Just("HTTP/1.1 20 OK"),
        1 => Just("HTTP/2 200 OK"),
        1 => Just("HTTP/1.1  200 OK"),
    ]
}

/// 1xx answers that come before the real one.
fn interim() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("HTTP/1.1 100 Continue\r\n\r\n"),
        Just("HTTP/1.1 102 Processing\r\nContent-Length: 5\r\n\r\n"),
        Just("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
        Just("HTTP/1.1 199 Other\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Just("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
    ]
}

/// A chunked body: chunks with extensions and uppercase sizes, trailers,
/// sometimes one byte changed (a bare LF, a bad size, a sign, ...).
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..20),
        prop_oneof![
            6 => Just(""),
            1 => Just(";ext=1"),
            1 => Just(";a;b=\"c\""),
            1 => Just(" "),
            1 => Just("\t;x"),
            1 => Just(" ; x"),
            1 => Just(";x\ny"),
            1 => Just(";x\ry"),
        ],
        prop_oneof![
            12 => Just(""),
            2 => Just("0000"),
            1 => Just("+"),
            1 => Just(" "),
            1 => Just("-"),
        ],
        prop_oneof![6 => Just(false), 1 => Just(true)],
    );
    let trailer = prop_oneof![
        12 => Just(""),
        2 => Just("T: x\r\n"),
        2 => Just("T: x\r\nU: y\r\n"),
        1 => Just("T: x\nU: y\r\n"),
        1 => Just("T x\r\n"),
        1 => Just(" T: x\r\n"),
        1 => Just("T: x\r\n y\r\n"),
        1 => Just("T: \x01\r\n"),
    ];
    let last = prop_oneof![
        12 => Just("0"),
        2 => Just("000"),
        2 => Just("0;end"),
        2 => Just("0 "),
        1 => Just("10000000000000000"),
        1 => Just("fffffffffffffffff"),
    ];
    (
        proptest::collection::vec(chunk, 0..4),
        last,
        trailer,
        0usize..64,
        any::<u8>(),
    )
        .prop_map(|(chunks, last, trailer, corrupt, byte)| {
            let mut out = Vec::new();
            for (data, ext, prefix, upper) in chunks {
                let size = if upper {
                    format!("{:X}", data.len())
                } else {
                    format!("{:x}", data.len())
                };
                out.extend_from_slice(format!("{prefix}{size}{ext}\r\n").as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("{last}\r\n{trailer}\r\n").as_bytes());
            if corrupt < out.len() && corrupt.is_multiple_of(8) {
                out[corrupt] = byte;
            }
            out
        })
}

/// A body and the header line that frames it (or none: until the close).
fn framed_body() -> impl Strategy<Value = (Option<Vec<u8>>, Vec<u8>)> {
    let data = proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        3 => data.clone().prop_map(|d| (
            Some(format!("Content-Length: {}", d.len()).into_bytes()),
            d
        )),
        1 => data.clone().prop_map(|d| (
            Some(format!("Content-Length: {0}\r\nContent-Length: {0}", d.len()).into_bytes()),
            d
        )),
        3 => chunked_body().prop_map(|b| (Some(b"Transfer-Encoding: chunked".to_vec()), b)),
        1 => chunked_body().prop_map(|b| (
            Some(b"Transfer-Encoding: chunked\r\nContent-Length: 3".to_vec()),
            b
        )),
        2 => data.prop_map(|d| (None, d)),
    ]
}

/// What may follow the answer on the connection.
fn after() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        12 => Just(&b""[..]),
        1 => Just(&b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"[..]),
        1 => Just(&b"\r\n"[..]),
        1 => Just(&b"x"[..]),
    ]
}

/// Whole answers: interim answers, a status line, headers (the framing one
/// and others, each ended by CRLF or a bare LF), a body, what follows, and
/// sometimes cut short.
fn answer() -> impl Strategy<Value = Vec<u8>> {
    let eol = prop_oneof![16 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])];
    (
        prop_oneof![
            4 => Just(Vec::new()),
            1 => proptest::collection::vec(interim(), 1..3),
        ],
        status_line(),
        framed_body(),
        proptest::collection::vec((header_line(), eol), 0..4),
        after(),
        prop_oneof![8 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)],
    )
        .prop_map(|(interims, status, (framing, body), headers, after, cut)| {
            let mut out = Vec::new();
            for i in interims {
                out.extend_from_slice(i.as_bytes());
            }
            out.extend_from_slice(status.as_bytes());
            out.extend_from_slice(b"\r\n");
            for (line, eol) in framing
                .into_iter()
                .map(|f| (f, &b"\r\n"[..]))
                .chain(headers)
            {
                out.extend_from_slice(&line);
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out.extend_from_slice(after);
            if let Some(cut) = cut {
                out.truncate(cut.index(out.len()));
            }
            out
        })
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..9, 1..16)
}

#[test]
fn answers_read_as_hyper_reads_them_or_are_refused_in_any_split() {
    let rt = runtime();
    let case = std::cell::Cell::new(0u32);
    runner(1000)
        .run(
            &(answer(), pieces(), prop::bool::weighted(0.1)),
            |(answer, pieces, head_only)| {
                case.set(case.get() + 1);
                check(
                    &rt,
                    &answer,
                    &pieces,
                    head_only,
                    case.get().is_multiple_of(4),
                );
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn noise_reads_as_hyper_reads_it_or_is_refused() {
    let rt = runtime();
    let noise = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|tail| {
            let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
            out.extend_from_slice(&tail);
            out
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|tail| {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            out.extend_from_slice(&tail);
            out
        }),
    ];
    runner(300)
        .run(&(noise, pieces()), |(answer, pieces)| {
            check(&rt, &answer, &pieces, false, true);
            Ok(())
        })
        .unwrap();
}

/// Checks `answer` against hyper in every split, then that `raw` reads it
/// as `want` says: `Some((body, reusable))`, or `None` for a refusal.
fn expect(answer: &[u8], want: Option<(&[u8], bool)>) {
    let rt = runtime();
    check(&rt, answer, &[1], false, true);
    let got = rt.block_on(raw_reads(&[answer], false));
    assert_eq!(
        got.as_ref().map(|r| (&r.body[..], r.reusable)),
        want,
        "{:?}",
        String::from_utf8_lossy(answer)
    );
}

#[test]
fn bytes_past_an_answer_are_not_taken_for_the_next_answer() {
    const EVIL: &str = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";
    for answer in [
        format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok{EVIL}"),
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n{EVIL}"),
    ] {
        expect(answer.as_bytes(), Some((b"ok", false)));
    }
    expect(
        format!("HTTP/1.1 204 No Content\r\n\r\n{EVIL}").as_bytes(),
        Some((b"", false)),
    );
    // Without them, the connection is shared again.
    expect(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Some((b"ok", true)),
    );
}

#[test]
fn a_huge_content_length_is_not_reserved_before_its_bytes_arrive() {
    for length in ["4611686018427387904", "18446744073709551615"] {
        expect(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nok").as_bytes(),
            None,
        );
    }
}

#[test]
fn a_content_length_with_a_sign_is_refused() {
    for length in ["+2", "-2", "2, +2"] {
        expect(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nok").as_bytes(),
            None,
        );
    }
    expect(
        b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\nContent-Length: 2, 2\r\n\r\nok",
        Some((b"ok", true)),
    );
}

#[test]
fn a_transfer_coding_other_than_chunked_is_refused() {
    for codings in [
        "chunked, gzip",
        "chunked\r\nTransfer-Encoding: gzip",
        "gzip, chunked",
        "identity",
        "chunked, chunked",
        "",
    ] {
        expect(
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n0\r\n\r\n").as_bytes(),
            None,
        );
    }
    // Chunked overrides a Content-Length.
    expect(
        b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        Some((b"ok", true)),
    );
}

#[test]
fn a_transfer_encoding_in_http_1_0_is_refused() {
    expect(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        None,
    );
}

#[test]
fn a_switch_of_protocols_the_gateway_did_not_ask_for_is_refused() {
    expect(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        None,
    );
    // Other 1xx answers are skipped.
    expect(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Some((b"ok", true)),
    );
}

#[test]
fn a_chunk_size_line_is_read_strictly() {
    for line in [
        " 2",
        "+2",
        "2;x\ny",
        "2;x\ry",
        "2\x0c",
        "2 x",
        "0x2",
        "12345678901234567",
    ] {
        expect(
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nok\r\n0\r\n\r\n"
            )
            .as_bytes(),
            None,
        );
    }
    for line in ["2", "2 ", "2\t;x", "2 ; x=\"y\"", "0002"] {
        expect(
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{line}\r\nok\r\n0\r\n\r\n"
            )
            .as_bytes(),
            Some((b"ok", true)),
        );
    }
}

#[test]
fn a_malformed_trailer_is_refused() {
    for trailer in ["T x", " T: x", "T: x\nU: y", "T: \x01", "T: x\r\n y"] {
        expect(
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n{trailer}\r\n\r\n")
                .as_bytes(),
            None,
        );
    }
    expect(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nT: x\r\nU:\r\n\r\n",
        Some((b"ok", true)),
    );
}

#[test]
fn http_1_0_keeps_a_connection_only_when_it_says_keep_alive() {
    expect(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        Some((b"ok", true)),
    );
    expect(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        Some((b"ok", false)),
    );
    expect(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Some((b"ok", false)),
    );
}

#[test]
fn a_body_without_length_ends_with_the_connection_and_is_not_reused() {
    expect(b"HTTP/1.1 200 OK\r\n\r\nok", Some((b"ok", false)));
    expect(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok", None);
    expect(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
        None,
    );
}
