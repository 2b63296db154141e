//! The OTLP/HTTP exporter: a thread of its own behind a bounded queue.
//!
//! `send` never waits: a span that finds the queue full is dropped and
//! counted. The thread gathers spans into batches (up to [`MAX_BATCH`], or
//! what arrived within [`BATCH_DELAY`] of the first) and POSTs each batch
//! over a plain TCP connection. A collector that cannot be reached costs
//! the batch (counted) and a log line at most once a minute; for a second
//! after a failure, batches are dropped (and counted) without trying.

use crate::otlp::{encode_json, encode_protobuf, Source, Span};
use crate::settings::{OtlpSettings, Protocol};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spans waiting to be exported, at most.
pub const QUEUE: usize = 4096;
/// Spans in one request, at most.
pub const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for others.
pub const BATCH_DELAY: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one log line per this long about failed exports.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// After a failed export, batches are dropped (and counted) without trying
/// for this long, so an outage costs no CPU for encoding and connecting.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the exporter has done, for the metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans lost to failed requests (collector unreachable or refusing).
    pub failed: AtomicU64,
}

/// Where a log line goes (the gateway's stderr, at `warn`).
pub type Log = Box<dyn Fn(String) + Send>;

/// The sending side of the exporter; cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    tx: SyncSender<Span>,
    stats: Arc<ExportStats>,
}

impl Exporter {
    /// Starts the exporter thread.
    pub fn start(
        settings: OtlpSettings,
        service_version: &str,
        log: Log,
    ) -> std::io::Result<Exporter> {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let thread_stats = stats.clone();
        let source = Source {
            service_name: settings.service_name.clone(),
            service_version: service_version.to_string(),
        };
        std::thread::Builder::new()
            .name("toolgate-otlp".into())
            .spawn(move || run(rx, settings, source, thread_stats, log))?;
        Ok(Exporter { tx, stats })
    }

    /// Queues a span; never blocks. A full queue drops it (and counts it).
    pub fn send(&self, span: Span) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }
}

fn run(
    rx: Receiver<Span>,
    settings: OtlpSettings,
    source: Source,
    stats: Arc<ExportStats>,
    log: Log,
) {
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    let mut down_until: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let n = batch.len() as u64;
        if down_until.is_some_and(|t| Instant::now() < t) {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            unlogged += 1;
            continue;
        }
        let sent = connect(&settings).and_then(|stream| {
            let body = match settings.protocol {
                Protocol::HttpProtobuf => encode_protobuf(&source, &batch),
                Protocol::HttpJson => encode_json(&source, &batch),
            };
            post(stream, &settings, &body)
        });
        match sent {
            Ok(()) => {
                down_until = None;
                stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(why) => {
                down_until = Some(Instant::now() + RETRY_AFTER);
                stats.failed.fetch_add(n, Ordering::Relaxed);
                unlogged += 1;
                if last_log.map_or(true, |t| t.elapsed() >= LOG_EVERY) {
                    let more = if unlogged > 1 {
                        format!(" ({} failed exports since the last message)", unlogged)
                    } else {
                        String::new()
                    };
                    log(format!(
                        "cannot export {n} span(s) to {}: {why}; traces are dropped until the collector answers{more}",
                        settings.url
                    ));
                    last_log = Some(Instant::now());
                    unlogged = 0;
                }
            }
        }
    }
}

/// A connection to the collector; `Err` says why there is none.
fn connect(settings: &OtlpSettings) -> Result<TcpStream, String> {
    let url = &settings.url;
    let addrs: Vec<_> = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.authority))?
        .collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    stream.ok_or(last)
}

/// One POST on `stream`; `Err` says why it failed.
fn post(mut stream: TcpStream, settings: &OtlpSettings, body: &[u8]) -> Result<(), String> {
    let url = &settings.url;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nUser-Agent: toolgate/{}\r\nConnection: close\r\n",
        url.path,
        url.host_header,
        settings.protocol.content_type(),
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in &settings.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.flush())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut status = String::new();
    BufReader::new(std::io::Read::take(&stream, 1024))
        .read_line(&mut status)
        .map_err(|e| format!("no answer: {e}"))?;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", status.trim_end()))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("the collector answered {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{StatusCode, KIND_SERVER};
    use crate::settings::HttpUrl;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Mutex;

    fn span(n: u8) -> Span {
        Span {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: None,
            trace_state: None,
            name: format!("s{n}"),
            kind: KIND_SERVER,
            start_unix_ns: 1,
            end_unix_ns: 2,
            attributes: Vec::new(),
            status: StatusCode::Unset,
            status_message: None,
            flags: 1,
        }
    }

    fn settings(url: &str) -> OtlpSettings {
        OtlpSettings {
            url: HttpUrl::parse(url).unwrap(),
            protocol: Protocol::HttpJson,
            headers: vec![("x-key".into(), "k1".into())],
            service_name: "svc".into(),
        }
    }

    /// Waits for a condition the exporter thread brings about.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what}");
    }

    #[test]
    fn spans_reach_a_collector_with_the_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(String::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if buf.len() >= i + 4 + len {
                        *g.lock().unwrap() = text;
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        });
        let exporter = Exporter::start(settings(&url), "1", Box::new(|_| {})).unwrap();
        exporter.send(span(1));
        exporter.send(span(2));
        eventually("the export", || {
            exporter.stats().exported.load(Ordering::Relaxed) == 2
        });
        let request = got.lock().unwrap().clone();
        assert!(
            request.starts_with("POST /v1/traces HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nx-key: k1\r\n"), "{request}");
        assert!(
            request.contains("Content-Type: application/json"),
            "{request}"
        );
        assert!(request.contains(&"01".repeat(16)) && request.contains(&"02".repeat(16)));
    }

    #[test]
    fn an_unreachable_collector_is_logged_once_and_counted() {
        // A port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let exporter = Exporter::start(
            settings(&format!("http://127.0.0.1:{port}/v1/traces")),
            "1",
            Box::new(move |line| l.lock().unwrap().push(line)),
        )
        .unwrap();
        exporter.send(span(1));
        eventually("the first failure", || {
            exporter.stats().failed.load(Ordering::Relaxed) == 1
        });
        exporter.send(span(2));
        eventually("the second failure", || {
            exporter.stats().failed.load(Ordering::Relaxed) == 2
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("cannot export 1 span(s) to http://127.0.0.1:"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, rx) = sync_channel(1);
        let exporter = Exporter {
            tx,
            stats: Arc::default(),
        };
        exporter.send(span(1));
        exporter.send(span(2));
        exporter.send(span(3));
        assert_eq!(exporter.stats().dropped.load(Ordering::Relaxed), 2);
        assert_eq!(rx.try_recv().unwrap().name, "s1");
    }
}
