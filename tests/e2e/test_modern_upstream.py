"""`toolgate serve` in front of an upstream that speaks only MCP 2026-07-28:
tests/servers/modern_server.py (the Python SDK's Streamable HTTP server,
refusing the 2025-11-25 handshake with -32022). Nothing in the gateway's
config says so: the gateway tries the handshake, reads the refusal, sends
`server/discover`, and from then on sends each request statelessly.

Clients of both generations list and call through it; each test asserts on
what the client saw, on every HTTP request the server received, and on the
calls that reached the server's tools (the policy still decides first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import LEGACY, MODERN, MODES, REPO, read_jsonl, wait_for, wait_listening
from mcp import MCPError
from servekit import answer_of, free_port, initialize, post

MODERN_SERVER = REPO / "tests" / "servers" / "modern_server.py"
MODERN_META_KEY = "io.modelcontextprotocol/protocolVersion"

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "modern__echo": {},
        "modern__delete_all": {"action": "deny", "reason": "never delete everything"},
        "modern__send_text": {"limits": [{"counter": "texts", "window": "minute", "max": 1, "scope": "grant"}]},
        "modern__transfer": {"action": "hide"},
    },
}


class ModernServer:
    """modern_server.py on a free port: `requests()` is every HTTP request it
    received, `calls()` the tool calls that reached its tools."""

    def __init__(self, directory: Path, port: int | None = None, name: str = "modern", **env: str) -> None:
        self.log = directory / f"{name}-http.jsonl"
        self.calls_log = directory / f"{name}-calls.jsonl"
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(MODERN_SERVER), str(self.port)],
            env={**os.environ, "MODERN_LOG": str(self.log), "PROBE_LOG": str(self.calls_log), **env},
        )

        wait_listening(self.port, 30, "the modern server to listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def requests(self) -> list[dict]:
        return read_jsonl(self.log)

    def calls(self) -> list[dict]:
        return read_jsonl(self.calls_log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def modern_server(tmp_path):
    started: list[ModernServer] = []

    def start(port: int | None = None, name: str = "modern", **env: str) -> ModernServer:
        server = ModernServer(tmp_path, port, name, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def gateway_for(serve_factory, server: ModernServer):
    return serve_factory({"policy": "policy.json", "servers": {"modern": {"url": server.url}}},
                         {"policy.json": POLICY})


def assert_spoken_to_statelessly(server: ModernServer) -> None:
    """The handshake was tried once and refused; everything after it went out
    as stateless 2026-07-28 requests: envelope, matching headers, no session."""
    requests = server.requests()
    assert requests, "the server received nothing"
    first, rest = requests[0], requests[1:]
    assert first["body"]["method"] == "initialize", first
    assert rest and rest[0]["body"]["method"] == "server/discover", rest[:1]
    for request in rest:
        headers, body = request["headers"], request["body"]
        assert request["http"] == "POST", request
        assert "mcp-session-id" not in headers, request
        assert headers.get("mcp-protocol-version") == MODERN, request
        if "id" in body:
            assert headers.get("mcp-method") == body["method"], request
            assert body["params"]["_meta"][MODERN_META_KEY] == MODERN, request
            name = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}.get(body["method"])
            if name:
                assert headers.get("mcp-name") == body["params"][name], request
    assert [r["body"]["method"] for r in requests].count("initialize") == 1


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_both_client_generations_list_and_call_a_modern_only_server(serve_factory, modern_server, mode):
    server = modern_server()
    gw = gateway_for(serve_factory, server)
    async with gw.client(mode) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        assert tools == ["modern__echo", "modern__send_text", "modern__delete_all"]
        result = await client.call_tool("modern__echo", {"text": "through the gateway"})
        assert not result.is_error and result.content[0].text == "through the gateway"

        denied = await client.call_tool("modern__delete_all", {"confirm": True})
        assert denied.is_error and "never delete everything" in denied.content[0].text
        assert denied.structured_content["toolgate"]["decision"] == "deny"
        assert not (await client.call_tool("modern__send_text", {"to": "+1", "body": "one"})).is_error
        limited = await client.call_tool("modern__send_text", {"to": "+1", "body": "two"})
        assert limited.is_error and limited.structured_content["toolgate"]["decision"] == "rate_limited"
        for hidden in ["modern__transfer", "modern__get_balance", "echo"]:
            with pytest.raises(MCPError) as e:
                await client.call_tool(hidden, {"to": "x", "amount": 1})
            assert e.value.error.code == -32602 and e.value.error.message == f"Unknown tool: {hidden}"

        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["modern__greet"]
        prompt = await client.get_prompt("modern__greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "hello, Ada"
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["modern://note"]
        contents = (await client.read_resource("modern://note")).contents
        assert contents[0].text == "a note from the modern server"

    # Only what the policy allowed reached the tools, under their own names.
    assert server.calls() == [
        {"tool": "echo", "arguments": {"text": "through the gateway"}},
        {"tool": "send_text", "arguments": {"to": "+1", "body": "one"}},
    ]
    assert_spoken_to_statelessly(server)
    methods = [r["body"]["method"] for r in server.requests()]
    assert methods.count("tools/list") == 3, "the 68 tools come in pages of 25, each page asked for statelessly"
    assert {"prompts/get", "resources/read"} <= set(methods)
    decisions = [(r["tool"], r["decision"]) for r in gw.wait_audit(5)]
    assert ("modern__echo", "allow") in decisions and ("modern__delete_all", "deny") in decisions
    assert ("modern__send_text", "rate_limited") in decisions


@pytest.mark.parametrize("refusal", [{"MODERN_NULL_ID": "1"}, {"PROBE_JSON_RESPONSE": "1"}],
                         ids=["refusal-without-id", "json-answers"])
def test_a_refusal_without_an_id_and_plain_json_answers_are_understood(serve_factory, modern_server, refusal):
    """A server may refuse `initialize` before reading its id (`"id": null`);
    that still answers the gateway's POST. Raw 2025 and 2026 clients."""
    server = modern_server(**refusal)
    gw = gateway_for(serve_factory, server)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "modern__echo", "arguments": {"text": "raw"}}}
    with gw.http() as http:
        session = initialize(http, gw.url)
        assert answer_of(post(http, gw.url, call, session))["result"]["content"][0]["text"] == "raw"
        modern_call = {**call, "id": 3, "params": {**call["params"], "_meta": {
            MODERN_META_KEY: MODERN, "io.modelcontextprotocol/clientCapabilities": {}}}}
        r = post(http, gw.url, modern_call, mcp_protocol_version=MODERN, mcp_method="tools/call",
                 mcp_name="modern__echo")
        answer = answer_of(r)["result"]
        assert answer["content"][0]["text"] == "raw" and answer["resultType"] == "complete"
    assert [c["tool"] for c in server.calls()] == ["echo", "echo"]
    assert_spoken_to_statelessly(server)


@pytest.mark.anyio
async def test_a_modern_server_that_went_away_is_discovered_again(serve_factory, modern_server):
    """A stateless server has no session to lose: the gateway notices it is
    gone when a request cannot reach it, and connects again from the start
    (handshake, refusal, discover) once it is back."""
    server = modern_server()
    gw = gateway_for(serve_factory, server)
    async with gw.client(LEGACY) as client:
        assert (await client.call_tool("modern__echo", {"text": "before"})).content[0].text == "before"
        server.stop()
        with pytest.raises(MCPError) as e:
            await client.call_tool("modern__echo", {"text": "while down"})
        assert "upstream unavailable" in e.value.error.message
    again = modern_server(port=server.port, name="again")
    wait_for(lambda: "server/discover" in [r["body"]["method"] for r in again.requests()], 30,
             "the gateway to discover the server again")

    async def call() -> str | None:
        try:
            async with gw.client(MODERN) as client:
                return (await client.call_tool("modern__echo", {"text": "after"})).content[0].text
        except MCPError:
            return None

    for _ in range(50):
        if await call() == "after":
            break
        await anyio.sleep(0.1)
    assert [c["arguments"]["text"] for c in server.calls()] == ["before"]
    assert again.calls() == [{"tool": "echo", "arguments": {"text": "after"}}]
    assert_spoken_to_statelessly(again)


ASK_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "modern__echo": {},
        # One call a minute: a retry counted as a second call would be refused.
        "modern__ask": {"limits": [{"counter": "asks", "window": "minute", "max": 1, "scope": "grant"}]},
    },
}


def ask_runs(server: ModernServer) -> list[dict]:
    return [c for c in server.calls() if c["tool"] == "ask"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_modern_server_asks_clients_of_both_generations_for_input(serve_factory, modern_server, mode):
    """The server answers `ask` input-required (an elicitation). A 2025 client
    is asked over its session and the gateway sends the call again with the
    answer; a 2026 client gets the input-required result and retries by
    itself. Either way: one decision, counted once (the limit is 1), audited
    once, and the server sees its own requestState come back."""
    import mcp_types as types

    server = modern_server()
    gw = serve_factory({"policy": "policy.json", "servers": {"modern": {"url": server.url}}},
                       {"policy.json": ASK_POLICY})
    asked: list[str] = []

    async def elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"reply": "yes"})

    async with gw.client(mode, elicitation_callback=elicit) as client:
        result = await client.call_tool("modern__ask", {"question": "may I?"})
        assert not result.is_error, result
        assert result.content[0].text == 'answer: accept {"reply": "yes"}'
        assert asked == ["may I?"]
        again = await client.call_tool("modern__ask", {"question": "once more?"})
        assert again.is_error and again.structured_content["toolgate"]["decision"] == "rate_limited"
    runs = ask_runs(server)
    assert [(r["inputResponses"], r["requestState"]) for r in runs] == [
        (None, None),
        ({"answer": {"action": "accept", "content": {"reply": "yes"}}}, "ask-state-1"),
    ]
    decisions = [(r["tool"], r["decision"]) for r in gw.wait_audit(2)]
    assert decisions == [("modern__ask", "allow"), ("modern__ask", "rate_limited")]
    assert_spoken_to_statelessly(server)


def modern_post(http, gw, id, name, arguments, **extra):
    params = {"name": name, "arguments": arguments, "_meta": {
        MODERN_META_KEY: MODERN, "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}, **extra}
    r = post(http, gw.url, {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params},
             mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name=name)
    return answer_of(r)


def test_a_2026_retry_is_the_same_call_and_still_under_the_policy(serve_factory, modern_server):
    """The server's requestState reaches the client sealed: a retry with it
    continues that call only (same grant, tool and arguments; not altered;
    once),
    and is checked against the policy again: once the tool is denied, the
    retry is refused and never reaches the server."""
    server = modern_server()
    gw = serve_factory({"policy": "policy.json", "servers": {"modern": {"url": server.url}}},
                       {"policy.json": {**ASK_POLICY, "tools": {**ASK_POLICY["tools"], "modern__ask": {}}}})
    answer = {"answer": {"action": "accept", "content": {"reply": "ok"}}}
    with gw.http() as http:
        first = modern_post(http, gw, 1, "modern__ask", {"question": "q"})["result"]
        assert first["resultType"] == "input_required"
        assert first["inputRequests"]["answer"]["method"] == "elicitation/create"
        state = first["requestState"]
        assert state.startswith("toolgate-state:") and "ask-state-1" not in state
        # Another tool's arguments, an altered state: not this call.
        for arguments, sent_state in [({"question": "other"}, state), ({"question": "q"}, state[:-2] + "AA")]:
            refused = modern_post(http, gw, 2, "modern__ask", arguments, inputResponses=answer, requestState=sent_state)
            assert refused["error"]["code"] == -32602 and "requestState" in refused["error"]["message"], refused
        done = modern_post(http, gw, 3, "modern__ask", {"question": "q"}, inputResponses=answer, requestState=state)
        assert done["result"]["content"][0]["text"] == 'answer: accept {"reply": "ok"}'
        assert len(ask_runs(server)) == 2
        # Taken once: a replay would reach the server again past the counters.
        replayed = modern_post(http, gw, 3, "modern__ask", {"question": "q"}, inputResponses=answer, requestState=state)
        assert replayed["error"]["code"] == -32602 and "requestState" in replayed["error"]["message"], replayed
        assert len(ask_runs(server)) == 2

        second = modern_post(http, gw, 4, "modern__ask", {"question": "q2"})["result"]
        assert second["resultType"] == "input_required"
        denied = {**ASK_POLICY, "tools": {"modern__ask": {"action": "deny", "reason": "no more asking"},
                                          "modern__echo": {"action": "deny", "reason": "reloaded"}}}
        (gw.dir / "policy.json").write_text(json.dumps(denied), encoding="utf-8")

        def reloaded():
            return "error" in modern_post(http, gw, 5, "modern__echo", {"text": "x"}) or \
                modern_post(http, gw, 5, "modern__echo", {"text": "x"})["result"].get("isError")

        wait_for(reloaded, 5, "the new policy to take effect")
        retry = modern_post(http, gw, 6, "modern__ask", {"question": "q2"}, inputResponses=answer,
                            requestState=second["requestState"])["result"]
        assert retry["isError"] and retry["structuredContent"]["toolgate"]["decision"] == "deny", retry
    # The refused retry never reached the server: only the first run of the second call.
    runs = ask_runs(server)
    assert len(runs) == 3 and runs[2]["arguments"] == {"question": "q2"} and runs[2]["inputResponses"] is None
    wait_for(lambda: len([r for r in gw.audit() if r["tool"] == "modern__ask"]) >= 3, 5, "the refusal's audit record")
    assert [r["decision"] for r in gw.audit() if r["tool"] == "modern__ask"] == ["allow", "allow", "deny"]


@pytest.mark.anyio
async def test_the_config_can_name_the_generation(serve_factory, modern_server):
    """`protocol: "2026-07-28"` speaks statelessly from the start (no
    `initialize` is sent); `protocol: "2025-11-25"` never switches, so a
    modern-only server stays down and gets nothing but handshakes. (The
    gateway waits its 30 s start-up allowance for the server that never
    becomes ready.)"""
    stateless, handshake = modern_server(name="stateless"), modern_server(name="handshake")
    gw = serve_factory({"policy": "policy.json", "servers": {
        "modern": {"url": stateless.url, "protocol": "2026-07-28"},
        "old": {"url": handshake.url, "protocol": "2025-11-25"},
    }}, {"policy.json": {**POLICY, "tools": {**POLICY["tools"], "old__echo": {}}}})
    async with gw.client(MODERN) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        assert tools == ["modern__echo", "modern__send_text", "modern__delete_all"]
        assert (await client.call_tool("modern__echo", {"text": "direct"})).content[0].text == "direct"
        with pytest.raises(MCPError):
            await client.call_tool("old__echo", {"text": "never"})
    methods = [r["body"]["method"] for r in stateless.requests()]
    assert methods[0] == "server/discover" and "initialize" not in methods
    assert stateless.calls() == [{"tool": "echo", "arguments": {"text": "direct"}}]
    wait_for(lambda: len(handshake.requests()) >= 1, 10, "the handshake to be tried")
    assert {r["body"]["method"] for r in handshake.requests()} == {"initialize"}
    assert handshake.calls() == []
    assert 'server "old" is down: initialize failed: upstream error -32022' in gw.stderr()


DUAL_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "dual__echo": {},
        "dual__fresh": {},
        "dual__wipe": {"action": "deny", "reason": "never wipe"},
        "old__echo": {},
        "pinned__echo": {},
    },
}


def stateless_requests(server: ModernServer) -> list[dict]:
    """The requests that came as 2026-07-28 (its version in the header)."""
    return [r for r in server.requests() if r["headers"].get("mcp-protocol-version") == MODERN]


@pytest.mark.anyio
async def test_a_server_of_both_generations_serves_2026_clients_statelessly_under_the_policy(
        serve_factory, modern_server):
    """A server that speaks both generations (nothing in the config says so)
    is asked once with `server/discover`; its 2026-07-28 clients see the
    tools it lists only statelessly, and their calls go statelessly, still
    under the policy: a denied one never reaches it. 2025 clients keep the
    handshake and its lists."""
    server = modern_server(name="dual", MODERN_ERA="both")
    gw = serve_factory({"policy": "policy.json", "servers": {"dual": {"url": server.url}}},
                       {"policy.json": DUAL_POLICY})
    async with gw.client(LEGACY) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["dual__echo"]
        assert (await client.call_tool("dual__echo", {"text": "old"})).content[0].text == "old"
        with pytest.raises(MCPError) as e:
            await client.call_tool("dual__fresh", {})
        assert e.value.error.code == -32602
    async with gw.client(MODERN) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        assert tools == ["dual__echo", "dual__fresh", "dual__wipe"]
        assert (await client.call_tool("dual__fresh", {})).content[0].text == "fresh: ok"
        denied = await client.call_tool("dual__wipe", {})
        assert denied.is_error and denied.structured_content["toolgate"]["decision"] == "deny"
        assert "never wipe" in denied.content[0].text
        assert (await client.call_tool("dual__echo", {"text": "new"})).content[0].text == "new"
    assert server.calls() == [
        {"tool": "echo", "arguments": {"text": "old"}},
        {"tool": "fresh", "arguments": {}},
        {"tool": "echo", "arguments": {"text": "new"}},
    ]
    methods = [r["body"]["method"] for r in server.requests() if r["body"]]
    assert methods.count("initialize") == 1 and methods.count("server/discover") == 1
    modern_calls = [r["body"]["params"] for r in stateless_requests(server) if r["body"]["method"] == "tools/call"]
    assert [c["name"] for c in modern_calls] == ["fresh", "echo"]
    for request in stateless_requests(server):
        assert "mcp-session-id" not in request["headers"], request


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_server_of_the_handshake_only_is_asked_once_and_never_again(serve_factory, modern_server, mode):
    """A 2025-11-25 server with `protocol: auto` gets one `server/discover`
    at 2026-07-28 (refused) and nothing stateless after, whatever its
    clients speak; with `protocol: "2025-11-25"` it gets not even that."""
    old = modern_server(name="old", MODERN_ERA="handshake")
    pinned = modern_server(name="pinned", MODERN_ERA="handshake")
    gw = serve_factory({"policy": "policy.json", "servers": {
        "old": {"url": old.url},
        "pinned": {"url": pinned.url, "protocol": "2025-11-25"},
    }}, {"policy.json": DUAL_POLICY})
    async with gw.client(mode) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["old__echo", "pinned__echo"]
        for name in ["old__echo", "pinned__echo"]:
            assert (await client.call_tool(name, {"text": name})).content[0].text == name
    assert [c["tool"] for c in old.calls()] == ["echo"] and [c["tool"] for c in pinned.calls()] == ["echo"]
    assert [r["body"]["method"] for r in stateless_requests(old)] == ["server/discover"]
    assert stateless_requests(pinned) == []
    assert "server/discover" not in [r["body"]["method"] for r in pinned.requests() if r["body"]]


LISTEN_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {f"{server}__{tool}": {} for server in ("modern", "dual") for tool in ("echo", "grow", "grown")},
}


@pytest.mark.parametrize("era", ["modern", "both"])
def test_a_stateless_servers_list_changes_are_followed_through_subscriptions_listen(serve_factory, modern_server,
                                                                                   era):
    """A server spoken to statelessly (a modern-only one, or the stateless link
    to one of both generations) has no GET stream: the gateway listens with
    `subscriptions/listen` for the lists its `server/discover` says change,
    and when the server reports a change, fetches the lists again and tells
    its own 2026-07-28 listeners (their subscription id on it)."""
    name = "modern" if era == "modern" else "dual"
    server = modern_server(name=name, MODERN_ERA=era, MODERN_LISTEN="1")
    gw = serve_factory({"policy": "policy.json", "servers": {name: {"url": server.url}}},
                       {"policy.json": LISTEN_POLICY})
    wait_for(lambda: "subscriptions/listen" in [r["body"]["method"] for r in stateless_requests(server)], 10,
             "the gateway to listen")
    listen = next(r for r in stateless_requests(server) if r["body"]["method"] == "subscriptions/listen")
    assert listen["headers"]["mcp-method"] == "subscriptions/listen"
    assert listen["body"]["params"]["notifications"]["toolsListChanged"] is True
    assert listen["body"]["params"]["_meta"][MODERN_META_KEY] == MODERN
    meta = {MODERN_META_KEY: MODERN, "io.modelcontextprotocol/clientCapabilities": {}}

    def tools(http) -> list[str]:
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},
                 mcp_protocol_version=MODERN, mcp_method="tools/list")
        return [t["name"] for t in answer_of(r)["result"]["tools"]]

    with gw.http() as http, gw.http() as other:
        assert tools(http) == [f"{name}__echo", f"{name}__grow"]
        subscribe = {"jsonrpc": "2.0", "id": "mine", "method": "subscriptions/listen",
                     "params": {"_meta": meta, "notifications": {"toolsListChanged": True}}}
        headers = {"mcp-protocol-version": MODERN, "mcp-method": "subscriptions/listen",
                   "accept": "application/json, text/event-stream", "content-type": "application/json"}
        with http.stream("POST", gw.url, json=subscribe, headers=headers) as stream:
            frames = (json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:"))
            assert next(frames)["method"] == "notifications/subscriptions/acknowledged"
            grow = post(other, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": f"{name}__grow", "arguments": {}, "_meta": meta}},
                mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name=f"{name}__grow")
            assert answer_of(grow)["result"]["content"][0]["text"] == "grown"
            changed = next(frames)
            assert changed["method"] == "notifications/tools/list_changed", changed
            assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "mine"
        assert tools(other) == [f"{name}__echo", f"{name}__grow", f"{name}__grown"]
    assert [c["tool"] for c in server.calls()] == ["grow"]
