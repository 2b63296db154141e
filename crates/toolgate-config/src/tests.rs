//! Data-driven tests: `check(format, config, expected)` where `expected` is
//! every diagnostic as `line:column: path: message` (the file is always
//! `gateway.<ext>`), or `ok(...)` for a config that must load. The
//! environment and the policy files are fakes: no test touches the real ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::validate::parse;
use crate::{ConfigFormat, ServerTransport};

const GOOD_POLICY: &str = "version: \"1\"\ndefault: deny\ntools:\n  everything__echo: {}\n";
const BAD_POLICY: &str = "{\"version\": \"1\", \"default\": \"maybe\"}";
const HASH_A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const HASH_B: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn env(name: &str) -> Option<String> {
    match name {
        "MY_TOKEN" => Some("s3cret".to_string()),
        "EMPTY" => Some(String::new()),
        "NEWLINE" => Some("a\nb".to_string()),
        "GOOD_KEY" => Some(KEY.to_string()),
        "SHORT_KEY" => Some("abcd".to_string()),
        "HOOK_SECRET" => Some("whsec".to_string()),
        _ => None,
    }
}

fn files(path: &Path) -> std::io::Result<String> {
    match path.to_str() {
        Some("policy.yaml" | "alice.yaml" | "bob.yaml" | "server.yaml") => {
            Ok(GOOD_POLICY.to_string())
        }
        Some("bad.json") => Ok(BAD_POLICY.to_string()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory",
        )),
    }
}

fn run(format: ConfigFormat, source: &str) -> Result<crate::Config, Vec<String>> {
    let file = match format {
        ConfigFormat::Yaml => "gateway.yaml",
        ConfigFormat::Toml => "gateway.toml",
        ConfigFormat::Json => "gateway.json",
    };
    parse(source, format, file, Path::new(""), &env, &files).map_err(|d| {
        d.0.iter()
            .map(|d| {
                let line = d.to_string();
                line.strip_prefix(&format!("{file}:"))
                    .map_or(line.clone(), str::to_string)
            })
            .collect()
    })
}

#[track_caller]
fn check_as(format: ConfigFormat, source: &str, expected: &[&str]) {
    match run(format, source) {
        Ok(config) => panic!("expected {expected:#?}, the config loaded: {config:#?}"),
        Err(found) => assert_eq!(found, expected, "\n{source}"),
    }
}

#[track_caller]
fn check(source: &str, expected: &[&str]) {
    check_as(ConfigFormat::Yaml, source, expected);
}

#[track_caller]
fn check_toml(source: &str, expected: &[&str]) {
    check_as(ConfigFormat::Toml, source, expected);
}

#[track_caller]
fn ok_as(format: ConfigFormat, source: &str) -> crate::Config {
    match run(format, source) {
        Ok(config) => config,
        Err(found) => panic!("expected the config to load:\n{source}\n{found:#?}"),
    }
}

#[track_caller]
fn ok(source: &str) -> crate::Config {
    ok_as(ConfigFormat::Yaml, source)
}

const MINIMAL: &str = "policy: policy.yaml\nservers:\n  everything:\n    command: npx\n";

// --- loading ---------------------------------------------------------------

#[test]
fn minimal_config_gets_the_defaults() {
    let config = ok(MINIMAL);
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.separator, "__");
    assert_eq!(
        config.policy.as_ref().unwrap().path,
        PathBuf::from("policy.yaml")
    );
    assert!(config.grants.is_empty());
    assert_eq!(config.session_key, None);
    assert_eq!(config.session_max_age, Duration::from_secs(86_400));
    assert_eq!(config.http.max_message_bytes, 16 << 20);
    assert_eq!(config.http.request_timeout, Duration::from_secs(120));
    assert_eq!(config.http.shutdown_grace, Duration::from_secs(10));
    let server = &config.servers[0];
    assert_eq!(server.name, "everything");
    assert_eq!(server.prefix.as_deref(), Some("everything"));
    assert!(!server.per_session);
    assert_eq!(server.request_timeout, Duration::from_secs(60));
    assert_eq!(server.restart_initial, Duration::from_millis(200));
    assert_eq!(server.restart_max, Duration::from_secs(30));
    let ServerTransport::Stdio {
        command,
        args,
        env,
        cwd,
    } = &server.transport
    else {
        panic!("{:?}", server.transport)
    };
    assert_eq!(command, "npx");
    assert!(args.is_empty() && env.is_empty() && cwd.is_none());
}

const FULL: &str = r#"listen: "0.0.0.0:9000"
policy: policy.yaml
separator: "."
servers:
  everything:
    command: npx
    args: ["-y", "@modelcontextprotocol/server-everything"]
    env: { DEBUG: "1", TOKEN: "${MY_TOKEN}", PRICE: "$$5" }
    cwd: ./dir
    prefix: ev
    per_session: true
    policy: server.yaml
    request_timeout: 250ms
    restart: { initial: 1s, max: 1m }
  remote:
    url: http://127.0.0.1:3001/mcp
    transport: sse
    headers: { Authorization: "Bearer ${MY_TOKEN}" }
  plain:
    url: http://example.com/mcp
    prefix: false
    request_timeout: 2.5
grants:
  alice:
    token_sha256: "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
    policy: alice.yaml
    servers: [everything, remote]
  bob:
    token_sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
sessions:
  key_env: GOOD_KEY
  max_age: 1h
http:
  allowed_origins: ["https://App.example.com", "http://localhost:3000"]
  allowed_hosts: ["gateway.internal:8080"]
  max_message_bytes: 512KiB
  request_timeout: 5m
  shutdown_grace: 0s
"#;

#[test]
fn full_config_loads_every_field() {
    let config = ok(FULL);
    assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(config.separator, ".");
    assert_eq!(config.servers.len(), 3);
    let ev = &config.servers[0];
    assert_eq!(ev.prefix.as_deref(), Some("ev"));
    assert!(ev.per_session);
    assert_eq!(
        ev.policy.as_ref().unwrap().path,
        PathBuf::from("server.yaml")
    );
    assert_eq!(ev.request_timeout, Duration::from_millis(250));
    assert_eq!(
        (ev.restart_initial, ev.restart_max),
        (Duration::from_secs(1), Duration::from_secs(60))
    );
    let ServerTransport::Stdio { args, env, cwd, .. } = &ev.transport else {
        panic!()
    };
    assert_eq!(args, &["-y", "@modelcontextprotocol/server-everything"]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(env, [("DEBUG", "1"), ("TOKEN", "s3cret"), ("PRICE", "$5")]);
    assert_eq!(cwd.as_deref(), Some(Path::new("./dir")));
    let ServerTransport::Sse { url, headers } = &config.servers[1].transport else {
        panic!()
    };
    assert_eq!(url, "http://127.0.0.1:3001/mcp");
    assert_eq!(headers[0].1.expose(), "Bearer s3cret");
    assert!(matches!(
        config.servers[2].transport,
        ServerTransport::Http { .. }
    ));
    assert_eq!(config.servers[2].prefix, None);
    assert_eq!(
        config.servers[2].request_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(config.grants[0].name, "alice");
    assert_eq!(hex::encode(config.grants[0].token_sha256), HASH_A);
    assert_eq!(
        config.grants[0].servers.as_deref(),
        Some(&["everything".to_string(), "remote".to_string()][..])
    );
    assert!(config.grants[1].policy.is_none() && config.grants[1].servers.is_none());
    assert_eq!(config.session_key, Some(core::array::from_fn(|i| i as u8)));
    assert_eq!(config.session_max_age, Duration::from_secs(3600));
    assert_eq!(
        config.http.allowed_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert_eq!(config.http.allowed_hosts, ["gateway.internal:8080"]);
    assert_eq!(config.http.max_message_bytes, 512 << 10);
    assert_eq!(config.http.request_timeout, Duration::from_secs(300));
    assert_eq!(config.http.shutdown_grace, Duration::ZERO);
    // The same policy file named twice is read once and shared.
    assert!(std::sync::Arc::ptr_eq(
        &config.policy.as_ref().unwrap().policy,
        &config.policy.as_ref().unwrap().policy
    ));
}

#[test]
fn secrets_never_show_in_debug() {
    let config = ok(FULL);
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("0, 1, 2, 3"), "{debug}");
    assert!(debug.contains("\"TOKEN\", ***"), "{debug}");
    assert!(debug.contains("session_key: Some(***)"), "{debug}");
    assert_eq!(format!("{:?}", crate::Secret::new("x")), "***");
}

#[test]
fn toml_and_json_read_the_same() {
    let toml = r#"
policy = "policy.yaml"
listen = "127.0.0.1:9"

[servers.everything]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-everything"]
env = { TOKEN = "${MY_TOKEN}" }
restart = { initial = "1s", max = 60 }

[servers.remote]
url = "http://127.0.0.1:3001/mcp"

[grants.alice]
token_sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

[http]
max_message_bytes = 1024
"#;
    let config = ok_as(ConfigFormat::Toml, toml);
    assert_eq!(config.servers.len(), 2);
    assert_eq!(config.servers[0].restart_max, Duration::from_secs(60));
    assert_eq!(config.grants[0].name, "alice");
    assert_eq!(config.http.max_message_bytes, 1024);
    let json = r#"{"policy": "policy.yaml", "servers": {"a": {"url": "http://x/mcp", "headers": {"X-Key": "${MY_TOKEN}"}}}}"#;
    let config = ok_as(ConfigFormat::Json, json);
    assert!(
        matches!(&config.servers[0].transport, ServerTransport::Http { headers, .. } if headers[0].1.expose() == "s3cret")
    );
}

// --- syntax and structure --------------------------------------------------

#[test]
fn unknown_fields_everywhere() {
    check(
        "policy: policy.yaml\nlisen: x\nservers:\n  a:\n    command: x\n    comand: y\n    restart: { initial: 1s, maximum: 2s }\ngrants:\n  g:\n    token_sha256: \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"\n    token: x\nsessions: { key: x }\nhttp: { origins: [] }\n",
        &[
            "2:1: unknown field \"lisen\" (expected listen, policy, separator, servers, grants, sessions, http, state, admin or telemetry)",
            "6:5: servers.a: unknown field \"comand\" (expected command, args, env, cwd, url, transport, protocol, headers, prefix, per_session, policy, request_timeout or restart)",
            "7:29: servers.a.restart: unknown field \"maximum\" (expected initial or max)",
            "11:5: grants.g: unknown field \"token\" (expected token_sha256, policy or servers)",
            "12:13: sessions: unknown field \"key\" (expected key_env or max_age)",
            "13:9: http: unknown field \"origins\" (expected allowed_origins, allowed_hosts, max_message_bytes, request_timeout or shutdown_grace)",
        ],
    );
}

#[test]
fn wrong_types() {
    check(
        "policy: 1\nlisten: 8080\nseparator: [x]\nservers:\n  a:\n    command: [npx]\n    args: npx\n    per_session: \"yes\"\n    prefix: 3\n    request_timeout: true\n",
        &[
            "1:9: policy: expected a string, found a number",
            "2:9: listen: expected a string, found a number",
            "3:12: separator: expected a string, found an array",
            "6:14: servers.a.command: expected a string, found an array",
            "7:11: servers.a.args: expected an array of strings, found a string",
            "8:18: servers.a.per_session: expected a boolean, found a string",
            "9:13: servers.a.prefix: expected a boolean or a string, found a number",
            "10:22: servers.a.request_timeout: expected a duration (a number with a unit ms, s, m, h or d, such as \"30s\", or a number of seconds), found a boolean",
        ],
    );
    check("[1, 2]\n", &["1:1: expected an object, found an array"]);
    check(
        "servers: []\npolicy: policy.yaml\n",
        &["1:10: servers: expected an object, found an array"],
    );
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n    args: [a, 1]\n    env: { A: 1 }\n",
        &[
            "5:15: servers.a.args[1]: expected a string, found a number",
            "6:15: servers.a.env.A: expected a string, found a number",
        ],
    );
}

#[test]
fn duplicate_keys_in_every_syntax() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n    command: y\n  a:\n    command: z\n",
        &[
            "5:5: servers.a: duplicate key \"command\"",
            "6:3: servers: duplicate key \"a\"",
        ],
    );
    check_as(
        ConfigFormat::Json,
        "{\"policy\": \"policy.yaml\",\n \"servers\": {\"a\": {\"command\": \"x\"}},\n \"policy\": \"x.yaml\"}",
        &["3:2: duplicate key \"policy\""],
    );
    check_toml(
        "policy = \"a\"\npolicy = \"b\"\n",
        &["2:1: duplicate key \"policy\""],
    );
    check_toml(
        "[servers.a]\ncommand = \"x\"\n[servers.a]\ncommand = \"y\"\n",
        &["3:10: duplicate key \"a\""],
    );
}

#[test]
fn syntax_errors() {
    let found = run(ConfigFormat::Yaml, "servers: [a, b\n").unwrap_err();
    assert!(found[0].contains("invalid YAML"), "{found:?}");
    check(
        "a: &x 1\n",
        &["1:7: YAML anchors are not supported in a config"],
    );
    check("", &["1:1: the document is empty"]);
    check_toml(
        "servers = [\n",
        &["1:12: invalid TOML: unclosed array, expected `]`"],
    );
    check_toml(
        "when = 1979-05-27\n",
        &["1:8: TOML dates and times are not supported in a config (quote it as a string)"],
    );
    check_toml(
        "x = nan\n",
        &["1:5: NaN is not a number a config can hold (no infinities or NaN)"],
    );
}

#[test]
fn toml_positions() {
    check_toml(
        "policy = \"policy.yaml\"\nlisten = \"nowhere\"\n\n[servers.a]\ncommand = \"x\"\nurl = \"http://h\"\n\n[servers.b]\nurl = \"ftp://h\"\ntransport = \"websocket\"\nheaders = { \"Bad Name\" = \"1\" }\n\n[servers.c]\ncommand = \"x\"\nextra = 1\n",
        &[
            "2:10: listen: invalid listen address \"nowhere\" (expected an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\")",
            "6:1: servers.a: a server has exactly one of \"command\" (stdio) or \"url\" (HTTP), found both",
            "9:7: servers.b.url: url must start with http:// or https://, found \"ftp://h\"",
            "10:13: servers.b.transport: unknown transport \"websocket\" (expected streamable_http or sse)",
            "11:13: servers.b.headers: invalid header name \"Bad Name\"",
            "15:1: servers.c: unknown field \"extra\" (expected command, args, env, cwd, url, transport, protocol, headers, prefix, per_session, policy, request_timeout or restart)",
        ],
    );
}

#[test]
fn missing_and_empty_servers() {
    check("policy: policy.yaml\n", &["1:1: missing field \"servers\""]);
    check(
        "policy: policy.yaml\nservers: {}\n",
        &["2:10: servers: at least one server is required"],
    );
    check_toml(
        "policy = \"policy.yaml\"\n[servers]\n",
        &["2:1: servers: at least one server is required"],
    );
}

// --- servers ---------------------------------------------------------------

#[test]
fn exactly_one_transport() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n    url: http://h\n  b:\n    prefix: bb\n",
        &[
            "5:5: servers.a: a server has exactly one of \"command\" (stdio) or \"url\" (HTTP), found both",
            "6:3: servers.b: a server needs \"command\" (stdio) or \"url\" (HTTP), found neither",
        ],
    );
}

#[test]
fn an_http_server_may_name_its_protocol_generation() {
    let yaml = "policy: policy.yaml\nservers:\n  a:\n    url: http://a/mcp\n  b:\n    url: http://b/mcp\n    protocol: \"2026-07-28\"\n  c:\n    url: http://c/mcp\n    protocol: \"2025-11-25\"\n  d:\n    url: http://d/mcp\n    protocol: auto\n";
    let config = ok_as(ConfigFormat::Yaml, yaml);
    let protocols: Vec<_> = config
        .servers
        .iter()
        .map(|s| match &s.transport {
            ServerTransport::Http { protocol, .. } => *protocol,
            other => panic!("not http: {other:?}"),
        })
        .collect();
    use crate::UpstreamProtocol::*;
    assert_eq!(protocols, [Auto, Stateless, Handshake, Auto]);
    check(
        "policy: policy.yaml\nservers:\n  a:\n    url: http://a/mcp\n    protocol: \"2026\"\n  b:\n    url: http://b/sse\n    transport: sse\n    protocol: auto\n  c:\n    command: x\n    protocol: auto\n",
        &[
            "5:15: servers.a.protocol: unknown protocol \"2026\" (expected auto, 2025-11-25 or 2026-07-28)",
            "9:5: servers.b: \"protocol\" is only allowed with the streamable_http transport (this server has \"transport: sse\")",
            "12:5: servers.c: \"protocol\" is only allowed with \"url\" (this server has \"command\")",
        ],
    );
}

#[test]
fn fields_that_belong_to_the_other_transport() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n    transport: sse\n    headers: {}\n  b:\n    url: http://h\n    env: {}\n    args: []\n    cwd: .\n",
        &[
            "5:5: servers.a: \"transport\" is only allowed with \"url\" (this server has \"command\")",
            "6:5: servers.a: \"headers\" is only allowed with \"url\" (this server has \"command\")",
            "9:5: servers.b: \"env\" is only allowed with \"command\" (this server has \"url\")",
            "10:5: servers.b: \"args\" is only allowed with \"command\" (this server has \"url\")",
            "11:5: servers.b: \"cwd\" is only allowed with \"command\" (this server has \"url\")",
        ],
    );
}

#[test]
fn urls() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    url: ws://h/mcp\n  b:\n    url: \"http://\"\n  c:\n    url: \"\"\n",
        &[
            "4:10: servers.a.url: url must start with http:// or https://, found \"ws://h/mcp\"",
            "6:10: servers.b.url: url \"http://\" has no host",
            "8:10: servers.c.url: url must start with http:// or https://, found \"\"",
        ],
    );
}

#[test]
fn server_names_and_prefixes() {
    check(
        "policy: policy.yaml\nservers:\n  \"a b\":\n    command: x\n  ok:\n    command: x\n    prefix: \"p.q\"\n",
        &[
            "3:3: servers: invalid server name: \"a b\" contains ' ' (only letters, digits, _ and - are allowed)",
            "7:13: servers.ok.prefix: invalid prefix: \"p.q\" contains '.' (only letters, digits, _ and - are allowed)",
        ],
    );
    check(
        &format!(
            "policy: policy.yaml\nservers:\n  {}:\n    command: x\n",
            "a".repeat(65)
        ),
        &[&format!(
            "3:3: servers: invalid server name: \"{}\" must be 1 to 64 characters long",
            "a".repeat(65)
        )],
    );
    // The same effective prefix twice: a custom prefix equal to another
    // server's name, or two equal custom prefixes.
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n  b:\n    command: x\n    prefix: a\n  c:\n    command: x\n    prefix: a\n",
        &[
            "7:13: servers.b: server \"b\" has the same prefix \"a\" as server \"a\" (their tools' gateway names would collide)",
            "10:13: servers.c: server \"c\" has the same prefix \"a\" as server \"a\" (their tools' gateway names would collide)",
        ],
    );
    // prefix: false twice is fine here (collisions are found at runtime).
    let config = ok("policy: policy.yaml\nservers:\n  a:\n    command: x\n    prefix: false\n  b:\n    command: y\n    prefix: false\n  c:\n    command: z\n    prefix: true\n");
    assert_eq!(config.servers[2].prefix.as_deref(), Some("c"));
}

#[test]
fn separators() {
    check(
        "policy: policy.yaml\nseparator: \"\"\nservers:\n  a:\n    command: x\n",
        &["2:12: separator: separator must be 1 to 8 characters long, found \"\""],
    );
    check(
        "policy: policy.yaml\nseparator: \"::\"\nservers:\n  a:\n    command: x\n",
        &["2:12: separator: separator \"::\" contains ':' (only letters, digits, _, . and - are valid in tool names)"],
    );
    check(
        "policy: policy.yaml\nseparator: \"123456789\"\nservers:\n  a:\n    command: x\n",
        &["2:12: separator: separator must be 1 to 8 characters long, found \"123456789\""],
    );
}

#[test]
fn durations() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n    request_timeout: 30\n    restart: { initial: 1m, max: 1s }\n  b:\n    command: x\n    request_timeout: 0s\n  c:\n    command: x\n    request_timeout: 10 minutes\n  d:\n    command: x\n    request_timeout: -1\nsessions:\n  max_age: 400d\n",
        &[
            "6:14: servers.a.restart: initial (60s) must not be longer than max (1s)",
            "9:22: servers.b.request_timeout: must be longer than zero",
            "12:22: servers.c.request_timeout: invalid duration \"10 minutes\" (expected a number with a unit ms, s, m, h or d, such as \"30s\", or a number of seconds)",
            "15:22: servers.d.request_timeout: a duration cannot be negative, found -1",
            "17:12: sessions.max_age: duration \"400d\" is longer than a year",
        ],
    );
}

#[test]
fn listen_addresses() {
    check(
        "policy: policy.yaml\nlisten: localhost:8080\nservers:\n  a:\n    command: x\n",
        &["2:9: listen: invalid listen address \"localhost:8080\" (expected an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\")"],
    );
    check(
        "policy: policy.yaml\nlisten: 0.0.0.0:8080\nservers:\n  a:\n    command: x\n",
        &["2:9: listen: a non-loopback listen address needs grants (0.0.0.0:8080 is reachable from other machines; add \"grants\" so every client must present a token, or listen on 127.0.0.1)"],
    );
    assert!(
        ok("policy: policy.yaml\nlisten: \"[::1]:1\"\nservers:\n  a:\n    command: x\n")
            .listen
            .ip()
            .is_loopback()
    );
    ok(&format!("policy: policy.yaml\nlisten: 0.0.0.0:8080\nservers:\n  a:\n    command: x\ngrants:\n  g:\n    token_sha256: {HASH_A}\n"));
}

// --- environment interpolation ----------------------------------------------

#[test]
fn env_interpolation_fails_closed() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\n    env:\n      A: \"${MISSING}\"\n      B: \"${MY_TOKEN}-${ALSO_MISSING}\"\n      C: \"cost $5\"\n      D: \"${unterminated\"\n  b:\n    url: http://h\n    headers:\n      Authorization: \"Bearer ${NOPE}\"\n      X-Split: \"${NEWLINE}\"\n",
        &[
            "6:10: servers.a.env.A: environment variable MISSING is not set (referenced as ${MISSING})",
            "7:10: servers.a.env.B: environment variable ALSO_MISSING is not set (referenced as ${ALSO_MISSING})",
            "8:10: servers.a.env.C: a lone \"$\" (write \"$$\" for a literal dollar, \"${NAME}\" for a variable)",
            "9:10: servers.a.env.D: unterminated \"${\" (write \"$$\" for a literal dollar)",
            "13:22: servers.b.headers.Authorization: environment variable NOPE is not set (referenced as ${NOPE})",
            "14:16: servers.b.headers.X-Split: the value (after ${VAR} substitution) contains a line break or NUL",
        ],
    );
    let config = ok("policy: policy.yaml\nservers:\n  a:\n    command: x\n    env: { A: \"${EMPTY}\", B: \"$${MY_TOKEN}\", C: \"plain\" }\n");
    let ServerTransport::Stdio { env, .. } = &config.servers[0].transport else {
        panic!()
    };
    let env: Vec<&str> = env.iter().map(|(_, v)| v.expose()).collect();
    assert_eq!(env, ["", "${MY_TOKEN}", "plain"]);
}

#[test]
fn interpolation_is_only_in_env_and_headers() {
    let config =
        ok("policy: policy.yaml\nservers:\n  a:\n    command: \"${X}\"\n    args: [\"${Y}\"]\n");
    let ServerTransport::Stdio { command, args, .. } = &config.servers[0].transport else {
        panic!()
    };
    assert_eq!((command.as_str(), args[0].as_str()), ("${X}", "${Y}"));
}

// --- grants ----------------------------------------------------------------

#[test]
fn grant_rules() {
    check(
        &format!(
            "policy: policy.yaml\nservers:\n  a:\n    command: x\ngrants:\n  g1:\n    token_sha256: {HASH_A}\n    servers: [a, b, a]\n  g2:\n    token_sha256: \"{}\"\n  g3:\n    token_sha256: xyz\n  g4:\n    servers: []\n  \"g 5\":\n    token_sha256: {HASH_B}\n",
            HASH_A.to_uppercase()
        ),
        &[
            "8:18: grants.g1.servers[1]: unknown server \"b\" (configured: a)",
            "8:21: grants.g1.servers[2]: server \"a\" is listed twice",
            "10:19: grants.g2.token_sha256: grant \"g2\" has the same token_sha256 as grant \"g1\" (each grant needs its own token)",
            "12:19: grants.g3.token_sha256: token_sha256 must be 64 hex characters (the SHA-256 of the token, see `toolgate grant new`), found 3 characters",
            "13:3: grants.g4: missing field \"token_sha256\"",
            "14:14: grants.g4.servers: servers must name at least one server (leave it out to allow every server)",
            "15:3: grants: invalid grant name: \"g 5\" contains ' ' (only letters, digits, _ and - are allowed)",
        ],
    );
}

// --- policies --------------------------------------------------------------

#[test]
fn every_server_needs_a_policy() {
    check(
        "servers:\n  a:\n    command: x\n  b:\n    command: x\n    policy: server.yaml\n",
        &["2:3: servers.a: server \"a\" has no policy: set a top-level \"policy\", a \"policy\" for this server, or a \"policy\" on every grant that reaches it (a gateway without a policy would allow every call; fail closed)"],
    );
    // Grants with policies cover the servers they reach; one without does not.
    check(
        &format!("servers:\n  a:\n    command: x\n  b:\n    command: x\ngrants:\n  g1:\n    token_sha256: {HASH_A}\n    policy: alice.yaml\n  g2:\n    token_sha256: {HASH_B}\n    servers: [b]\n"),
        &["4:3: servers.b: server \"b\" has no policy: set a top-level \"policy\", a \"policy\" for this server, or a \"policy\" on every grant that reaches it (a gateway without a policy would allow every call; fail closed)"],
    );
    ok(&format!("servers:\n  a:\n    command: x\ngrants:\n  g1:\n    token_sha256: {HASH_A}\n    policy: alice.yaml\n  g2:\n    token_sha256: {HASH_B}\n    policy: bob.yaml\n"));
    ok("servers:\n  a:\n    command: x\n    policy: server.yaml\n");
}

#[test]
fn policy_files_bring_their_own_diagnostics() {
    check(
        "policy: bad.json\nservers:\n  a:\n    command: x\n    policy: missing.yaml\n  b:\n    command: x\n    policy: server.txt\n  c:\n    command: x\n    policy: bad.json\n",
        &[
            "1:9: policy: policy file \"bad.json\" is not valid:",
            "bad.json:1:29: default: unknown default \"maybe\" (expected allow or deny)",
            "5:13: servers.a.policy: cannot read policy file \"missing.yaml\": No such file or directory",
            "8:13: servers.b.policy: policy file \"server.txt\" has an unknown format (use .json, .yaml or .yml)",
        ],
    );
}

// --- sessions and http -----------------------------------------------------

#[test]
fn session_keys() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nsessions:\n  key_env: SHORT_KEY\n",
        &["6:12: sessions.key_env: environment variable SHORT_KEY must hold the session key as 64 hex characters (32 bytes), found 4 characters"],
    );
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nsessions:\n  key_env: \"1BAD\"\n",
        &["6:12: sessions.key_env: invalid environment variable name \"1BAD\" (expected letters, digits and _, not starting with a digit)"],
    );
    let config = ok(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nsessions:\n  key_env: UNSET_KEY\n",
    );
    assert_eq!(config.session_key, None);
}

#[test]
fn http_settings() {
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nhttp:\n  allowed_origins: [\"*\", \"https://a.com/\"]\n  allowed_hosts: [\"a:b\"]\n  max_message_bytes: 16 mb\n  shutdown_grace: 1x\n",
        &[
            "6:21: http.allowed_origins[0]: an origin is scheme://host[:port] with scheme http or https, found \"*\"",
            "6:26: http.allowed_origins[1]: an origin is scheme://host[:port] with no path, found \"https://a.com/\"",
            "7:19: http.allowed_hosts[0]: host \"a:b\": invalid port \"b\"",
            "8:22: http.max_message_bytes: invalid size \"16 mb\" (expected a number of bytes, or a number with a unit B, KiB, MiB, GiB, KB, MB or GB such as \"16MiB\")",
            "9:19: http.shutdown_grace: invalid duration \"1x\" (expected a number with a unit ms, s, m, h or d, such as \"30s\", or a number of seconds)",
        ],
    );
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nhttp:\n  max_message_bytes: 0\n",
        &["6:22: http.max_message_bytes: must be from 1 byte to 1 GiB, found 0 bytes"],
    );
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nhttp:\n  max_message_bytes: 2GiB\n",
        &["6:22: http.max_message_bytes: must be from 1 byte to 1 GiB, found 2147483648 bytes"],
    );
}

// --- detection -------------------------------------------------------------

#[test]
fn config_documents_are_told_from_policies() {
    use crate::is_config_document;
    assert!(is_config_document(MINIMAL));
    assert!(is_config_document(FULL));
    assert!(is_config_document("{\"servers\": {}}"));
    assert!(is_config_document("[servers.a]\ncommand = \"x\"\n"));
    assert!(is_config_document("servers:\n  a: [unclosed\n"));
    assert!(!is_config_document(GOOD_POLICY));
    assert!(!is_config_document("version: \"1\"\nservers: {}\n"));
    assert!(!is_config_document("{\"version\": \"1\", \"tools\": {}}"));
    assert!(!is_config_document(""));
}

#[test]
fn load_config_reads_relative_to_the_file() {
    let dir = std::env::temp_dir().join(format!("toolgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.yaml"), GOOD_POLICY).unwrap();
    std::fs::write(
        dir.join("gateway.toml"),
        "policy = \"p.yaml\"\n[servers.a]\ncommand = \"x\"\ncwd = \"work\"\n",
    )
    .unwrap();
    let config = crate::load_config(&dir.join("gateway.toml"), &|_| None).unwrap();
    assert_eq!(config.policy.unwrap().path, dir.join("p.yaml"));
    let ServerTransport::Stdio { cwd, .. } = &config.servers[0].transport else {
        panic!()
    };
    assert_eq!(cwd.as_deref(), Some(dir.join("work").as_path()));
    let error = crate::load_config(&dir.join("nope.yaml"), &|_| None).unwrap_err();
    assert!(error.to_string().starts_with(&format!(
        "{}:1:1: cannot read the config: ",
        dir.join("nope.yaml").display()
    )));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_section() {
    use crate::StateStore;
    use toolgate_policy::FailMode;
    let config = ok("policy: policy.yaml\nservers:\n  a:\n    command: x\n");
    assert_eq!(config.state.store, StateStore::Embedded);
    assert_eq!(config.state.fail, FailMode::Closed);
    let config = ok("policy: policy.yaml\nservers:\n  a:\n    command: x\nstate:\n  store: redis://127.0.0.1:6379/0\n  prefix: prod-eu\n  fail: open\n");
    assert_eq!(
        config.state.store,
        StateStore::Redis("redis://127.0.0.1:6379/0".into())
    );
    assert_eq!(config.state.prefix, "prod-eu");
    assert_eq!(config.state.fail, FailMode::Open);
    let config =
        ok("policy: policy.yaml\nservers:\n  a:\n    command: x\nstate:\n  store: memory\n");
    assert_eq!(config.state.store, StateStore::Memory);
    check(
        "policy: policy.yaml\nservers:\n  a:\n    command: x\nstate:\n  store: postgres://x\n  fail: maybe\n  prefix: \"a b\"\n",
        &[
            "6:10: state.store: unknown store \"postgres://x\" (expected embedded, memory or redis://HOST:PORT/DB)",
            "7:9: state.fail: unknown fail mode \"maybe\" (expected closed or open)",
            "8:11: state.prefix: prefix \"a b\" must be letters, digits, _ - . or :",
        ],
    );
}

// --- admin -------------------------------------------------------------------

const ADMIN_BASE: &str = "policy: policy.yaml\nservers:\n  a:\n    command: x\n";

#[test]
fn admin_section_is_optional_and_has_defaults() {
    assert!(ok(ADMIN_BASE).admin.is_none());
    let config = ok(&format!("{ADMIN_BASE}admin:\n  token_sha256: {HASH_A}\n"));
    let admin = config.admin.unwrap();
    assert_eq!(admin.listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(hex::encode(admin.token_sha256), HASH_A);
    assert!(admin.webhook.is_none());
}

#[test]
fn admin_webhook_loads_every_field() {
    let config = ok(&format!(
        "{ADMIN_BASE}admin:\n  listen: \"0.0.0.0:9090\"\n  token_sha256: {HASH_A}\n  webhook:\n    url: http://chat.internal/hooks/toolgate\n    secret_env: HOOK_SECRET\n    max_attempts: 3\n    initial_backoff: 250ms\n    admin_url: http://gateway.internal:9090/\n"
    ));
    let admin = config.admin.as_ref().unwrap();
    assert_eq!(admin.listen, "0.0.0.0:9090".parse().unwrap());
    let webhook = admin.webhook.as_ref().unwrap();
    assert_eq!(webhook.url, "http://chat.internal/hooks/toolgate");
    assert_eq!(webhook.secret.expose(), "whsec");
    assert_eq!(webhook.max_attempts, 3);
    assert_eq!(webhook.initial_backoff, Duration::from_millis(250));
    assert_eq!(
        webhook.admin_url.as_deref(),
        Some("http://gateway.internal:9090")
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("whsec"), "{shown}");

    // Defaults: the secret from TOOLGATE_WEBHOOK_SECRET, 5 attempts from 1 s,
    // no admin URL (the binary makes it from the admin listener).
    let config = run(
        ConfigFormat::Yaml,
        &format!("{ADMIN_BASE}admin:\n  token_sha256: {HASH_A}\n  webhook:\n    url: http://h/x\n"),
    );
    assert_eq!(
        config.unwrap_err(),
        ["7:3: admin.webhook.secret_env: environment variable TOOLGATE_WEBHOOK_SECRET is not set (it holds the webhook secret that signs webhooks and callbacks)"]
    );
    let env = |name: &str| (name == "TOOLGATE_WEBHOOK_SECRET").then(|| "s".to_string());
    let config = parse(
        &format!("{ADMIN_BASE}admin:\n  token_sha256: {HASH_A}\n  webhook:\n    url: http://h/x\n"),
        ConfigFormat::Yaml,
        "gateway.yaml",
        Path::new(""),
        &env,
        &files,
    )
    .unwrap();
    let webhook = config.admin.unwrap().webhook.unwrap();
    assert_eq!(webhook.secret.expose(), "s");
    assert_eq!(webhook.max_attempts, 5);
    assert_eq!(webhook.initial_backoff, Duration::from_secs(1));
    assert_eq!(webhook.admin_url, None);
}

#[test]
fn admin_section_problems() {
    check(
        &format!("{ADMIN_BASE}admin:\n  listen: localhost:8081\n  token_sha256: abc\n  tls: true\n"),
        &[
            "6:11: admin.listen: invalid listen address \"localhost:8081\" (expected an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\")",
            "7:17: admin.token_sha256: token_sha256 must be 64 hex characters (the SHA-256 of the token, see `toolgate grant new`), found 3 characters",
            "8:3: admin: unknown field \"tls\" (expected listen, token_sha256 or webhook)",
        ],
    );
    // The token is always required, on a loopback address too.
    check(
        &format!("{ADMIN_BASE}admin:\n  listen: 127.0.0.1:8081\n"),
        &["5:1: admin: missing field \"token_sha256\" (the SHA-256 of the admin token; the admin API always needs a token)"],
    );
    check(
        &format!("{ADMIN_BASE}admin: 8081\n"),
        &["5:8: admin: expected an object, found a number"],
    );
    check(
        &format!(
            "{ADMIN_BASE}admin:\n  token_sha256: {HASH_A}\n  webhook:\n    url: https://chat.example/hook\n    secret_env: \"1BAD\"\n    max_attempts: 0\n    initial_backoff: 0s\n    admin_url: ftp://x\n    retries: 3\n"
        ),
        &[
            "8:10: admin.webhook.url: url \"https://chat.example/hook\": https is not supported here yet (use http:// on a trusted network)",
            "9:17: admin.webhook.secret_env: invalid environment variable name \"1BAD\" (expected letters, digits and _, not starting with a digit)",
            "10:19: admin.webhook.max_attempts: must be a whole number from 1 to 20, found 0",
            "11:22: admin.webhook.initial_backoff: must be longer than zero",
            "12:16: admin.webhook.admin_url: url must start with http://, found \"ftp://x\"",
            "13:5: admin.webhook: unknown field \"retries\" (expected url, secret_env, max_attempts, initial_backoff or admin_url)",
        ],
    );
    check(
        &format!("{ADMIN_BASE}admin:\n  token_sha256: {HASH_A}\n  webhook:\n    secret_env: EMPTY\n    max_attempts: \"5\"\n"),
        &[
            "7:3: admin.webhook: missing field \"url\"",
            "8:17: admin.webhook.secret_env: environment variable EMPTY is empty (it holds the webhook secret that signs webhooks and callbacks)",
            "9:19: admin.webhook.max_attempts: expected a whole number, found a string",
        ],
    );
}

#[test]
fn admin_needs_its_own_port_and_its_own_token() {
    check(
        &format!("{ADMIN_BASE}listen: 127.0.0.1:8080\nadmin:\n  listen: 127.0.0.1:8080\n  token_sha256: {HASH_A}\n"),
        &["7:11: admin.listen: admin.listen 127.0.0.1:8080 is the gateway's own listen address (the admin API needs a port of its own)"],
    );
    check(
        &format!("{ADMIN_BASE}admin:\n  listen: \"0.0.0.0:8080\"\n  token_sha256: {HASH_A}\n"),
        &["6:11: admin.listen: admin.listen 0.0.0.0:8080 is the gateway's own listen address (the admin API needs a port of its own)"],
    );
    check(
        &format!("{ADMIN_BASE}grants:\n  alice:\n    token_sha256: {HASH_B}\nadmin:\n  token_sha256: {HASH_B}\n"),
        &["9:17: admin.token_sha256: admin.token_sha256 is the token of grant \"alice\" (an agent's token must not open the admin API)"],
    );
}

#[test]
fn admin_section_in_toml_and_json() {
    let config = ok_as(
        ConfigFormat::Toml,
        &format!("policy = \"policy.yaml\"\n[servers.a]\ncommand = \"x\"\n[admin]\nlisten = \"[::1]:8081\"\ntoken_sha256 = \"{HASH_A}\"\n[admin.webhook]\nurl = \"http://h/x\"\nsecret_env = \"HOOK_SECRET\"\n"),
    );
    let admin = config.admin.unwrap();
    assert_eq!(admin.listen, "[::1]:8081".parse().unwrap());
    assert_eq!(admin.webhook.unwrap().secret.expose(), "whsec");
    check_toml(
        &format!("policy = \"policy.yaml\"\n[servers.a]\ncommand = \"x\"\n[admin]\ntoken_sha256 = \"{HASH_A}\"\nlisten = 8081\n"),
        &["6:10: admin.listen: expected a string, found a number"],
    );
    let config = ok_as(
        ConfigFormat::Json,
        &format!("{{\"policy\": \"policy.yaml\", \"servers\": {{\"a\": {{\"command\": \"x\"}}}}, \"admin\": {{\"token_sha256\": \"{HASH_A}\"}}}}"),
    );
    assert!(config.admin.is_some());
}

// --- telemetry ---------------------------------------------------------------

#[test]
fn telemetry_section_is_optional() {
    let config = ok(MINIMAL);
    assert!(config.telemetry.otlp.is_none());
    assert!(config.telemetry.service_name.is_none());
}

#[test]
fn telemetry_loads_every_field() {
    let config = ok(&format!(
        "{MINIMAL}telemetry:\n  service_name: gw-prod\n  otlp:\n    endpoint: http://collector:4318/\n    protocol: http/json\n    headers:\n      authorization: \"Bearer ${{MY_TOKEN}}\"\n"
    ));
    assert_eq!(config.telemetry.service_name.as_deref(), Some("gw-prod"));
    let otlp = config.telemetry.otlp.as_ref().unwrap();
    assert_eq!(otlp.endpoint, "http://collector:4318");
    assert_eq!(otlp.protocol, crate::OtlpProtocol::HttpJson);
    assert_eq!(otlp.headers[0].0, "authorization");
    assert_eq!(otlp.headers[0].1.expose(), "Bearer s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
    let config = ok(&format!(
        "{MINIMAL}telemetry:\n  otlp:\n    endpoint: http://127.0.0.1:4318\n"
    ));
    assert_eq!(
        config.telemetry.otlp.unwrap().protocol,
        crate::OtlpProtocol::HttpProtobuf
    );
}

#[test]
fn telemetry_problems() {
    check(
        &format!("{MINIMAL}telemetry:\n  service: x\n  service_name: \"\"\n  otlp:\n    endpoint: ftp://c:4318\n    protocol: grpc\n    headers:\n      \"a b\": x\n      x-key: ${{NOPE}}\n"),
        &[
            "6:3: telemetry: unknown field \"service\" (expected service_name or otlp)",
            "7:17: telemetry.service_name: must not be empty",
            "9:15: telemetry.otlp.endpoint: url must start with http:// or https://, found \"ftp://c:4318\"",
            "10:15: telemetry.otlp.protocol: OTLP over gRPC is not supported (expected http/protobuf or http/json)",
            "12:7: telemetry.otlp.headers: invalid header name \"a b\"",
            "13:14: telemetry.otlp.headers.x-key: environment variable NOPE is not set (referenced as ${NOPE})",
        ],
    );
    check(
        &format!("{MINIMAL}telemetry:\n  otlp:\n    protocol: json\n"),
        &[
            "6:3: telemetry.otlp: missing field \"endpoint\" (the collector's base URL, such as http://127.0.0.1:4318)",
            "7:15: telemetry.otlp.protocol: unknown OTLP protocol \"json\" (expected http/protobuf or http/json)",
        ],
    );
}
