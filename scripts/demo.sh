#!/usr/bin/env bash
# Sets up, builds toolgate, and shows it at work in front of a real MCP server.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p toolgate
exec target/release/toolgate demo -- node tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio
