"""@modelcontextprotocol/server-everything (the reference TypeScript server,
protocol 2025-11-25) behind `toolgate run`, driven by the Python SDK client.

Besides allow/deny, these check that traffic the gateway has no policy for
passes through both ways: progress and logging notifications from the
server, and a request from the server to the client (sampling) with the
client's answer going back.
"""

from __future__ import annotations

import warnings

import anyio
import mcp_types as types
import pytest
from conftest import LEGACY
from mcp import MCPError

pytestmark = pytest.mark.anyio

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "get-sum": {},
        "trigger-long-running-operation": {},
        "toggle-simulated-logging": {},
        "trigger-sampling-request": {},
        "get-env": {"action": "deny", "reason": "the environment holds secrets"},
    },
}


async def test_list_allow_and_deny(gateway):
    gw = gateway(POLICY, server="everything")
    async with gw.client(LEGACY) as client:
        assert client.server_info is not None and "everything" in client.server_info.name.lower()
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert listed == {"echo", "get-sum", "trigger-long-running-operation", "toggle-simulated-logging", "get-env"}, (
            "trigger-sampling-request appears only for a client that declares sampling"
        )
        echo = await client.call_tool("echo", {"message": "through the gate"})
        assert echo.is_error is False and "through the gate" in echo.content[0].text
        assert "3" in (await client.call_tool("get-sum", {"a": 1, "b": 2})).content[0].text

        env = await client.call_tool("get-env", {})
        assert env.is_error is True
        assert env.structured_content["toolgate"]["decision"] == "deny"
        assert "the environment holds secrets" in env.content[0].text
        assert "PATH" not in env.content[0].text

        with pytest.raises(MCPError) as raised:
            await client.call_tool("get-tiny-image", {})
        assert raised.value.code == -32602
    audit = gw.wait_audit(4)
    assert [(r["tool"], r["decision"]) for r in audit] == [
        ("echo", "allow"),
        ("get-sum", "allow"),
        ("get-env", "deny"),
        ("get-tiny-image", "unknown"),
    ]


async def test_progress_notifications_pass_through(gateway):
    gw = gateway(POLICY, server="everything")
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with gw.client(LEGACY) as client:
        result = await client.call_tool(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
        assert result.is_error is False
        assert "Steps: 3" in result.content[0].text
    assert progress == [(1, 3), (2, 3), (3, 3)]


async def test_logging_notifications_pass_through(gateway):
    gw = gateway(POLICY, server="everything")
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with gw.client(LEGACY, logging_callback=on_log) as client:
        with warnings.catch_warnings():  # deprecated in 2026-07-28, still part of 2025-11-25
            warnings.simplefilter("ignore")
            await client.session.set_logging_level("debug")
        started = await client.call_tool("toggle-simulated-logging", {})
        assert "Started simulated" in started.content[0].text
        with anyio.fail_after(5):
            while not logs:
                await anyio.sleep(0.02)
        await client.call_tool("toggle-simulated-logging", {})
    assert "message" in str(logs[0].data).lower()


async def test_server_to_client_sampling_request_round_trips(gateway):
    gw = gateway(POLICY, server="everything")
    asked: list[types.CreateMessageRequestParams] = []

    async def on_sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="answer from the client"),
            model="e2e-model",
            stop_reason="endTurn",
        )

    async with gw.client(LEGACY, sampling_callback=on_sampling) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "trigger-sampling-request" in names
        result = await client.call_tool("trigger-sampling-request", {"prompt": "ping", "maxTokens": 5})
        assert result.is_error is False
        assert "answer from the client" in result.content[0].text
        assert "e2e-model" in result.content[0].text
    assert len(asked) == 1
    assert "ping" in asked[0].messages[0].content.text
