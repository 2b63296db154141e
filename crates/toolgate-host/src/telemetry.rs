//! Metrics and traces for `toolgate run` and `toolgate serve`: the OTLP
//! flags the user gave (`--otlp-endpoint`, `--otlp-protocol`), how they combine with the
//! config's `telemetry` section and the standard `OTEL_*` variables (a flag
//! overrides the config, which overrides the environment), and the wiring:
//! the audit sink's observer, and what `GET /metrics` renders.

use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use toolgate_audit::{LogLevel, RecordObserver};
use toolgate_config::{OtlpProtocol, TelemetryConfig};
use toolgate_telemetry::settings::{self, DEFAULT_SERVICE_NAME};
use toolgate_telemetry::{ExportStats, Exporter, HttpUrl, Live, Metrics, OtlpSettings, Protocol};

/// The OTLP flags as the user wrote them (`None`: not given).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryFlags {
    /// Export a trace span of every tool call over OTLP/HTTP to this
    /// collector, such as http://127.0.0.1:4318 or https://collector:4318
    /// (spans go to URL/v1/traces)
    /// [overrides telemetry.otlp.endpoint and OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// http/protobuf (the default) or http/json
    /// [overrides telemetry.otlp.protocol and OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
}

/// Where spans go, from the flags, the config's `telemetry` section and
/// `env` ([`crate::process_env`]); `None`: no traces.
pub fn otlp_settings(
    args: &TelemetryFlags,
    config: Option<&TelemetryConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<OtlpSettings>> {
    let from_env = settings::from_env(env).map_err(|e| anyhow::anyhow!(e))?;
    let otlp = config.and_then(|c| c.otlp.as_ref());
    let url = match (&args.otlp_endpoint, otlp, &from_env.url) {
        (Some(flag), _, _) => settings::traces_url(flag),
        (None, Some(otlp), _) => settings::traces_url(&otlp.endpoint),
        (None, None, Some(url)) => url.clone(),
        (None, None, None) => {
            if args.otlp_protocol.is_some() {
                bail!("--otlp-protocol needs a collector: add --otlp-endpoint URL (or telemetry.otlp to the config, or OTEL_EXPORTER_OTLP_ENDPOINT)");
            }
            return Ok(None);
        }
    };
    let url = HttpUrl::parse(&url).map_err(|e| anyhow::anyhow!(e))?;
    let protocol = match (&args.otlp_protocol, otlp, from_env.protocol) {
        (Some(flag), _, _) => {
            Protocol::parse(flag).map_err(|e| anyhow::anyhow!("--otlp-protocol: {e}"))?
        }
        (None, Some(otlp), _) => match otlp.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpProtobuf,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        },
        (None, None, Some(p)) => p,
        (None, None, None) => Protocol::HttpProtobuf,
    };
    let mut headers = from_env.headers;
    for (name, value) in otlp.map(|o| o.headers.as_slice()).unwrap_or_default() {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.expose().to_string()));
    }
    let service_name = config
        .and_then(|c| c.service_name.clone())
        .or(from_env.service_name)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    Ok(Some(OtlpSettings {
        url,
        protocol,
        headers,
        service_name,
    }))
}

/// What a gateway process keeps of its telemetry.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub spans: Option<Arc<ExportStats>>,
}

/// Starts the exporter (when `otlp` is given) and makes the observer the
/// audit sink feeds. `None` when neither metrics (an admin listener) nor
/// traces are asked for: then records cost nothing more than before.
pub fn start(
    metrics_on: bool,
    otlp: Option<OtlpSettings>,
    default_server: &str,
    log_level: LogLevel,
) -> Result<Option<(Telemetry, Box<dyn RecordObserver>)>> {
    if !metrics_on && otlp.is_none() {
        return Ok(None);
    }
    let exporter = match otlp {
        Some(settings) => {
            if log_level >= LogLevel::Info {
                eprintln!(
                    "toolgate: exporting traces to {} ({})",
                    settings.url,
                    settings.protocol.as_str()
                );
            }
            let log = move |line: String| {
                if log_level >= LogLevel::Warn {
                    eprintln!("toolgate: {line}");
                }
            };
            Some(
                Exporter::start(settings, env!("CARGO_PKG_VERSION"), Box::new(log))
                    .context("cannot start the trace exporter")?,
            )
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new(default_server));
    let telemetry = Telemetry {
        metrics: metrics.clone(),
        spans: exporter.as_ref().map(|e| e.stats().clone()),
    };
    let observer = toolgate_telemetry::Observer {
        metrics,
        exporter,
        ids: toolgate_telemetry::trace_context::Ids::new(),
    };
    Ok(Some((telemetry, Box::new(observer))))
}

/// Whether each upstream is up, asked at scrape time.
pub type Upstreams = Box<dyn Fn() -> Vec<(String, bool)> + Send + Sync>;

/// `GET /metrics`: the record-fed metrics with what is live now.
pub struct GatewayMetrics {
    pub telemetry: Telemetry,
    pub approvals: Arc<dyn toolgate_approvals::ApprovalStore>,
    pub upstreams: Upstreams,
    /// The audit trail, for the records it dropped.
    pub audit: toolgate_audit::AuditSink,
}

impl toolgate_admin::MetricsSource for GatewayMetrics {
    fn render(&self) -> String {
        let now = toolgate_clock::Clock::now_ms(&toolgate_clock::SystemClock);
        let approvals_pending = self
            .approvals
            .list(true, now)
            .ok()
            .map(|list| list.iter().filter(|r| !r.is_expired(now)).count() as u64);
        let spans = self.telemetry.spans.as_ref().map(|s| {
            (
                s.exported.load(Ordering::Relaxed),
                s.dropped.load(Ordering::Relaxed),
                s.failed.load(Ordering::Relaxed),
            )
        });
        self.telemetry.metrics.render(&Live {
            approvals_pending,
            upstreams: (self.upstreams)(),
            spans,
            audit_dropped: Some(self.audit.dropped()),
        })
    }
}

/// `toolgate run`'s one server: up while its process runs.
pub fn child_up(name: String, up: Arc<AtomicBool>) -> Upstreams {
    Box::new(move || vec![(name.clone(), up.load(Ordering::Relaxed))])
}

/// `toolgate serve`'s servers, once the gateway has started.
pub fn serve_upstreams(gateway: Arc<OnceLock<Weak<toolgate_serve::Gateway>>>) -> Upstreams {
    Box::new(move || {
        gateway
            .get()
            .and_then(Weak::upgrade)
            .map(|g| g.upstreams_up())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_config::{OtlpConfig, Secret};

    fn settings(
        flags: &[&str],
        config: Option<&TelemetryConfig>,
        vars: &[(&str, &str)],
    ) -> Result<Option<OtlpSettings>> {
        let mut args = TelemetryFlags::default();
        for pair in flags.chunks(2) {
            let value = Some(pair[1].to_string());
            match pair[0] {
                "--otlp-endpoint" => args.otlp_endpoint = value,
                "--otlp-protocol" => args.otlp_protocol = value,
                other => panic!("unknown flag {other}"),
            }
        }
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        otlp_settings(&args, config, &env)
    }

    fn config() -> TelemetryConfig {
        TelemetryConfig {
            service_name: Some("from-config".into()),
            otlp: Some(OtlpConfig {
                endpoint: "http://config:4318".into(),
                protocol: OtlpProtocol::HttpJson,
                headers: vec![("x-key".into(), Secret::new("config-key"))],
            }),
        }
    }

    #[test]
    fn nothing_configured_no_traces() {
        assert!(settings(&[], None, &[]).unwrap().is_none());
        assert!(settings(&[], Some(&TelemetryConfig::default()), &[])
            .unwrap()
            .is_none());
        let e = settings(&["--otlp-protocol", "http/json"], None, &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--otlp-protocol needs a collector"),
            "{e}"
        );
    }

    #[test]
    fn the_environment_alone() {
        let s = settings(
            &[],
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=env-key"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url.to_string(), "http://env:4318/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.headers, [("x-key".to_string(), "env-key".to_string())]);
        assert_eq!(s.service_name, "from-env");
        let s = settings(
            &[],
            None,
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.url.to_string(), s.service_name.as_str()),
            ("http://t:1/x".into(), "toolgate")
        );
    }

    #[test]
    fn flags_over_config_over_environment() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=env-key,x-other=1"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ];
        let s = settings(&[], Some(&config()), &env).unwrap().unwrap();
        assert_eq!(s.url.to_string(), "http://config:4318/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpJson);
        assert_eq!(
            s.headers,
            [
                ("x-other".to_string(), "1".to_string()),
                ("x-key".to_string(), "config-key".to_string())
            ]
        );
        assert_eq!(s.service_name, "from-config");
        let s = settings(
            &[
                "--otlp-endpoint",
                "http://flag:9/",
                "--otlp-protocol",
                "http/protobuf",
            ],
            Some(&config()),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url.to_string(), "http://flag:9/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
    }

    #[test]
    fn an_https_collector_is_accepted() {
        let s = settings(&["--otlp-endpoint", "https://collector.example"], None, &[])
            .unwrap()
            .unwrap();
        assert!(s.url.https);
        assert_eq!(s.url.to_string(), "https://collector.example/v1/traces");
        let env = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c:4318/t")];
        let s = settings(&[], None, &env).unwrap().unwrap();
        assert_eq!(s.url.to_string(), "https://c:4318/t");
    }

    #[test]
    fn bad_values_are_errors() {
        for (flags, vars, message) in [
            (
                &["--otlp-endpoint", "c:4318"][..],
                &[][..],
                "must start with http:// or https://",
            ),
            (
                &["--otlp-endpoint", "http://c", "--otlp-protocol", "grpc"],
                &[],
                "--otlp-protocol: OTLP over gRPC is not supported",
            ),
            (
                &[],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "proto"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL: unknown OTLP protocol",
            ),
        ] {
            let e = settings(flags, None, vars).unwrap_err().to_string();
            assert!(e.contains(message), "{flags:?}: {e}");
        }
    }
}
