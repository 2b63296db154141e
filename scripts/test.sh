#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. scripts/setup.sh        .venv and tests/node/node_modules
#   2. cargo fmt --check
#   3. cargo clippy, warnings are errors
#   4. cargo build of every binary (the e2e suite runs target/debug/toolgate)
#   5. cargo test
#   6. pytest tests/e2e        the real gateway between real MCP clients and servers
# Exits non-zero on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() {
    printf '\n==> %s\n' "$*"
}

step "setup"
bash scripts/setup.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace

step "pytest tests/e2e"
export TOOLGATE_BIN="$root/target/debug/toolgate"
# Two workers: most of an e2e test's time is the Python probe server starting up.
.venv/bin/python -m pytest tests/e2e -q -n 2
