"""State that lasts and scales: counters in the embedded store survive a
restart and `kill -9` and are shared by gateways on one data directory;
counters in Redis are shared by replicas, exactly; an unreachable store fails
closed (or open) and the gateway recovers when it is back.

Redis is the real server: each test starts its own redis-server on a free
port (scripts/setup.sh installs Debian's redis-server package).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import LEGACY, wait_for, wait_listening
from servekit import answer_of, free_port, initialize, post, probe_server

LIMIT_3 = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "send_text": {"limits": [{"counter": "texts", "window": "minute", "max": 3, "scope": "global"}]},
    },
}


def decision(answer: dict) -> str:
    result = answer.get("result", {})
    if result.get("isError"):
        return result["structuredContent"]["toolgate"]["decision"]
    return "allow" if "result" in answer else "error"


def send(raw, i) -> str:
    return decision(raw.call("send_text", {"to": "+1", "body": str(i)}))


def test_embedded_counters_survive_kill_9_and_a_restart(raw_gateway, tmp_path):
    data = tmp_path / "shared-data"
    first = raw_gateway(LIMIT_3, "--data-dir", str(data), mode=LEGACY)
    assert [send(first, i) for i in range(2)] == ["allow", "allow"]
    first.proc.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    second = raw_gateway(LIMIT_3, "--data-dir", str(data), mode=LEGACY)
    assert [send(second, i) for i in range(2)] == ["allow", "rate_limited"], "a restart must not give a fresh budget"


def test_gateways_on_one_data_dir_share_a_budget(raw_gateway, tmp_path):
    data = tmp_path / "shared-data"
    a = raw_gateway(LIMIT_3, "--data-dir", str(data), mode=LEGACY)
    b = raw_gateway(LIMIT_3, "--data-dir", str(data), mode=LEGACY)
    got = [send(a, 0), send(b, 1), send(a, 2), send(b, 3), send(a, 4)]
    assert got.count("allow") == 3 and got[3:] == ["rate_limited", "rate_limited"], got


def test_memory_state_forgets_on_restart(raw_gateway, tmp_path):
    first = raw_gateway(LIMIT_3, "--state", "memory", mode=LEGACY)
    assert [send(first, i) for i in range(4)] == ["allow", "allow", "allow", "rate_limited"]
    first.proc.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    second = raw_gateway(LIMIT_3, "--state", "memory", mode=LEGACY)
    assert send(second, 9) == "allow"


class Redis:
    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: run ./scripts/setup.sh (it installs Debian's redis-server)", pytrace=False)
        self.exe = exe
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

        wait_listening(self.port, 10, "redis-server to listen")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path / "redis").start()
    yield r
    r.stop()


def test_three_gateways_on_one_redis_admit_exactly_30(serve_factory, redis):
    policy = {"version": "1", "default": "deny", "tools": {
        "probe__send_text": {"limits": [{"counter": "send_text_rate", "window": "minute", "max": 30, "scope": "global"}]}}}
    config = {"policy": "policy.json", "servers": {"probe": probe_server()}, "state": {"store": redis.url, "prefix": "e2e"}}
    gateways = [serve_factory(config, {"policy.json": policy}) for _ in range(3)]

    def client(n: int) -> list[str]:
        gw = gateways[n % 3]
        out = []
        with gw.http() as http:
            session = initialize(http, gw.url)
            for i in range(8):
                r = post(http, gw.url, {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                    "name": "probe__send_text", "arguments": {"to": f"+{n}", "body": str(i)}}}, session)
                out.append(decision(answer_of(r)))
        return out

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = [d for ds in pool.map(client, range(12)) for d in ds]
    assert len(results) == 96
    assert results.count("allow") == 30, results
    assert results.count("rate_limited") == 66, results
    received = sum(len(gw.received_tools()) for gw in gateways)
    assert received == 30, "exactly the admitted calls reached the servers"


def test_redis_down_fails_closed_and_recovers_without_a_restart(raw_gateway, tmp_path, redis):
    raw = raw_gateway(LIMIT_3, "--state", redis.url, mode=LEGACY)
    assert send(raw, 0) == "allow"
    # echo's pin is checked (it needs the store once per process, like any tool).
    assert decision(raw.call("echo", {"text": "before"})) == "allow"
    redis.stop()
    answer = raw.call("send_text", {"to": "+1", "body": "while down"})
    assert decision(answer) == "state_unavailable", answer
    assert "unavailable" in answer["result"]["content"][0]["text"]
    # A call without limits does not need the store.
    assert decision(raw.call("echo", {"text": "no limits"})) == "allow"
    redis.start()
    wait_for(lambda: send(raw, 1) == "allow", 10, "the gateway to use Redis again")
    assert raw.gw.received_tools().count("send_text") == 2
    # A tool whose pin was never checked cannot be checked while the store is down.
    redis.stop()
    unchecked = raw.call("transfer", {"to": "x", "amount": 1})
    assert decision(unchecked) in ("state_unavailable", "unknown"), unchecked
    redis.start()


def test_redis_down_fails_open_when_asked(raw_gateway, redis):
    raw = raw_gateway(LIMIT_3, "--state", redis.url, "--state-fail", "open", mode=LEGACY)
    redis.stop()
    assert [send(raw, i) for i in range(5)] == ["allow"] * 5, "fail open admits uncounted"


def test_audit_retention_prunes_old_records_and_the_trail_still_verifies(raw_gateway, toolgate_bin, tmp_path):
    data = tmp_path / "retained"
    first = raw_gateway(LIMIT_3, "--data-dir", str(data), mode=LEGACY)
    assert send(first, 0) == "allow"
    assert decision(first.call("echo", {"text": "x"})) == "allow"
    first.close_stdin()
    first.wait(timeout=10)

    def records() -> list:
        out = subprocess.run([str(toolgate_bin), "audit", "--json", "--data-dir", str(data)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line.strip()]

    assert len(records()) == 2
    time.sleep(1.2)
    second = raw_gateway(LIMIT_3, "--data-dir", str(data), "--audit-retention", "1s", mode=LEGACY)
    wait_for(lambda: len(records()) == 0, 5, "the old records to be pruned")
    assert decision(second.call("echo", {"text": "y"})) == "allow"
    wait_for(lambda: len(records()) == 1, 5, "the new record")
    verify = subprocess.run([str(toolgate_bin), "audit", "verify", "--data-dir", str(data)], capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
