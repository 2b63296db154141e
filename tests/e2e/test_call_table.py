"""One table of tool calls, run through both gateways: `toolgate run`
(stdio, raw pipes) and `toolgate serve` (Streamable HTTP), in front of the
same probe server. For each case the client must see the same kind of
answer with the same `structuredContent.toolgate.decision`, the audit trail
must hold the same decisions, and the server must have received exactly the
calls that were allowed. The two gateways share the policy engine and the
answers given in the server's place (toolgate-call): this table is what
keeps them agreeing.
"""

from __future__ import annotations

from typing import Any

import pytest
from servekit import initialize, post, probe_server

DENY = {"action": "deny", "reason": "never"}
CASES: dict[str, dict[str, Any]] = {
    "allow": {"default": "deny", "tools": {"echo": {}}, "calls": [("echo", {"text": "a"})], "expect": [("ok", "allow")]},
    "deny with a reason": {
        "default": "deny",
        "tools": {"echo": {}, "delete_all": DENY},
        "calls": [("delete_all", {})],
        "expect": [("refused:deny", "deny")],
    },
    "hide": {
        "default": "allow",
        "tools": {"delete_all": {"action": "hide"}},
        "calls": [("delete_all", {})],
        "expect": [("unknown", "unknown")],
    },
    "default deny": {"default": "deny", "tools": {}, "calls": [("echo", {"text": "a"})], "expect": [("unknown", "unknown")]},
    "default allow": {"default": "allow", "tools": {}, "calls": [("echo", {"text": "a"})], "expect": [("ok", "allow")]},
    "condition refuses": {
        "default": "deny",
        "tools": {"transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]}},
        "calls": [("transfer", {"amount": 500, "currency": "EUR", "to": "eve"})],
        "expect": [("refused:deny", "deny")],
    },
    "condition admits": {
        "default": "deny",
        "tools": {"transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]}},
        "calls": [("transfer", {"amount": 50, "currency": "EUR", "to": "eve"})],
        "expect": [("ok", "allow")],
    },
    "rate limit": {
        "default": "deny",
        "tools": {"echo": {"limits": [{"counter": "c", "window": "minute", "max": 1, "scope": "grant"}]}},
        "calls": [("echo", {"text": "1"}), ("echo", {"text": "2"})],
        "expect": [("ok", "allow"), ("refused:rate_limited", "rate_limited")],
    },
    "approval no one can give": {
        "default": "deny",
        "tools": {"echo": {"action": "require_approval", "reason": "a person decides", "approval": {"via": ["client"]}}},
        "calls": [("echo", {"text": "held"})],
        "expect": [("refused:approval_required", "approval_required")],
    },
}


def kind_of(answer: dict) -> str:
    if "error" in answer:
        assert answer["error"]["code"] == -32602, answer
        return "unknown"
    result = answer["result"]
    if result.get("isError"):
        return "refused:" + result["structuredContent"]["toolgate"]["decision"]
    return "ok"


def policy_of(case: dict, prefix: str = "") -> dict:
    return {"version": "1", "default": case["default"], "tools": {prefix + k: v for k, v in case["tools"].items()}}


def through_run(raw_gateway, case: dict) -> tuple[list[str], list[str], list[str]]:
    raw = raw_gateway(policy_of(case))
    kinds = [kind_of(raw.call(name, args)) for name, args in case["calls"]]
    decisions = [r["decision"] for r in raw.gw.wait_audit(len(case["calls"]))]
    return kinds, decisions, raw.gw.received_tools()


def through_serve(serve_factory, case: dict) -> tuple[list[str], list[str], list[str]]:
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": policy_of(case, "probe__")})
    kinds = []
    with gw.http() as http:
        session = initialize(http, gw.url)
        for i, (name, args) in enumerate(case["calls"], start=1):
            message = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "probe__" + name, "arguments": args}}
            kinds.append(kind_of(post(http, gw.url, message, session).json()))
    decisions = [r["decision"] for r in gw.wait_audit(len(case["calls"]))]
    return kinds, decisions, gw.received_tools()


@pytest.mark.parametrize("transport", ["run", "serve"])
@pytest.mark.parametrize("name", CASES)
def test_the_call_table(raw_gateway, serve_factory, name, transport):
    case = CASES[name]
    if transport == "run":
        kinds, decisions, received = through_run(raw_gateway, case)
    else:
        kinds, decisions, received = through_serve(serve_factory, case)
    assert kinds == [k for k, _ in case["expect"]], (transport, kinds)
    assert decisions == [d for _, d in case["expect"]], (transport, decisions)
    allowed = [call[0] for call, (kind, _) in zip(case["calls"], case["expect"]) if kind == "ok"]
    assert received == allowed, (transport, received)
