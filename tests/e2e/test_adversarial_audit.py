"""The audit trail against a gateway that is killed: every call a server ran
has a record after `kill -9` (issue 13, item 7), and the trail says at start
when it is kept forever (item 11; by default it is bounded, issue 15).

An allowed call's decision goes to the gateway's intent journal
(`<data-dir>/audit-journal/`) before the call is forwarded; the journals of
dead gateways are put in the trail, as records with outcome `interrupted`,
by the next gateway to start or by `toolgate audit`. The tests drive a burst
of calls, some of them slow so that they are surely in flight, kill the
gateway with SIGKILL, and check the trail against what the probe server
logged as received.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import httpx2
from conftest import LEGACY, canonical_sha256, pid_alive, wait_for
from servekit import answer_of, initialize, post, probe_server

POLICY = {"version": "1", "default": "deny", "tools": {"echo": {}, "slow": {}}}
SERVE_POLICY = {"version": "1", "default": "deny", "tools": {"probe__echo": {}, "probe__slow": {}}}

# The burst: fast calls, with a slow one (that answers long after the kill)
# every FAST_PER_SLOW calls.
SLOW_CALLS = 8
FAST_PER_SLOW = 12
RETENTION_NOTICE = "is kept forever (about 180 bytes a call); bound it with --audit-retention"


def burst() -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = []
    for s in range(SLOW_CALLS):
        calls += [("echo", {"text": f"call {s}-{i}"}) for i in range(FAST_PER_SLOW)]
        calls.append(("slow", {"seconds": 60 + s}))
    return calls


def toolgate(toolgate_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(toolgate_bin), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def received_slow(received: list[dict]) -> int:
    return sum(1 for call in received if call["tool"] == "slow")


def check_trail(toolgate_bin: Path, data_dir: Path, received: list[dict], tool_name=lambda t: t) -> list[dict]:
    """The chain verifies, and every call the server received has an allow
    record (its own, or one recovered as interrupted) with its tool and the
    hash of its arguments; returns the allow records."""
    verified = toolgate(toolgate_bin, "audit", "verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, (verified.stdout, verified.stderr)
    assert verified.stdout.startswith("audit trail intact: "), verified.stdout
    listed = toolgate(toolgate_bin, "audit", "--json", "--decision", "allow", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    recorded = Counter((r["tool"], r["args_sha256"]) for r in records)
    ran = Counter((tool_name(c["tool"]), canonical_sha256(c["arguments"])) for c in received)
    missing = ran - recorded
    assert not missing, f"calls the server ran without a record: {missing}"
    assert len(records) >= len(received)
    # The journals of the dead gateway were taken: only recovered once.
    journal = data_dir / "audit-journal"
    assert not [p for p in journal.glob("*.log") if p.stat().st_size > 0], list(journal.iterdir())
    again = toolgate(toolgate_bin, "audit", "--json", "--decision", "allow", "--data-dir", str(data_dir))
    assert len(again.stdout.splitlines()) == len(records)
    return records


def test_kill_9_mid_burst_leaves_a_record_for_every_call_the_server_ran_run(raw_gateway, toolgate_bin):
    raw = raw_gateway(POLICY, mode=LEGACY)
    probe = raw.server_pid()
    data_dir = raw.gw.dir / "data"
    # The whole burst in one write: the gateway reads it as pipelined input.
    raw.send_bytes(b"".join(json.dumps(raw.call_message(tool, args)).encode() + b"\n" for tool, args in burst()))
    wait_for(lambda: received_slow(raw.gw.received()) == SLOW_CALLS, what="every slow call to reach the server")
    raw.proc.send_signal(signal.SIGKILL)
    raw.wait(timeout=5)
    wait_for(lambda: not pid_alive(probe), what="the server to die with its gateway")
    received = raw.gw.received()
    assert len(received) >= SLOW_CALLS
    records = check_trail(toolgate_bin, data_dir, received)
    interrupted = [r for r in records if r["outcome"] == "interrupted"]
    # The slow calls were in flight: each has its recovered record.
    assert sorted(r["args_sha256"] for r in interrupted if r["tool"] == "slow") == sorted(
        canonical_sha256({"seconds": 60 + s}) for s in range(SLOW_CALLS))
    for r in interrupted:
        assert r["decision"] == "allow" and r["rule"] and "latency_ms" not in r, r


def test_kill_9_mid_burst_leaves_a_record_for_every_call_the_server_ran_serve(serve_factory, toolgate_bin):
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": SERVE_POLICY})
    data_dir = gw.dir / "data"
    calls = burst()
    lanes = 8
    stop = threading.Event()

    def lane(k: int) -> None:
        # Each lane its own session, its calls back to back, until the kill.
        with httpx2.Client(headers={"Accept": "application/json, text/event-stream"}, timeout=120) as http:
            session = initialize(http, gw.url)
            for n, (tool, args) in enumerate(calls[k::lanes]):
                if stop.is_set():
                    return
                message = {"jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
                           "params": {"name": f"probe__{tool}", "arguments": args}}
                try:
                    answer_of(post(http, gw.url, message, session))
                except (httpx2.HTTPError, ValueError):
                    return

    threads = [threading.Thread(target=lane, args=(k,), daemon=True) for k in range(lanes)]
    for t in threads:
        t.start()
    probe = gw.probe_pid()
    # Killed while some lanes wait on a slow call and others still send.
    wait_for(lambda: received_slow(gw.received()) >= SLOW_CALLS // 2, timeout=30,
             what="slow calls to reach the server")
    stop.set()
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(timeout=5)
    wait_for(lambda: not pid_alive(probe), what="the server to die with its gateway")
    for t in threads:
        t.join(timeout=10)
    received = gw.received()
    records = check_trail(toolgate_bin, data_dir, received, tool_name=lambda t: f"probe__{t}")
    assert all(r["server"] == "probe" for r in records)
    interrupted = [r for r in records if r["outcome"] == "interrupted"]
    assert len([r for r in interrupted if r["tool"] == "probe__slow"]) >= received_slow(received)


def test_the_next_gateway_puts_a_dead_gateways_calls_in_flight_in_its_trail(raw_gateway, toolgate_bin, tmp_path):
    data_dir = tmp_path / "shared-data"
    first = raw_gateway(POLICY, "--data-dir", str(data_dir), mode=LEGACY)
    probe = first.server_pid()
    first.send(first.call_message("slow", {"seconds": 60}))
    wait_for(lambda: received_slow(first.gw.received()) == 1, what="the slow call to reach the server")
    first.proc.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    wait_for(lambda: not pid_alive(probe), what="the server to die with its gateway")
    # The next gateway to start puts the dead one's call in its trail (file and store).
    beside = raw_gateway(POLICY, "--data-dir", str(data_dir), mode=LEGACY)
    audit = beside.gw.wait_audit(1)
    assert audit[0]["outcome"] == "interrupted" and audit[0]["args_sha256"] == canonical_sha256({"seconds": 60})
    assert "recovered 1 record(s) of calls in flight" in beside.gw.stderr()
    # A live gateway's journal is never taken: another starts beside it.
    beside.send(beside.call_message("slow", {"seconds": 61}))
    wait_for(lambda: received_slow(beside.gw.received()) == 1, what="the second slow call to reach the server")
    second = raw_gateway(POLICY, "--data-dir", str(data_dir), mode=LEGACY)
    assert second.call("echo", {"text": "after"})["result"]["content"][0]["text"] == "after"
    assert [r["tool"] for r in second.gw.wait_audit(1)] == ["echo"]
    assert "recovered" not in second.gw.stderr()
    listed = toolgate(toolgate_bin, "audit", "--json", "--data-dir", str(data_dir))
    outcomes = [(r["tool"], r["outcome"]) for r in map(json.loads, listed.stdout.splitlines())]
    assert outcomes.count(("slow", "interrupted")) == 1, outcomes
    # The second slow call is still running in a live gateway: not recovered.
    assert canonical_sha256({"seconds": 61}) not in listed.stdout


def test_run_says_the_trail_is_kept_forever_when_asked_to_keep_it_forever(raw_gateway):
    kept = raw_gateway(POLICY, "--audit-retention", "forever", mode=LEGACY)
    bounded = raw_gateway(POLICY, mode=LEGACY)
    for raw in (kept, bounded):
        raw.call("echo", {"text": "x"})
    notice = [line for line in kept.gw.stderr().splitlines() if RETENTION_NOTICE in line]
    assert len(notice) == 1 and str(kept.gw.dir / "data" / "audit.db") in notice[0], kept.gw.stderr()
    assert RETENTION_NOTICE not in bounded.gw.stderr()
    memory = raw_gateway(POLICY, "--state", "memory", mode=LEGACY)
    memory.call("echo", {"text": "x"})
    assert RETENTION_NOTICE not in memory.gw.stderr(), "no store, nothing kept forever by toolgate"


def test_serve_says_the_trail_is_kept_forever_when_asked_to_keep_it_forever(serve_factory):
    config = {"policy": "policy.json", "servers": {"probe": probe_server()}}
    kept = serve_factory(config, {"policy.json": SERVE_POLICY}, extra_args=["--audit-retention", "forever"])
    bounded = serve_factory(config, {"policy.json": SERVE_POLICY})
    assert kept.stderr().count(RETENTION_NOTICE) == 1, kept.stderr()
    assert str(kept.dir / "data" / "audit.db") in kept.stderr()
    assert RETENTION_NOTICE not in bounded.stderr()
