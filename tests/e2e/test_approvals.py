"""require_approval: a person decides. In the agent's own client (MCP
elicitation), or out of band (CLI, admin API, webhook) while the call is
held; an undecided call gets a pending result, and once approved the
identical call runs exactly once. The server never sees a call that was not
approved.
"""

from __future__ import annotations

import pytest
from conftest import LEGACY, wait_for
from servekit import probe_server

APPROVE_TRANSFERS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "probe__echo": {},
        "probe__transfer": {
            "action": "require_approval",
            "reason": "money leaves the account",
            "approval": {"via": ["client", "admin"], "hold": "1s", "expires": "10m"},
            "limits": [{"counter": "transfers", "window": "minute", "max": 5, "scope": "grant"}],
        },
    },
}


def text_of(result) -> str:
    return result.content[0].text


def elicitor(answers: list[str], seen: list[str]):
    import mcp_types as types

    async def callback(context, params):
        seen.append(params.message)
        return types.ElicitResult(action=answers.pop(0))

    return callback


@pytest.mark.anyio
async def test_the_clients_user_approves_or_declines(serve_factory):
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": APPROVE_TRANSFERS})
    seen: list[str] = []
    async with gw.client(LEGACY, elicitation_callback=elicitor(["accept", "decline"], seen)) as client:
        ok = await client.call_tool("probe__transfer", {"to": "bob", "amount": 100})
        assert not ok.is_error, ok
        assert "probe__transfer" in seen[0] and "money leaves the account" in seen[0] and '"amount": 100' in seen[0]
        declined = await client.call_tool("probe__transfer", {"to": "mallory", "amount": 9999})
        assert declined.is_error
        assert declined.structured_content["toolgate"]["decision"] == "approval_denied"
        assert "not approved" in text_of(declined)
    assert gw.received() == [{"tool": "transfer", "arguments": {"to": "bob", "amount": 100}}]
    kinds = [r["decision"] for r in gw.wait_audit(4)]
    assert "approval_requested" in kinds and "allow" in kinds and "approval_denied" in kinds


@pytest.mark.anyio
async def test_without_an_approver_the_call_is_pending_and_never_runs(serve_factory):
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": APPROVE_TRANSFERS})
    async with gw.client(LEGACY) as client:  # no elicitation callback: admin only
        pending = await client.call_tool("probe__transfer", {"to": "bob", "amount": 100})
        assert pending.is_error
        facts = pending.structured_content["toolgate"]
        assert facts["decision"] == "approval_pending" and facts["approval_id"].startswith("apr_")
        assert facts["approval_id"] in text_of(pending) and "expires" in text_of(pending)
        again = await client.call_tool("probe__transfer", {"to": "bob", "amount": 100})
        assert again.structured_content["toolgate"]["approval_id"] == facts["approval_id"], "the identical call is the same request"
        other = await client.call_tool("probe__transfer", {"to": "bob", "amount": 101})
        assert other.structured_content["toolgate"]["approval_id"] != facts["approval_id"]
    assert gw.received() == []


STDIO_APPROVALS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "transfer": {
            "action": "require_approval",
            "reason": "money leaves the account",
            "approval": {"via": ["client", "admin"], "hold": "1s", "expires": "10m"},
        },
    },
}


@pytest.mark.anyio
async def test_run_asks_the_clients_user_and_keeps_serving_meanwhile(gateway):
    gw = gateway(STDIO_APPROVALS)
    seen: list[str] = []
    async with gw.client(LEGACY, elicitation_callback=elicitor(["accept", "cancel"], seen)) as client:
        ok = await client.call_tool("transfer", {"to": "bob", "amount": 5})
        assert not ok.is_error, ok
        assert "transfer" in seen[0] and "money leaves the account" in seen[0]
        cancelled = await client.call_tool("transfer", {"to": "eve", "amount": 6})
        assert cancelled.structured_content["toolgate"]["decision"] == "approval_denied"
        assert text_of(await client.call_tool("echo", {"text": "still here"})) == "still here"
    assert gw.received_tools() == ["transfer", "echo"]


@pytest.mark.anyio
async def test_run_without_elicitation_answers_pending(gateway):
    gw = gateway(STDIO_APPROVALS)
    async with gw.client(LEGACY) as client:
        pending = await client.call_tool("transfer", {"to": "bob", "amount": 5})
        assert pending.structured_content["toolgate"]["decision"] == "approval_pending"
    assert gw.received_tools() == []


def test_quota_is_taken_only_when_the_approved_call_runs_and_cli_decisions_are_audited(gateway, toolgate_bin):
    import json
    import subprocess

    from test_approvals_cli import approve_via_cli

    policy = {
        "version": "1",
        "default": "deny",
        "tools": {
            "transfer": {
                "action": "require_approval",
                "reason": "money leaves the account",
                "approval": {"via": ["admin"], "hold": 0, "expires": "10m"},
                "limits": [{"counter": "transfers", "window": "minute", "max": 1, "scope": "grant"}],
            }
        },
    }
    from conftest import RawGateway

    gw = gateway(policy)
    raw = RawGateway(gw, LEGACY)
    try:
        raw.handshake()
        # Three different pending calls take no quota.
        ids = []
        for amount in (1, 2, 3):
            answer = raw.call("transfer", {"to": "bob", "amount": amount})
            facts = answer["result"]["structuredContent"]["toolgate"]
            assert facts["decision"] == "approval_pending", answer
            ids.append(facts["approval_id"])
        data = ("--data-dir", str(gw.dir / "data"))
        approve_via_cli(toolgate_bin, ids[0], *data, by="carol")
        approve_via_cli(toolgate_bin, ids[1], *data, by="carol")
        first = raw.call("transfer", {"to": "bob", "amount": 1})
        assert first["result"].get("isError") is not True, first
        # The second approved call finds the limit (1 a minute) used by the first.
        second = raw.call("transfer", {"to": "bob", "amount": 2})
        assert second["result"]["structuredContent"]["toolgate"]["decision"] == "rate_limited", second
        # The approval of the first ran once: the identical call is pending again.
        again = raw.call("transfer", {"to": "bob", "amount": 1})
        assert again["result"]["structuredContent"]["toolgate"]["decision"] == "approval_pending"
    finally:
        raw.cleanup()
    assert gw.received() == [{"tool": "transfer", "arguments": {"to": "bob", "amount": 1}}]
    trail = subprocess.run([str(toolgate_bin), "audit", "--json", "--data-dir", str(gw.dir / "data"), "--decision", "approved"],
                           capture_output=True, text=True, timeout=30)
    assert trail.returncode == 0, trail.stderr
    approved = [json.loads(line) for line in trail.stdout.splitlines()]
    assert len(approved) == 2 and all("by carol via cli" in r["reason"] for r in approved), approved


@pytest.mark.anyio
async def test_a_call_held_on_one_replica_is_approved_through_another(serve_factory, toolgate_bin, tmp_path):
    from servekit import initialize, post, answer_of
    from test_approvals_cli import approve_via_cli
    from test_state import Redis

    redis = Redis(tmp_path / "redis").start()
    try:
        policy = {"version": "1", "default": "deny", "tools": {"probe__transfer": {
            "action": "require_approval", "reason": "money leaves the account",
            "approval": {"via": ["admin"], "hold": 0, "expires": "10m"}}}}
        config = {"policy": "policy.json", "servers": {"probe": probe_server()},
                  "state": {"store": redis.url, "prefix": "replicas"}}
        a = serve_factory(config, {"policy.json": policy})
        b = serve_factory(config, {"policy.json": policy})
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "probe__transfer", "arguments": {"to": "bob", "amount": 7}}}

        def send(gw) -> dict:
            with gw.http() as http:
                return answer_of(post(http, gw.url, call, initialize(http, gw.url)))["result"]

        pending = send(a)
        approval_id = pending["structuredContent"]["toolgate"]["approval_id"]
        # Approved by the CLI against the shared Redis (the approver is on neither replica).
        approve_via_cli(toolgate_bin, approval_id, "--state", redis.url, "--state-prefix", "replicas",
                        "--data-dir", str(tmp_path / "cli-data"))
        ran = send(b)
        assert ran.get("isError") is not True, ran
        again = send(a)
        assert again["structuredContent"]["toolgate"]["decision"] == "approval_pending", "an approval runs one call"
        assert again["structuredContent"]["toolgate"]["approval_id"] != approval_id
        assert a.received() + b.received() == [{"tool": "transfer", "arguments": {"to": "bob", "amount": 7}}]
    finally:
        redis.stop()


@pytest.mark.anyio
async def test_a_2026_client_approves_through_the_input_required_round_trip(serve_factory):
    from conftest import MODERN

    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": APPROVE_TRANSFERS})
    seen: list[str] = []
    async with gw.client(MODERN, elicitation_callback=elicitor(["accept", "decline"], seen)) as client:
        ok = await client.call_tool("probe__transfer", {"to": "bob", "amount": 100})
        assert not ok.is_error, ok
        assert "money leaves the account" in seen[0]
        declined = await client.call_tool("probe__transfer", {"to": "eve", "amount": 1})
        assert declined.is_error and declined.structured_content["toolgate"]["decision"] == "approval_denied"
    assert gw.received() == [{"tool": "transfer", "arguments": {"to": "bob", "amount": 100}}]


@pytest.mark.anyio
async def test_run_with_a_2026_client_uses_the_input_required_round_trip(gateway):
    from conftest import MODERN

    gw = gateway(STDIO_APPROVALS)
    seen: list[str] = []
    async with gw.client(MODERN, elicitation_callback=elicitor(["accept", "decline"], seen)) as client:
        ok = await client.call_tool("transfer", {"to": "bob", "amount": 5})
        assert not ok.is_error, ok
        declined = await client.call_tool("transfer", {"to": "eve", "amount": 6})
        assert declined.structured_content["toolgate"]["decision"] == "approval_denied"
    assert gw.received() == [{"tool": "transfer", "arguments": {"to": "bob", "amount": 5}}]
    assert len(seen) == 2


def test_a_call_held_on_one_replica_is_released_by_a_decision_made_through_another(serve_factory, tmp_path):
    import hashlib
    import threading

    import httpx2
    from servekit import answer_of, free_port, initialize, post
    from test_state import Redis

    token = "admin-token-for-replicas-0123"
    redis = Redis(tmp_path / "redis").start()
    try:
        policy = {"version": "1", "default": "deny", "tools": {"probe__transfer": {
            "action": "require_approval", "reason": "money leaves the account",
            "approval": {"via": ["admin"], "hold": "60s", "expires": "10m"}}}}
        state = {"store": redis.url, "prefix": "held"}
        a = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}, "state": state}, {"policy.json": policy})
        admin_port = free_port()
        b = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}, "state": state,
                           "admin": {"listen": f"127.0.0.1:{admin_port}", "token_sha256": hashlib.sha256(token.encode()).hexdigest()}},
                          {"policy.json": policy})
        results: list[dict] = []

        def held_call() -> None:
            with a.http() as http:
                http.timeout = httpx2.Timeout(60)
                call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "probe__transfer", "arguments": {"to": "bob", "amount": 3}}}
                results.append(answer_of(post(http, a.url, call, initialize(http, a.url)))["result"])

        t = threading.Thread(target=held_call)
        t.start()
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as admin:
            listed: list = []

            def requested() -> bool:
                listed[:] = admin.get(f"http://127.0.0.1:{admin_port}/approvals").json()["approvals"]
                return bool(listed)

            # Generous on a loaded machine: the call is held for up to 60 s.
            wait_for(requested, 30, "the held call's request to be visible through the other replica")
            approved = admin.post(f"http://127.0.0.1:{admin_port}/approvals/{listed[0]['id']}/approve", json={"by": "dana"})
            assert approved.status_code == 200, approved.text
        t.join(timeout=60)
        assert results and results[0].get("isError") is not True, results
        assert a.received() == [{"tool": "transfer", "arguments": {"to": "bob", "amount": 3}}]
        assert b.received() == []
        reasons = [r.get("reason", "") for r in a.wait_audit(2) if r["decision"] == "allow"]
        assert reasons and "approved by dana via api" in reasons[0], a.audit()
    finally:
        redis.stop()


def test_a_held_calls_id_stays_reserved_and_array_params_are_refused(gateway):
    from conftest import RawGateway

    policy = {"version": "1", "default": "allow", "tools": {"transfer": {
        "action": "require_approval", "approval": {"via": ["admin"], "hold": "2s", "expires": "10m"}}}}
    gw = gateway(policy)
    raw = RawGateway(gw, LEGACY)
    try:
        raw.handshake()
        raw.send(raw.call_message("transfer", {"to": "bob", "amount": 1}, id=5))
        raw.send({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
        answers = [raw.recv(timeout=10), raw.recv(timeout=10)]
        in_use = [a for a in answers if "error" in a]
        assert len(in_use) == 1 and "already in flight" in in_use[0]["error"]["message"], answers
        held = [a for a in answers if "result" in a]
        assert held[0]["result"]["structuredContent"]["toolgate"]["decision"] == "approval_pending"
        raw.send({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": ["echo", {"text": "x"}]})
        refused = raw.recv(timeout=10)
        assert refused["id"] == 6 and refused["error"]["code"] == -32602, refused
    finally:
        raw.cleanup()
    assert gw.received_tools() == []
