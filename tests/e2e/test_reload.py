"""Hot reload: editing the policy (or the config and the policies it names)
takes effect within a second without dropping the session; an invalid edit is
rejected with the validate messages in the log and the old policy stays in
force; a reload does not reset counters.
"""

from __future__ import annotations

import json
import time

from conftest import LEGACY, wait_for
from servekit import answer_of, initialize, post, probe_server

LIMITED = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "send_text": {"limits": [{"counter": "texts", "window": "minute", "max": 2, "scope": "grant"}]},
    },
}


def write(path, policy) -> None:
    # A new size or mtime marks the edit; make sure the mtime moves even on coarse clocks.
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(json.dumps(policy) if isinstance(policy, dict) else policy, encoding="utf-8")
    if path.stat().st_mtime_ns == before:
        time.sleep(0.01)
        path.write_text(json.dumps(policy) if isinstance(policy, dict) else policy, encoding="utf-8")


def is_refused(answer: dict) -> bool:
    return answer.get("result", {}).get("isError") is True or "error" in answer


def test_run_reloads_the_policy_and_keeps_counters(raw_gateway):
    raw = raw_gateway(LIMITED, mode=LEGACY)
    for i in range(2):
        assert not is_refused(raw.call("send_text", {"to": "+1", "body": str(i)}))
    assert raw.call("send_text", {"to": "+1", "body": "x"})["result"]["structuredContent"]["toolgate"]["decision"] == "rate_limited"
    # Deny echo: within a second, echo is refused, in the same session.
    denied_echo = dict(LIMITED, tools=dict(LIMITED["tools"], echo={"action": "deny", "reason": "reloaded"}))
    write(raw.gw.policy, denied_echo)
    allowed_echoes = []

    def echo_refused() -> bool:
        refused = is_refused(raw.call("echo", {"text": "x"}))
        allowed_echoes.extend([] if refused else ["echo"])
        return refused

    wait_for(echo_refused, 3, "the new policy to take effect")
    # The counter was not reset by the reload.
    assert raw.call("send_text", {"to": "+1", "body": "y"})["result"]["structuredContent"]["toolgate"]["decision"] == "rate_limited"
    # The client was told the tool list may have changed.
    assert any(n.get("method") == "notifications/tools/list_changed" for n in raw.notifications)
    # An invalid edit is refused; the policy in force stays.
    write(raw.gw.policy, '{"version": "1", "default": "deny", "tools": {"echo": {"action": "alow"}}}')
    wait_for(lambda: "previous policy stays in force" in raw.gw.stderr(), 3, "the invalid edit to be reported")
    assert "action" in raw.gw.stderr()
    assert raw.call("echo", {"text": "x"})["result"]["structuredContent"]["toolgate"]["reason"] == "reloaded"
    # Nothing refused reached the server: only the calls allowed before the reload.
    assert raw.gw.received_tools() == ["send_text", "send_text"] + allowed_echoes


def test_serve_reloads_config_policies_without_dropping_sessions(serve_factory):
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server(policy="probe.json")}},
                       {"policy.json": {"version": "1", "default": "allow"},
                        "probe.json": {"version": "1", "default": "deny", "tools": {"echo": {}}}})
    with gw.http() as http:
        session = initialize(http, gw.url)

        allowed = []

        def echo() -> dict:
            answer = answer_of(post(http, gw.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                   "params": {"name": "probe__echo", "arguments": {"text": "x"}}}, session))
            allowed.extend([] if is_refused(answer) else ["echo"])
            return answer

        assert not is_refused(echo())
        # The server's own policy file changes (the config does not).
        write(gw.dir / "probe.json", {"version": "1", "default": "deny", "tools": {"echo": {"action": "deny", "reason": "now denied"}}})
        wait_for(lambda: is_refused(echo()), 3, "the server policy edit to take effect")
        # An invalid config edit is refused and the old config stays.
        gw.config_path.write_text("servers: [\n", encoding="utf-8")
        wait_for(lambda: "previous config stays in force" in gw.stderr(), 3, "the invalid config to be reported")
        assert echo()["result"]["structuredContent"]["toolgate"]["reason"] == "now denied"
    assert gw.received_tools() == allowed


def test_a_reload_reaches_2026_clients_on_their_subscriptions_listen_streams(serve_factory):
    """A 2026-07-28 client has no GET stream: it hears of list changes on a
    `subscriptions/listen` stream, acknowledged first, each notification tagged
    with the subscription's id, and only the kinds it asked for."""
    import threading

    import httpx2
    from conftest import MODERN, MODERN_META

    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}},
                       {"policy.json": {"version": "1", "default": "allow"}})
    frames: dict[str, list[dict]] = {"tools": [], "prompts": []}

    def listen(kind: str, filter: dict) -> None:
        body = {"jsonrpc": "2.0", "id": f"listen-{kind}", "method": "subscriptions/listen",
                "params": {"_meta": MODERN_META, "notifications": filter}}
        with gw.http() as http, http.stream(
                "POST", gw.url, json=body, headers={"mcp-protocol-version": MODERN, "mcp-method": "subscriptions/listen"},
                timeout=15) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            try:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        frames[kind].append(json.loads(line[5:]))
                        if len(frames[kind]) == 2:
                            return
            except httpx2.HTTPError:
                return  # the gateway stopped at the end of the test

    threads = [threading.Thread(target=listen, args=("tools", {"toolsListChanged": True}), daemon=True),
               threading.Thread(target=listen, args=("prompts", {"promptsListChanged": True}), daemon=True)]
    for t in threads:
        t.start()
    wait_for(lambda: frames["tools"] and frames["prompts"], 5, "both listen streams to be acknowledged")
    for kind, asked in (("tools", "toolsListChanged"), ("prompts", "promptsListChanged")):
        ack = frames[kind][0]
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == f"listen-{kind}"
        assert ack["params"]["notifications"] == {asked: True}
    # A policy edit may change what the grant can list: list_changed goes out.
    write(gw.dir / "policy.json", {"version": "1", "default": "allow", "tools": {"echo": {"action": "hide"}}})
    wait_for(lambda: len(frames["tools"]) == 2, 5, "the tools list change on the tools stream")
    change = frames["tools"][1]
    assert change["method"] == "notifications/tools/list_changed"
    assert change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-tools"
    time.sleep(0.5)
    # The prompts-only stream was not told of a tools change.
    assert frames["prompts"][1:] == []
