//! The small grammars inside config values: durations, byte sizes, `${VAR}`
//! interpolation, names, origins and hosts. Each returns the value or the
//! message for a diagnostic; none knows where in the file the value was.

use std::time::Duration;

use toolgate_policy::duration;

/// The longest duration a config holds (a year), so arithmetic cannot overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(duration::MAX_SECONDS);

pub(crate) const DURATION_EXPECTED: &str =
    "a number with a unit ms, s, m, h or d, such as \"30s\", or a number of seconds";

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"` (a decimal number before the unit is fine).
pub(crate) fn duration_text(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {} (expected {DURATION_EXPECTED})",
            quote(text)
        )
    };
    let written = duration::parse(text).ok_or_else(invalid)?;
    duration_seconds(written.seconds())
        .map_err(|_| format!("duration {} is longer than a year", quote(text)))
}

/// A number of seconds (finite, not negative, at most a year).
pub(crate) fn duration_seconds(seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("a duration cannot be negative, found {seconds}"));
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "a duration can be at most a year ({} seconds), found {seconds}",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The largest `max_message_bytes`.
pub(crate) const MAX_MESSAGE_BYTES: u64 = 1 << 30;

pub(crate) const SIZE_EXPECTED: &str =
    "a number of bytes, or a number with a unit B, KiB, MiB, GiB, KB, MB or GB such as \"16MiB\"";

/// `"16MiB"`, `"512KiB"`, `"1000000"`, `"2MB"`.
pub(crate) fn byte_size_text(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {} (expected {SIZE_EXPECTED})", quote(text));
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start();
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("size {} is too large", quote(text)))
}

/// Replaces `${VAR}` with the variable's value from `env` and `$$` with `$`.
/// Every problem is reported: each variable that is not set (fail closed),
/// a `${` with no `}`, a bad variable name, a lone `$`.
pub(crate) fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(close) = tail.find('}') else {
                problems
                    .push("unterminated \"${\" (write \"$$\" for a literal dollar)".to_string());
                rest = "";
                break;
            };
            let name = &tail[..close];
            if !is_env_name(name) {
                problems.push(format!(
                    "invalid variable name {} in \"${{...}}\" (expected letters, digits and _, not starting with a digit)",
                    quote(name)
                ));
            } else {
                match env(name) {
                    Some(value) => out.push_str(&value),
                    None => problems.push(format!(
                        "environment variable {name} is not set (referenced as ${{{name}}})"
                    )),
                }
            }
            rest = &tail[close + 1..];
        } else {
            problems.push(
                "a lone \"$\" (write \"$$\" for a literal dollar, \"${NAME}\" for a variable)"
                    .to_string(),
            );
            rest = after;
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Server, grant and prefix names: `[A-Za-z0-9_-]{1,64}`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err(format!("{} must be 1 to 64 characters long", quote(name)));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(format!(
            "{} contains {c:?} (only letters, digits, _ and - are allowed)",
            quote(name)
        )),
        None => Ok(()),
    }
}

/// The separator: 1 to 8 characters valid in MCP tool names `[A-Za-z0-9_.-]`.
pub(crate) fn check_separator(separator: &str) -> Result<(), String> {
    if separator.is_empty() || separator.chars().count() > 8 {
        return Err(format!(
            "separator must be 1 to 8 characters long, found {}",
            quote(separator)
        ));
    }
    match separator
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(format!(
            "separator {} contains {c:?} (only letters, digits, _, . and - are valid in tool names)",
            quote(separator)
        )),
        None => Ok(()),
    }
}

/// The schemes a URL may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schemes {
    /// `http://` only (the webhook).
    Http,
    /// `http://` or `https://` (upstream servers).
    HttpOrHttps,
}

/// An http:// (or, where allowed, https://) URL with a host.
pub(crate) fn check_url(url: &str, schemes: Schemes) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = match (
        lower.strip_prefix("http://"),
        lower.strip_prefix("https://"),
    ) {
        (Some(rest), _) => rest,
        (None, Some(rest)) if schemes == Schemes::HttpOrHttps => rest,
        (None, Some(_)) => {
            return Err(format!(
                "url {}: https is not supported here yet (use http:// on a trusted network)",
                quote(url)
            ))
        }
        (None, None) if schemes == Schemes::HttpOrHttps => {
            return Err(format!(
                "url must start with http:// or https://, found {}",
                quote(url)
            ))
        }
        (None, None) => return Err(format!("url must start with http://, found {}", quote(url))),
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("url {} contains whitespace", quote(url)));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("url {} has no host", quote(url)));
    }
    Ok(())
}

/// An exact browser origin `scheme://host[:port]`, normalized to lower case
/// with a default port dropped (as browsers send it).
pub(crate) fn origin(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let (scheme, rest, default_port) = if let Some(rest) = lower.strip_prefix("http://") {
        ("http", rest, "80")
    } else if let Some(rest) = lower.strip_prefix("https://") {
        ("https", rest, "443")
    } else {
        return Err(format!(
            "an origin is scheme://host[:port] with scheme http or https, found {}",
            quote(text)
        ));
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "an origin is scheme://host[:port] with no path, found {}",
            quote(text)
        ));
    }
    let (host, port) = host_port(rest).map_err(|m| format!("origin {}: {m}", quote(text)))?;
    Ok(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A Host header value `host[:port]`, lower case.
pub(crate) fn host(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let (host, port) = host_port(&lower).map_err(|m| format!("host {}: {m}", quote(text)))?;
    Ok(match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// Splits `host[:port]` (the host may be a bracketed IPv6 literal).
fn host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if text.starts_with('[') {
        let close = text.find(']').ok_or("unclosed \"[\"")?;
        let (host, rest) = text.split_at(close + 1);
        match rest {
            "" => (host, None),
            _ => (
                host,
                Some(
                    rest.strip_prefix(':')
                        .ok_or("expected \":port\" after \"]\"")?,
                ),
            ),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".to_string());
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("a host holds only letters, digits, ., - and _".to_string());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(format!("invalid port {}", quote(port)));
        }
    }
    Ok((host, port))
}

/// An HTTP header name (an RFC 9110 token).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

pub(crate) fn quote(s: &str) -> String {
    toolgate_policy::document::quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| duration_text(s).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("2d"), Duration::from_secs(172_800));
        for bad in ["", "30", "s", "30 s", "-1s", "1.s", "3x", "1hour"] {
            assert!(duration_text(bad).is_err(), "{bad}");
        }
        assert_eq!(
            duration_text("400d").unwrap_err(),
            "duration \"400d\" is longer than a year"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(byte_size_text("16MiB"), Ok(16 << 20));
        assert_eq!(byte_size_text("512KiB"), Ok(512 << 10));
        assert_eq!(byte_size_text("2MB"), Ok(2_000_000));
        assert_eq!(byte_size_text("100"), Ok(100));
        assert!(byte_size_text("16 mb").is_err());
        assert!(byte_size_text("MiB").is_err());
    }

    #[test]
    fn interpolation() {
        let env = |name: &str| match name {
            "A" => Some("x".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let run = |s: &str| interpolate(s, &env);
        assert_eq!(run("Bearer ${A}"), Ok("Bearer x".to_string()));
        assert_eq!(run("${A}${A}-${EMPTY}."), Ok("xx-.".to_string()));
        assert_eq!(run("$$5 and $${A}"), Ok("$5 and ${A}".to_string()));
        assert_eq!(run("plain"), Ok("plain".to_string()));
        assert_eq!(
            run("${B} ${C}"),
            Err(vec![
                "environment variable B is not set (referenced as ${B})".to_string(),
                "environment variable C is not set (referenced as ${C})".to_string(),
            ])
        );
        assert!(run("${A").is_err());
        assert!(run("${1A}").is_err());
        assert!(run("${}").is_err());
        assert!(run("a$b").is_err());
        assert!(run("a$").is_err());
    }

    #[test]
    fn origins_and_hosts() {
        assert_eq!(
            origin("https://App.Example.com"),
            Ok("https://app.example.com".into())
        );
        assert_eq!(origin("https://a.com:443"), Ok("https://a.com".into()));
        assert_eq!(origin("http://a.com:8080"), Ok("http://a.com:8080".into()));
        assert_eq!(origin("http://[::1]:80"), Ok("http://[::1]".into()));
        for bad in [
            "*",
            "null",
            "https://a.com/",
            "https://",
            "ftp://a.com",
            "https://a.com:0",
            "https://a b",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
        assert_eq!(
            host("Gateway.internal:8080"),
            Ok("gateway.internal:8080".into())
        );
        assert!(host("a:b").is_err());
        assert!(host("").is_err());
    }

    #[test]
    fn urls_and_names() {
        use Schemes::{Http, HttpOrHttps};
        assert!(check_url("http://127.0.0.1:3001/mcp", Http).is_ok());
        assert!(check_url("HTTP://x", Http).is_ok());
        assert!(check_url("https://x", Http)
            .unwrap_err()
            .contains("not supported here yet"));
        assert!(check_url("https://mcp.example.com/mcp", HttpOrHttps).is_ok());
        assert!(check_url("HTTPS://x:8443", HttpOrHttps).is_ok());
        for bad in ["ftp://x", "http:///x", "https:///x", "https://:443/x", "x"] {
            assert!(check_url(bad, HttpOrHttps).is_err(), "{bad}");
        }
        assert!(check_name("a-b_C9").is_ok());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_name("a.b").is_err());
        assert!(check_separator("__").is_ok());
        assert!(check_separator(".").is_ok());
        assert!(check_separator("/").is_err());
        assert!(check_separator("123456789").is_err());
        assert!(is_header_name("Authorization"));
        assert!(!is_header_name("Bad Header"));
    }
}
