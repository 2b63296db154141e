//! The dashboard's API against a backend made of temporary files: saves
//! that are stale or invalid are refused and write nothing, validation says
//! what `toolgate validate` says, and only the backend's files are touched.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use toolgate_console::{
    BoxFuture, Catalogue, Console, ConsoleBackend, OnDisk, PolicyFile, Reload, Scope, Server,
    ServerStatus, Tool,
};
use toolgate_policy::{parse_policy, Format};

const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "files__read_file": {},
    "files__delete_file": { "action": "deny", "reason": "no deleting" }
  }
}
"#;

struct Files {
    reloads: Mutex<Vec<PathBuf>>,
}

impl ConsoleBackend for Files {
    fn mode(&self) -> &'static str {
        "test"
    }
    fn catalogue(&self) -> Catalogue {
        let tool = |name: &str, description: &str| Tool {
            name: format!("files__{name}"),
            original: name.to_string(),
            definition: json!({"name": name, "description": description,
                "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}}),
        };
        Catalogue {
            servers: vec![Server {
                name: "files".into(),
                status: ServerStatus::Ready,
                tools: vec![
                    tool("read_file", "Read a file"),
                    tool("delete_file", "Delete a file permanently"),
                    tool("write_file", "Write a file"),
                ],
            }],
        }
    }
    fn reload<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Reload> {
        self.reloads.lock().unwrap().push(path.to_path_buf());
        Box::pin(async { Reload::Reloaded })
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, Arc<Files>, Console) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, POLICY).unwrap();
    let backend = Arc::new(Files {
        reloads: Mutex::new(Vec::new()),
    });
    let on_disk = OnDisk {
        policy_files: vec![PolicyFile {
            path: path.clone(),
            scope: Scope::Gateway,
        }],
        audit_dir: None,
    };
    let console = Console::new(backend.clone(), on_disk);
    (dir, path, backend, console)
}

async fn call(console: &Console, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let (route, query) = match path.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (path, None),
    };
    let r = console.api(method, route, query, &body).await;
    assert_eq!(r.content_type, "application/json");
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

fn sha(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn validation_gives_the_messages_of_toolgate_validate() {
    let (_dir, path, _, console) = setup();
    let name = path.display().to_string();
    let text = POLICY
        .replace(r#""default": "deny""#, r#""default": "maybe""#)
        .replace(
            "{}",
            r#"{"limits": [{"counter": "c", "window": "minite", "max": 0}]}"#,
        );
    let (status, answer) = call(
        &console,
        "POST",
        "/api/policies/validate",
        json!({"path": name, "text": text}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["valid"], json!(false));
    // The CLI prints the Diagnostics' Display, one per line.
    let cli = parse_policy(&text, Format::Json, &name)
        .unwrap_err()
        .to_string();
    let shown: Vec<&str> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(shown, cli.lines().collect::<Vec<_>>());
    assert!(shown.len() >= 3, "{shown:?}");
    assert_eq!(answer["messages"][0]["line"], json!(3));
    assert!(answer["diff"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["op"] == "+" && l["text"].as_str().unwrap().contains("maybe")));
}

#[tokio::test]
async fn an_invalid_or_stale_save_writes_nothing() {
    let (_dir, path, backend, console) = setup();
    let name = path.display().to_string();
    let invalid = POLICY.replace(r#""no deleting""#, r#""no deleting", "limits": []"#);
    let (status, answer) = call(
        &console,
        "POST",
        "/api/policies/save",
        json!({"path": name, "text": invalid, "base_sha256": sha(POLICY)}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_policy");
    assert!(answer["messages"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{name}:")));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), POLICY);

    let changed = POLICY.replace("no deleting", "never delete");
    let (status, answer) = call(
        &console,
        "POST",
        "/api/policies/save",
        json!({"path": name, "text": changed, "base_sha256": sha("an older version")}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(answer["current_sha256"], json!(sha(POLICY)));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), POLICY);
    assert!(backend.reloads.lock().unwrap().is_empty());

    let (status, answer) = call(
        &console,
        "POST",
        "/api/policies/save",
        json!({"path": name, "text": changed, "base_sha256": sha(POLICY)}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reload"]["status"], "reloaded");
    assert_eq!(answer["sha256"], json!(sha(&changed)));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), changed);
    assert_eq!(*backend.reloads.lock().unwrap(), vec![path.clone()]);

    // The same base again: the file has moved on.
    let (status, _) = call(
        &console,
        "POST",
        "/api/policies/save",
        json!({"path": name, "text": POLICY, "base_sha256": sha(POLICY)}),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn only_the_backends_files_and_only_known_fields() {
    let (dir, path, _, console) = setup();
    let other = dir.path().join("other.json");
    std::fs::write(&other, POLICY).unwrap();
    for (body, status, code) in [
        (
            json!({"path": other.display().to_string(), "text": POLICY, "base_sha256": sha(POLICY)}),
            404,
            "unknown_policy",
        ),
        (
            json!({"path": path.display().to_string(), "text": POLICY, "base_sha256": sha(POLICY), "force": true}),
            400,
            "bad_request",
        ),
        (
            json!({"path": path.display().to_string()}),
            400,
            "bad_request",
        ),
        (json!([1]), 400, "bad_request"),
    ] {
        let (got, answer) = call(&console, "POST", "/api/policies/save", body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }
    let r = console
        .api(
            "POST",
            "/api/policies/validate",
            None,
            br#"{"path": "a", "path": "b", "text": ""}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8(r.body).unwrap().contains("repeated"));
    assert_eq!(call(&console, "GET", "/api/nope", Value::Null).await.0, 404);
    assert_eq!(
        call(&console, "DELETE", "/api/catalogue", Value::Null)
            .await
            .0,
        405
    );
    assert_eq!(
        call(&console, "GET", "/api/audit?color=red", Value::Null)
            .await
            .0,
        400
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), POLICY);
}

#[tokio::test]
async fn the_catalogue_shows_risk_rules_in_force_and_recommendations() {
    let (_dir, _path, _, console) = setup();
    let (status, answer) = call(&console, "GET", "/api/catalogue", Value::Null).await;
    assert_eq!(status, 200);
    let tools = answer["servers"][0]["tools"].as_array().unwrap();
    let tool = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap();
    let delete = tool("files__delete_file");
    assert_eq!(delete["category"], "Destructive");
    assert_eq!(delete["rules"][0]["effect"], "deny: no deleting");
    assert_eq!(delete["rules"][0]["key"], "files__delete_file");
    assert_eq!(delete["recommended"]["action"], "require_approval");
    let write = tool("files__write_file");
    assert_eq!(write["rules"][0]["effect"], "default: deny");
    assert_eq!(
        write["recommended"]["limits"][0]["counter"],
        "files__write_file_rate"
    );
    assert_eq!(
        write["recommended_original"]["limits"][0]["counter"],
        "write_file_rate"
    );
}

#[tokio::test]
async fn a_rendered_document_keeps_what_it_does_not_touch() {
    let (_dir, path, _, console) = setup();
    let name = path.display().to_string();
    let (_, policies) = call(&console, "GET", "/api/policies", Value::Null).await;
    let mut document = policies["policies"][0]["document"].clone();
    document["tools"]["files__write_file"] = json!({"action": "hide"});
    let (status, answer) = call(
        &console,
        "POST",
        "/api/policies/render",
        json!({"path": name, "document": document}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["valid"], json!(true));
    // Everything else is kept (the file is laid out anew: pretty JSON).
    let text = answer["text"].as_str().unwrap();
    let mut expected: Value = serde_json::from_str(POLICY).unwrap();
    expected["tools"]["files__write_file"] = json!({"action": "hide"});
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), expected);
    let added: Vec<&str> = answer["diff"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] == "+")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        added.contains(&r#"    "files__write_file": {"#),
        "{added:?}"
    );
    assert!(answer["diff"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["op"] == " " && l["text"] == r#"    "files__read_file": {},"#));
    // The file's rules were written inline: saving lays it out anew, and
    // the content diff shows only the new rule.
    assert_eq!(answer["relayout"], json!(true));
    let changed: Vec<&str> = answer["content_diff"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] != " ")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        [
            r#"    },"#,
            r#"    "files__write_file": {"#,
            r#"      "action": "hide""#,
        ],
        "only the new rule (and the comma before it)"
    );
    let yaml = answer["yaml"].as_str().unwrap();
    parse_policy(yaml, Format::Yaml, "p.yaml").unwrap();
}

#[tokio::test]
async fn a_servers_own_policy_names_its_tools_by_the_servers_names() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = dir.path().join("gateway.json");
    let own = dir.path().join("files.yaml");
    let other = dir.path().join("other.yaml");
    std::fs::write(&gateway, POLICY).unwrap();
    std::fs::write(
        &own,
        "version: \"1\"\ndefault: allow\ntools:\n  write_file: {action: hide}\n",
    )
    .unwrap();
    std::fs::write(&other, "version: \"1\"\ndefault: deny\n").unwrap();
    let file = |path: &Path, scope: Scope| PolicyFile {
        path: path.to_path_buf(),
        scope,
    };
    let console = Console::new(
        Arc::new(Files {
            reloads: Mutex::new(Vec::new()),
        }),
        OnDisk {
            policy_files: vec![
                file(&gateway, Scope::Gateway),
                file(&own, Scope::Server("files".into())),
                file(&other, Scope::Server("other".into())),
            ],
            audit_dir: None,
        },
    );
    let (_, answer) = call(&console, "GET", "/api/catalogue", Value::Null).await;
    let tools = answer["servers"][0]["tools"].as_array().unwrap();
    let write = tools
        .iter()
        .find(|t| t["name"] == "files__write_file")
        .unwrap();
    let rules = write["rules"].as_array().unwrap();
    assert_eq!(
        rules.len(),
        2,
        "the other server's policy does not apply: {rules:?}"
    );
    assert_eq!(rules[0]["name"], "files__write_file");
    assert_eq!(rules[0]["effect"], "default: deny");
    assert_eq!(rules[1]["name"], "write_file");
    assert_eq!(rules[1]["key"], "write_file");
    assert_eq!(rules[1]["effect"], "hide");
    assert_eq!(rules[1]["listed"], json!(false));
    assert_eq!(
        rules[1]["scope"],
        json!({"kind": "server", "name": "files"})
    );
}
