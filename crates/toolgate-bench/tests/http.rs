//! Runs the real `http-bench` against the real `http-echo` and the real
//! `tcp-relay`, in every mode that needs no `toolgate serve`, and checks
//! what it prints.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_http-bench"))
        .args(["--echo", env!("CARGO_BIN_EXE_http-echo")])
        .args(["--relay", env!("CARGO_BIN_EXE_tcp-relay")])
        .args(args)
        .output()
        .expect("run http-bench")
}

/// The cells of the table row for `clients` clients.
fn row(out: &str, clients: usize) -> Vec<String> {
    let prefix = format!("| {clients} | ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row for {clients} clients: {out}"));
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// The cell under `column` in the row for `clients` clients.
fn cell(out: &str, clients: usize, column: &str) -> String {
    let header = out
        .lines()
        .find(|l| l.starts_with("| clients |"))
        .unwrap_or_else(|| panic!("no table: {out}"));
    let i = header
        .trim_matches('|')
        .split('|')
        .position(|c| c.trim() == column)
        .unwrap_or_else(|| panic!("no column {column:?}: {header}"));
    row(out, clients)[i].clone()
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
    // Neither toolgate nor the relay was measured.
    for column in ["toolgate calls/s", "relay calls/s", "relay added p50"] {
        assert_eq!(cell(&out, 1, column), "–", "{column}: {out}");
    }
    assert_ne!(cell(&out, 1, "direct calls/s"), "–", "{out}");
}

#[test]
fn the_relay_is_measured_beside_direct() {
    let out = stdout(&bench(&[
        "--target",
        "direct,relay",
        "--rounds",
        "2",
        "--calls",
        "50",
        "--concurrency",
        "1,2",
    ]));
    for clients in [1, 2] {
        assert_eq!(row(&out, clients).len(), 14, "{out}");
        let rate: f64 = cell(&out, clients, "relay calls/s").parse().unwrap();
        assert!(rate > 0.0, "{out}");
        assert!(
            cell(&out, clients, "relay % of direct").ends_with('%'),
            "{out}"
        );
        assert!(
            cell(&out, clients, "relay added p50").ends_with(" µs"),
            "{out}"
        );
        assert_eq!(cell(&out, clients, "toolgate calls/s"), "–", "{out}");
    }
}

#[test]
fn the_relay_relays_stateless_requests() {
    let out = stdout(&bench(&[
        "--target",
        "relay",
        "--mode",
        "2026",
        "--rounds",
        "1",
        "--calls",
        "50",
        "--concurrency",
        "2",
    ]));
    assert_ne!(cell(&out, 2, "relay calls/s"), "–", "{out}");
    // Without direct there is nothing to compare with.
    assert_eq!(cell(&out, 2, "relay % of direct"), "–", "{out}");
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
fn sessions_do_not_measure_the_relay() {
    let out = bench(&["--target", "relay", "--sessions", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the relay"), "{err}");
}

/// A stand-in `toolgate` that writes down its arguments and relays to the
/// upstream it was given, so the bench's probe then finds it allows a tool
/// the policy denies.
#[cfg(unix)]
#[test]
fn toolgate_args_are_passed_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("http-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (fake, args) = (dir.join("toolgate"), dir.join("args"));
    std::fs::write(
        &fake,
        format!(
            r#"#!/bin/sh
[ "$1 $2" = "serve --help" ] && exit 0
echo "$@" > {args}
while [ $# -gt 0 ]; do
  [ "$1" = --upstream ] && up=$2
  shift
done
up=${{up#http://}}
exec {relay} --to "${{up%%/*}}"
"#,
            args = args.display(),
            relay = env!("CARGO_BIN_EXE_tcp-relay"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = bench(&[
        "--toolgate",
        fake.to_str().unwrap(),
        "--toolgate-arg=--workers",
        "--toolgate-arg",
        "2",
        "--calls",
        "1",
    ]);
    let recorded = std::fs::read_to_string(&args).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not refuse a tool its policy denies"),
        "{err}"
    );
    assert!(recorded.starts_with("serve --policy "), "{recorded}");
    // After the bench's own arguments (the last is its own --data-dir), in order.
    assert!(
        recorded.trim_end().ends_with("toolgate-data --workers 2"),
        "{recorded}"
    );
}

#[test]
fn a_toolgate_without_serve_is_named() {
    let out = bench(&["--toolgate", "/bin/false", "--calls", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no `serve` subcommand"), "{err}");
}
