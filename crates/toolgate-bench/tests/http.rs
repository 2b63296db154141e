//! Runs the real `http-bench` against the real `http-echo`, in every mode
//! that needs no `toolgate serve`, and checks what it prints.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_http-bench"))
        .args(["--echo", env!("CARGO_BIN_EXE_http-echo")])
        .args(args)
        .output()
        .expect("run http-bench")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "http-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn direct_handshake_load_prints_a_row_per_concurrency() {
    let args = ["--target", "direct", "--rounds", "2", "--calls", "50"];
    let out = stdout(&bench(&[&args[..], &["--concurrency", "1,3"]].concat()));
    assert!(out.contains("handshake"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("| 1 | ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("| 3 | ")), "{out}");
}

#[test]
fn direct_stateless_load() {
    let out = stdout(&bench(&[
        "--target",
        "direct",
        "--mode",
        "2026",
        "--rounds",
        "1",
        "--calls",
        "50",
        "--concurrency",
        "2",
    ]));
    assert!(out.contains("stateless (2026-07-28)"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("| 2 | ")), "{out}");
}

#[test]
fn direct_sessions_all_open_and_answer() {
    let out = stdout(&bench(&[
        "--target",
        "direct",
        "--sessions",
        "300",
        "--sample",
        "10",
    ]));
    assert!(out.contains("| sessions opened | 300 of 300"), "{out}");
    assert!(
        out.contains("| errors | 0 opening, 0 of 10 sample"),
        "{out}"
    );
}

#[test]
fn a_toolgate_without_serve_is_named() {
    let out = bench(&["--toolgate", "/bin/false", "--calls", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no `serve` subcommand"), "{err}");
}
