//! The page, its script and its style sheet, embedded in the binary (no
//! build step, nothing fetched at run time), with the security headers.

use crate::Response;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// No inline script or style, nothing from elsewhere, no framing.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn asset(method: &str, path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/assets/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/assets/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    if method != "GET" && method != "HEAD" {
        return Some(crate::api::json_response(
            405,
            &serde_json::json!({"error": {"code": "method_not_allowed", "message": "method not allowed (use GET)"}}),
        ));
    }
    Some(Response {
        status: 200,
        content_type,
        headers: vec![
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-cache"),
        ],
        body: if method == "HEAD" {
            Vec::new()
        } else {
            body.as_bytes().to_vec()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_and_strict_headers() {
        let page = asset("GET", "/").unwrap();
        let html = String::from_utf8(page.body).unwrap();
        assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert_eq!(
            html.matches("<script").count(),
            1,
            "one script, from a file"
        );
        assert!(!html.contains("style="), "no inline style");
        for handler in [
            "onclick=",
            "onload=",
            "onsubmit=",
            "onchange=",
            "javascript:",
        ] {
            assert!(!html.contains(handler), "no inline handler: {handler}");
        }
        let header = |name: &str| {
            page.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
        };
        assert!(header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'"));
        assert_eq!(header("x-frame-options"), Some("DENY"));
        assert_eq!(header("x-content-type-options"), Some("nosniff"));
        assert_eq!(header("referrer-policy"), Some("no-referrer"));
        assert!(asset("GET", "/assets/other.js").is_none());
        assert_eq!(asset("POST", "/").unwrap().status, 405);
    }
}
