//! The HTTP/1.1 server under `/mcp`: one task per connection that reads a
//! request head (httparse), its whole body (Content-Length or chunked, up to
//! the message limit), hands an `http::Request` to the handler, and writes
//! the response: a known-size body in one write with its head, any other
//! body (an SSE stream) chunked, a frame at a time.
//!
//! It replaces hyper's server on this path because it is the hot path of
//! every tool call, and most of hyper's cost there (its body channel, its
//! per-request timers, its response encoder) buys nothing for JSON-RPC
//! bodies of a few hundred bytes. What it refuses, it refuses before the
//! handler sees anything:
//! - a head that httparse rejects, or over [`MAX_HEAD`] bytes (400 / 431);
//! - framing that could be read two ways: Transfer-Encoding together with
//!   Content-Length, a transfer coding other than `chunked`, Content-Length
//!   values that disagree (400, and the connection is closed);
//! - `Expect` other than `100-continue` (417).
//!
//! A body over the limit reaches the handler as [`BodyError::TooLarge`] (it
//! answers 413), and the connection is then closed. After any answer that
//! closes the connection, the rest of what the client sends is read and
//! dropped for a moment (a lingering close), so that it reads the answer
//! instead of a reset.
//!
//! Before any of a body is read, the head goes to the `admit` hook (the
//! front's Host, Origin and bearer-token checks): a head it refuses is
//! answered at once, and when a body was announced the connection is closed
//! after at most [`REFUSED_DRAIN`] bytes were read and dropped. The body of
//! a refused request is never buffered.
//!
//! Memory held by bodies is bounded twice: a body up to [`SMALL_BODY`] is
//! read into the connection's own buffer (so it is bounded by the number of
//! connections, and that buffer is shrunk back after anything larger
//! passed through it); a larger one is read into an allocation of its own,
//! counted against the [`BodyBudget`] shared by every connection from
//! before its first byte is read until the handler drops it. A body that
//! does not fit the budget within [`BUDGET_WAIT`] is refused with 503 (and
//! `Retry-After`) without being read.

use crate::http::Body;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 64 << 10;
/// The most headers a request may have.
const MAX_HEADERS: usize = 96;
/// How long a lingering close reads and drops what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// The most of a refused request's body read (and dropped) before the
/// connection is closed: enough for a small body to be taken off the wire
/// so the client reads the answer rather than a reset.
pub const REFUSED_DRAIN: usize = 64 << 10;
/// Bodies up to this size are read into the connection's buffer, uncounted.
pub const SMALL_BODY: usize = 64 << 10;
/// A connection buffer grown past this is replaced by a small one once the
/// request is done.
const KEEP_BUFFER: usize = 2 * SMALL_BODY;
/// How long a large body waits for room in the budget before 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The bytes of large request bodies (over [`SMALL_BODY`]) that all
/// connections together may hold at once.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
    /// Tasks waiting for room: a release wakes them only when there are.
    waiting: AtomicUsize,
    freed: tokio::sync::Notify,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limit,
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// The bytes held now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `n` bytes, waiting up to `wait` for room; `false`: no room.
    async fn take(&self, n: usize, wait: Duration) -> bool {
        if n > self.limit {
            return false;
        }
        if self.try_take(n) {
            return true;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + wait;
        let taken = loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(n) {
                break true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break self.try_take(n);
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// Bytes of the budget held by one body; given back when dropped.
struct Held {
    budget: Arc<BodyBudget>,
    n: usize,
}

impl Held {
    fn none(budget: &Arc<BodyBudget>) -> Held {
        Held {
            budget: budget.clone(),
            n: 0,
        }
    }

    /// Holds `total` bytes in all (more only), waiting briefly for room.
    async fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.n {
            return true;
        }
        if !self.budget.take(total - self.n, BUDGET_WAIT).await {
            return false;
        }
        self.n = total;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.n);
    }
}

/// A large body and its share of the budget: freed together.
struct BodyBytes {
    bytes: Vec<u8>,
    _held: Held,
}

impl AsRef<[u8]> for BodyBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

fn counted(bytes: Vec<u8>, held: Held) -> Bytes {
    Bytes::from_owner(BodyBytes { bytes, _held: held })
}

/// Why a request's body is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// It is larger than the message limit.
    TooLarge,
}

/// A request as the handler gets it: the body is read in full, or the
/// reason why not.
pub type Req = Request<Result<Bytes, BodyError>>;

/// The limits of one connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take to send a whole request (head and body),
    /// counted from when the connection is ready for it; an idle keep-alive
    /// connection is closed after this long.
    pub request_read: Duration,
    /// The largest body.
    pub max_body: usize,
    /// Shared by every connection: the bytes large bodies may hold.
    pub budget: Arc<BodyBudget>,
}

/// Serves one connection until the client closes it, an error closes it, or
/// `shutdown` turns true (between requests; a request in flight is
/// answered first). `admit` sees each request's head before any of its
/// body is read: `Err(response)` answers it without reading the body, and
/// `Ok(t)` goes to `handler` with the request.
pub async fn connection<A, T, F, Fut>(
    mut stream: TcpStream,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    admit: A,
    handler: F,
) where
    A: Fn(&Req) -> Result<T, Response<Body>>,
    F: Fn(Req, T) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
    // One timer for the connection, moved later for each request: a timer
    // that only moves later is not taken out of the timer wheel.
    let deadline = tokio::time::sleep(limits.request_read);
    tokio::pin!(deadline);
    loop {
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + limits.request_read);
        let request = tokio::select! {
            read = read_request(&mut stream, &mut buf, &limits, &mut shutdown, &admit) => match read {
                Err(Closed) => return,
                Ok(request) => request,
            },
            () = &mut deadline => return,
        };
        if buf.capacity() > KEEP_BUFFER && buf.len() <= INITIAL_BUFFER {
            // A large head or body passed through: do not keep its memory
            // for the life of the connection.
            let mut small = BytesMut::with_capacity(INITIAL_BUFFER);
            small.extend_from_slice(&buf);
            buf = small;
        }
        let (req, admitted, mut keep_alive) = match request {
            Read::Request {
                req,
                admitted,
                keep_alive,
            } => (req, admitted, keep_alive),
            Read::Refused(status, message) => {
                let response = crate::http::text(status, message);
                if write_response(&mut stream, response, false, false, &mut buf)
                    .await
                    .is_ok()
                {
                    linger(stream).await;
                }
                return;
            }
            Read::Answered {
                response,
                head_only,
                body_follows,
            } => {
                // Refused on its head: a body announced is not read.
                let keep_alive = !body_follows && !*shutdown.borrow();
                match write_response(&mut stream, response, head_only, keep_alive, &mut buf).await {
                    Ok(true) if keep_alive => continue,
                    Ok(_) => drain_and_close(stream, REFUSED_DRAIN).await,
                    Err(_) => {}
                }
                return;
            }
        };
        if req.body().is_err() {
            // The body was not read: what follows on the connection is not
            // a request head.
            keep_alive = false;
        }
        let head_only = req.method() == Method::HEAD;
        let response = handler(req, admitted).await;
        keep_alive &= !*shutdown.borrow();
        match write_response(&mut stream, response, head_only, keep_alive, &mut buf).await {
            Ok(true) if keep_alive => {}
            Ok(_) => {
                linger(stream).await;
                return;
            }
            Err(_) => return,
        }
    }
}

struct Closed;

/// What a connection's buffer starts with, and is shrunk back to.
const INITIAL_BUFFER: usize = 4096;

// Not boxed: each value is built and taken apart once, and a box would cost
// an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Read<T> {
    Request {
        req: Req,
        admitted: T,
        keep_alive: bool,
    },
    /// Refused before the handler: answer with this and close.
    Refused(StatusCode, &'static str),
    /// Answered on its head (by `admit`, or for want of budget), its body
    /// unread; `body_follows`: one was announced, so the connection closes.
    Answered {
        response: Response<Body>,
        head_only: bool,
        body_follows: bool,
    },
}

async fn read_request<A, T>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
    admit: &A,
) -> Result<Read<T>, Closed>
where
    A: Fn(&Req) -> Result<T, Response<Body>>,
{
    let max_body = limits.max_body;
    // The head.
    let (mut req, framing, expect_continue, keep_alive) = loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Head::Complete {
                    req,
                    framing,
                    expect_continue,
                    keep_alive,
                } => break (req, framing, expect_continue, keep_alive),
                Head::Partial => {}
                Head::Refused(status, message) => return Ok(Read::Refused(status, message)),
            }
        }
        if buf.is_empty() && *shutdown.borrow() {
            return Err(Closed);
        }
        let idle = buf.is_empty();
        tokio::select! {
            biased;
            read = fill(stream, buf) => read?,
            _ = shutdown.changed(), if idle => return Err(Closed),
        }
    };
    // The head decides whether the body is read at all.
    let head_only = req.method() == Method::HEAD;
    let body_follows = framing != Framing::Length(0);
    let admitted = match admit(&req) {
        Ok(admitted) => admitted,
        Err(response) => {
            return Ok(Read::Answered {
                response,
                head_only,
                body_follows,
            })
        }
    };
    let no_room = || {
        let mut response = crate::http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable: too many large request bodies in flight; retry shortly",
        );
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        Ok(Read::Answered {
            response,
            head_only,
            body_follows: true,
        })
    };
    // The body.
    let body = match framing {
        Framing::Length(n) if n > max_body as u64 => Err(BodyError::TooLarge),
        Framing::Length(0) => Ok(Bytes::new()),
        Framing::Length(n) if n as usize <= SMALL_BODY => {
            let n = n as usize;
            if expect_continue && buf.len() < n {
                continue_100(stream).await?;
            }
            while buf.len() < n {
                buf.reserve(n - buf.len());
                fill(stream, buf).await?;
            }
            Ok(buf.split_to(n).freeze())
        }
        Framing::Length(n) => {
            // Its own allocation, counted before a byte of it is read.
            let n = n as usize;
            let mut held = Held::none(&limits.budget);
            if !held.grow_to(n).await {
                return no_room();
            }
            if expect_continue && buf.len() < n {
                continue_100(stream).await?;
            }
            let mut body = Vec::with_capacity(n);
            let first = buf.len().min(n);
            body.extend_from_slice(&buf[..first]);
            buf.advance(first);
            while body.len() < n {
                // Reads no further than the body (the capacity is its length).
                match stream.read_buf(&mut body).await {
                    Ok(0) | Err(_) => return Err(Closed),
                    Ok(_) => {}
                }
            }
            Ok(counted(body, held))
        }
        Framing::Chunked => {
            if expect_continue && buf.is_empty() {
                continue_100(stream).await?;
            }
            let mut chunked = Chunked::new(max_body);
            let mut held = Held::none(&limits.budget);
            loop {
                match chunked.step(buf) {
                    Ok(Some(body)) => break Ok(counted(body, held)),
                    Ok(None) => {}
                    Err(ChunkError::TooLarge) => break Err(BodyError::TooLarge),
                    Err(ChunkError::Malformed) => {
                        return Ok(Read::Refused(
                            StatusCode::BAD_REQUEST,
                            "malformed chunked body",
                        ))
                    }
                }
                // What the chunks announced so far is counted before more
                // is read (a small body is counted too: it has its own
                // allocation).
                if !held.grow_to(chunked.announced()).await {
                    return no_room();
                }
                fill(stream, buf).await?;
            }
        }
    };
    *req.body_mut() = body;
    Ok(Read::Request {
        req,
        admitted,
        keep_alive,
    })
}

/// Reads more of the request into `buf`; the client closing (or an error)
/// ends the connection.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), Closed> {
    match stream.read_buf(buf).await {
        Ok(0) | Err(_) => Err(Closed),
        Ok(_) => Ok(()),
    }
}

async fn continue_100(stream: &mut TcpStream) -> Result<(), Closed> {
    stream
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .await
        .map_err(|_| Closed)
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

#[allow(clippy::large_enum_variant)]
enum Head {
    Complete {
        req: Req,
        framing: Framing,
        expect_continue: bool,
        keep_alive: bool,
    },
    Partial,
    Refused(StatusCode, &'static str),
}

/// Reads a request head from the start of `buf`; a complete one is taken out
/// of it (its header values keep pointing into it, uncopied).
fn parse_head(buf: &mut BytesMut) -> Head {
    // Uninitialised: zeroing 96 slots costs more than parsing a small head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let too_large = || {
        Head::Refused(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )
    };
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request headers",
            )
        }
        Err(_) => return Head::Refused(StatusCode::BAD_REQUEST, "malformed request head"),
    };
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Head::Refused(StatusCode::BAD_REQUEST, "malformed request head");
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Refused(StatusCode::BAD_REQUEST, "malformed method");
    };
    let path = offsets(buf, path.as_bytes());
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Names now, values once the head is split off (to share its bytes).
    let mut fields = Vec::with_capacity(parsed.headers.len());
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None;
    let mut expect_continue = false;
    // An HTTP/1.0 connection is closed after its answer, keep-alive or not:
    // an answer of unknown length (a stream) could not be framed for it.
    let mut connection_close = minor == 0;
    for h in parsed.headers.iter() {
        let Some(name) = header_name(h.name.as_bytes()) else {
            return Head::Refused(StatusCode::BAD_REQUEST, "malformed header");
        };
        if name == hyper::header::CONTENT_LENGTH {
            // "5" or "5, 5": every value must be the same number.
            for part in h.value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                let n = match parse_decimal(part) {
                    Some(n) => n,
                    None => {
                        return Head::Refused(StatusCode::BAD_REQUEST, "malformed content-length")
                    }
                };
                if length.is_some_and(|l| l != n) {
                    return Head::Refused(StatusCode::BAD_REQUEST, "conflicting content-length");
                }
                length = Some(n);
            }
        } else if name == hyper::header::TRANSFER_ENCODING {
            // Only "chunked", once, as the last coding, is understood.
            let only_chunked = transfer_encoding.is_none()
                && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            transfer_encoding = Some(only_chunked);
        } else if name == hyper::header::EXPECT {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Head::Refused(StatusCode::EXPECTATION_FAILED, "unsupported expectation");
            }
            expect_continue = minor == 1;
        } else if name == hyper::header::CONNECTION {
            connection_close |= h
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        fields.push((name, offsets(buf, h.value)));
    }
    let framing = match (transfer_encoding, length) {
        (Some(_), Some(_)) => {
            return Head::Refused(
                StatusCode::BAD_REQUEST,
                "both transfer-encoding and content-length",
            )
        }
        (Some(true), None) if minor == 1 => Framing::Chunked,
        (Some(_), None) => {
            return Head::Refused(StatusCode::BAD_REQUEST, "unsupported transfer-encoding")
        }
        (None, length) => Framing::Length(length.unwrap_or(0)),
    };
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        return Head::Refused(StatusCode::BAD_REQUEST, "malformed request target");
    };
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(value)) else {
            return Head::Refused(StatusCode::BAD_REQUEST, "malformed header");
        };
        headers.append(name, value);
    }
    let mut req = Request::new(Ok(Bytes::new()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Head::Complete {
        req,
        framing,
        expect_continue,
        keep_alive: !connection_close,
    }
}

/// Where `part` (a slice of `buf`) lies in it.
fn offsets(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// A header's name; the MCP ones without an allocation.
fn header_name(name: &[u8]) -> Option<HeaderName> {
    static KNOWN: [HeaderName; 5] = [
        HeaderName::from_static("mcp-session-id"),
        HeaderName::from_static("mcp-protocol-version"),
        HeaderName::from_static("mcp-method"),
        HeaderName::from_static("mcp-name"),
        HeaderName::from_static("last-event-id"),
    ];
    if let Some(known) = KNOWN
        .iter()
        .find(|k| name.eq_ignore_ascii_case(k.as_str().as_bytes()))
    {
        return Some(known.clone());
    }
    HeaderName::from_bytes(name).ok()
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[derive(Debug, PartialEq, Eq)]
enum ChunkError {
    TooLarge,
    Malformed,
}

/// A chunked body, decoded as its bytes arrive.
struct Chunked {
    max: usize,
    body: Vec<u8>,
    state: ChunkState,
}

#[derive(Debug, Clone, Copy)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailers(usize),
}

/// The longest chunk-size line (with extensions) and the most trailer bytes.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    fn new(max: usize) -> Chunked {
        Chunked {
            max,
            body: Vec::new(),
            state: ChunkState::Size,
        }
    }

    /// The bytes of the body so far and of the chunk being read.
    fn announced(&self) -> usize {
        match self.state {
            ChunkState::Data(left) => self.body.len() + left,
            _ => self.body.len(),
        }
    }

    /// Consumes what `buf` holds: the whole body once its end is there.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, ChunkError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = find_crlf(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(ChunkError::Malformed)
                        } else {
                            Ok(None)
                        };
                    };
                    let line = &buf[..end];
                    let size = line.split(|&b| b == b';').next().unwrap_or(b"");
                    let size = size.trim_ascii_end();
                    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(ChunkError::Malformed);
                    }
                    let size = usize::from_str_radix(
                        std::str::from_utf8(size).map_err(|_| ChunkError::Malformed)?,
                        16,
                    )
                    .map_err(|_| ChunkError::Malformed)?;
                    buf.advance(end + 2);
                    if size == 0 {
                        self.state = ChunkState::Trailers(0);
                    } else if self.body.len().saturating_add(size) > self.max {
                        return Err(ChunkError::TooLarge);
                    } else {
                        self.body.reserve(size);
                        self.state = ChunkState::Data(size);
                    }
                }
                ChunkState::Data(left) => {
                    let take = left.min(buf.len());
                    self.body.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    if take < left {
                        self.state = ChunkState::Data(left - take);
                        return Ok(None);
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let Some(end) = find_crlf(buf) else {
                        return if seen + buf.len() > MAX_CHUNK_LINE {
                            Err(ChunkError::Malformed)
                        } else {
                            Ok(None)
                        };
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        return Ok(Some(std::mem::take(&mut self.body)));
                    }
                    self.state = ChunkState::Trailers(seen + end + 2);
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Writes a response. `Ok(false)`: the body ended the connection (it had no
/// known length and the client speaks HTTP/1.0) or the client went away
/// while it streamed. Bytes the client sends while a body streams are kept
/// in `buf` for the next request.
async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    head_only: bool,
    keep_alive: bool,
    buf: &mut BytesMut,
) -> std::io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let known = body.size_hint().exact();
    let mut out = Vec::with_capacity(256 + known.unwrap_or(0) as usize);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == hyper::header::CONTENT_LENGTH
            || name == hyper::header::TRANSFER_ENCODING
            || name == hyper::header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if let Some(len) = known {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        if !head_only {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
        }
        stream.write_all(&out).await?;
        return Ok(true);
    }
    if head_only {
        out.extend_from_slice(b"\r\n");
        stream.write_all(&out).await?;
        return Ok(true);
    }
    // A body of unknown length: chunked, or until close for HTTP/1.0 (which
    // never keeps the connection: `keep_alive` is false for it).
    let chunked = keep_alive;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await?;
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // Notice a client that goes away while the stream is idle.
            read = stream.read_buf(buf), if buf.len() < MAX_HEAD => match read {
                Ok(0) | Err(_) => return Ok(false),
                Ok(_) => continue,
            },
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        out.clear();
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        stream.write_all(&out).await?;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Closes the sending side, then reads and drops at most `max` bytes of
/// what the client still sends (for a moment at most), then closes.
async fn drain_and_close(mut stream: TcpStream, max: usize) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut left = max;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match stream.read(&mut sink[..left.min(8192)]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n,
            }
        }
    })
    .await;
}

/// Closes the sending side, then reads and drops what the client still
/// sends (for a moment), so that it reads the answer rather than a reset.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
