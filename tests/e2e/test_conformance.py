"""The official MCP conformance suite through `toolgate serve`: every check that
passes against the suite's reference server direct must pass with the gateway
in front of it, for both revisions (2025-11-25, the handshake; 2026-07-28,
stateless), scored scenarios and not-scored ones alike.

Each side gets a fresh reference server (it keeps state between runs) and runs
2025-11-25 before 2026-07-28 on it, as the suite's notes say; direct and
through the gateway are measured in the same run, check by check.

The suite and the reference server are pinned in tests/conformance/ and
installed by scripts/setup.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, wait_listening
from servekit import free_port

CONFORMANCE = REPO / "tests" / "conformance"
SUITE = CONFORMANCE / "suite" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
REFERENCE = CONFORMANCE / "reference-server"
TSX = REFERENCE / "node_modules" / ".bin" / "tsx"
REVISIONS = ["2025-11-25", "2026-07-28"]
# Checks the gateway is known to lose, as (revision, scenario, check id):
# each one is a gap of issue 16, listed so that a new loss fails at once and
# a fixed one must be taken off the list.
KNOWN_LOSSES = CONFORMANCE / "known-losses.txt"


def _need_installed() -> None:
    for path in (SUITE, TSX):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/setup.sh (it installs the conformance suite and its reference server)")


class ReferenceServer:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "ReferenceServer":
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(TSX), "everything-server.ts"], cwd=REFERENCE, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PORT": str(self.port)})
        wait_listening(self.port, timeout=60, what="the conformance reference server to listen")
        return self

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/mcp"

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_suite(url: str, revision: str, out: Path) -> dict[str, dict[str, str]]:
    """{scenario: {check id: status}} of one run of the suite at one revision."""
    out.mkdir(parents=True)
    done = subprocess.run(["node", str(SUITE), "server", "--url", url, "--requirements", revision,
                           "--timeout", "15000", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    (out / "output.txt").write_text(done.stdout + done.stderr, encoding="utf-8")
    results: dict[str, dict[str, str]] = {}
    for checks in sorted(out.glob("*/checks.json")):
        # Folders are server-SCENARIO-TIMESTAMP.
        scenario = checks.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        statuses = results.setdefault(scenario, {})
        for check in json.loads(checks.read_text(encoding="utf-8")):
            statuses[check["id"]] = check["status"]
    assert results, f"the conformance suite ran no scenario against {url}:\n{done.stdout}\n{done.stderr}"
    return results


def run_both(url: str, out: Path) -> dict[str, dict[str, dict[str, str]]]:
    return {revision: run_suite(url, revision, out / revision) for revision in REVISIONS}


def known_losses() -> set[tuple[str, str, str]]:
    if not KNOWN_LOSSES.exists():
        return set()
    lines = [line.split("#")[0].split() for line in KNOWN_LOSSES.read_text(encoding="utf-8").splitlines()]
    return {(w[0], w[1], w[2]) for w in lines if w}


def test_conformance_suite_passes_through_serve_as_direct(serve_factory, tmp_path):
    _need_installed()
    with ReferenceServer(tmp_path / "direct-server.log") as server:
        direct = run_both(server.url, tmp_path / "direct")
    with ReferenceServer(tmp_path / "gateway-server.log") as server:
        gw = serve_factory({"policy": "allow.json", "servers": {"reference": {"url": server.url, "prefix": False}}},
                           {"allow.json": {"version": "1", "default": "allow"}})
        through = run_both(f"http://localhost:{gw.addr.rsplit(':', 1)[1]}/mcp", tmp_path / "gateway")
    lost = set()
    for revision, scenarios in direct.items():
        for scenario, checks in scenarios.items():
            for check, status in checks.items():
                if status != "SUCCESS":
                    continue
                got = through[revision].get(scenario, {})
                if got.get(check) != "SUCCESS" or "scenario-timeout" in got:
                    lost.add((revision, scenario, check))
    passed_direct = sum(s == "SUCCESS" for r in direct.values() for c in r.values() for s in c.values())
    assert passed_direct > 100, f"the reference server passed only {passed_direct} checks direct"
    expected = known_losses()
    new = sorted(lost - expected)
    fixed = sorted(expected - lost)
    assert not new, "checks that pass direct but not through toolgate serve:\n" + "\n".join(
        f"  {r} {s} {c}: {through[r].get(s, {}).get(c, 'not run')}" for r, s, c in new)
    assert not fixed, f"checks listed in {KNOWN_LOSSES} now pass through the gateway; take them off the list:\n" + \
        "\n".join(f"  {r} {s} {c}" for r, s, c in fixed)
