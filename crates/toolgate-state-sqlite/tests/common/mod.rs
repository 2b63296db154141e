//! Tests that need other processes: a test re-runs its own test binary with
//! a role in an environment variable, and the test named in the command line
//! then plays that role instead of its own. The child reports with `say`,
//! the parent reads it with `ChildTest::says`.

#![allow(dead_code)] // each test binary uses its own part of it

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The environment variables a test binary passes a child's role and data
/// directory in.
pub struct Roles {
    pub role: &'static str,
    pub dir: &'static str,
}

impl Roles {
    /// The role this process plays when a parent test started it, if any.
    pub fn child(&self) -> Option<(String, PathBuf)> {
        let role = std::env::var(self.role).ok()?;
        let dir = std::env::var_os(self.dir).expect("a child is given a directory");
        Some((role, PathBuf::from(dir)))
    }

    /// Re-runs this test binary for `test` only, as a child playing `role`.
    pub fn spawn(&self, test: &str, role: &str, dir: &Path) -> ChildTest {
        let mut process = Command::new(std::env::current_exe().expect("the test binary"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(self.role, role)
            .env(self.dir, dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a child test process");
        let stdout = process.stdout.take().expect("piped stdout");
        ChildTest {
            process,
            lines: BufReader::new(stdout).lines(),
        }
    }
}

/// A copy of this test binary playing a role for a parent test.
pub struct ChildTest {
    pub process: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildTest {
    /// Reads the child's stdout up to the next line holding `child: `; what
    /// follows it.
    pub fn says(&mut self) -> String {
        loop {
            match self.lines.next() {
                // libtest has written "test NAME ... " on the same line.
                Some(Ok(line)) => {
                    if let Some((_, said)) = line.split_once("child: ") {
                        return said.to_string();
                    }
                }
                Some(Err(e)) => panic!("reading the child's output: {e}"),
                None => panic!("the child ended without reporting"),
            }
        }
    }

    pub fn succeeds(mut self) {
        assert!(
            self.process.wait().expect("reap").success(),
            "a child failed"
        );
    }
}

/// Reports `line` to the parent.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "child: {line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// Waits (up to 30 s) for the parent to create `path`.
pub fn wait_for_file(path: &Path) {
    let deadline = toolgate_clock::monotonic_now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            toolgate_clock::monotonic_now() < deadline,
            "the parent never said go"
        );
        toolgate_clock::sleep(Duration::from_micros(200));
    }
}
