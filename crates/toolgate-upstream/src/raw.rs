//! HTTP/1.1 over plain TCP, spoken inline by the task that makes the request:
//! the request goes out in one write, the answer is read by the same task,
//! and a kept-alive connection goes back to the pool once its answer has
//! been read to the end. No connection task, no channels between tasks:
//! this is the path of every call to an `http://` server, so it is kept
//! short. (`https://` servers go through hyper and rustls, in `pool`.)
//!
//! What it reads: a status line and headers (1xx answers skipped, a 101
//! refused), then a body framed by `Transfer-Encoding: chunked`, by
//! `Content-Length`, or by the end of the connection. A `Content-Length`
//! body is read before the answer is returned; the other two are streamed
//! (SSE answers are). Framing is read strictly (RFC 9112): what hyper's
//! client would read differently is refused. A connection goes back to the
//! pool only with nothing read past its answer.
//!
//! `fuzz` (tests) reads the same answers with this reader and with hyper's
//! client connection, in every split, and requires the same reading or a
//! refusal.

use crate::pool::IdlePool;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{HeaderMap, Request, Response, StatusCode};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest answer head (status line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may have (and trailers a chunked body).
const MAX_HEADERS: usize = 64;
/// The most room reserved at once for a `Content-Length` body.
const MAX_RESERVE: usize = 1 << 20;

pub(crate) type Idle<S = TcpStream> = Arc<IdlePool<Authority, Conn<S>>>;

/// One kept-alive connection and what was read past the last answer. The
/// stream is a `TcpStream`; the tests read answers from other byte sources.
pub(crate) struct Conn<S = TcpStream> {
    stream: S,
    buf: BytesMut,
}

/// Why an exchange failed, and whether the request never reached the server.
pub(crate) enum RawError {
    Connect(io::Error),
    Exchange(io::Error),
}

/// A body read from a raw connection.
pub(crate) enum RawBody<S = TcpStream> {
    /// Read in full already.
    Done(Option<Bytes>),
    /// Streamed from the connection.
    Stream(Box<Streamed<S>>),
}

pub(crate) struct Streamed<S = TcpStream> {
    conn: Option<Conn<S>>,
    framing: Framing,
    authority: Authority,
    idle: Idle<S>,
    /// Whether the connection may carry another request after this body.
    keep_alive: bool,
}

enum Framing {
    /// Chunked: what is expected next.
    Chunked(Chunk),
    /// Until the server closes the connection.
    UntilClose,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// A chunk-size line.
    Size,
    /// This many bytes of chunk data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, up to an empty one; how many were read.
    Trailers(usize),
}

/// Sends `req` (its URI absolute, `http`) on a pooled or new connection to
/// `authority`.
pub(crate) async fn request(
    idle: &Idle,
    authority: &Authority,
    req: Request<Bytes>,
) -> Result<Response<RawBody>, RawError> {
    let wire = encode(&req, authority);
    let head_only = req.method() == hyper::Method::HEAD;
    loop {
        let (mut conn, reused) = match idle.take(authority, Conn::is_idle) {
            Some(conn) => (conn, true),
            None => {
                let stream = TcpStream::connect(host_and_port(authority))
                    .await
                    .map_err(RawError::Connect)?;
                let _ = stream.set_nodelay(true);
                (
                    Conn {
                        stream,
                        buf: BytesMut::with_capacity(8 * 1024),
                    },
                    false,
                )
            }
        };
        if let Err(e) = conn.stream.write_all(&wire).await {
            if reused {
                // The server had closed it while idle: nothing was taken in.
                continue;
            }
            return Err(RawError::Exchange(e));
        }
        return read_answer(conn, authority, idle, head_only)
            .await
            .map_err(RawError::Exchange);
    }
}

/// Where to connect for `authority`: its host (an IPv6 address without its
/// brackets) and its port, 80 when it names none.
fn host_and_port(authority: &Authority) -> (&str, u16) {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (host, authority.port_u16().unwrap_or(80))
}

impl Conn {
    /// Whether a pooled connection can carry a request: an idle connection
    /// has nothing to read, so the end of stream (the server closed it) or
    /// stray bytes make it unusable. (tokio answers from its cached
    /// readiness: no system call while nothing arrived.)
    fn is_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The request as it goes on the wire: request line, headers, a
/// `Content-Length` for a body, the body.
fn encode(req: &Request<Bytes>, authority: &Authority) -> Vec<u8> {
    let body = req.body();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers().contains_key(hyper::header::HOST) {
        // Never the userinfo of a `user:pass@host` URL.
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers() {
        if name == hyper::header::CONTENT_LENGTH || name == hyper::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || req.method() == hyper::Method::POST {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Gives `conn` back to the pool after its answer was read to the end,
/// unless bytes past that answer were read with it: an idle connection has
/// nothing to read, and those bytes would be taken for the next answer.
fn release<S>(idle: &Idle<S>, authority: &Authority, conn: Conn<S>) {
    if conn.buf.is_empty() {
        idle.put(authority.clone(), conn);
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

async fn fill<S: AsyncRead + Unpin>(conn: &mut Conn<S>) -> io::Result<()> {
    if conn.buf.capacity() - conn.buf.len() < 4096 {
        conn.buf.reserve(8 * 1024);
    }
    match conn.stream.read_buf(&mut conn.buf).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection before the answer was complete",
        )),
        _ => Ok(()),
    }
}

async fn read_answer<S: AsyncRead + Unpin>(
    mut conn: Conn<S>,
    authority: &Authority,
    idle: &Idle<S>,
    head_only: bool,
) -> io::Result<Response<RawBody<S>>> {
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut answer = httparse::Response::new(&mut headers);
            match answer.parse(&conn.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = StatusCode::from_u16(answer.code.unwrap_or(0))
                        .map_err(|_| invalid("a bad status code"))?;
                    let http11 = answer.version == Some(1);
                    Some((len, status, Head::read(answer.headers, http11)?))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(invalid(&format!("a malformed answer: {e}"))),
            }
        };
        let Some((len, status, head)) = parsed else {
            if conn.buf.len() > MAX_HEAD {
                return Err(invalid("an answer head larger than 64 KiB"));
            }
            fill(&mut conn).await?;
            continue;
        };
        conn.buf.advance(len);
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(invalid("a switch of protocols that was not asked for"));
        }
        if status.is_informational() {
            // 100 Continue and the like: the real answer follows.
            continue;
        }
        let Head {
            close,
            chunked,
            length,
            headers,
        } = head;
        let body = if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            if !close {
                release(idle, authority, conn);
            }
            RawBody::Done(None)
        } else if chunked {
            RawBody::Stream(Box::new(Streamed {
                conn: Some(conn),
                framing: Framing::Chunked(Chunk::Size),
                authority: authority.clone(),
                idle: idle.clone(),
                keep_alive: !close,
            }))
        } else if let Some(length) = length {
            let length =
                usize::try_from(length).map_err(|_| invalid("a body too large to read"))?;
            while conn.buf.len() < length {
                // Room for what is announced, up to a bound: a length is
                // only a claim until its bytes arrive.
                conn.buf.reserve((length - conn.buf.len()).min(MAX_RESERVE));
                fill(&mut conn).await?;
            }
            let body = conn.buf.split_to(length).freeze();
            if !close {
                release(idle, authority, conn);
            }
            RawBody::Done(Some(body))
        } else {
            RawBody::Stream(Box::new(Streamed {
                conn: Some(conn),
                framing: Framing::UntilClose,
                authority: authority.clone(),
                idle: idle.clone(),
                keep_alive: false,
            }))
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Ok(response);
    }
}

/// What an answer's head says: its framing, and the headers the gateway
/// reads (`Content-Type`, `Mcp-Session-Id`); the others are dropped unread.
struct Head {
    close: bool,
    chunked: bool,
    length: Option<u64>,
    headers: HeaderMap,
}

impl Head {
    /// Reads the framing as RFC 9112 gives it, refusing what it calls faulty
    /// and what the gateway cannot decode: a transfer coding other than one
    /// `chunked`, one in HTTP/1.0, a `Content-Length` that is not digits or
    /// whose values disagree. (`Transfer-Encoding` overrides a
    /// `Content-Length`.) HTTP/1.0 closes unless it says `keep-alive`; a
    /// `close` anywhere closes.
    fn read(fields: &[httparse::Header<'_>], http11: bool) -> io::Result<Head> {
        // Tokens of a visible-ASCII value (hyper reads no others).
        let has_token = |value: &[u8], token: &str| {
            value
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
                && value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        };
        let mut keep_alive = http11;
        let mut saw_close = false;
        let mut codings = None::<(usize, bool)>;
        let mut head = Head {
            close: false,
            chunked: false,
            length: None,
            headers: HeaderMap::with_capacity(2),
        };
        for h in fields {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                if saw_close || has_token(h.value, "close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = has_token(h.value, "keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // How many `chunked`, and whether any other coding.
                let (chunked, other) = codings.get_or_insert((0, false));
                for coding in h.value.split(|&b| b == b',') {
                    if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        *chunked += 1;
                    } else {
                        *other = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                // "5" or "5, 5"; values that disagree are an error.
                for part in h.value.split(|&b| b == b',') {
                    let part = part.trim_ascii();
                    let n: u64 = std::str::from_utf8(part)
                        .ok()
                        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| invalid("a bad Content-Length"))?;
                    if head.length.is_some_and(|f| f != n) {
                        return Err(invalid("Content-Length values that disagree"));
                    }
                    head.length = Some(n);
                }
            } else if name.eq_ignore_ascii_case(b"content-type") {
                let value =
                    HeaderValue::from_bytes(h.value).map_err(|_| invalid("a bad header value"))?;
                head.headers.append(hyper::header::CONTENT_TYPE, value);
            } else if name.eq_ignore_ascii_case(b"mcp-session-id") {
                let value =
                    HeaderValue::from_bytes(h.value).map_err(|_| invalid("a bad header value"))?;
                head.headers
                    .append(HeaderName::from_static("mcp-session-id"), value);
            }
        }
        match codings {
            None => {}
            Some(_) if !http11 => return Err(invalid("a Transfer-Encoding in HTTP/1.0")),
            Some((1, false)) => head.chunked = true,
            Some(_) => return Err(invalid("a transfer coding other than chunked")),
        }
        head.close = !keep_alive;
        Ok(head)
    }
}

/// The size of a chunk-size line (without its CRLF): hex digits, then
/// spaces or tabs, then nothing or `;` and extensions without CR or LF.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let digit = (b as char).to_digit(16)?;
        size = size.checked_mul(16)?.checked_add(u64::from(digit))?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => Some(size),
        Some(b';') if !rest.iter().any(|&b| b == b'\r' || b == b'\n') => Some(size),
        Some(_) => None,
    }
}

/// Whether a trailer line (with its CRLF) is one well-formed field.
fn trailer_is_a_field(line: &[u8]) -> bool {
    let text = &line[..line.len() - 2];
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        return false;
    }
    let mut field = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(line, &mut field),
        Ok(httparse::Status::Partial)
    ) && HeaderName::from_bytes(field[0].name.as_bytes()).is_ok()
        && HeaderValue::from_bytes(field[0].value).is_ok()
}

impl<S> Streamed<S> {
    /// What the buffer holds of the body: `Some(data)` to hand out (possibly
    /// empty when only framing was consumed), `None` when more must be read;
    /// the body's end sets `conn` to `None` after giving it back.
    fn decode(&mut self) -> io::Result<Option<Bytes>> {
        let conn = self.conn.as_mut().expect("a body still being read");
        match &mut self.framing {
            Framing::UntilClose => {
                if conn.buf.is_empty() {
                    return Ok(None);
                }
                Ok(Some(conn.buf.split().freeze()))
            }
            Framing::Chunked(state) => loop {
                match *state {
                    Chunk::Size | Chunk::Trailers(_) | Chunk::DataEnd => {
                        let Some(end) = conn.buf.windows(2).position(|w| w == b"\r\n") else {
                            if conn.buf.len() > MAX_HEAD {
                                return Err(invalid("a chunk line larger than 64 KiB"));
                            }
                            return Ok(None);
                        };
                        let line = conn.buf.split_to(end + 2);
                        let text = &line[..end];
                        match *state {
                            Chunk::Size => {
                                let size =
                                    chunk_size(text).ok_or_else(|| invalid("a bad chunk size"))?;
                                *state = if size == 0 {
                                    Chunk::Trailers(0)
                                } else {
                                    Chunk::Data(size)
                                };
                            }
                            Chunk::DataEnd => {
                                if !text.is_empty() {
                                    return Err(invalid("chunk data longer than its size"));
                                }
                                *state = Chunk::Size;
                            }
                            Chunk::Trailers(count) => {
                                if text.is_empty() {
                                    let conn = self.conn.take().expect("checked above");
                                    if self.keep_alive {
                                        release(&self.idle, &self.authority, conn);
                                    }
                                    return Ok(Some(Bytes::new()));
                                }
                                if count >= MAX_HEADERS || !trailer_is_a_field(&line) {
                                    return Err(invalid("a bad trailer"));
                                }
                                *state = Chunk::Trailers(count + 1);
                            }
                            Chunk::Data(_) => unreachable!("a line is read in a line state"),
                        }
                    }
                    Chunk::Data(left) => {
                        if conn.buf.is_empty() {
                            return Ok(None);
                        }
                        let take = usize::try_from(left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        let left = left - take as u64;
                        *state = if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        };
                        return Ok(Some(data));
                    }
                }
            },
        }
    }
}

impl<S: AsyncRead + Unpin> RawBody<S> {
    pub(crate) fn is_end_stream(&self) -> bool {
        match self {
            RawBody::Done(data) => data.is_none(),
            RawBody::Stream(s) => s.conn.is_none(),
        }
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            RawBody::Done(Some(data)) => SizeHint::with_exact(data.len() as u64),
            RawBody::Done(None) => SizeHint::with_exact(0),
            RawBody::Stream(_) => SizeHint::default(),
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let s = match self {
            RawBody::Done(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RawBody::Stream(s) => s,
        };
        loop {
            if s.conn.is_none() {
                return Poll::Ready(None);
            }
            match s.decode() {
                Err(e) => {
                    s.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(data)) if !data.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            let conn = s.conn.as_mut().expect("checked above");
            let mut chunk = [0u8; 8 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut conn.stream).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    s.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    let until_close = matches!(s.framing, Framing::UntilClose);
                    s.conn = None;
                    return Poll::Ready(if until_close {
                        None
                    } else {
                        Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection inside a chunked body",
                        )))
                    });
                }
                Poll::Ready(Ok(())) => conn.buf.extend_from_slice(read.filled()),
            }
        }
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::host_and_port;
    use hyper::http::uri::Authority;

    #[test]
    fn an_authority_names_where_to_connect() {
        let cases = [
            ("127.0.0.1:8080", ("127.0.0.1", 8080)),
            ("example.com", ("example.com", 80)),
            ("user:secret@example.com:81", ("example.com", 81)),
            ("[::1]:9000", ("::1", 9000)),
            ("[::1]", ("::1", 80)),
        ];
        for (authority, expected) in cases {
            let authority: Authority = authority.parse().unwrap();
            assert_eq!(host_and_port(&authority), expected, "{authority}");
        }
    }
}
