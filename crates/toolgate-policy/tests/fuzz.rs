//! Fuzzing the policy readers on stable Rust, inside `cargo test`: seeded,
//! bounded, a few seconds at most. The seeds are the policies in
//! `examples/`, `docs/policy.md`, the README and the fixtures; each round
//! mutates one (bytes and lines flipped, inserted, deleted, duplicated) and
//! reads it as JSON and as YAML. Reading must never panic, and generated
//! inputs that grow (many keys, deep nesting, huge keys, long numbers) must
//! take time linear in their size.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;
use toolgate_fuzz::{Mutations, Rng};

use toolgate_policy::{parse_policy, Format};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The fenced blocks of a markdown file whose language is one of `langs`.
fn fenced(text: &str, langs: &[&str]) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) if langs.contains(&lang.trim()) => current = Some(String::new()),
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

fn seeds() -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(format!("{WORKSPACE}/{path}")).unwrap();
    let mut seeds = vec![
        read("examples/alice.policy.yaml"),
        read("examples/everything.policy.json"),
        read("examples/gateway.policy.yaml"),
    ];
    for doc in ["docs/policy.md", "README.md"] {
        seeds.extend(fenced(&read(doc), &["json", "yaml"]));
    }
    for entry in
        std::fs::read_dir(format!("{WORKSPACE}/crates/toolgate-policy/tests/fixtures")).unwrap()
    {
        seeds.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    seeds.retain(|s| s.contains("version"));
    assert!(seeds.len() >= 8, "only {} seed policies", seeds.len());
    seeds
}

/// Bytes a mutation inserts: JSON and YAML syntax, and what is awkward in
/// either (a BOM, NUL, a lone high byte becomes U+FFFD, long digits).
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "'",
    "-",
    " ",
    "\n",
    "\t",
    "#",
    "&a",
    "*a",
    "!!str",
    "---",
    "...",
    "? ",
    "|",
    ">",
    "\\",
    "\\u",
    "\\ud800",
    "0",
    "-0",
    "1e400",
    "1e-400",
    "0x1F",
    "0o7",
    ".inf",
    "null",
    "true",
    "~",
    "\u{feff}",
    "\u{0}",
    "é",
    "😀",
    "9007199254740993",
    "100.00000000000001",
    "args.x",
    "lte",
    "regex",
    "(",
    "*",
    "{{",
    "}}",
    "%",
    "@",
];

const MUTATIONS: Mutations<'_> = Mutations {
    tokens: TOKENS,
    openings: &["[", "{\"a\": "],
    max_nesting: 200,
    max_digits: Some(5_000),
};

fn mutate(rng: &mut Rng, seed: &str) -> String {
    MUTATIONS.mutate(rng, seed)
}

/// Reads `text` both ways; the text of the first panic, if any.
fn panics(text: &str) -> Option<String> {
    for format in [Format::Json, Format::Yaml] {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = parse_policy(text, format, "fuzz");
        }));
        if outcome.is_err() {
            return Some(format!("{format:?}: {text:?}"));
        }
    }
    None
}

#[test]
fn mutated_policies_never_panic() {
    let seeds = seeds();
    for seed in &seeds {
        assert!(panics(seed).is_none());
    }
    toolgate_fuzz::rounds(0x7001_6a7e, |rng| {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(rng, seed);
        panics(&input)
    });
}

/// The best of three timings of `f(n)`.
fn time(f: &dyn Fn(usize) -> String, n: usize, format: Format) -> Duration {
    let input = f(n);
    toolgate_fuzz::best_of_three(|| {
        let _ = std::hint::black_box(parse_policy(&input, format, "big"));
    })
}

/// Reading 10× the input takes at most ~10× as long (see
/// [`toolgate_fuzz::assert_linear`]).
fn assert_linear(what: &str, f: &dyn Fn(usize) -> String, n: usize, format: Format) {
    toolgate_fuzz::assert_linear(&format!("{what} ({format:?})"), n, |n| time(f, n, format));
}

fn many_tools_json(n: usize) -> String {
    let tools: Vec<String> = (0..n).map(|i| format!("\"tool_{i}\": {{}}")).collect();
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", \"tools\": {{{}}}}}",
        tools.join(", ")
    )
}

fn many_tools_yaml(n: usize) -> String {
    let tools: String = (0..n).map(|i| format!("  tool_{i}: {{}}\n")).collect();
    format!("version: \"1\"\ndefault: deny\ntools:\n{tools}")
}

fn many_patterns_json(n: usize) -> String {
    let tools: Vec<String> = (0..n)
        .map(|i| format!("\"t{i}_*\": {{}}, \"t{i}\": {{\"action\": \"deny\"}}"))
        .collect();
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", \"tools\": {{{}}}}}",
        tools.join(", ")
    )
}

fn many_conditions_json(n: usize) -> String {
    let conditions: Vec<String> = (0..n)
        .map(|i| format!("{{\"path\": \"args.a{i}\", \"op\": \"in\", \"value\": [1, 2.5, \"x\"]}}"))
        .collect();
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", \"tools\": {{\"t\": {{\"conditions\": [{}]}}}}}}",
        conditions.join(", ")
    )
}

fn many_duplicate_keys_json(n: usize) -> String {
    let tools: Vec<String> = (0..n)
        .map(|i| format!("\"tool_{}\": {{}}", i % 100))
        .collect();
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", \"tools\": {{{}}}}}",
        tools.join(", ")
    )
}

fn many_unknown_fields_json(n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("\"field_{i}\": {i}")).collect();
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", {}}}",
        fields.join(", ")
    )
}

fn huge_key_json(n: usize) -> String {
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", \"tools\": {{\"{}\": {{}}}}}}",
        "k".repeat(n)
    )
}

fn long_number_json(n: usize) -> String {
    format!(
        "{{\"version\": \"1\", \"default\": \"deny\", \"tools\": {{\"t\": {{\"conditions\": [{{\"path\": \"args.x\", \"op\": \"lte\", \"value\": 1.{}}}]}}}}}}",
        "0".repeat(n)
    )
}

fn deep_json(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

fn deep_yaml_flow(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

fn deep_yaml_block(n: usize) -> String {
    (0..n)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect()
}

#[test]
fn reading_takes_time_linear_in_the_input() {
    assert_linear("20,000 tools", &many_tools_json, 20_000, Format::Json);
    assert_linear("20,000 tools", &many_tools_yaml, 20_000, Format::Yaml);
    assert_linear(
        "20,000 patterns and names",
        &many_patterns_json,
        20_000,
        Format::Json,
    );
    assert_linear(
        "20,000 conditions",
        &many_conditions_json,
        20_000,
        Format::Json,
    );
    assert_linear(
        "20,000 repeated keys",
        &many_duplicate_keys_json,
        20_000,
        Format::Json,
    );
    assert_linear(
        "20,000 unknown fields",
        &many_unknown_fields_json,
        20_000,
        Format::Json,
    );
    assert_linear(
        "a 1,000,000-byte key",
        &huge_key_json,
        1_000_000,
        Format::Json,
    );
    assert_linear(
        "a 1,000,000-digit bound",
        &long_number_json,
        1_000_000,
        Format::Json,
    );
    assert_linear("20,000 nested arrays", &deep_json, 20_000, Format::Json);
    assert_linear(
        "20,000 nested arrays",
        &deep_yaml_flow,
        20_000,
        Format::Yaml,
    );
    assert_linear(
        "2,000 nested mappings",
        &deep_yaml_block,
        2_000,
        Format::Yaml,
    );
}

/// Found by the deep inputs above: the YAML reader went through
/// `Parser::load`, which recurses once per level, so 20,000 nested
/// mappings overflowed the stack (an abort, not a panic), and it had no
/// depth limit of its own. It now reads event by event and refuses nesting
/// deeper than the JSON reader does (flow collections are refused by the
/// YAML scanner first).
#[test]
fn deep_yaml_nesting_is_refused_not_a_stack_overflow() {
    for input in [
        deep_yaml_flow(100_000),
        format!("a: {}", "{b: ".repeat(100_000)),
        deep_yaml_block(1_000),
        "- ".repeat(100_000),
    ] {
        let error = parse_policy(&input, Format::Yaml, "deep.yaml").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("nested too deeply") || message.contains("recursion limit exceeded"),
            "{message}"
        );
    }
    let error = parse_policy(&deep_json(100_000), Format::Json, "deep.json").unwrap_err();
    assert!(error.to_string().contains("nested too deeply"), "{error}");
}
