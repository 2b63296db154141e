//! The dashboard's JSON API (every route needs the admin token; the admin
//! API checks it before a request gets here):
//!
//! - `GET /api/info`: what hosts the dashboard;
//! - `GET /api/catalogue`: servers, tools, classification, rules in force
//!   and recommended rules;
//! - `GET /api/policies`: the editable policy files;
//! - `POST /api/policies/validate` `{path, text}`;
//! - `POST /api/policies/render` `{path, document}`;
//! - `POST /api/policies/save` `{path, text, base_sha256}`;
//! - `GET /api/audit?grant=&server=&tool=&decision=&after=&limit=`;
//! - `GET /api/counters`.

use crate::files::{self, check, diff_json, document_of, format_name, format_of, sha256_hex};
use crate::{Console, PolicyFile, Reload, Response, Scope, ServerStatus};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toolgate_audit_store::{AuditError, AuditStore, Filter};
use toolgate_policy::{Format, Policy};
use toolgate_scan::{classify, recommend_policy};

/// Records an audit query returns when no limit is given, and at most.
const DEFAULT_AUDIT_LIMIT: usize = 200;
const MAX_AUDIT_LIMIT: usize = 1000;
/// Recent records read for counters in use.
const COUNTER_RECORDS: usize = 2000;

/// Every way an API request is refused.
#[derive(Debug)]
pub(crate) enum ApiError {
    BadRequest(String),
    NoRoute,
    MethodNotAllowed(&'static str),
    /// Not one of the backend's policy files.
    UnknownPolicy(String),
    /// The file changed since the version the save was based on.
    Stale {
        current_sha256: Option<String>,
    },
    /// The text does not validate: the messages of `toolgate validate`.
    Invalid(Vec<Value>),
    Io(String),
    Audit(String),
}

impl ApiError {
    fn response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::BadRequest(m) => (400, "bad_request", m.clone()),
            ApiError::NoRoute => (404, "not_found", "no such endpoint (see GET /api/info)".into()),
            ApiError::MethodNotAllowed(allow) => (
                405,
                "method_not_allowed",
                format!("method not allowed (use {allow})"),
            ),
            ApiError::UnknownPolicy(path) => (
                404,
                "unknown_policy",
                format!("{path:?} is not one of the policy files of this gateway (see GET /api/policies)"),
            ),
            ApiError::Stale { .. } => (
                409,
                "stale",
                "the policy file changed since it was loaded; reload it and make the change again".into(),
            ),
            ApiError::Invalid(messages) => (
                422,
                "invalid_policy",
                format!(
                    "the policy is not valid ({} {}); nothing was written",
                    messages.len(),
                    if messages.len() == 1 { "problem" } else { "problems" }
                ),
            ),
            ApiError::Io(m) => (500, "io", m.clone()),
            ApiError::Audit(m) => (503, "audit_unavailable", m.clone()),
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        match self {
            ApiError::Stale { current_sha256 } => body["current_sha256"] = json!(current_sha256),
            ApiError::Invalid(messages) => body["messages"] = Value::Array(messages),
            _ => {}
        }
        json_response(status, &body)
    }
}

pub(crate) fn json_response(status: u16, value: &Value) -> Response {
    Response {
        status,
        content_type: "application/json",
        headers: vec![
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ],
        body: serde_json::to_vec(value).expect("serialisable"),
    }
}

pub(crate) async fn handle(
    console: &Console,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Response {
    route(console, method, path, query, body)
        .await
        .unwrap_or_else(ApiError::response)
}

async fn route(
    console: &Console,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let route = path.trim_start_matches("/api").trim_end_matches('/');
    let get = method == "GET";
    let post = method == "POST";
    match route {
        "/info" if get => no_query(query).map(|()| info(console)),
        "/catalogue" if get => no_query(query).map(|()| catalogue(console)),
        "/policies" if get => no_query(query).map(|()| policies(console)),
        "/policies/validate" if post => validate(console, body),
        "/policies/render" if post => render(console, body),
        "/policies/save" if post => save(console, body).await,
        "/audit" if get => audit(console, query),
        "/counters" if get => no_query(query).map(|()| counters(console)),
        "/info" | "/catalogue" | "/policies" | "/audit" | "/counters" => {
            Err(ApiError::MethodNotAllowed("GET"))
        }
        "/policies/validate" | "/policies/render" | "/policies/save" => {
            Err(ApiError::MethodNotAllowed("POST"))
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn no_query(query: Option<&str>) -> Result<(), ApiError> {
    match query {
        None | Some("") => Ok(()),
        Some(q) => Err(ApiError::BadRequest(format!(
            "this endpoint takes no query parameters, found {q:?}"
        ))),
    }
}

fn info(console: &Console) -> Response {
    let backend = &console.backend;
    json_response(
        200,
        &json!({
            "mode": backend.mode(),
            "version": env!("CARGO_PKG_VERSION"),
            "policies": console.on_disk.policy_files.len(),
            "audit": console.on_disk.audit_dir.is_some(),
        }),
    )
}

/// A policy file as read now.
struct Loaded {
    file: PolicyFile,
    text: Result<String, String>,
    format: Option<Format>,
    policy: Option<Policy>,
    document: Option<Value>,
}

fn load(file: PolicyFile) -> Loaded {
    let format = format_of(&file.path);
    let text = std::fs::read_to_string(&file.path)
        .map_err(|e| format!("cannot read {}: {e}", file.path.display()));
    let (policy, document) = match (&text, format) {
        (Ok(text), Some(format)) => (
            check(text, format, &file.path).policy,
            document_of(text, format),
        ),
        _ => (None, None),
    };
    Loaded {
        file,
        text,
        format,
        policy,
        document,
    }
}

fn scope_json(scope: &Scope) -> Value {
    match scope {
        Scope::Gateway => json!({"kind": "gateway"}),
        Scope::Server(name) => json!({"kind": "server", "name": name}),
        Scope::Grant(name) => json!({"kind": "grant", "name": name}),
    }
}

/// The rule a policy applies to `name`: its key (`None`: the default), the
/// rule as written, and what it does in a few words.
fn rule_in_force(loaded: &Loaded, name: &str) -> Value {
    let base = json!({
        "policy": files::display(&loaded.file.path),
        "scope": scope_json(&loaded.file.scope),
        "name": name,
    });
    let Some(policy) = &loaded.policy else {
        let mut v = base;
        v["effect"] = json!("the file is not valid: the gateway keeps the policy it had");
        v["valid"] = json!(false);
        return v;
    };
    let mut v = base;
    v["valid"] = json!(true);
    v["listed"] = json!(policy.is_listed(name));
    let tools = loaded
        .document
        .as_ref()
        .and_then(|d| d.get("tools"))
        .and_then(Value::as_object);
    let found = policy.rule_for(name).and_then(|rule_ref| {
        tools?.iter().find(|(key, _)| {
            format!("tools[{}]", toolgate_policy::document::quote(key)) == rule_ref.as_str()
        })
    });
    match found {
        Some((key, rule)) => {
            v["key"] = json!(key);
            v["rule"] = rule.clone();
            v["effect"] = json!(effect(rule));
        }
        None => {
            v["key"] = Value::Null;
            v["rule"] = Value::Null;
            v["effect"] = json!(format!("default: {}", policy.default_action().as_str()));
        }
    }
    v
}

/// `allow`, `deny: reason`, `allow, 30/minute (grant)`, ...
fn effect(rule: &Value) -> String {
    let action = rule
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("allow");
    let mut parts = vec![match (action, rule.get("reason").and_then(Value::as_str)) {
        ("deny", Some(reason)) => format!("deny: {reason}"),
        ("require_approval", _) => "require approval".to_string(),
        (action, _) => action.to_string(),
    }];
    for limit in rule
        .get("limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let window = match limit.get("window") {
            Some(Value::String(w)) => w.clone(),
            Some(Value::Number(n)) => format!("{n}s"),
            _ => "?".into(),
        };
        parts.push(format!(
            "{} per {} ({})",
            limit.get("max").map_or("?".to_string(), Value::to_string),
            window,
            limit
                .get("scope")
                .and_then(Value::as_str)
                .unwrap_or("grant")
        ));
    }
    if let Some(conditions) = rule.get("conditions").and_then(Value::as_array) {
        parts.push(format!(
            "{} {}",
            conditions.len(),
            if conditions.len() == 1 {
                "condition"
            } else {
                "conditions"
            }
        ));
    }
    parts.join(", ")
}

fn recommended(name: &str, definition: &Value) -> Value {
    let class = classify(definition);
    let policy = recommend_policy(&[(name.to_string(), definition.clone(), class)], false);
    policy["tools"][name].clone()
}

fn catalogue(console: &Console) -> Response {
    let catalogue = console.backend.catalogue();
    let loaded: Vec<Loaded> = console
        .on_disk
        .policy_files
        .iter()
        .cloned()
        .map(load)
        .collect();
    let servers: Vec<Value> = catalogue
        .servers
        .iter()
        .map(|server| {
            let tools: Vec<Value> = server
                .tools
                .iter()
                .map(|tool| {
                    // Classified as the server defines it, under its own name.
                    let mut definition = tool.definition.clone();
                    if definition.is_object() {
                        definition["name"] = json!(tool.original);
                    }
                    let class = classify(&definition);
                    let rules: Vec<Value> = loaded
                        .iter()
                        .filter_map(|l| match &l.file.scope {
                            Scope::Gateway | Scope::Grant(_) => Some(rule_in_force(l, &tool.name)),
                            Scope::Server(s) if *s == server.name => {
                                Some(rule_in_force(l, &tool.original))
                            }
                            Scope::Server(_) => None,
                        })
                        .collect();
                    json!({
                        "name": tool.name,
                        "original": tool.original,
                        "server": server.name,
                        "title": definition.get("title").cloned().unwrap_or(Value::Null),
                        "description": definition.get("description").cloned().unwrap_or(Value::Null),
                        "input_schema": definition.get("inputSchema").cloned().unwrap_or(Value::Null),
                        "category": serde_name(&class.category),
                        "risk": serde_name(&class.risk),
                        "evidence": class.evidence.iter().map(|e| json!({
                            "source": serde_name(&e.source),
                            "detail": e.detail,
                        })).collect::<Vec<_>>(),
                        "rules": rules,
                        "recommended": recommended(&tool.name, &definition),
                        "recommended_original": recommended(&tool.original, &definition),
                    })
                })
                .collect();
            let mut s = json!({
                "name": server.name,
                "status": server.status.name(),
                "tools": tools,
            });
            match &server.status {
                ServerStatus::Failed(why) => s["error"] = json!(why),
                ServerStatus::Unlisted(why) => s["note"] = json!(why),
                _ => {}
            }
            s
        })
        .collect();
    json_response(200, &json!({ "servers": servers }))
}

fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn policies(console: &Console) -> Response {
    let files: Vec<Value> = console
        .on_disk
        .policy_files
        .iter()
        .cloned()
        .map(|file| {
            let loaded = load(file);
            let mut v = json!({
                "path": files::display(&loaded.file.path),
                "scope": scope_json(&loaded.file.scope),
                "format": loaded.format.map(format_name),
            });
            match (&loaded.text, loaded.format) {
                (Ok(text), Some(format)) => {
                    let checked = check(text, format, &loaded.file.path);
                    v["text"] = json!(text);
                    v["sha256"] = json!(sha256_hex(text));
                    v["valid"] = json!(checked.policy.is_some());
                    v["summary"] = json!(checked.summary);
                    v["messages"] = Value::Array(checked.messages);
                    v["document"] = loaded.document.clone().unwrap_or(Value::Null);
                }
                (Ok(_), None) => {
                    v["error"] = json!(format!(
                        "{}: unknown policy format (use .json, .yaml or .yml)",
                        loaded.file.path.display()
                    ));
                }
                (Err(e), _) => v["error"] = json!(e),
            }
            v
        })
        .collect();
    json_response(200, &json!({ "policies": files }))
}

/// A JSON object with no repeated key and no unknown field, into `T`.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    toolgate_jsonrpc::parse_object(body)
        .map_err(|why| ApiError::BadRequest(format!("invalid body: {why}")))
}

/// The backend's file that `path` names, and its format.
fn policy_file(console: &Console, path: &str) -> Result<(PathBuf, Format), ApiError> {
    let file = console
        .on_disk
        .policy_files
        .iter()
        .find(|f| files::display(&f.path) == path)
        .cloned()
        .ok_or_else(|| ApiError::UnknownPolicy(path.to_string()))?;
    let format = format_of(&file.path).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{path}: unknown policy format (use .json, .yaml or .yml)"
        ))
    })?;
    Ok((file.path, format))
}

fn current_text(path: &Path) -> Result<Option<String>, ApiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::Io(format!("cannot read {}: {e}", path.display()))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    path: String,
    text: String,
}

/// The text checked as the file would be, and its diff against the file.
fn checked_json(path: &Path, format: Format, text: &str) -> Result<Value, ApiError> {
    let checked = check(text, format, path);
    let current = current_text(path)?.unwrap_or_default();
    Ok(json!({
        "path": files::display(path),
        "format": format_name(format),
        "valid": checked.policy.is_some(),
        "summary": checked.summary,
        "messages": checked.messages,
        "diff": diff_json(&current, text),
        "changed": current != text,
        "base_sha256": sha256_hex(&current),
    }))
}

fn validate(console: &Console, body: &[u8]) -> Result<Response, ApiError> {
    let body: ValidateBody = parse_body(body)?;
    let (path, format) = policy_file(console, &body.path)?;
    Ok(json_response(
        200,
        &checked_json(&path, format, &body.text)?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderBody {
    path: String,
    document: Value,
}

fn render(console: &Console, body: &[u8]) -> Result<Response, ApiError> {
    let body: RenderBody = parse_body(body)?;
    let (path, format) = policy_file(console, &body.path)?;
    if !body.document.is_object() {
        return Err(ApiError::BadRequest(
            "\"document\" must be a JSON object (a policy)".into(),
        ));
    }
    let text = files::render(&body.document, format).map_err(ApiError::BadRequest)?;
    let mut out = checked_json(&path, format, &text)?;
    // What changes in the policy itself: the file as it is, laid out as the
    // dashboard lays it out, against the new text; and whether saving also
    // lays the file out anew (its text is not already in that layout).
    let current = current_text(&path)?.unwrap_or_default();
    let laid_out = document_of(&current, format)
        .and_then(|d| files::render(&d, format).ok())
        .unwrap_or_else(|| current.clone());
    out["content_diff"] = diff_json(&laid_out, &text);
    out["relayout"] = json!(laid_out != current);
    out["text"] = json!(text);
    out["json"] = json!(files::render(&body.document, Format::Json).unwrap_or_default());
    out["yaml"] = json!(files::render(&body.document, Format::Yaml).unwrap_or_default());
    Ok(json_response(200, &out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    path: String,
    text: String,
    base_sha256: String,
}

async fn save(console: &Console, body: &[u8]) -> Result<Response, ApiError> {
    let body: SaveBody = parse_body(body)?;
    let (path, format) = policy_file(console, &body.path)?;
    let checked = check(&body.text, format, &path);
    if checked.policy.is_none() {
        return Err(ApiError::Invalid(checked.messages));
    }
    {
        let _saving = console
            .saving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = current_text(&path)?;
        let current_sha = current.as_deref().map(sha256_hex);
        if current_sha.as_deref() != Some(body.base_sha256.as_str()) {
            return Err(ApiError::Stale {
                current_sha256: current_sha,
            });
        }
        files::write_atomically(&path, &body.text)
            .map_err(|e| ApiError::Io(format!("cannot write {}: {e}", path.display())))?;
    }
    let reload = match console.backend.reload(&path).await {
        Reload::Reloaded => {
            json!({"status": "reloaded", "message": "the gateway put the new policy in force"})
        }
        Reload::Failed(why) => json!({"status": "failed", "message": why}),
        Reload::Pending(what) => json!({"status": "pending", "message": what}),
    };
    Ok(json_response(
        200,
        &json!({
            "path": files::display(&path),
            "sha256": sha256_hex(&body.text),
            "summary": checked.summary,
            "reload": reload,
        }),
    ))
}

/// `%XX` and `+` decoded; `None` for a bad escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(ApiError::BadRequest(format!(
                    "bad query parameter {pair:?}"
                ))),
            }
        })
        .collect()
}

fn open_audit(console: &Console) -> Result<Option<AuditStore>, ApiError> {
    let Some(dir) = console.on_disk.audit_dir.clone() else {
        return Ok(None);
    };
    match AuditStore::open_existing(&dir) {
        Ok(store) => Ok(Some(store)),
        Err(AuditError::Missing { .. }) => Ok(None),
        Err(e) => Err(ApiError::Audit(e.to_string())),
    }
}

fn audit(console: &Console, query: Option<&str>) -> Result<Response, ApiError> {
    let mut filter = Filter {
        limit: Some(DEFAULT_AUDIT_LIMIT),
        ..Filter::default()
    };
    let number = |k: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("{k} must be a whole number, found {v:?}")))
    };
    for (key, value) in query_pairs(query)? {
        let text = (!value.is_empty()).then(|| value.clone());
        match key.as_str() {
            "grant" => filter.grant = text,
            "server" => filter.server = text,
            "tool" => filter.tool = text,
            "decision" => filter.decision = text,
            "after" if !value.is_empty() => filter.after = Some(number("after", &value)?),
            "after" => {}
            "limit" => {
                let n = number("limit", &value)?;
                if n == 0 || n > MAX_AUDIT_LIMIT as u64 {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be 1 to {MAX_AUDIT_LIMIT}"
                    )));
                }
                filter.limit = Some(n as usize);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {other:?} (expected grant, server, tool, decision, after or limit)"
                )))
            }
        }
    }
    let Some(store) = open_audit(console)? else {
        return Ok(json_response(
            200,
            &json!({"records": [], "last_seq": Value::Null, "note": no_audit_note(console)}),
        ));
    };
    let records = store
        .query(&filter)
        .map_err(|e| ApiError::Audit(e.to_string()))?;
    let last = records.last().map(|r| r.seq);
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| json!({"seq": r.seq, "time_ms": r.time_ms, "record": r.record}))
        .collect();
    Ok(json_response(
        200,
        &json!({"records": records, "last_seq": last}),
    ))
}

fn no_audit_note(console: &Console) -> String {
    match console.on_disk.audit_dir.clone() {
        Some(dir) => format!("no audit trail in {} yet", dir.display()),
        None => "no audit trail: the state is in memory (--state memory)".to_string(),
    }
}

/// Counters in use: the latest `{counter, used, max}` each (counter, grant)
/// reported in the recent audit records. (The counter stores cannot list
/// their counters; these are the values as of each counter's last call.)
fn counters(console: &Console) -> Response {
    let windows: HashMap<String, u64> = console
        .on_disk
        .policy_files
        .iter()
        .cloned()
        .map(load)
        .filter_map(|l| l.policy)
        .flat_map(|p| {
            p.counters()
                .map(|(name, window)| (name.to_string(), window))
                .collect::<Vec<_>>()
        })
        .collect();
    let store = match open_audit(console) {
        Ok(Some(store)) => store,
        Ok(None) => {
            return json_response(
                200,
                &json!({"counters": [], "source": "audit", "note": no_audit_note(console)}),
            )
        }
        Err(e) => return e.response(),
    };
    let records = match store.query(&Filter {
        limit: Some(COUNTER_RECORDS),
        ..Filter::default()
    }) {
        Ok(records) => records,
        Err(e) => return ApiError::Audit(e.to_string()).response(),
    };
    let mut latest: Vec<((String, String), Value)> = Vec::new();
    for r in records.iter().rev() {
        let grant = r.record.get("grant").and_then(Value::as_str).unwrap_or("");
        for c in r
            .record
            .get("counters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(counter) = c.get("counter").and_then(Value::as_str) else {
                continue;
            };
            let key = (counter.to_string(), grant.to_string());
            if latest.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let window_ms = windows.get(counter).copied();
            latest.push((
                key,
                json!({
                    "counter": counter,
                    "grant": grant,
                    "tool": r.record.get("tool"),
                    "used": c.get("used"),
                    "max": c.get("max"),
                    "window_ms": window_ms,
                    "at_ms": r.time_ms,
                    "seq": r.seq,
                    "current": match window_ms {
                        Some(w) => toolgate_now_ms().saturating_sub(r.time_ms) < w,
                        None => true,
                    },
                }),
            ));
        }
    }
    latest.sort_by(|a, b| a.0.cmp(&b.0));
    json_response(
        200,
        &json!({
            "counters": latest.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "source": "audit",
        }),
    )
}

fn toolgate_now_ms() -> u64 {
    toolgate_clock::Clock::now_ms(&toolgate_clock::SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(
            query_pairs(Some("tool=probe__x&after=3")).unwrap(),
            [
                ("tool".into(), "probe__x".into()),
                ("after".into(), "3".into())
            ]
        );
    }

    #[test]
    fn effects_in_a_few_words() {
        assert_eq!(effect(&json!({})), "allow");
        assert_eq!(
            effect(&json!({"action": "deny", "reason": "no"})),
            "deny: no"
        );
        assert_eq!(
            effect(
                &json!({"limits": [{"counter": "c", "window": "minute", "max": 30, "scope": "grant"}]})
            ),
            "allow, 30 per minute (grant)"
        );
    }
}
