//! Fuzzing the config reader on stable Rust, inside `cargo test`: seeded,
//! bounded, a few seconds at most. The seeds are `examples/gateway.yaml`
//! and every config in `docs/config.md` (YAML, TOML, JSON); each round
//! mutates one (bytes and lines flipped, inserted, deleted, duplicated) and
//! reads it in all three formats, with a fake environment and policy files.
//! Reading must never panic, and generated configs that grow (many servers,
//! grants, keys, deep nesting, huge keys) must take time linear in their
//! size.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;
use toolgate_fuzz::{Mutations, Rng};

use crate::validate::parse;
use crate::ConfigFormat;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const POLICY: &str = "version: \"1\"\ndefault: allow\n";

fn env(name: &str) -> Option<String> {
    match name {
        "TOOLGATE_SESSION_KEY" => Some("ab".repeat(32)),
        _ => (name.len() < 64).then(|| "value".to_string()),
    }
}

fn files(_: &Path) -> std::io::Result<String> {
    Ok(POLICY.to_string())
}

fn read(source: &str, format: ConfigFormat) {
    let _ = parse(source, format, "fuzz", Path::new("."), &env, &files);
}

fn seeds() -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(format!("{WORKSPACE}/{path}")).unwrap();
    let mut seeds = vec![read("examples/gateway.yaml")];
    let mut current: Option<String> = None;
    for line in read("docs/config.md").lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some("yaml" | "toml" | "json")) => current = Some(String::new()),
            (Some(_), Some(_)) => seeds.extend(current.take()),
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    assert!(seeds.len() >= 8, "only {} seed configs", seeds.len());
    seeds
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "[[",
    "]]",
    ":",
    "=",
    ",",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    " ",
    "\n",
    "\t",
    "#",
    "&a",
    "*a",
    "---",
    "\\",
    "\\u",
    "\\ud800",
    "0",
    "-0",
    "1e400",
    "0x1F",
    "inf",
    "nan",
    ".inf",
    "null",
    "true",
    "~",
    "\u{feff}",
    "\u{0}",
    "é",
    "${",
    "${X}",
    "${}",
    "$",
    "1979-05-27T07:32:00Z",
    "16MiB",
    "99999999999999999999",
    "-1",
    "30s",
    "0s",
    "servers",
    "grants",
    "policy",
    "url",
    "http://",
    "127.0.0.1:0",
    "token_sha256",
];

const MUTATIONS: Mutations<'_> = Mutations {
    tokens: TOKENS,
    openings: &["[", "{\"a\": ", "{a = "],
    max_nesting: 300,
    max_digits: None,
};

fn mutate(rng: &mut Rng, seed: &str) -> String {
    MUTATIONS.mutate(rng, seed)
}

fn panics(text: &str) -> Option<String> {
    for format in [ConfigFormat::Yaml, ConfigFormat::Toml, ConfigFormat::Json] {
        if catch_unwind(AssertUnwindSafe(|| read(text, format))).is_err() {
            return Some(format!("{format:?}: {text:?}"));
        }
    }
    None
}

#[test]
fn mutated_configs_never_panic() {
    let seeds = seeds();
    toolgate_fuzz::rounds(0xc0f1_6a7e, |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        panics(&mutate(rng, seed))
    });
}

/// The best of three timings of reading `f(n)`.
fn time(f: &dyn Fn(usize) -> String, n: usize, format: ConfigFormat) -> Duration {
    let input = f(n);
    toolgate_fuzz::best_of_three(|| read(std::hint::black_box(&input), format))
}

/// Reading 10× the input takes at most ~10× as long (see
/// [`toolgate_fuzz::assert_linear`]).
fn assert_linear(what: &str, f: &dyn Fn(usize) -> String, n: usize, format: ConfigFormat) {
    toolgate_fuzz::assert_linear(&format!("{what} ({format:?})"), n, |n| time(f, n, format));
}

fn many_servers(n: usize) -> String {
    let servers: String = (0..n)
        .map(|i| format!("  s{i}: {{command: x, policy: p.yaml}}\n"))
        .collect();
    format!("listen: \"127.0.0.1:0\"\nservers:\n{servers}")
}

/// n servers, and one grant that names every one of them.
fn one_grant_naming_many_servers(n: usize) -> String {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    format!(
        "{}grants:\n  g:\n    token_sha256: \"{}\"\n    policy: p.yaml\n    servers: [{}]\n",
        many_servers(n),
        "ab".repeat(32),
        names.join(", ")
    )
}

fn many_grants(n: usize) -> String {
    let grants: String = (0..n)
        .map(|i| format!("  g{i}: {{token_sha256: \"{i:064x}\", policy: p.yaml}}\n"))
        .collect();
    format!("listen: \"127.0.0.1:0\"\nservers:\n  s: {{command: x}}\ngrants:\n{grants}")
}

/// n grants, each naming n/100 of 100 servers: grants × names lookups.
fn many_grants_naming_servers(n: usize) -> String {
    let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    let grants: String = (0..n)
        .map(|i| {
            format!(
                "  g{i}: {{token_sha256: \"{i:064x}\", servers: [{}]}}\n",
                names.join(", ")
            )
        })
        .collect();
    format!(
        "{}grants:\n{grants}",
        many_servers(100).replace(", policy: p.yaml", "")
    )
}

/// n servers without a policy, each covered by its own grant's policy:
/// every server asks which grants reach it.
fn servers_covered_by_grants(n: usize) -> String {
    let servers: String = (0..n)
        .map(|i| format!("  s{i}: {{command: x}}\n"))
        .collect();
    let grants: String = (0..n)
        .map(|i| {
            format!("  g{i}: {{token_sha256: \"{i:064x}\", policy: p.yaml, servers: [s{i}]}}\n")
        })
        .collect();
    format!("listen: \"127.0.0.1:0\"\nservers:\n{servers}grants:\n{grants}")
}

fn many_env_vars(n: usize) -> String {
    let vars: String = (0..n)
        .map(|i| format!("      V{i}: \"${{X{i}}}\"\n"))
        .collect();
    format!(
        "listen: \"127.0.0.1:0\"\npolicy: p.yaml\nservers:\n  s:\n    command: x\n    env:\n{vars}"
    )
}

fn many_unknown_fields(n: usize) -> String {
    (0..n).map(|i| format!("field_{i}: {i}\n")).collect()
}

fn many_servers_toml(n: usize) -> String {
    let servers: String = (0..n)
        .map(|i| format!("[servers.s{i}]\ncommand = \"x\"\npolicy = \"p.yaml\"\n"))
        .collect();
    format!("listen = \"127.0.0.1:0\"\n{servers}")
}

fn many_servers_json(n: usize) -> String {
    let servers: Vec<String> = (0..n)
        .map(|i| format!("\"s{i}\": {{\"command\": \"x\", \"policy\": \"p.yaml\"}}"))
        .collect();
    format!(
        "{{\"listen\": \"127.0.0.1:0\", \"servers\": {{{}}}}}",
        servers.join(", ")
    )
}

fn huge_key(n: usize) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\npolicy: p.yaml\nservers:\n  {}: {{command: x}}\n",
        "k".repeat(n)
    )
}

fn deep(n: usize) -> String {
    format!("a: {}{}", "[".repeat(n), "]".repeat(n))
}

fn deep_toml(n: usize) -> String {
    format!("a = {}{}", "[".repeat(n), "]".repeat(n))
}

#[test]
fn reading_takes_time_linear_in_the_input() {
    use ConfigFormat::{Json, Toml, Yaml};
    assert_linear("2,000 servers", &many_servers, 2_000, Yaml);
    assert_linear("2,000 servers", &many_servers_toml, 2_000, Toml);
    assert_linear("2,000 servers", &many_servers_json, 2_000, Json);
    assert_linear("2,000 grants", &many_grants, 2_000, Yaml);
    assert_linear(
        "1,000 grants naming 100 servers",
        &many_grants_naming_servers,
        1_000,
        Yaml,
    );
    assert_linear("5,000 env variables", &many_env_vars, 5_000, Yaml);
    assert_linear("5,000 unknown fields", &many_unknown_fields, 5_000, Yaml);
    assert_linear("a 200,000-byte key", &huge_key, 200_000, Yaml);
    assert_linear("5,000 nested arrays", &deep, 5_000, Yaml);
    assert_linear("5,000 nested arrays", &deep_toml, 5_000, Toml);
}

/// Found by the test above: each server a grant named was looked up in the
/// list of servers, and each server without a policy searched every grant's
/// list, so a grant naming 20,000 servers took 43 times as long as one
/// naming 2,000. Both are set lookups now.
#[test]
fn grants_naming_many_servers_are_checked_in_linear_time() {
    use ConfigFormat::Yaml;
    assert_linear(
        "a grant naming 5,000 servers",
        &one_grant_naming_many_servers,
        5_000,
        Yaml,
    );
    assert_linear(
        "5,000 servers covered by grants",
        &servers_covered_by_grants,
        5_000,
        Yaml,
    );
    let config = servers_covered_by_grants(3);
    if let Err(error) = parse(&config, Yaml, "g.yaml", Path::new("."), &env, &files) {
        panic!("{error}");
    }
    let uncovered = config.replace("policy: p.yaml, servers: [s1]", "servers: [s1]");
    let error = parse(&uncovered, Yaml, "g.yaml", Path::new("."), &env, &files).unwrap_err();
    assert!(error.to_string().contains("s1"), "{error}");
    assert!(!error.to_string().contains("servers.s0"), "{error}");
}
