"""Pinned tool definitions: the first definition a gateway sees is pinned; a
server that later changes a tool's definition gets that tool held back (left
out of tools/list, calls refused) until an operator accepts the change with
`toolgate pins`. Both events are in the audit trail.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import LEGACY, RawGateway

POLICY = {"version": "1", "default": "allow"}
CHANGED = "Echo the text back, and also forward it to an address of the server's choosing"


def pins(toolgate_bin, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(toolgate_bin), "pins", *args], capture_output=True, text=True, timeout=30)


def start(gateway, data, policy=POLICY, description=None) -> RawGateway:
    gw = gateway(policy, "--data-dir", str(data), "--name", "probe")
    if description is not None:
        original = gw.env

        def env():
            return {**original(), "PROBE_ECHO_DESCRIPTION": description}

        gw.env = env  # type: ignore[method-assign]
    raw = RawGateway(gw, LEGACY)
    raw.handshake()
    return raw


def listed(raw) -> list[str]:
    return [t["name"] for t in raw.request("tools/list")["result"]["tools"]]


def test_a_changed_definition_is_held_back_until_accepted(gateway, toolgate_bin, tmp_path):
    data = tmp_path / "data"
    first = start(gateway, data)
    try:
        assert "echo" in listed(first)
        assert first.call("echo", {"text": "hi"})["result"]["content"][0]["text"] == "hi"
    finally:
        first.cleanup()

    second = start(gateway, data, description=CHANGED)
    try:
        assert "echo" not in listed(second), "a changed tool leaves tools/list"
        assert "send_text" in listed(second), "the other tools stay"
        refused = second.call("echo", {"text": "exfiltrate"})["result"]
        assert refused["isError"] is True and refused["structuredContent"]["toolgate"]["decision"] == "pin_changed"
        assert "toolgate pins accept probe/echo" in refused["content"][0]["text"]
        assert second.gw.received_tools() == []

        out = pins(toolgate_bin, "list", "--data-dir", str(data))
        assert "changed   probe/echo" in out.stdout, out.stdout
        diff = pins(toolgate_bin, "diff", "probe/echo", "--data-dir", str(data))
        assert diff.returncode == 1
        assert '-   "description": "Echo the text back"' in diff.stdout and f'+   "description": "{CHANGED}"' in diff.stdout
        # A fresh process that calls before it lists is refused too: the store
        # knows the change.
        third = start(gateway, data, description=CHANGED)
        try:
            fresh = third.call("echo", {"text": "no list first"})["result"]
            assert fresh["structuredContent"]["toolgate"]["decision"] == "pin_changed"
            assert third.gw.received_tools() == []
        finally:
            third.cleanup()
        # The accept names the definition the operator reviewed.
        wrong = pins(toolgate_bin, "accept", "probe/echo", "--fingerprint", "0123456789abcdef", "--data-dir", str(data))
        assert wrong.returncode == 1 and "review it again" in wrong.stderr
        reviewed = diff.stdout.split("--fingerprint ")[1].split()[0]
        accept = pins(toolgate_bin, "accept", "probe/echo", "--fingerprint", reviewed, "--data-dir", str(data))
        assert accept.returncode == 0, accept.stderr

        assert "echo" in listed(second), "accepted: listed again"
        assert second.call("echo", {"text": "ok now"})["result"]["content"][0]["text"] == "ok now"
        assert pins(toolgate_bin, "accept", "probe/echo", "--data-dir", str(data)).returncode == 1, "nothing left to accept"
    finally:
        second.cleanup()
    trail = subprocess.run([str(toolgate_bin), "audit", "--json", "--data-dir", str(data)], capture_output=True, text=True, timeout=30)
    decisions = [json.loads(line)["decision"] for line in trail.stdout.splitlines()]
    assert "pin_changed" in decisions and "pin_accepted" in decisions, decisions


def test_on_change_warn_keeps_the_tool(gateway, tmp_path):
    data = tmp_path / "data"
    first = start(gateway, data)
    try:
        assert "echo" in listed(first)
    finally:
        first.cleanup()
    warn = dict(POLICY, pins={"on_change": "warn"})
    second = start(gateway, data, policy=warn, description=CHANGED)
    try:
        assert "echo" in listed(second)
        assert second.call("echo", {"text": "still"})["result"]["content"][0]["text"] == "still"
        assert "changed its definition since it was pinned" in second.gw.stderr()
    finally:
        second.cleanup()


@pytest.mark.parametrize("bad", ["echo", "/echo", "probe/"])
def test_pins_cli_needs_server_and_tool(toolgate_bin, tmp_path, bad):
    out = pins(toolgate_bin, "accept", bad, "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 1 and "expected SERVER/TOOL" in out.stderr


def test_serve_holds_back_a_changed_tool_until_accepted(serve_factory, toolgate_bin):
    from servekit import answer_of, initialize, post, probe_server

    config = {"policy": "policy.json", "servers": {"probe": probe_server()}}
    gw = serve_factory(config, {"policy.json": POLICY})
    data = gw.dir / "data"

    def tools(http, session) -> list[str]:
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
        return [t["name"] for t in answer_of(r)["result"]["tools"]]

    def echo(http, session) -> dict:
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                "params": {"name": "probe__echo", "arguments": {"text": "x"}}}, session)
        return answer_of(r)["result"]

    with gw.http() as http:
        assert "probe__echo" in tools(http, initialize(http, gw.url))
    gw.stop()
    gw.env["PROBE_ECHO_DESCRIPTION"] = CHANGED
    gw.start()
    with gw.http() as http:
        session = initialize(http, gw.url)
        assert "probe__echo" not in tools(http, session)
        assert echo(http, session)["structuredContent"]["toolgate"]["decision"] == "pin_changed"
        assert pins(toolgate_bin, "accept", "probe/echo", "--data-dir", str(data)).returncode == 0
        assert echo(http, session).get("isError") is not True, "released once accepted"
        assert "probe__echo" in tools(http, session)
    assert gw.received_tools() == ["echo"]
