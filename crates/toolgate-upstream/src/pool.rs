//! The HTTP/1.1 client of the HTTP transports. `http://` servers are spoken
//! to inline by the requesting task (`raw`); `https://` ones through hyper's
//! connection API over rustls. Each keeps a small pool of kept-alive
//! connections per origin.
//!
//! A connection goes back to the pool only once its response body has been
//! read to the end, so a pooled connection is idle; one whose body was
//! dropped half-read (or a long SSE stream) is never shared. A request that
//! finds a pooled connection closed by the server is sent again on a fresh
//! one (only when it was not sent at all).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::ThreadId;

use crate::raw;

/// The most idle connections kept per client and thread.
const MAX_IDLE: usize = 64;

/// Idle kept-alive connections, newest last, each with where it leads and
/// the thread that used it last. A connection is taken again only on its
/// thread: its socket is driven by that thread's runtime, so a request on
/// another thread would wait for wake-ups across threads (`toolgate serve
/// --workers N` serves each client connection on one thread).
pub(crate) struct IdlePool<K, C>(Mutex<Vec<(K, ThreadId, C)>>);

impl<K: PartialEq, C> IdlePool<K, C> {
    pub(crate) fn new() -> IdlePool<K, C> {
        IdlePool(Mutex::new(Vec::new()))
    }

    /// The newest idle connection to `key` kept by this thread that `usable`
    /// accepts; the ones it refuses on the way are dropped.
    pub(crate) fn take(&self, key: &K, usable: impl Fn(&C) -> bool) -> Option<C> {
        let me = std::thread::current().id();
        let mut idle = self.0.lock().expect("pool lock");
        while let Some(at) = idle.iter().rposition(|(k, t, _)| *t == me && k == key) {
            let (_, _, conn) = idle.swap_remove(at);
            if usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for another request on this thread, unless `MAX_IDLE`
    /// are kept for it already.
    pub(crate) fn put(&self, key: K, conn: C) {
        let me = std::thread::current().id();
        let mut idle = self.0.lock().expect("pool lock");
        if idle.iter().filter(|(_, t, _)| *t == me).count() < MAX_IDLE {
            idle.push((key, me, conn));
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;
type Origin = (Scheme, Authority);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// No connection could be made (refused, DNS, TLS handshake, bad URL).
    Connect(BoxError),
    /// The connection failed during the exchange.
    Exchange(BoxError),
}

impl ClientError {
    /// Whether the server could not be reached at all.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Exchange(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) => e.source(),
            ClientError::Exchange(e) => e.source(),
        }
    }
}

/// An HTTP/1.1 client (http and https) with a pool of idle connections;
/// clones share the pool.
#[derive(Clone)]
pub(crate) struct HttpClient {
    connector: HttpsConnector<HttpConnector>,
    idle: Arc<IdlePool<Origin, Sender>>,
    raw: raw::Idle,
}

impl HttpClient {
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>) -> HttpClient {
        HttpClient {
            connector,
            idle: Arc::new(IdlePool::new()),
            raw: Arc::new(IdlePool::new()),
        }
    }

    /// Sends `req` (its URI absolute) and returns the response head; the
    /// body is read from the returned response.
    pub(crate) async fn request(
        &self,
        req: Request<Bytes>,
    ) -> Result<Response<PooledBody>, ClientError> {
        let origin = origin_of(req.uri())?;
        if origin.0 == Scheme::HTTP {
            return match raw::request(&self.raw, &origin.1, req).await {
                Ok(response) => Ok(response.map(|body| PooledBody(Kind::Raw(body)))),
                Err(raw::RawError::Connect(e)) => Err(ClientError::Connect(Box::new(e))),
                Err(raw::RawError::Exchange(e)) => Err(ClientError::Exchange(Box::new(e))),
            };
        }
        let mut req = req.map(Full::new);
        // On the wire the request line carries the path only.
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| ClientError::Connect(Box::new(e)))?;
        let full_uri = std::mem::replace(req.uri_mut(), path);
        if !req.headers().contains_key(hyper::header::HOST) {
            // Never the userinfo of a `user:pass@host` URL.
            let host = origin.1.as_str().rsplit('@').next().unwrap_or_default();
            if let Ok(host) = hyper::header::HeaderValue::from_str(host) {
                req.headers_mut().insert(hyper::header::HOST, host);
            }
        }
        loop {
            let pooled = self.idle.take(&origin, |_| true);
            let (mut sender, reused) = match pooled {
                Some(sender) => (sender, true),
                None => (self.connect(&full_uri).await?, false),
            };
            if reused && sender.ready().await.is_err() {
                // Closed while idle: try the next one (or a new one).
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let (parts, inner) = response.into_parts();
                    let body = PooledBody(Kind::Hyper(Hyper {
                        inner,
                        sender: Some((origin, sender)),
                        idle: self.idle.clone(),
                    }));
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never sent on a connection the server had closed:
                    // send it again on another one.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(ClientError::Exchange(Box::new(failed.into_error()))),
                },
            }
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<Sender, ClientError> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        let io = connector
            .call(uri.clone())
            .await
            .map_err(ClientError::Connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| ClientError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

fn origin_of(uri: &Uri) -> Result<Origin, ClientError> {
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok((scheme.clone(), authority.clone())),
        _ => Err(ClientError::Connect(
            format!("{uri} is not an absolute URL").into(),
        )),
    }
}

/// A response body that gives its connection back to the pool once it has
/// been read to the end.
pub(crate) struct PooledBody(Kind);

enum Kind {
    Hyper(Hyper),
    Raw(raw::RawBody),
}

struct Hyper {
    inner: Incoming,
    sender: Option<(Origin, Sender)>,
    idle: Arc<IdlePool<Origin, Sender>>,
}

impl Hyper {
    fn release(&mut self) {
        if let Some((origin, sender)) = self.sender.take() {
            self.idle.put(origin, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Raw(body) => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BoxError::from))),
            Kind::Hyper(h) => {
                let polled = Pin::new(&mut h.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => h.release(),
                    Poll::Ready(Some(Err(_))) => h.sender = None,
                    _ => {}
                }
                polled.map(|frame| frame.map(|f| f.map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Raw(body) => body.is_end_stream(),
            Kind::Hyper(h) => h.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Raw(body) => body.size_hint(),
            Kind::Hyper(h) => h.inner.size_hint(),
        }
    }
}

impl Drop for Hyper {
    fn drop(&mut self) {
        // An empty body that was never polled is finished too.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    /// `ok` in two chunks, with a chunk extension and a trailer.
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;x=y\r\no\r\n1\r\nk\r\n0\r\nx-trailer: 1\r\n\r\n";

    /// A minimal HTTP/1.1 server: answers every request with `reply`, counts
    /// the connections it accepted, and closes each connection after
    /// `per_conn` answers.
    async fn server_with(per_conn: usize, reply: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let (url, accepted, _) = recording_server(per_conn, reply).await;
        (url, accepted)
    }

    /// `gets` GETs from one client of a [`server_with`] `per_conn` and
    /// `reply`, each read as `body`; then how many connections it accepted.
    async fn connections_for(
        per_conn: usize,
        reply: &'static [u8],
        gets: usize,
        body: &str,
    ) -> usize {
        let (url, accepted) = server_with(per_conn, reply).await;
        let client = client();
        for _ in 0..gets {
            assert_eq!(get(&client, &url).await, body);
        }
        accepted.load(Ordering::SeqCst)
    }

    type Heads = Arc<Mutex<Vec<String>>>;

    /// [`server_with`], which also keeps the head of every request it read.
    async fn recording_server(
        per_conn: usize,
        reply: &'static [u8],
    ) -> (String, Arc<AtomicUsize>, Heads) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Heads::default();
        let (count, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        // Read one request head (these requests have empty bodies).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let head = buf.drain(..end).collect::<Vec<u8>>();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted, heads)
    }

    fn client() -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        HttpClient::new(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        )
    }

    async fn get(client: &HttpClient, url: &str) -> String {
        let req = Request::get(url).body(Bytes::new()).unwrap();
        let response = client.request(req).await.expect("a response");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[test]
    fn an_idle_connection_is_taken_again_only_on_its_thread() {
        let pool = Arc::new(IdlePool::<&str, u32>::new());
        pool.put("a", 1);
        let other = pool.clone();
        let elsewhere = std::thread::spawn(move || {
            let seen = other.take(&"a", |_| true);
            other.put("a", 2);
            seen
        })
        .join()
        .unwrap();
        assert_eq!(
            elsewhere, None,
            "another thread took this thread's connection"
        );
        assert_eq!(pool.take(&"a", |_| true), Some(1));
        assert_eq!(
            pool.take(&"a", |_| true),
            None,
            "took the other thread's connection"
        );
        assert_eq!(pool.take(&"b", |_| true), None);
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_was_read() {
        let accepted = connections_for(usize::MAX, OK, 10, "ok").await;
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let accepted = connections_for(1, OK, 5, "ok").await;
        assert_eq!(accepted, 5);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_does_not_share_its_connection() {
        let (url, accepted) = server_with(usize::MAX, CHUNKED).await;
        let client = client();
        let req = Request::get(&url).body(Bytes::new()).unwrap();
        let unread = client.request(req).await.expect("a response");
        // Its body is still unread: a second request needs a connection of its own.
        assert_eq!(get(&client, &url).await, "ok");
        drop(unread);
        assert_eq!(get(&client, &url).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_host_header_leaves_out_a_urls_userinfo() {
        let (url, _, heads) = recording_server(1, OK).await;
        let authority = url
            .strip_prefix("http://")
            .and_then(|u| u.strip_suffix("/mcp"))
            .unwrap()
            .to_string();
        let client = client();
        let with_userinfo = url.replace("http://", "http://user:secret@");
        assert_eq!(get(&client, &with_userinfo).await, "ok");
        let head = heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(head.starts_with("get /mcp http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nhost: {authority}\r\n")),
            "{head}"
        );
        assert!(!head.contains("secret"), "{head}");
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_and_its_connection_reused() {
        let accepted = connections_for(usize::MAX, CHUNKED, 5, "ok").await;
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn a_body_without_length_ends_with_the_connection() {
        let accepted = connections_for(
            1,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1\n\n",
            3,
            "data: 1\n\n",
        )
        .await;
        assert_eq!(accepted, 3);
    }

    #[tokio::test]
    async fn an_interim_answer_is_skipped() {
        let accepted = connections_for(
            usize::MAX,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            2,
            "ok",
        )
        .await;
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn a_connection_that_asks_to_close_is_not_reused() {
        let accepted = connections_for(
            usize::MAX,
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            2,
            "ok",
        )
        .await;
        assert_eq!(accepted, 2);
    }

    #[tokio::test]
    async fn a_malformed_answer_is_an_error() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            b"not http at all\r\n\r\n",
        ] {
            let (url, _) = server_with(1, reply).await;
            let client = client();
            let req = Request::get(&url).body(Bytes::new()).unwrap();
            let failed = match client.request(req).await {
                Err(e) => e.to_string(),
                Ok(response) => match response.into_body().collect().await {
                    Err(e) => e.to_string(),
                    Ok(body) => panic!("read {:?} from a malformed answer", body.to_bytes()),
                },
            };
            assert!(!failed.is_empty());
        }
    }
}
