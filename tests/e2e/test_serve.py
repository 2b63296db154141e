"""`toolgate serve`: the Streamable HTTP gateway, through the built binary,
between the Python SDK client (both protocol generations) and real servers
(the probe server and @modelcontextprotocol/server-everything over stdio).

Each test asserts on what the client saw, what the server received, and
what the gateway audited.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import LEGACY, MODERN, MODES, pid_alive, wait_for, wait_listening
from mcp import MCPError
from servekit import (
    ServeGateway,
    answer_of,
    everything_server,
    initialize,
    post,
    probe_server,
)

ALICE_TOKEN = "tg_alice_token_for_tests"
BOB_TOKEN = "tg_bob_token_for_tests"


def sha(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


GATEWAY_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "probe__echo": {},
        "probe__delete_all": {"action": "deny", "reason": "never delete everything"},
        "probe__send_text": {"limits": [{"counter": "texts", "window": "minute", "max": 2, "scope": "grant"}]},
        "probe__transfer": {"action": "hide"},
    },
}


@pytest.fixture
def serve(serve_factory):
    """serve(config, policies={name: policy}, env=None) -> a started ServeGateway; stopped after the test."""
    return serve_factory


def one_probe(serve, **extra):
    return serve({"policy": "policy.json", "servers": {"probe": probe_server(**extra)}}, {"policy.json": GATEWAY_POLICY})


def text_of(result) -> str:
    return result.content[0].text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_namespaced_filtered_and_decided(serve, mode):
    gw = one_probe(serve)
    async with gw.client(mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["probe__echo", "probe__send_text", "probe__delete_all"]
        assert text_of(await client.call_tool("probe__echo", {"text": "hi"})) == "hi"
        denied = await client.call_tool("probe__delete_all", {"confirm": True})
        assert denied.is_error and "never delete everything" in text_of(denied)
        assert denied.structured_content["toolgate"]["decision"] == "deny"
        for hidden in ["probe__transfer", "probe__get_balance", "echo", "PROBE__ECHO"]:
            with pytest.raises(MCPError) as e:
                await client.call_tool(hidden, {"to": "x", "amount": 1})
            assert e.value.error.code == -32602 and e.value.error.message == f"Unknown tool: {hidden}"
    # The server received only the allowed call, under its own name.
    assert gw.received() == [{"tool": "echo", "arguments": {"text": "hi"}}]
    decisions = [(r["tool"], r["decision"]) for r in gw.wait_audit(6)]
    assert ("probe__echo", "allow") in decisions and ("probe__delete_all", "deny") in decisions


@pytest.mark.anyio
async def test_two_grants_see_different_tools_and_draw_on_different_counters(serve):
    bob_policy = {"version": "1", "default": "deny", "tools": {
        "probe__send_text": {"limits": [{"counter": "texts", "window": "minute", "max": 2, "scope": "grant"}]}}}
    gw = serve(
        {
            "policy": "policy.json",
            "servers": {"probe": probe_server()},
            "grants": {
                "alice": {"token_sha256": sha(ALICE_TOKEN)},
                "bob": {"token_sha256": sha(BOB_TOKEN), "policy": "bob.json"},
            },
        },
        {"policy.json": GATEWAY_POLICY, "bob.json": bob_policy},
    )
    async with gw.client(LEGACY, token=ALICE_TOKEN) as alice, gw.client(MODERN, token=BOB_TOKEN) as bob:
        assert [t.name for t in (await alice.list_tools()).tools] == ["probe__echo", "probe__send_text", "probe__delete_all"]
        assert [t.name for t in (await bob.list_tools()).tools] == ["probe__send_text"]
        for client in (alice, bob):
            for i in range(2):
                ok = await client.call_tool("probe__send_text", {"to": "+1", "body": str(i)})
                assert not ok.is_error, ok
            limited = await client.call_tool("probe__send_text", {"to": "+1", "body": "3"})
            assert limited.is_error and limited.structured_content["toolgate"]["decision"] == "rate_limited"
        with pytest.raises(MCPError):
            await bob.call_tool("probe__echo", {"text": "bob may not"})
    assert gw.received_tools() == ["send_text"] * 4
    grants = [r["grant"] for r in gw.wait_audit(7) if r["decision"] == "allow"]
    assert sorted(grants) == ["alice", "alice", "bob", "bob"]


def test_missing_or_wrong_token_is_401_with_a_challenge(serve):
    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server()},
                "grants": {"alice": {"token_sha256": sha(ALICE_TOKEN)}}}, {"policy.json": GATEWAY_POLICY})
    for token in [None, "wrong", ALICE_TOKEN + "x"]:
        with gw.http(token) as http:
            r = post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
    with gw.http(ALICE_TOKEN) as http:
        session = initialize(http, gw.url)
        assert answer_of(post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session))["result"] == {}


def test_foreign_origin_and_host_are_refused(serve):
    gw = one_probe(serve)
    with gw.http() as http:
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, origin="https://evil.example")
        assert r.status_code == 403
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, host="evil.example")
        assert r.status_code == 403
        session = initialize(http, gw.url)
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session, origin="http://localhost:3000")
        assert r.status_code == 200, r.text


def test_bad_input_gets_clear_errors_and_nothing_reaches_the_server(serve):
    gw = one_probe(serve)
    with gw.http() as http:
        session = initialize(http, gw.url)
        dup = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"probe__echo","name":"probe__delete_all","arguments":{}}}'
        r = post(http, gw.url, dup, session)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32600 and r.json()["id"] == 7
        r = post(http, gw.url, b'{"jsonrpc":"2.0","id":', session)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        r = post(http, gw.url, b'{"jsonrpc":"2.0","id":1,"method":"ping","x":"\xff"}', session)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        r = post(http, gw.url, b" " * (17 * 1024 * 1024), session)
        assert r.status_code == 413
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, "forged-session")
        assert r.status_code == 404
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 4, "method": "ping"})
        assert r.status_code == 400
        # A batch: every call in it is decided.
        batch = [
            {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "probe__delete_all", "arguments": {"confirm": True}}},
            {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "probe__echo", "arguments": {"text": "batched"}}},
        ]
        answers = {a["id"]: a for a in post(http, gw.url, batch, session).json()}
        assert answers[10]["result"]["isError"] is True
        assert answers[11]["result"]["content"][0]["text"] == "batched"
        r = post(http, gw.url, [], session)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32600, r.text
        assert "empty batch" in r.json()["error"]["message"]
        # Still serving.
        assert answer_of(post(http, gw.url, {"jsonrpc": "2.0", "id": 5, "method": "ping"}, session))["result"] == {}
    assert gw.received_tools() == ["echo"]


def modern_call(name: str, arguments: dict, id: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": name, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"}}}}


def test_2026_headers_that_disagree_with_the_body_are_refused(serve):
    gw = one_probe(serve)
    with gw.http() as http:
        good = dict(mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="probe__echo")
        r = post(http, gw.url, modern_call("probe__echo", {"text": "ok"}), **good)
        assert r.status_code == 200 and answer_of(r)["result"]["resultType"] == "complete"
        for headers in [
            dict(good, mcp_name="probe__echo"),  # body names another tool below
        ]:
            r = post(http, gw.url, modern_call("probe__delete_all", {"confirm": True}), **headers)
            assert r.status_code == 400 and r.json()["error"]["code"] == -32020
        r = post(http, gw.url, modern_call("probe__echo", {"text": "x"}), **dict(good, mcp_method="tools/list"))
        assert r.status_code == 400 and r.json()["error"]["code"] == -32020
        r = post(http, gw.url, modern_call("probe__echo", {"text": "x"}), **dict(good, mcp_protocol_version="2025-11-25"))
        assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    assert gw.received() == [{"tool": "echo", "arguments": {"text": "ok"}}]


def test_a_session_continues_on_another_gateway_process(serve):
    gw = one_probe(serve)
    with gw.http() as http:
        session = initialize(http, gw.url)
        assert answer_of(post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session))["result"]["tools"]
        gw.stop()
        gw.start()  # a new process, a new port, the same session key
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                "params": {"name": "probe__echo", "arguments": {"text": "after restart"}}}, session)
        assert answer_of(r)["result"]["content"][0]["text"] == "after restart", r.text


@pytest.mark.anyio
async def test_upstream_killed_mid_call_fails_fast_and_comes_back(serve):
    import anyio

    policy = dict(GATEWAY_POLICY, tools=dict(GATEWAY_POLICY["tools"], probe__slow={}))
    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": policy})
    pid = gw.probe_pid()

    def kill_once_the_call_is_in():
        wait_for(lambda: "slow" in gw.received_tools(), what="the slow call to reach the server")
        os.kill(pid, signal.SIGKILL)

    async with gw.client(LEGACY) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, kill_once_the_call_is_in)
            started = time.monotonic()
            with pytest.raises(MCPError) as e:
                await client.call_tool("probe__slow", {"seconds": 30})
            assert time.monotonic() - started < 5, "the call in flight must fail at once"
            assert "unavailable" in e.value.error.message
        wait_for(lambda: not pid_alive(pid), what="the killed server to be gone")
        # The server is restarted and the gateway serves again.
        deadline = time.monotonic() + 15
        while True:
            try:
                assert text_of(await client.call_tool("probe__echo", {"text": "back"})) == "back"
                break
            except MCPError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.2)
    assert gw.probe_pid() != pid


def test_a_name_collision_is_a_start_up_error(serve):
    gw = serve({"policy": "policy.json", "servers": {"a": probe_server(prefix=False), "b": probe_server(prefix=False)}},
               {"policy.json": {"version": "1", "default": "allow"}}, start=False)
    with pytest.raises(AssertionError) as e:
        gw.start()
    assert "offered by both server" in str(e.value)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_server_everything_behind_serve(serve, mode):
    gw = serve({"servers": {"everything": everything_server(policy="everything.json")}},
               {"everything.json": {"version": "1", "default": "deny", "tools": {"echo": {}, "get-sum": {}}}})
    async with gw.client(mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == ["everything__echo", "everything__get-sum"]
        assert "Echo: hello" in text_of(await client.call_tool("everything__echo", {"message": "hello"}))
        assert "3" in text_of(await client.call_tool("everything__get-sum", {"a": 1, "b": 2}))
        prompts = (await client.list_prompts()).prompts
        assert prompts and all(p.name.startswith("everything__") for p in prompts)
        resources = (await client.list_resources()).resources
        assert resources
        read = await client.read_resource(resources[0].uri)
        assert read.contents


@pytest.mark.anyio
async def test_grants_are_reloaded_without_a_restart(serve):
    config = {"policy": "policy.json", "servers": {"probe": probe_server()},
              "grants": {"alice": {"token_sha256": sha(ALICE_TOKEN)}}}
    gw = serve(config, {"policy.json": GATEWAY_POLICY})
    with gw.http(BOB_TOKEN) as http:
        assert post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401
        config["grants"]["bob"] = {"token_sha256": sha(BOB_TOKEN)}
        gw.write_config(config)
        wait_for(lambda: initialize_status(http, gw.url) == 200, 5, "bob's grant to take effect")
        del config["grants"]["alice"]
    with gw.http(ALICE_TOKEN) as http:
        gw.write_config(config)
        wait_for(lambda: initialize_status(http, gw.url) == 401, 5, "alice's grant to be revoked")
    # Revoking the last grant does not open the gateway to anonymous callers.
    del config["grants"]["bob"]
    gw.write_config(config)
    with gw.http(BOB_TOKEN) as http:
        wait_for(lambda: initialize_status(http, gw.url) == 401, 5, "bob's grant to be revoked")
    with gw.http() as anonymous:
        assert initialize_status(anonymous, gw.url) == 401, "a gateway that started with grants never turns anonymous"


def initialize_status(http, url) -> int:
    return post(http, url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}).status_code


@pytest.mark.anyio
async def test_sampling_and_elicitation_reach_the_client_that_made_the_call(serve):
    import mcp_types as types

    gw = serve({"servers": {"everything": everything_server(policy="everything.json")}},
               {"everything.json": {"version": "1", "default": "deny", "tools": {
                   "trigger-sampling-request": {}, "trigger-elicitation-request": {}, "echo": {}}}})
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def sampler(who: str):
        async def callback(context, params):
            seen[who].append(params.messages[0].content.text)
            return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=f"answer from {who}"),
                                             model="test-model", stop_reason="endTurn")
        return callback

    def elicitor(who: str):
        async def callback(context, params):
            seen[who].append(f"elicit: {params.message}")
            return types.ElicitResult(action="decline")
        return callback

    async with gw.client(LEGACY, sampling_callback=sampler("a"), elicitation_callback=elicitor("a")) as a, \
            gw.client(LEGACY, sampling_callback=sampler("b"), elicitation_callback=elicitor("b")) as b:
        names = {t.name for t in (await a.list_tools()).tools}
        assert "everything__trigger-sampling-request" in names, names
        result = await a.call_tool("everything__trigger-sampling-request", {"prompt": "hello from a", "maxTokens": 5})
        assert not result.is_error, result
        assert "answer from a" in json.dumps(result.model_dump(mode="json"))
        assert len(seen["a"]) == 1 and "hello from a" in seen["a"][0]
        result = await b.call_tool("everything__trigger-elicitation-request", {})
        assert not result.is_error, result
        assert any(s.startswith("elicit:") for s in seen["b"])
        assert not any(s.startswith("elicit:") for s in seen["a"])
        assert len(seen["b"]) == 1


@pytest.mark.anyio
async def test_a_2026_client_answers_its_servers_sampling_and_elicitation_by_input_required(serve):
    """server-everything speaks 2025-11-25 and asks mid-call; a 2026-07-28
    client has no stream to be asked on. The gateway parks the call, answers
    input_required with the server's request, and the client's retry carries
    the answer back to the waiting server: one call upstream, one audit record."""
    import mcp_types as types

    gw = serve({"servers": {"everything": everything_server(policy="everything.json")}},
               {"everything.json": {"version": "1", "default": "deny", "tools": {
                   "trigger-sampling-request": {}, "trigger-elicitation-request": {}}}})
    seen: list[str] = []

    async def sampler(context, params):
        seen.append(params.messages[0].content.text)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="modern answer"),
                                         model="test-model", stop_reason="endTurn")

    async def elicitor(context, params):
        seen.append(f"elicit: {params.message}")
        return types.ElicitResult(action="decline")

    async with gw.client(MODERN, sampling_callback=sampler, elicitation_callback=elicitor) as client:
        result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "hello from 2026", "maxTokens": 5})
        assert not result.is_error, result
        assert "modern answer" in json.dumps(result.model_dump(mode="json"))
        assert len(seen) == 1 and "hello from 2026" in seen[0]
        result = await client.call_tool("everything__trigger-elicitation-request", {})
        assert not result.is_error, result
        assert seen[1].startswith("elicit:")
    decisions = [(r["tool"], r["decision"]) for r in gw.wait_audit(2)]
    assert decisions == [("everything__trigger-sampling-request", "allow"), ("everything__trigger-elicitation-request", "allow")]


def test_a_forged_or_foreign_request_state_resumes_nothing(serve):
    gw = one_probe(serve)
    message = modern_call("probe__echo", {"text": "x"})
    message["params"]["requestState"] = "toolgate-call:0123456789abcdef01234567"
    message["params"]["inputResponses"] = {"toolgate-1": {"action": "accept"}}
    with gw.http() as http:
        r = post(http, gw.url, message, mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="probe__echo")
        answer = answer_of(r)
        assert answer["error"]["code"] == -32602 and "requestState" in answer["error"]["message"], answer
    assert gw.received() == []


@pytest.mark.anyio
async def test_a_per_session_server_asks_its_own_client_for_roots(serve, tmp_path):
    """server-filesystem (npm) asks its client for roots after it starts and
    again after notifications/roots/list_changed, outside any call. Run once
    per session, it asks the session that owns it: each client's roots
    become that client's allowed directories, and a change is passed on."""
    import anyio
    import mcp_types as types
    from conftest import EVERYTHING_SERVER

    filesystem = EVERYTHING_SERVER.parents[2] / "server-filesystem" / "dist" / "index.js"
    assert filesystem.exists(), f"{filesystem} is missing: run scripts/setup.sh (npm ci in tests/node)"
    dirs = {name: tmp_path / name for name in ["start", "a", "b", "a2"]}
    for d in dirs.values():
        d.mkdir()
    gw = serve({"servers": {"fs": {"command": "node", "args": [str(filesystem), str(dirs["start"])],
                                   "per_session": True, "policy": "fs.json"}}},
               {"fs.json": {"version": "1", "default": "deny", "tools": {"list_allowed_directories": {}}}})
    roots = {"a": [dirs["a"]], "b": [dirs["b"]]}

    def lister(who: str):
        async def callback(context):
            return types.ListRootsResult(roots=[types.Root(uri=d.resolve().as_uri()) for d in roots[who]])
        return callback

    async def allowed(client) -> str:
        return text_of(await client.call_tool("fs__list_allowed_directories", {}))

    async def until(client, directory) -> str:
        text = ""
        with anyio.fail_after(15):
            while str(directory.resolve()) not in text:
                text = await allowed(client)
                await anyio.sleep(0.1)
        return text

    async with gw.client(LEGACY, list_roots_callback=lister("a")) as a, \
            gw.client(LEGACY, list_roots_callback=lister("b")) as b:
        text_a, text_b = await until(a, dirs["a"]), await until(b, dirs["b"])
        assert str(dirs["b"].resolve()) not in text_a and str(dirs["a"].resolve()) not in text_b
        roots["a"] = [dirs["a2"]]
        await a.send_roots_list_changed()
        text_a = await until(a, dirs["a2"])
        assert str(dirs["b"].resolve()) not in text_a
        assert str(dirs["b"].resolve()) in await allowed(b)


@pytest.mark.anyio
async def test_a_failing_server_leaves_the_list_and_comes_back(serve):
    config = {"policy": "policy.json", "servers": {"probe": probe_server(), "everything": everything_server()}}
    policy = {"version": "1", "default": "deny", "tools": {"probe__echo": {}, "everything__echo": {}}}
    gw = serve(config, {"policy.json": policy})
    pid = gw.probe_pid()
    changed = []

    async def on_message(message):
        if isinstance(message, types_notification()) and "list_changed" in str(message):
            changed.append(message)

    import anyio

    async with gw.client(LEGACY, message_handler=on_message) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["everything__echo", "probe__echo"]
        # server-everything says its tools changed three times as it starts;
        # that changed nothing this client could have listed, so it hears nothing.
        await anyio.sleep(1)
        assert changed == []
        os.kill(pid, signal.SIGKILL)

        with anyio.fail_after(10):
            while sorted(t.name for t in (await client.list_tools()).tools) != ["everything__echo"]:
                await anyio.sleep(0.05)
        # The other server is unaffected.
        assert "Echo: still" in text_of(await client.call_tool("everything__echo", {"message": "still"}))
        with anyio.fail_after(15):
            while sorted(t.name for t in (await client.list_tools()).tools) != ["everything__echo", "probe__echo"]:
                await anyio.sleep(0.1)
        assert text_of(await client.call_tool("probe__echo", {"text": "back"})) == "back"
        with anyio.fail_after(5):
            while not changed:
                await anyio.sleep(0.05)


def types_notification():
    import mcp_types as types

    return types.ServerNotification if hasattr(types, "ServerNotification") else object


def test_per_session_servers_run_once_per_client_session(serve, tmp_path):
    piddir = tmp_path / "pids"
    piddir.mkdir()
    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server(per_session=True)}},
               {"policy.json": GATEWAY_POLICY}, env={"PROBE_PIDDIR": str(piddir)})
    wait_for(lambda: len(list(piddir.iterdir())) == 1, what="the shared instance (it answers the lists)")
    shared = {p.name for p in piddir.iterdir()}
    sessions = []
    with gw.http() as http:
        for i in range(2):
            session = initialize(http, gw.url)
            sessions.append(session)
            r = post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                    "params": {"name": "probe__echo", "arguments": {"text": f"s{i}"}}}, session)
            assert answer_of(r)["result"]["content"][0]["text"] == f"s{i}"
            # A second call in the same session reuses its instance.
            r = post(http, gw.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                    "params": {"name": "probe__echo", "arguments": {"text": "again"}}}, session)
            assert answer_of(r)["result"]["content"][0]["text"] == "again"
        own = {p.name for p in piddir.iterdir()} - shared
        assert len(own) == 2, own
        # Ending a session stops its instance.
        r = http.delete(gw.url, headers={"mcp-session-id": sessions[0]})
        assert r.status_code == 200
        wait_for(lambda: sum(pid_alive(int(p)) for p in own) == 1, what="the ended session's instance to exit")
    assert gw.received_tools() == ["echo"] * 4


def test_the_typescript_sdk_client_works_through_serve(serve):
    import subprocess

    from conftest import REPO

    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server()},
                "grants": {"alice": {"token_sha256": sha(ALICE_TOKEN)}}}, {"policy.json": GATEWAY_POLICY})
    script = REPO / "tests" / "node" / "ts_client.mjs"
    calls = [{"tool": "probe__echo", "arguments": {"text": "from ts"}},
             {"tool": "probe__delete_all", "arguments": {"confirm": True}},
             {"tool": "probe__transfer", "arguments": {"to": "x", "amount": 1}}]
    out = subprocess.run(["node", str(script), gw.url, json.dumps(calls), ALICE_TOKEN],
                         capture_output=True, text=True, timeout=60, cwd=script.parent)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["tools"] == ["probe__echo", "probe__send_text", "probe__delete_all"]
    assert lines[1]["result"]["content"][0]["text"] == "from ts"
    assert lines[2]["result"]["isError"] is True
    assert "never delete everything" in lines[2]["result"]["content"][0]["text"]
    assert lines[3]["error"]["code"] == -32602 and "Unknown tool: probe__transfer" in lines[3]["error"]["message"]
    assert gw.received() == [{"tool": "echo", "arguments": {"text": "from ts"}}]


@pytest.mark.parametrize("workers", [1, 3])
def test_graceful_shutdown_lets_calls_in_flight_finish(serve, workers):
    import threading

    policy = dict(GATEWAY_POLICY, tools=dict(GATEWAY_POLICY["tools"], probe__slow={}))
    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": policy},
               extra_args=["--workers", str(workers)])
    # One connection per serving thread (connections are dealt to them in
    # turn), each with a slow call in flight when the signal comes.
    clients = [gw.http() for _ in range(workers)]
    sessions = [initialize(http, gw.url) for http in clients]
    answers = []

    def slow_call(http, session):
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                "params": {"name": "probe__slow", "arguments": {"seconds": 1}}}, session)
        answers.append((r.status_code, answer_of(r)))

    threads = [threading.Thread(target=slow_call, args=pair) for pair in zip(clients, sessions)]
    for t in threads:
        t.start()
    wait_for(lambda: gw.received_tools().count("slow") == workers, what="the slow calls to reach the server")
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=15)
    assert len(answers) == workers, answers
    for status, answer in answers:
        assert status == 200 and "result" in answer, answers
    assert gw.proc.wait(timeout=15) == 0
    for http in clients:
        http.close()
    # New connections are refused once it has stopped.
    with gw.http() as http:
        import httpx2

        with pytest.raises(httpx2.ConnectError):
            http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})


@pytest.fixture
def everything_http(tmp_path):
    """@modelcontextprotocol/server-everything over Streamable HTTP on a free port."""
    import subprocess

    from conftest import EVERYTHING_SERVER
    from servekit import free_port

    port = free_port()
    log = open(tmp_path / "everything-http.log", "wb")
    proc = subprocess.Popen(["node", str(EVERYTHING_SERVER), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                            stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, 30, "server-everything to listen over HTTP")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_an_http_upstream_and_a_stdio_upstream_behind_one_endpoint(serve, everything_http, mode):
    policy = {"version": "1", "default": "deny", "tools": {
        "remote__echo": {}, "remote__get-sum": {"action": "deny", "reason": "no sums today"}, "probe__echo": {}}}
    gw = serve({"policy": "policy.json", "servers": {
        "remote": {"url": everything_http}, "probe": probe_server()}}, {"policy.json": policy})
    async with gw.client(mode) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["probe__echo", "remote__echo", "remote__get-sum"]
        assert "Echo: over http" in text_of(await client.call_tool("remote__echo", {"message": "over http"}))
        denied = await client.call_tool("remote__get-sum", {"a": 1, "b": 2})
        assert denied.is_error and "no sums today" in text_of(denied)
        assert text_of(await client.call_tool("probe__echo", {"text": "over stdio"})) == "over stdio"


@pytest.mark.anyio
async def test_clients_served_on_several_threads_each_get_their_own_answers(serve, everything_http):
    import anyio

    policy = {"version": "1", "default": "deny", "tools": {
        "remote__echo": {}, "remote__get-sum": {"action": "deny", "reason": "no sums today"}, "probe__echo": {}}}
    gw = serve({"policy": "policy.json", "servers": {"remote": {"url": everything_http}, "probe": probe_server()}},
               {"policy.json": policy}, extra_args=["--workers", "3"])
    assert gw.proc is not None
    pid = gw.proc.pid

    def serving_threads() -> list[str]:
        names = [(p / "comm").read_text().strip() for p in Path(f"/proc/{pid}/task").iterdir()]
        return sorted(t for t in names if t.startswith("tg-worker"))

    # They start once the listener is up (right after the gateway says so).
    wait_for(lambda: serving_threads() == ["tg-worker-1", "tg-worker-2"], 10, "two more serving threads")
    seen: dict[int, list[str]] = {}

    async def agent(n: int, mode: str) -> None:
        async with gw.client(mode) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            assert names == ["probe__echo", "remote__echo", "remote__get-sum"]
            texts = []
            for i in range(5):
                texts.append(text_of(await client.call_tool("remote__echo", {"message": f"agent {n} call {i}"})))
                texts.append(text_of(await client.call_tool("probe__echo", {"text": f"agent {n} call {i}"})))
            denied = await client.call_tool("remote__get-sum", {"a": n, "b": 1})
            assert denied.is_error and "no sums today" in text_of(denied)
            seen[n] = texts

    async with anyio.create_task_group() as group:
        for n in range(6):
            group.start_soon(agent, n, MODES[n % 2])
    for n in range(6):
        assert seen[n] == [t for i in range(5) for t in (f"Echo: agent {n} call {i}", f"agent {n} call {i}")]
    assert sorted(c["arguments"]["text"] for c in gw.received()) == sorted(
        f"agent {n} call {i}" for n in range(6) for i in range(5))
    decisions = [r["decision"] for r in gw.wait_audit(66)]
    assert decisions.count("allow") == 60 and decisions.count("deny") == 6


def test_client_credentials_never_reach_the_upstream(serve, tmp_path):
    import subprocess
    import sys

    from conftest import PROBE_SERVER, read_jsonl
    from servekit import free_port

    port = free_port()
    headers_log = tmp_path / "headers.jsonl"
    probe = subprocess.Popen([sys.executable, str(PROBE_SERVER), "--http", str(port)],
                             env={**os.environ, "PROBE_HEADERS": str(headers_log)})
    try:
        wait_listening(port, 30, "the probe server to listen over HTTP")
        gw = serve({"policy": "policy.json",
                    "servers": {"probe": {"url": f"http://127.0.0.1:{port}/mcp", "headers": {"X-Upstream-Key": "${UPSTREAM_KEY}"}}},
                    "grants": {"alice": {"token_sha256": sha(ALICE_TOKEN)}}},
                   {"policy.json": GATEWAY_POLICY}, env={"UPSTREAM_KEY": "configured-secret"})
        with gw.http(ALICE_TOKEN) as http:
            session = initialize(http, gw.url)
            r = post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                    "params": {"name": "probe__echo", "arguments": {"text": "hi"}}},
                     session, cookie="sid=client-cookie")
            assert answer_of(r)["result"]["content"][0]["text"] == "hi"
        seen = read_jsonl(headers_log)
        assert seen, "the upstream saw no requests"
        for request in seen:
            assert "authorization" not in request["headers"], request
            assert "cookie" not in request["headers"], request
            assert request["headers"].get("x-upstream-key") == "configured-secret", request
        assert "configured-secret" not in gw.stderr()
    finally:
        probe.terminate()
        probe.wait(timeout=10)


def sse_events(lines):
    """(id, message) for each SSE event in an iterator of lines."""
    event_id, data = None, []
    for line in lines:
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event_id, json.loads("\n".join(data))
            event_id, data = None, []


def test_a_broken_stream_is_resumed_with_last_event_id(serve):
    gw = serve({"servers": {"everything": everything_server(policy="everything.json")}},
               {"everything.json": {"version": "1", "default": "deny", "tools": {"trigger-long-running-operation": {}}}})
    with gw.http() as http:
        session = initialize(http, gw.url)
        request = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "everything__trigger-long-running-operation", "arguments": {"duration": 2, "steps": 4},
            "_meta": {"progressToken": "tok-1"}}}
        headers = {"content-type": "application/json", "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        with http.stream("POST", gw.url, content=json.dumps(request), headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            first_id, first = next(sse_events(r.iter_lines()))
        # The connection is gone after the first event; the call goes on.
        assert first["method"] == "notifications/progress" and first["params"]["progressToken"] == "tok-1"
        assert first_id
        resumed = http.get(gw.url, headers={"accept": "text/event-stream", "mcp-session-id": session,
                                            "last-event-id": first_id}, timeout=20)
        events = list(sse_events(resumed.text.splitlines()))
    messages = [m for _, m in events]
    assert messages[-1]["id"] == 5 and "result" in messages[-1], messages
    progress = [first["params"]["progress"]] + [m["params"]["progress"] for m in messages[:-1]]
    assert progress == sorted(set(progress)), "no event is lost or repeated"
    assert len(progress) == 4, progress


def test_a_request_over_http_request_timeout_gets_504(serve):
    policy = dict(GATEWAY_POLICY, tools=dict(GATEWAY_POLICY["tools"], probe__slow={}))
    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server()}, "http": {"request_timeout": "1s"}},
               {"policy.json": policy})
    with gw.http() as http:
        session = initialize(http, gw.url)
        started = time.monotonic()
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                "params": {"name": "probe__slow", "arguments": {"seconds": 5}}}, session)
        assert r.status_code == 504, r.text
        assert "request_timeout" in r.json()["error"]["message"]
        assert time.monotonic() - started < 4


def test_a_signal_while_the_servers_start_stops_the_gateway(serve):
    """SIGTERM while a server is still starting (here: one that never answers
    initialize) stops the gateway, also when the admin listener, already up,
    has its own handler."""
    import subprocess
    import sys

    from servekit import free_port

    gw = serve({"policy": "policy.json",
                "servers": {"mute": {"command": sys.executable, "args": ["-c", "import time; time.sleep(300)"]}},
                "admin": {"listen": f"127.0.0.1:{free_port()}", "token_sha256": sha(ALICE_TOKEN)}},
               {"policy.json": {"version": "1", "default": "deny", "tools": {}}}, start=False)
    stderr = open(gw.stderr_path, "ab")
    gw.proc = subprocess.Popen([str(gw.bin), "serve", "--config", str(gw.config_path), "--listen", "127.0.0.1:0"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=gw.dir,
                               env={**os.environ, **gw.env})
    stderr.close()
    wait_for(lambda: "admin API listening" in gw.stderr(), 30, "the admin listener")
    assert "toolgate serve: listening" not in gw.stderr(), "the server was meant to be still starting"
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=20) == 0, gw.stderr()
    assert "stopped while starting" in gw.stderr()


@pytest.mark.anyio
async def test_a_legacy_http_sse_client(serve):
    """A 2024-11-05 client (the Python SDK's sse_client): GET /sse, then POST
    /messages; answers, a refusal and a server's sampling request all come on
    its event stream, and the grant's token is required."""
    import httpx2
    import mcp_types as types
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    gw = serve({"policy": "policy.json", "servers": {"probe": probe_server(), "everything": everything_server()},
                "grants": {"alice": {"token_sha256": sha(ALICE_TOKEN)}, "bob": {"token_sha256": sha(BOB_TOKEN)}}},
               {"policy.json": dict(GATEWAY_POLICY, tools=dict(GATEWAY_POLICY["tools"], **{
                   "everything__trigger-sampling-request": {}}))})
    base = gw.url.removesuffix("/mcp")
    prompts = []

    async def sampler(context, params):
        prompts.append(params.messages[0].content.text)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled by the old client"),
                                         model="test-model", stop_reason="endTurn")

    stream_ids: list[str] = []
    async with sse_client(f"{base}/sse", headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
                          on_session_created=stream_ids.append) as (read, write):
        async with ClientSession(read, write, sampling_callback=sampler) as session:
            await session.initialize()
            names = sorted(t.name for t in (await session.list_tools()).tools)
            assert names == ["everything__trigger-sampling-request", "probe__delete_all", "probe__echo", "probe__send_text"], names
            echoed = await session.call_tool("probe__echo", {"text": "over the old transport"})
            assert echoed.content[0].text == "over the old transport"
            denied = await session.call_tool("probe__delete_all", {})
            assert denied.is_error and "never delete everything" in denied.content[0].text
            sampled = await session.call_tool("everything__trigger-sampling-request", {"prompt": "old hello", "maxTokens": 5})
            assert not sampled.is_error and "sampled by the old client" in json.dumps(sampled.model_dump(mode="json"))
            assert len(prompts) == 1 and "old hello" in prompts[0]
            # Another grant cannot post to this stream (nor learn that it exists).
            assert len(stream_ids) == 1
            with httpx2.Client(headers={"Authorization": f"Bearer {BOB_TOKEN}"}) as bob:
                r = bob.post(f"{base}/messages?session_id={stream_ids[0]}",
                             json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
                assert r.status_code == 404
            with httpx2.Client(headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as alice:
                r = alice.post(f"{base}/messages?session_id={stream_ids[0]}",
                               json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
                assert r.status_code == 202
    assert gw.received() == [{"tool": "echo", "arguments": {"text": "over the old transport"}}]
    with httpx2.Client() as anonymous:
        assert anonymous.get(f"{base}/sse").status_code == 401
        assert anonymous.post(f"{base}/messages?session_id=x", json={}).status_code == 401
