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
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(&mut BytesMut::from(text))
    }

    fn refused(text: &str) -> StatusCode {
        match head(text) {
            Head::Refused(status, _) => status,
            Head::Complete { .. } => panic!("accepted: {text:?}"),
            Head::Partial => panic!("partial: {text:?}"),
        }
    }

    #[test]
    fn reads_a_head_and_its_framing() {
        const POST: &str =
            "POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nMcp-Session-Id: s\r\n\r\nhello";
        let mut buf = BytesMut::from(POST);
        let Head::Complete {
            req,
            framing,
            expect_continue,
            keep_alive,
        } = parse_head(&mut buf)
        else {
            panic!("not complete")
        };
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/mcp");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.headers()["mcp-session-id"], "s");
        assert_eq!(&buf[..], b"hello", "the head is taken out, the body left");
        assert_eq!(framing, Framing::Length(5));
        assert!(!expect_continue);
        assert!(keep_alive);
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost: a\r\n"),
            Head::Partial
        ));
        let Head::Complete { keep_alive, .. } = head("GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!keep_alive, "HTTP/1.0 closes");
        let Head::Complete { keep_alive, .. } =
            head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        else {
            panic!()
        };
        assert!(
            !keep_alive,
            "HTTP/1.0 closes, even when asked to keep alive"
        );
        let Head::Complete { keep_alive, .. } = head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!keep_alive);
        let Head::Complete {
            framing,
            expect_continue,
            ..
        } = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(framing, Framing::Chunked);
        assert!(expect_continue);
    }

    #[test]
    fn refuses_framing_that_reads_two_ways() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            bad
        );
        assert_eq!(refused("POST / HTTP/1.1\r\nBad Header: x\r\n\r\n"), bad);
        assert_eq!(refused("POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), bad);
        assert_eq!(
            refused("POST / HTTP/1.1\r\nExpect: something\r\n\r\n"),
            StatusCode::EXPECTATION_FAILED
        );
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(refused(&many), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_bodies_in_flight_and_wakes_a_waiter() {
        let budget = BodyBudget::new(100);
        let mut a = Held::none(&budget);
        assert!(a.grow_to(60).await);
        assert!(a.grow_to(80).await, "grows by the difference");
        assert_eq!(budget.used(), 80);
        let mut b = Held::none(&budget);
        assert!(!b.grow_to(30).await, "no room within the wait");
        assert!(!Held::none(&budget).grow_to(101).await, "never fits");
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move {
                let mut c = Held::none(&budget);
                let fitted = c.grow_to(50).await;
                (fitted, c)
            }
        });
        tokio::time::sleep(BUDGET_WAIT / 2).await;
        drop(a);
        let (fitted, c) = waiter.await.unwrap();
        assert!(fitted, "woken when room was given back");
        assert_eq!(budget.used(), 50);
        // A counted body gives its share back when the last copy goes.
        let body = counted(vec![1; 50], c);
        let copy = body.clone();
        drop(body);
        assert_eq!(budget.used(), 50);
        drop(copy);
        assert_eq!(budget.used(), 0);
    }

    #[allow(clippy::result_large_err)]
    fn token_check(req: &Req) -> Result<(), Response<Body>> {
        if req.headers().contains_key("authorization") {
            Ok(())
        } else {
            Err(crate::http::text(StatusCode::UNAUTHORIZED, "no"))
        }
    }

    /// Serves one connection with a token check on the head, and returns
    /// what it answered and how much of the body it read.
    async fn serve_one(request: Vec<u8>, body_bytes: usize) -> (String, usize) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget = BodyBudget::new(64 << 20);
        let limits = Limits {
            request_read: Duration::from_secs(5),
            max_body: 16 << 20,
            budget: budget.clone(),
        };
        let read = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn({
            let read = read.clone();
            async move {
                let (stream, _) = listener.accept().await.unwrap();
                let (_stop, stopped) = watch::channel(false);
                connection(stream, limits, stopped, token_check, |req: Req, ()| {
                    let read = read.clone();
                    async move {
                        read.store(req.body().as_ref().map_or(0, |b| b.len()), Ordering::SeqCst);
                        crate::http::text(StatusCode::OK, "yes")
                    }
                })
                .await;
            }
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&request).await.unwrap();
        // Trickle the body while reading the answer.
        let mut answer = Vec::new();
        let mut sent = 0;
        let mut piece = [0u8; 1024];
        loop {
            tokio::select! {
                n = client.read(&mut piece) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&piece[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(1)), if sent < body_bytes => {
                    let n = (body_bytes - sent).min(4096);
                    if client.write_all(&vec![b'x'; n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && sent >= body_bytes {
                break;
            }
        }
        drop(client);
        let _ = server.await;
        assert_eq!(budget.used(), 0, "every body's share given back");
        (
            String::from_utf8_lossy(&answer).into_owned(),
            read.load(Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn a_refused_head_is_answered_before_its_body_is_read() {
        let head = b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 16000000\r\n\r\n".to_vec();
        let (answer, read) = serve_one(head, 256 << 10).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert_eq!(read, 0);
        // Admitted: a large body is read whole, from its own allocation.
        let head = b"POST /mcp HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n".to_vec();
        let (answer, read) = serve_one(head, 200_000).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(read, 200_000);
    }

    fn dechunk(pieces: &[&[u8]], max: usize) -> Result<Option<Vec<u8>>, ChunkError> {
        let mut chunked = Chunked::new(max);
        let mut buf = BytesMut::new();
        let mut last = Ok(None);
        for piece in pieces {
            buf.extend_from_slice(piece);
            last = chunked.step(&mut buf);
            if !matches!(last, Ok(None)) {
                return last;
            }
        }
        last
    }

    #[test]
    fn decodes_chunked_bodies_in_any_pieces() {
        let whole: &[u8] = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(dechunk(&[whole], 100), Ok(Some(b"hello world".to_vec())));
        // Byte by byte, the same.
        let pieces: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(dechunk(&pieces, 100), Ok(Some(b"hello world".to_vec())));
        assert_eq!(dechunk(&[b"5\r\nhel"], 100), Ok(None));
        assert_eq!(dechunk(&[b"5\r\nhelloXX"], 100), Err(ChunkError::Malformed));
        assert_eq!(dechunk(&[b"zz\r\n"], 100), Err(ChunkError::Malformed));
        assert_eq!(dechunk(&[b"-1\r\n"], 100), Err(ChunkError::Malformed));
        assert_eq!(dechunk(&[b"\r\n"], 100), Err(ChunkError::Malformed));
        assert_eq!(
            dechunk(&[b"ffffffffffffffffff\r\n"], 100),
            Err(ChunkError::Malformed)
        );
        assert_eq!(dechunk(&[b"65\r\n"], 100), Err(ChunkError::TooLarge));
        assert_eq!(
            dechunk(&[b"40\r\n", &[b'a'; 64], b"\r\n40\r\n"], 100),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            dechunk(&[&[b'1'; MAX_CHUNK_LINE + 1]], 100),
            Err(ChunkError::Malformed)
        );
    }
}

/// Differential fuzzing of the request reader (bounded, seeded, in `cargo
/// test`): random and adversarial heads against httparse and a reference
/// reading of the framing headers, and chunked bodies against a small
/// reference decoder, each fed whole and split at every byte. The reader
/// must agree with the reference or refuse; it must never read a message a
/// different way.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    fn runner(cases: u32) -> TestRunner {
        TestRunner::new_with_rng(
            Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &[13; 32]),
        )
    }

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
            (false, None) if codings == ["chunked"] && req.version == Some(1) => {
                Some(Framing::Chunked)
            }
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
                        let (want, want_used) = reference.clone().unwrap_or_else(|| {
                            panic!("read what the reference refuses: {input:?}")
                        });
                        prop_assert_eq!(&body, &want, "another body: {:?}", input);
                        prop_assert_eq!(used, want_used, "another end: {:?}", input);
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}
