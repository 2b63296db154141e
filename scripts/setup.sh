#!/usr/bin/env bash
# Installs what the test suite needs besides the Rust toolchain:
#   .venv/             Python virtualenv with tests/requirements.txt (mcp SDK, pytest, jsonschema)
#   tests/node/        npm ci of the pinned MCP servers (server-everything, TypeScript SDK)
#   tests/conformance/ npm ci of the official conformance suite and its reference server
#   redis-server       Debian's redis-server package, for the Redis counter store's tests
#   chromium           Debian's chromium and chromium-driver packages, for the dashboard's
#                      browser tests (tests/e2e/test_dashboard.py)
# Idempotent and fast when nothing changed: each step records the hash of its
# inputs in a stamp file and is skipped while the stamp matches.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
need() {
    # need COMMAND "what to install"
    if ! command -v "$1" >/dev/null 2>&1; then
        missing+=("$1 (install $2)")
    fi
}
need python3 "Python 3.10 or newer, e.g. apt-get install python3 python3-venv"
need node "Node.js 20 or newer, e.g. from https://nodejs.org or apt-get install nodejs"
need npm "npm 10 or newer (comes with Node.js; apt-get install npm)"
need cargo "the Rust toolchain via rustup: https://rustup.rs"
if ((${#missing[@]})); then
    echo "setup.sh: missing required tools:" >&2
    for m in "${missing[@]}"; do
        echo "  - $m" >&2
    done
    exit 1
fi

if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "setup.sh: python3 is $(python3 --version 2>&1); the mcp SDK needs Python 3.10 or newer" >&2
    exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 18)); then
    echo "setup.sh: node is $(node --version); server-everything needs Node.js 18 or newer" >&2
    exit 1
fi

hash_of() {
    # Hash of the given files plus the interpreter version, so a new python
    # or node also rebuilds.
    {
        cat "$@"
        printf '%s\n' "$HASH_SALT"
    } | sha256sum | cut -d' ' -f1
}

# --- Python: .venv ---------------------------------------------------------
venv="$root/.venv"
py_stamp="$venv/.toolgate-requirements.sha256"
HASH_SALT="$(python3 --version 2>&1)"
py_hash="$(hash_of tests/requirements.txt)"
if [[ -x "$venv/bin/python" && -f "$py_stamp" && "$(cat "$py_stamp")" == "$py_hash" ]]; then
    echo "setup.sh: .venv up to date"
else
    echo "setup.sh: installing tests/requirements.txt into .venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        if ! python3 -m venv "$venv"; then
            echo "setup.sh: 'python3 -m venv' failed; install the venv module (e.g. apt-get install python3-venv)" >&2
            rm -rf "$venv"
            exit 1
        fi
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r tests/requirements.txt
    echo "$py_hash" >"$py_stamp"
fi

# --- Node: npm ci of each pinned package set ---------------------------------
#   tests/node                        MCP servers and the TypeScript SDK
#   tests/conformance/reference-server the conformance suite's reference server
#   tests/conformance/suite           the official conformance suite
HASH_SALT="$(node --version)"
npm_ci() {
    local dir="$root/$1"
    local stamp="$dir/node_modules/.toolgate-lock.sha256"
    local hash
    hash="$(hash_of "$dir/package.json" "$dir/package-lock.json")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
        echo "setup.sh: $1/node_modules up to date"
    else
        echo "setup.sh: npm ci in $1"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$hash" >"$stamp"
    fi
}
npm_ci tests/node
npm_ci tests/conformance/reference-server
npm_ci tests/conformance/suite
# The suite imports fs.globSync, which Node 20 lacks; it only uses it to sum up
# result folders, which the tests read themselves: on Node < 22 the import is
# replaced by a function that finds nothing.
suite_js="$root/tests/conformance/suite/node_modules/@modelcontextprotocol/conformance/dist/index.js"
if ((node_major < 22)) && grep -q 'globSync as a,' "$suite_js"; then
    sed -i -e '2s/existsSync as i,globSync as a,/existsSync as i,/' -e '2s/^/const a=()=>[];/' "$suite_js"
    grep -q 'globSync as a,' "$suite_js" && { echo "setup.sh: could not patch $suite_js for Node $node_major" >&2; exit 1; }
fi

# --- Debian packages --------------------------------------------------------
apt_install() {
    # apt_install WHAT PACKAGE...: installs Debian packages, as root or with sudo.
    local what="$1"
    shift
    echo "setup.sh: installing $* (apt-get)"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    if ((EUID != 0)); then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "setup.sh: $what is missing and installing it needs root; run: apt-get install -y $*" >&2
            exit 1
        fi
        apt=(sudo "${apt[@]}")
    fi
    # A fresh machine may have no package lists yet: update once and retry.
    if ! "${apt[@]}" install -y -qq "$@" >/dev/null; then
        "${apt[@]}" update -qq
        "${apt[@]}" install -y -qq "$@" >/dev/null
    fi
}

# redis-server (toolgate-state-redis tests and bench): the tests start their
# own redis-server on a free loopback port; only the binary is needed
# (Debian's package also installs a system service, which the tests do not use).
if command -v redis-server >/dev/null 2>&1; then
    echo "setup.sh: redis-server present ($(redis-server --version | cut -d' ' -f3))"
else
    apt_install redis-server redis-server
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "setup.sh: apt-get installed redis-server but it is not on PATH" >&2
        exit 1
    fi
fi

# chromium and chromedriver (the dashboard's browser tests): Debian's
# packages, /usr/bin/chromium and /usr/bin/chromedriver, the same version,
# driven headless by selenium. Nothing is downloaded at test time.
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    echo "setup.sh: chromium present ($(/usr/bin/chromium --version 2>/dev/null | head -n1))"
else
    apt_install chromium chromium chromium-driver
    if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
        echo "setup.sh: apt-get installed chromium but /usr/bin/chromium or /usr/bin/chromedriver is missing" >&2
        exit 1
    fi
fi
