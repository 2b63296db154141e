//! The OTLP/HTTP exporter: a thread of its own behind a bounded queue.
//!
//! `send` never waits: a span that finds the queue full is dropped and
//! counted. The thread gathers spans into batches (up to [`MAX_BATCH`], or
//! what arrived within [`BATCH_DELAY`] of the first) and POSTs each batch
//! with a blocking HTTP client (ureq; https through rustls with the ring
//! provider, checked against the system's trust store). A collector that
//! cannot be reached costs the batch (counted) and a log line at most once
//! a minute; for a second after a failure, batches are dropped (and
//! counted) without trying.

use crate::otlp::{encode_json, encode_protobuf, Source, Span};
use crate::settings::{OtlpSettings, Protocol};
use rustls::pki_types::CertificateDer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate_clock::monotonic_now;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::Agent;

/// Spans waiting to be exported, at most.
pub const QUEUE: usize = 4096;
/// Spans in one request, at most.
pub const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for others.
pub const BATCH_DELAY: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One request, from the connection to the end of the answer, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer that is read (then the connection can
/// be used again); what it says past the status is not needed.
const MAX_ANSWER: u64 = 64 * 1024;
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
    /// Starts the exporter thread. An `https://` collector is checked
    /// against the system's trust store (or the PEM bundle in
    /// `SSL_CERT_FILE` / the directory in `SSL_CERT_DIR`, when set); finding
    /// no certificate there is an error now rather than a failed export later.
    pub fn start(
        settings: OtlpSettings,
        service_version: &str,
        log: Log,
    ) -> std::io::Result<Exporter> {
        let roots = if settings.url.https {
            toolgate_tls::trust_roots("the https OTLP endpoint").map_err(std::io::Error::other)?
        } else {
            Vec::new()
        };
        Exporter::start_with_roots(settings, service_version, log, roots)
    }

    /// [`Exporter::start`] with the certificates an https collector is
    /// checked against passed in.
    fn start_with_roots(
        settings: OtlpSettings,
        service_version: &str,
        log: Log,
        roots: Vec<CertificateDer<'static>>,
    ) -> std::io::Result<Exporter> {
        let agent = agent(roots);
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let thread_stats = stats.clone();
        let source = Source {
            service_name: settings.service_name.clone(),
            service_version: service_version.to_string(),
        };
        std::thread::Builder::new()
            .name("toolgate-otlp".into())
            .spawn(move || run(rx, agent, settings, source, thread_stats, log))?;
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
    agent: Agent,
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
        let deadline = monotonic_now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            let left = deadline.saturating_duration_since(monotonic_now());
            match rx.recv_timeout(left) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let n = batch.len() as u64;
        if down_until.is_some_and(|t| monotonic_now() < t) {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            unlogged += 1;
            continue;
        }
        let body = match settings.protocol {
            Protocol::HttpProtobuf => encode_protobuf(&source, &batch),
            Protocol::HttpJson => encode_json(&source, &batch),
        };
        let sent = post(&agent, &settings, &body);
        match sent {
            Ok(()) => {
                down_until = None;
                stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(why) => {
                down_until = Some(monotonic_now() + RETRY_AFTER);
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
                    last_log = Some(monotonic_now());
                    unlogged = 0;
                }
            }
        }
    }
}

/// The client: no proxy (as before, and as the upstream client), no
/// redirects (a collector answers, it does not send elsewhere), every
/// status handed back to [`post`]; TLS by rustls with the ring provider.
fn agent(roots: Vec<CertificateDer<'static>>) -> Agent {
    let roots: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::from(roots))
        .build();
    Agent::config_builder()
        .tls_config(tls)
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(REQUEST_TIMEOUT))
        .user_agent(concat!("toolgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// One POST of `body` to the collector; `Err` says why it failed.
fn post(agent: &Agent, settings: &OtlpSettings, body: &[u8]) -> Result<(), String> {
    let mut request = agent
        .post(settings.url.to_string())
        .header("Content-Type", settings.protocol.content_type());
    for (name, value) in &settings.headers {
        request = request.header(name, value);
    }
    let mut answer = request.send(body).map_err(|e| toolgate_tls::describe(&e))?;
    let code = answer.status().as_u16();
    // Read what little the collector said, so the connection can be reused.
    let _ = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec();
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
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read, Write};
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
            toolgate_clock::sleep(Duration::from_millis(10));
        }
        panic!("{what}");
    }

    /// Reads one request from `s` (head and body), answers 200, and returns
    /// the request as text.
    fn answer_one(mut s: impl Read + Write) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(i) = text.find("\r\n\r\n") {
                // Header names are case-insensitive (the client sends them
                // in lower case).
                let len: usize = text[..i]
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    })
                    .unwrap()
                    .1
                    .trim()
                    .parse()
                    .unwrap();
                if buf.len() >= i + 4 + len {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                    s.flush().unwrap();
                    return text;
                }
            }
        }
    }

    /// The request head with header names in lower case, the body as is.
    fn lower_head(request: &str) -> String {
        let i = request.find("\r\n\r\n").unwrap();
        let head: Vec<String> = request[..i]
            .split("\r\n")
            .enumerate()
            .map(|(n, line)| match line.split_once(':') {
                Some((name, value)) if n > 0 => format!("{}:{value}", name.to_ascii_lowercase()),
                _ => line.to_string(),
            })
            .collect();
        format!("{}{}", head.join("\r\n"), &request[i..])
    }

    #[test]
    fn spans_reach_a_collector_with_the_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(String::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            *g.lock().unwrap() = answer_one(s);
        });
        let exporter = Exporter::start(settings(&url), "1", Box::new(|_| {})).unwrap();
        exporter.send(span(1));
        exporter.send(span(2));
        eventually("the export", || {
            exporter.stats().exported.load(Ordering::Relaxed) == 2
        });
        let request = lower_head(&got.lock().unwrap());
        assert_posted(&request, "application/json");
        assert!(request.contains(&"01".repeat(16)) && request.contains(&"02".repeat(16)));
    }

    /// `request` (its head lower-cased) is a POST of spans of `content_type`
    /// to /v1/traces with the configured header.
    fn assert_posted(request: &str, content_type: &str) {
        assert!(
            request.starts_with("POST /v1/traces HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nx-key: k1\r\n"), "{request}");
        assert!(
            request.contains(&format!("content-type: {content_type}")),
            "{request}"
        );
    }

    /// A TLS collector on loopback with a self-signed certificate for
    /// 127.0.0.1; returns its URL and that certificate.
    fn tls_collector(got: Arc<Mutex<Vec<String>>>) -> (String, CertificateDer<'static>) {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = key.cert.der().clone();
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/v1/traces", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let tls = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut stream = rustls::StreamOwned::new(tls, tcp);
                // A client that refuses the certificate ends the handshake:
                // nothing arrives then.
                if stream.conn.complete_io(&mut stream.sock).is_ok() {
                    got.lock().unwrap().push(answer_one(stream));
                }
            }
        });
        (url, cert)
    }

    #[test]
    fn spans_reach_an_https_collector() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (url, cert) = tls_collector(got.clone());
        let mut settings = settings(&url);
        settings.protocol = Protocol::HttpProtobuf;
        let exporter =
            Exporter::start_with_roots(settings, "1", Box::new(|_| {}), vec![cert]).unwrap();
        exporter.send(span(7));
        eventually("the export over https", || {
            exporter.stats().exported.load(Ordering::Relaxed) == 1
        });
        let requests = got.lock().unwrap();
        assert_eq!(requests.len(), 1);
        let request = lower_head(&requests[0]);
        assert_posted(&request, "application/x-protobuf");
        assert!(request.contains("s7"), "{request}");
    }

    #[test]
    fn an_https_collector_with_an_untrusted_certificate_gets_nothing() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (url, _cert) = tls_collector(got.clone());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        // Trusting no certificate at all: the collector's is not checked in.
        let exporter = Exporter::start_with_roots(
            settings(&url),
            "1",
            Box::new(move |line| l.lock().unwrap().push(line)),
            Vec::new(),
        )
        .unwrap();
        exporter.send(span(1));
        eventually("the failure", || {
            exporter.stats().failed.load(Ordering::Relaxed) == 1
        });
        assert_eq!(exporter.stats().exported.load(Ordering::Relaxed), 0);
        assert!(got.lock().unwrap().is_empty());
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("cannot export 1 span(s) to https://127.0.0.1:"),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].to_lowercase().contains("certificate"),
            "{}",
            lines[0]
        );
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
