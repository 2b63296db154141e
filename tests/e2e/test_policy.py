"""Policy enforcement through `toolgate run`, seen from a real SDK client and
from the real probe server behind the gateway, in both protocol generations.

Each test checks three sides: what the client got, what the server received
(PROBE_LOG), and what the gateway wrote to the audit file.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import MODES, SEED_POLICIES, canonical_sha256
from mcp import MCPError

pytestmark = pytest.mark.anyio

HEX64 = re.compile(r"^[0-9a-f]{64}$")


async def list_all_tools(client) -> tuple[list[str], int]:
    """Every tool name over every page, and the number of pages."""
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        pages += 1
        names += [tool.name for tool in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names, pages
        assert pages < 20, "tools/list pagination does not end"


def assert_refused(result, decision: str, rule: str) -> tuple[str, dict[str, Any]]:
    """A refusal is a normal result with isError, a text naming the rule, and structuredContent.toolgate."""
    assert result.is_error is True, result
    assert len(result.content) >= 1 and result.content[0].type == "text", result
    text = result.content[0].text
    # The exact wording is pinned once, in test_refusal_text_has_the_contract_form.
    assert text.startswith("toolgate "), text
    assert f"(rule {rule}" in text, text
    assert isinstance(result.structured_content, dict), result
    toolgate = result.structured_content["toolgate"]
    assert toolgate["decision"] == decision, toolgate
    assert toolgate["rule"] == rule, toolgate
    return text, toolgate


async def assert_unknown_tool(client, name: str, arguments: dict[str, Any] | None = None) -> None:
    with pytest.raises(MCPError) as raised:
        await client.call_tool(name, arguments or {})
    assert raised.value.code == -32602, raised.value.error
    assert raised.value.message == f"Unknown tool: {name}", raised.value.error


def audit_by_tool(records: list[dict[str, Any]], tool: str) -> list[dict[str, Any]]:
    return [r for r in records if r["tool"] == tool]


@pytest.mark.parametrize("mode", MODES)
async def test_seed_send_text_allows_30_a_minute_then_rate_limits(gateway, mode):
    gw = gateway(SEED_POLICIES["send_text"])
    async with gw.client(mode) as client:
        names, pages = await list_all_tools(client)
        assert names == ["send_text"]
        assert pages == 3, "nextCursor of every upstream page must be kept, even when a page filters to nothing"

        for i in range(30):
            result = await client.call_tool("send_text", {"to": "+15550100", "body": f"hello {i}"})
            assert result.is_error is False, result
            assert result.content[0].text == f"send_text: sent to +15550100: hello {i}"

        refused = await client.call_tool("send_text", {"to": "+15550100", "body": "hello 30"})
        text, toolgate = assert_refused(refused, "rate_limited", 'tools["send_text"]')
        assert "send_text_rate" in text and "30" in text, f"the text must name the limit: {text}"
        assert "retry" in text.lower(), f"the text must say when to retry: {text}"
        retry = toolgate["retry_after_seconds"]
        assert isinstance(retry, (int, float)) and 0 < retry <= 60, toolgate
        assert str(int(retry)) in text, f"the text must give the retry delay ({retry}s): {text}"

        # Everything else stays refused as unknown under default deny.
        await assert_unknown_tool(client, "echo", {"text": "hi"})

    received = gw.received()
    assert [c["tool"] for c in received] == ["send_text"] * 30
    assert [c["arguments"]["body"] for c in received] == [f"hello {i}" for i in range(30)]

    audit = gw.wait_audit(32)
    sends = audit_by_tool(audit, "send_text")
    assert [r["decision"] for r in sends] == ["allow"] * 30 + ["rate_limited"]
    assert [r["outcome"] for r in sends] == ["ok"] * 30 + ["refused"]
    for i, record in enumerate(sends[:30], start=1):
        assert record["grant"] == "local"
        assert record["rule"] == 'tools["send_text"]'
        assert record["counters"] == [{"counter": "send_text_rate", "used": i, "max": 30}]
        assert HEX64.match(record["args_sha256"])
        assert "args" not in record, "arguments are audited only with --audit-args"
    assert sends[0]["args_sha256"] == canonical_sha256({"to": "+15550100", "body": "hello 0"})
    assert audit_by_tool(audit, "echo")[0]["decision"] == "unknown"
    assert len({r["session"] for r in audit}) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_deny_with_reason_is_listed_but_refused(gateway, mode):
    reason = "deleting everything needs a human at the keyboard"
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {"echo": {}, "delete_all": {"action": "deny", "reason": reason}},
        }
    )
    async with gw.client(mode) as client:
        names, _ = await list_all_tools(client)
        assert sorted(names) == ["delete_all", "echo"]
        result = await client.call_tool("delete_all", {"confirm": True})
        text, toolgate = assert_refused(result, "deny", 'tools["delete_all"]')
        assert reason in text
        assert toolgate["reason"] == reason
        assert (await client.call_tool("echo", {"text": "still here"})).content[0].text == "still here"
    assert gw.received_tools() == ["echo"]
    audit = gw.wait_audit(2)
    deny = audit_by_tool(audit, "delete_all")
    assert len(deny) == 1 and deny[0]["decision"] == "deny" and deny[0]["outcome"] == "refused"


async def test_refusal_text_has_the_contract_form(gateway):
    """The text an agent reads: who refused, the tool, the reason, the rule (README, "What the agent sees")."""
    gw = gateway({"version": "1", "default": "deny", "tools": {"delete_all": {"action": "deny", "reason": "never"}}})
    async with gw.client(MODES[0]) as client:
        result = await client.call_tool("delete_all", {"confirm": True})
    assert result.content[0].text == 'toolgate denied this call to "delete_all": never (rule tools["delete_all"])'
    assert result.structured_content["toolgate"]["reason"] == "never"


@pytest.mark.parametrize("mode", MODES)
async def test_hidden_tool_is_absent_and_unknown(gateway, mode):
    gw = gateway({"version": "1", "default": "allow", "tools": {"get_balance": {"action": "hide"}}})
    async with gw.client(mode) as client:
        names, pages = await list_all_tools(client)
        assert "get_balance" not in names
        assert len(names) == 67 and pages == 3
        await assert_unknown_tool(client, "get_balance")
        assert (await client.call_tool("echo", {"text": "x"})).is_error is False
    assert gw.received_tools() == ["echo"]
    hidden = audit_by_tool(gw.wait_audit(2), "get_balance")
    assert len(hidden) == 1 and hidden[0]["decision"] == "unknown" and hidden[0]["outcome"] == "refused"


@pytest.mark.parametrize("mode", MODES)
async def test_require_approval_fails_closed_when_no_one_can_approve(gateway, mode):
    # Only the client's user may approve, and this client cannot be asked (no
    # elicitation callback): the call is refused, never forwarded.
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "transfer": {
                    "action": "require_approval",
                    "reason": "money leaves the account",
                    "approval": {"via": ["client"]},
                }
            },
        }
    )
    async with gw.client(mode) as client:
        names, _ = await list_all_tools(client)
        assert names == ["transfer"]
        for _ in range(2):
            result = await client.call_tool("transfer", {"amount": 5, "currency": "EUR", "to": "bob"})
            assert_refused(result, "approval_required", 'tools["transfer"]')
    assert gw.received() == []
    audit = gw.wait_audit(2)
    assert [(r["decision"], r["outcome"]) for r in audit] == [("approval_required", "refused")] * 2


@pytest.mark.parametrize("mode", MODES)
async def test_condition_on_argument(gateway, mode):
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {"transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]}},
        }
    )
    async with gw.client(mode) as client:
        ok = await client.call_tool("transfer", {"amount": 100, "currency": "EUR", "to": "bob"})
        assert ok.is_error is False and ok.structured_content == {"amount": 100, "currency": "EUR"}
        refused = await client.call_tool("transfer", {"amount": 500, "currency": "EUR", "to": "bob"})
        text, _ = assert_refused(refused, "deny", 'tools["transfer"]')
        assert "amount" in text, f"the reason should name the failed condition: {text}"
        # A missing argument cannot satisfy the condition.
        missing = await client.call_tool("transfer", {"currency": "EUR", "to": "bob"})
        assert_refused(missing, "deny", 'tools["transfer"]')
    assert gw.received() == [{"tool": "transfer", "arguments": {"amount": 100, "currency": "EUR", "to": "bob"}}]


@pytest.mark.parametrize("mode", MODES)
async def test_cost_taken_from_argument(gateway, mode):
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "transfer": {
                    "limits": [
                        {"counter": "spend", "window": "day", "max": 100, "cost": "args.amount", "scope": "grant"}
                    ]
                }
            },
        }
    )
    async with gw.client(mode) as client:
        outcomes = []
        for amount in (60, 30, 20, 10):
            result = await client.call_tool("transfer", {"amount": amount, "currency": "EUR", "to": "bob"})
            outcomes.append(result)
        assert [r.is_error for r in outcomes] == [False, False, True, False]
        assert_refused(outcomes[2], "rate_limited", 'tools["transfer"]')
        assert outcomes[2].structured_content["toolgate"]["counter"] is not None
    assert [c["arguments"]["amount"] for c in gw.received()] == [60, 30, 10]
    audit = gw.wait_audit(4)
    allowed = [r for r in audit if r["decision"] == "allow"]
    assert [r["counters"][0]["used"] for r in allowed] == [60, 90, 100]
    assert all(r["counters"][0]["max"] == 100 and r["counters"][0]["counter"] == "spend" for r in allowed)


@pytest.mark.parametrize("mode", MODES)
async def test_scope_per_argument_value(gateway, mode):
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "send_message": {
                    "limits": [{"counter": "per_recipient", "window": "hour", "max": 2, "scope": "arg:to"}]
                }
            },
        }
    )
    async with gw.client(mode) as client:
        results = []
        for to in ("alice", "alice", "alice", "bob", "bob", "bob"):
            results.append(await client.call_tool("send_message", {"to": to, "body": "hi"}))
        assert [r.is_error for r in results] == [False, False, True, False, False, True]
        assert_refused(results[2], "rate_limited", 'tools["send_message"]')
    assert [c["arguments"]["to"] for c in gw.received()] == ["alice", "alice", "bob", "bob"]


@pytest.mark.parametrize("mode", MODES)
async def test_glob_precedence(gateway, mode):
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "*": {"action": "deny", "reason": "not on the list"},
                "send_*": {"action": "deny", "reason": "no messaging"},
                "send_text": {},
                "extra_*": {"action": "hide"},
            },
        }
    )
    async with gw.client(mode) as client:
        names, _ = await list_all_tools(client)
        assert not any(n.startswith("extra_") for n in names)
        assert {"echo", "send_text", "send_message", "delete_all"} <= set(names)

        # The exact name beats the glob that also matches it.
        assert (await client.call_tool("send_text", {"to": "a", "body": "b"})).is_error is False
        # The more specific glob beats "*".
        text, _ = assert_refused(await client.call_tool("send_message", {"to": "a", "body": "b"}), "deny", 'tools["send_*"]')
        assert "no messaging" in text
        # "*" catches the rest.
        text, _ = assert_refused(await client.call_tool("echo", {"text": "x"}), "deny", 'tools["*"]')
        assert "not on the list" in text
        await assert_unknown_tool(client, "extra_007")
    assert gw.received_tools() == ["send_text"]


@pytest.mark.parametrize("mode", MODES)
async def test_upstream_error_gives_the_quota_back(gateway, mode):
    gw = gateway(
        {
            "version": "1",
            "default": "deny",
            "tools": {"fail_rpc": {"limits": [{"counter": "fail_once", "window": "day", "max": 1, "scope": "grant"}]}},
        }
    )
    async with gw.client(mode) as client:
        for _ in range(2):
            with pytest.raises(MCPError) as raised:
                await client.call_tool("fail_rpc", {})
            # The server's own JSON-RPC error reaches the client unchanged.
            assert raised.value.code == -32050, raised.value.error
            assert raised.value.message == "probe server: fail_rpc always fails"
    assert gw.received_tools() == ["fail_rpc", "fail_rpc"]
    audit = gw.wait_audit(2)
    assert [(r["decision"], r["outcome"]) for r in audit] == [("allow", "error"), ("allow", "error")]


@pytest.mark.parametrize("mode", MODES)
async def test_all_tools_limit_spans_every_tool(gateway, mode):
    gw = gateway(
        {
            "version": "1",
            "default": "allow",
            "all_tools": {"limits": [{"counter": "everything", "window": "minute", "max": 3, "scope": "grant"}]},
            "tools": {},
        }
    )
    async with gw.client(mode) as client:
        assert (await client.call_tool("echo", {"text": "1"})).is_error is False
        assert (await client.call_tool("send_text", {"to": "a", "body": "2"})).is_error is False
        assert (await client.call_tool("get_balance", {})).is_error is False
        assert_refused(await client.call_tool("echo", {"text": "4"}), "rate_limited", "all_tools")
    assert gw.received_tools() == ["echo", "send_text", "get_balance"]


@pytest.mark.parametrize("mode", MODES)
async def test_audit_args_records_the_arguments(gateway, mode):
    gw = gateway({"version": "1", "default": "allow", "tools": {}}, "--audit-args")
    args = {"to": "carol", "body": "zebra ünïcode", "n": 3}
    async with gw.client(mode) as client:
        assert (await client.call_tool("send_text", args)).is_error is False
    record = gw.wait_audit(1)[0]
    assert record["args"] == args
    assert record["args_sha256"] == canonical_sha256(args)
    assert record["decision"] == "allow" and record["outcome"] == "ok" and record["rule"] == "default"
    assert isinstance(record["latency_ms"], (int, float)) and isinstance(record["decision_us"], (int, float))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", record["time"]), record["time"]


@pytest.mark.parametrize("mode", MODES)
async def test_default_allow_passes_every_page_and_call(gateway, mode):
    gw = gateway({"version": "1", "default": "allow", "tools": {}})
    async with gw.client(mode) as client:
        names, pages = await list_all_tools(client)
        assert len(names) == 68 and pages == 3
        assert names[:3] == ["echo", "send_text", "send_message"]
        result = await client.call_tool("transfer", {"amount": 12.5, "currency": "EUR", "to": "dave"})
        assert result.structured_content == {"amount": 12.5, "currency": "EUR"}
    assert gw.received() == [{"tool": "transfer", "arguments": {"amount": 12.5, "currency": "EUR", "to": "dave"}}]
