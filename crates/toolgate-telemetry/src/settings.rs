//! Where spans go: the OTLP settings, and how the standard
//! `OTEL_EXPORTER_OTLP_*` environment variables give them. The environment
//! comes in as a function, so tests never touch the real one.

use std::fmt;

/// The default `service.name` of the gateway's spans.
pub const DEFAULT_SERVICE_NAME: &str = "toolgate";

/// The OTLP encodings the exporter speaks (both over HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: the OTLP default.
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

impl Protocol {
    /// `http/protobuf` or `http/json`; anything else is an error that says
    /// what is accepted.
    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text.trim() {
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            "grpc" => {
                Err("OTLP over gRPC is not supported (use http/protobuf or http/json)".into())
            }
            other => Err(format!(
                "unknown OTLP protocol {other:?} (expected http/protobuf or http/json)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "application/x-protobuf",
            Protocol::HttpJson => "application/json",
        }
    }
}

/// An `http://` or `https://` `host[:port]/path` URL, checked and split.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: the collector is reached over TLS and its certificate is
    /// checked against the system's trust store (or `SSL_CERT_FILE`).
    pub https: bool,
    /// `host:port` (port 80, or 443 for https, when the URL has none).
    pub authority: String,
    /// The `Host` header: the host and port as the URL wrote them.
    pub host_header: String,
    /// The request target, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Reads an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let lower = url.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else {
            return Err(format!(
                "OTLP endpoint must start with http:// or https://, found {url:?}"
            ));
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("OTLP endpoint {url:?} contains whitespace"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(format!(
                "OTLP endpoint {url:?}: credentials in the URL are not supported (use headers)"
            ));
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("OTLP endpoint {url:?} has no host"));
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let path = path.split('#').next().unwrap_or("");
        Ok(HttpUrl {
            https,
            authority: if has_port {
                authority.to_string()
            } else {
                format!("{authority}:{}", if https { 443 } else { 80 })
            },
            host_header: authority.to_string(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.host_header, self.path)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `<base>/v1/traces`: a base endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, the
/// flag, the config) names the collector, not the traces path.
pub fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Everything the exporter needs.
#[derive(Clone)]
pub struct OtlpSettings {
    /// The full URL spans are POSTed to.
    pub url: HttpUrl,
    pub protocol: Protocol,
    /// Extra request headers (values may be credentials: never shown).
    pub headers: Vec<(String, String)>,
    pub service_name: String,
}

impl fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("service_name", &self.service_name)
            .finish()
    }
}

/// What the environment says about traces; each field `None` when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromEnv {
    /// The traces URL, from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` added).
    pub url: Option<String>,
    pub protocol: Option<Protocol>,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
    /// (a name in both: the traces one).
    pub headers: Vec<(String, String)>,
    pub service_name: Option<String>,
}

/// Reads the standard variables. A variable set to an invalid value is an
/// error (fail closed: a typo must not silently turn traces off).
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<FromEnv, String> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let url = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _) => Some(url.trim().to_string()),
        (None, Some(base)) => Some(traces_url(base.trim())),
        (None, None) => None,
    };
    let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|p| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p))
        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)))
    {
        Some((var, text)) => Some(Protocol::parse(&text).map_err(|e| format!("{var}: {e}"))?),
        None => None,
    };
    let mut headers = Vec::new();
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(text) = get(var) {
            for (name, value) in parse_headers(&text).map_err(|e| format!("{var}: {e}"))? {
                headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(&name));
                headers.push((name, value));
            }
        }
    }
    Ok(FromEnv {
        url,
        protocol,
        headers,
        service_name: get("OTEL_SERVICE_NAME").map(|s| s.trim().to_string()),
    })
}

/// `name1=value1,name2=value2`, values percent-decoded (the OTLP exporter
/// rule for `OTEL_EXPORTER_OTLP_HEADERS`).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = item.split_once('=') else {
            return Err("expected name=value pairs separated by commas".into());
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("invalid header name {name:?}"));
        }
        let value = percent_decode(value.trim())
            .ok_or("a header value is not valid percent-encoded UTF-8")?;
        if value.contains(['\r', '\n', '\0']) {
            return Err(format!("the value of {name} contains a line break or NUL"));
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// A byte of an HTTP token (a header name).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn percent_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://collector:4318/v1/traces").unwrap();
        assert_eq!(
            (
                u.authority.as_str(),
                u.host_header.as_str(),
                u.path.as_str()
            ),
            ("collector:4318", "collector:4318", "/v1/traces")
        );
        let u = HttpUrl::parse("http://collector").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("collector:80", "/")
        );
        let u = HttpUrl::parse("http://[::1]:4318/x?y=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("[::1]:4318", "/x?y=1")
        );
        assert_eq!(
            HttpUrl::parse("http://[::1]/").unwrap().authority,
            "[::1]:80"
        );
        let u = HttpUrl::parse("https://collector/v1/traces").unwrap();
        assert_eq!(
            (u.https, u.authority.as_str(), u.to_string().as_str()),
            (true, "collector:443", "https://collector/v1/traces")
        );
        let u = HttpUrl::parse("HTTPS://c:4318").unwrap();
        assert_eq!((u.https, u.authority.as_str()), (true, "c:4318"));
        assert!(!HttpUrl::parse("http://c").unwrap().https);
        for (bad, why) in [
            ("grpc://c:4317", "must start with http://"),
            ("c:4318", "must start with http:// or https://"),
            ("http://", "has no host"),
            ("http://:4318/", "has no host"),
            ("http://u:p@c/", "credentials"),
            ("http://c /", "whitespace"),
        ] {
            let e = HttpUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
    }

    #[test]
    fn the_standard_variables() {
        assert_eq!(from_env(&env(&[])).unwrap(), FromEnv::default());
        let e = from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X=2"),
            ("OTEL_SERVICE_NAME", "gw-prod"),
        ]))
        .unwrap();
        assert_eq!(e.url.as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(e.protocol, Some(Protocol::HttpJson));
        assert_eq!(
            e.headers,
            [
                ("api-key".to_string(), "a b".to_string()),
                ("X".into(), "2".into())
            ]
        );
        assert_eq!(e.service_name.as_deref(), Some("gw-prod"));
        // The traces variables win over the general ones, and are used as is.
        let e = from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap();
        assert_eq!(e.url.as_deref(), Some("http://t:1/custom"));
        assert_eq!(e.protocol, Some(Protocol::HttpProtobuf));
    }

    #[test]
    fn invalid_variables_are_errors() {
        let e = from_env(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL: OTLP over gRPC is not supported"),
            "{e}"
        );
        let e = from_env(&env(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "json")])).unwrap_err();
        assert!(e.contains("unknown OTLP protocol \"json\""), "{e}");
        let e = from_env(&env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")])).unwrap_err();
        assert!(e.contains("name=value"), "{e}");
        let e = from_env(&env(&[("OTEL_EXPORTER_OTLP_HEADERS", "a b=1")])).unwrap_err();
        assert!(e.contains("invalid header name"), "{e}");
        let e = from_env(&env(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=%0d%0a")])).unwrap_err();
        assert!(e.contains("line break"), "{e}");
        let e = from_env(&env(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz")])).unwrap_err();
        assert!(e.contains("percent"), "{e}");
    }

    #[test]
    fn settings_never_show_header_values() {
        let s = OtlpSettings {
            url: HttpUrl::parse("http://c:4318/v1/traces").unwrap(),
            protocol: Protocol::HttpProtobuf,
            headers: vec![("authorization".into(), "Bearer s3cret".into())],
            service_name: "toolgate".into(),
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("authorization"),
            "{shown}"
        );
    }
}
