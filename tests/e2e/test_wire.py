"""`toolgate run` over raw pipes, no SDK: what the gateway does with bytes a
well-behaved client would never send, with ids, and with processes that die.

Each test asserts on the gateway's answer line by line and on what the probe
server behind it received.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
from conftest import LEGACY, MODERN, MODES, pid_alive, wait_for

ECHO_AND_DELETE = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "slow": {},
        "delete_all": {"action": "deny", "reason": "never"},
        "transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]},
    },
}


def assert_error(answer: dict, code: int, id=None, message_prefix: str | None = None) -> None:
    assert answer.get("jsonrpc") == "2.0", answer
    assert "result" not in answer, answer
    assert answer.get("id", "missing") == id, answer
    assert answer["error"]["code"] == code, answer
    if message_prefix is not None:
        assert answer["error"]["message"].startswith(message_prefix), answer


def assert_echo_works(raw, text: str = "still serving") -> None:
    answer = raw.call("echo", {"text": text})
    assert answer["result"]["content"][0]["text"] == text, answer


@pytest.mark.parametrize("mode", MODES)
def test_malformed_json_gets_parse_error_and_gateway_keeps_serving(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    for junk in (b'{"jsonrpc":"2.0","id":1,"method":\n', b"not json at all\n", b'{"jsonrpc":"2.0","id":2}}\n'):
        raw.send_bytes(junk)
        assert_error(raw.recv(), -32700, id=None)
    assert_echo_works(raw)
    assert raw.gw.received_tools() == ["echo"]


@pytest.mark.parametrize("mode", MODES)
def test_invalid_utf8_gets_parse_error(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    message = json.dumps(raw.call_message("echo", {"text": "XX"}, id=5)).encode()
    raw.send_bytes(message.replace(b"XX", b"\xff\xfe") + b"\n")
    assert_error(raw.recv(), -32700, id=None)
    assert_echo_works(raw)
    assert raw.gw.received() == [{"tool": "echo", "arguments": {"text": "still serving"}}]


@pytest.mark.parametrize("mode", MODES)
def test_message_over_max_message_bytes_is_refused(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, "--max-message-bytes", "4096", mode=mode)
    raw.send(raw.call_message("echo", {"text": "x" * 10_000}, id=6))
    assert_error(raw.recv(), -32600, id=None)
    # A message under the limit still goes through.
    assert_echo_works(raw, "y" * 3000)
    assert raw.gw.received_tools() == ["echo"]
    assert raw.gw.received()[0]["arguments"]["text"] == "y" * 3000


DUPLICATE_KEY_MESSAGES = {
    # The policy would read one name, a lenient server the other.
    "params.name": '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","name":"delete_all",'
    '"arguments":{"confirm":true}%META%}}',
    # The condition would check one amount, the server would move the other.
    "params.arguments.amount": '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"transfer",'
    '"arguments":{"amount":50,"currency":"EUR","to":"eve","amount":5000}%META%}}',
    "method": '{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call","params":{"name":"delete_all",'
    '"arguments":{"confirm":true}%META%}}',
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", sorted(DUPLICATE_KEY_MESSAGES))
def test_duplicate_key_is_refused_and_never_forwarded(raw_gateway, mode, where):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    meta = "" if mode == LEGACY else ',"_meta":' + json.dumps(raw.params()["_meta"])
    raw.send_bytes(DUPLICATE_KEY_MESSAGES[where].replace("%META%", meta).encode() + b"\n")
    answer = raw.recv()
    assert_error(answer, -32600, id=7, message_prefix="Invalid Request: duplicate key")
    assert_echo_works(raw)
    assert raw.gw.received_tools() == ["echo"]


@pytest.mark.parametrize("mode", MODES)
def test_batch_never_forwards_the_denied_call_and_answers_every_request(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    raw.send(
        [
            raw.call_message("delete_all", {"confirm": True}, id=21),
            raw.call_message("echo", {"text": "in a batch"}, id=22),
        ]
    )
    # Batches are gone from MCP since 2025-06-18: the gateway may refuse the whole
    # batch (one error, id null), or answer each request, in one array or several
    # messages. Every request must be answered either way, and the denied call
    # must stay here.
    answers: dict = {}
    while set(answers) != {21, 22}:
        answer = raw.recv(timeout=5)
        if isinstance(answer, dict) and answer.get("id") is None:
            assert_error(answer, -32600, id=None)
            break
        for one in answer if isinstance(answer, list) else [answer]:
            assert one.get("id") in (21, 22) and one["id"] not in answers, answer
            answers[one["id"]] = one
    if answers:
        refused = answers[21]
        assert "error" in refused or refused["result"]["isError"] is True, refused
        echoed = answers[22]
        assert "error" in echoed or echoed["result"]["content"][0]["text"] == "in a batch", echoed
    assert "delete_all" not in raw.gw.received_tools()
    assert_echo_works(raw)
    assert "delete_all" not in raw.gw.received_tools()


LOOK_ALIKES = [
    "\u0435cho",  # Cyrillic small ie
    "Echo",
    "ECHO",
    "echo ",
    " echo",
    "echo\u200b",  # zero-width space
    "\uff45cho",  # fullwidth e
    "echo\n",
]


@pytest.mark.parametrize("mode", MODES)
def test_look_alike_names_are_unknown_under_default_deny(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    for name in LOOK_ALIKES:
        answer = raw.call(name, {"text": "smuggled"})
        assert_error(answer, -32602, id=answer["id"])
        assert answer["error"]["message"] == f"Unknown tool: {name}", answer
    assert raw.gw.received() == []
    assert_echo_works(raw)


ODD_IDS = ["abc", 0, -7, 9007199254740993, "🙂 id", "42", "", 2**62]


@pytest.mark.parametrize("mode", MODES)
def test_request_ids_pass_through_intact(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    sent = {}
    # Pipelined: everything is sent before any answer is read.
    for i, id in enumerate(ODD_IDS):
        kind = ("echo", "deny", "unknown", "list")[i % 4]
        if kind == "echo":
            message = raw.call_message("echo", {"text": f"id {id!r}"}, id=id)
        elif kind == "deny":
            message = raw.call_message("delete_all", {"confirm": True}, id=id)
        elif kind == "unknown":
            message = raw.call_message("extra_001", {}, id=id)
        else:
            message = raw.request_message("tools/list", {}, id=id)
        sent[json.dumps(id)] = kind
        raw.send(message)
    answers = {}
    for _ in ODD_IDS:
        answer = raw.recv()
        key = json.dumps(answer.get("id"))  # keeps 42 and "42" apart, and big integers exact
        assert key in sent and key not in answers, f"unexpected or repeated id in {answer}"
        answers[key] = answer
    for key, kind in sent.items():
        answer = answers[key]
        if kind == "echo":
            assert answer["result"]["content"][0]["text"] == f"id {json.loads(key)!r}"
        elif kind == "deny":
            assert answer["result"]["isError"] is True
        elif kind == "unknown":
            assert answer["error"]["code"] == -32602
        else:
            assert [t["name"] for t in answer["result"]["tools"]] == ["echo", "delete_all", "transfer", "slow"]


@pytest.mark.parametrize("mode", MODES)
def test_upstream_killed_mid_call(raw_gateway, mode):
    raw = raw_gateway(ECHO_AND_DELETE, mode=mode)
    pid = raw.server_pid()
    raw.send(raw.call_message("slow", {"seconds": 30}, id=42))
    wait_for(lambda: raw.gw.received_tools() == ["slow"], what="the slow call to reach the server")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    answer = raw.recv(timeout=5)
    assert time.monotonic() - killed_at < 3, "the in-flight call must be answered at once"
    assert_error(answer, -32603, id=42, message_prefix="upstream server exited")
    status = raw.wait(timeout=5)
    assert status != 0, "a server killed by SIGKILL is not a clean exit"
    records = raw.gw.wait_audit(1)
    assert [(r["tool"], r["decision"], r["outcome"]) for r in records] == [("slow", "allow", "no_response")]


EXIT_AFTER_CALL = r"""
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
            "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
            "serverInfo": {"name": "exit-after-call", "version": "0"}}}), flush=True)
    elif msg.get("method") == "tools/call":
        sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("mode", MODES)
def test_child_exit_status_is_propagated(raw_gateway, mode):
    raw = raw_gateway(
        {"version": "1", "default": "allow", "tools": {}},
        mode=mode,
        server_command=[sys.executable, "-c", EXIT_AFTER_CALL, "7"],
    )
    raw.send(raw.call_message("echo", {"text": "bye"}, id=99))
    assert_error(raw.recv(timeout=5), -32603, id=99, message_prefix="upstream server exited")
    assert raw.wait(timeout=5) == 7


def test_server_that_exits_at_once_gives_its_status(raw_gateway):
    raw = raw_gateway(
        {"version": "1", "default": "allow", "tools": {}},
        server_command=[sys.executable, "-c", "import sys; sys.exit(3)"],
        handshake=False,
    )
    assert raw.wait(timeout=5) == 3


def test_end_of_input_shuts_down_cleanly(raw_gateway):
    raw = raw_gateway(ECHO_AND_DELETE, mode=LEGACY)
    pid = raw.server_pid()
    assert_echo_works(raw)
    raw.close_stdin()
    assert raw.wait(timeout=5) == 0
    wait_for(lambda: not pid_alive(pid), 5, "the server to exit")
    assert raw.recv_line(timeout=1) is None


def test_sigterm_takes_the_server_down_too(raw_gateway):
    raw = raw_gateway(ECHO_AND_DELETE, mode=MODERN)
    assert_echo_works(raw)
    pid = raw.server_pid()
    assert pid_alive(pid)
    raw.proc.send_signal(signal.SIGTERM)
    raw.wait(timeout=5)
    wait_for(lambda: not pid_alive(pid), 5, "the server to be gone after SIGTERM to the gateway")


def test_sigkill_of_the_gateway_takes_the_server_down_too(raw_gateway):
    # SIGKILL cannot be caught or forwarded: the kernel's parent-death signal
    # is what keeps the server from outliving the gateway.
    raw = raw_gateway(ECHO_AND_DELETE, mode=LEGACY)
    assert_echo_works(raw)
    pid = raw.server_pid()
    assert pid_alive(pid)
    raw.proc.send_signal(signal.SIGKILL)
    raw.wait(timeout=5)
    wait_for(lambda: not pid_alive(pid), 5, "the server to be gone after SIGKILL to the gateway")
