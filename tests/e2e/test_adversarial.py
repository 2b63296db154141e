"""Adversarial input to `toolgate run`, each test named after a way past the
policy that was found (issue 13) and must stay closed: a message that reads
two ways, a batch in a batch, request ids with two spellings, objects with
very many keys, a null id.

Each test asserts on what the client got, line by line, and on what the
server behind the gateway received: the probe server (Python SDK) and the
batch server log every tools/call they run; tests/servers/tee_stdin.py
records every byte a server was sent, for server-everything (TypeScript SDK)
as for the others.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import EVERYTHING_SERVER, MODES, PROBE_SERVER, REPO

BATCH_SERVER = REPO / "tests" / "servers" / "batch_server.py"
TEE = REPO / "tests" / "servers" / "tee_stdin.py"

HIDDEN = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "slow": {},
        "delete_all": {"action": "hide"},
        "get-env": {"action": "hide"},
    },
}

# The hidden call each carrier tries to smuggle past the gateway.
def inner_call(tool: str) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": tool, "arguments": {}}})


# Four carriers: the hidden call between bare CRs (JSON whitespace to the
# gateway, line breaks to Python's universal-newline reader).
CARRIERS = {
    "object_without_method": '{"x":\r%s\r}',
    "arguments_of_an_allowed_call": '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"carried","x":\r%s\r}}}',
    "notification": '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,"x":\r%s\r}}',
    "ping": '{"jsonrpc":"2.0","id":6,"method":"ping","params":{"x":\r%s\r}}',
}

SERVERS = {
    "python_sdk": ([sys.executable, str(PROBE_SERVER)], "delete_all"),
    "typescript_sdk": (["node", str(EVERYTHING_SERVER), "stdio"], "get-env"),
}


def tee(raw_log: Path, command: list[str]) -> list[str]:
    return [sys.executable, str(TEE), str(raw_log), "--", *command]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("carrier", CARRIERS)
def test_bare_cr_does_not_smuggle_a_hidden_call(raw_gateway, tmp_path, carrier, server):
    command, hidden = SERVERS[server]
    sent_log = tmp_path / "server-stdin.bin"
    raw = raw_gateway(HIDDEN, server_command=tee(sent_log, command))
    raw.send_bytes((CARRIERS[carrier] % inner_call(hidden)).encode() + b"\n")
    if carrier == "object_without_method":
        # Neither a request, a notification nor a response: answered here.
        answer = raw.recv()
        assert answer["error"]["code"] == -32600 and answer["id"] is None, answer
    elif carrier == "arguments_of_an_allowed_call":
        answer = raw.recv()
        assert answer["id"] == 5, answer
        assert "error" not in answer, answer
    elif carrier == "ping":
        answer = raw.recv()
        assert answer["id"] == 6 and answer.get("result") == {}, answer
    # A message of the gateway's own after it: everything before it was read.
    answer = raw.call("echo", {"text": "after"})
    assert "error" not in answer, answer
    sent = sent_log.read_bytes()
    assert b"\r" not in sent, sent
    # The server was sent whole messages, one per line, none of them the hidden call.
    for line in sent.decode("utf-8").splitlines():
        message = json.loads(line)
        assert not (message.get("method") == "tools/call" and message["params"]["name"] == hidden), line
        assert message.get("id") != 99, line
    if server == "python_sdk":
        assert hidden not in raw.gw.received_tools()
        assert raw.gw.received_tools() == (["echo", "echo"] if carrier == "arguments_of_an_allowed_call" else ["echo"])


def test_line_separators_in_strings_reach_the_server_escaped(raw_gateway, tmp_path):
    sent_log = tmp_path / "server-stdin.bin"
    raw = raw_gateway(HIDDEN, server_command=tee(sent_log, [sys.executable, str(PROBE_SERVER)]))
    text = "a\u2028b\u2029c\u0085d\u00e9"
    answer = raw.call("echo", {"text": text})
    assert answer["result"]["content"][0]["text"] == text, answer
    sent = sent_log.read_bytes()
    for separator in ("\u2028", "\u2029", "\u0085"):
        assert separator.encode() not in sent
    calls = [json.loads(line) for line in sent.split(b"\n") if b"tools/call" in line]
    assert [c["params"]["arguments"] for c in calls] == [{"text": text}]


BATCH_POLICY = {"version": "1", "default": "deny", "tools": {"echo": {}, "delete_all": {"action": "hide"}}}


def test_batch_in_a_batch_is_refused_not_forwarded(raw_gateway):
    raw = raw_gateway(BATCH_POLICY, server_command=[sys.executable, str(BATCH_SERVER)])
    raw.send_bytes(b"[[" + inner_call("delete_all").encode() + b"]]\n")
    answer = raw.recv()
    assert answer["error"]["code"] == -32600 and answer["id"] is None, answer
    raw.send_bytes(b"[[[" + inner_call("delete_all").encode() + b"]], " + inner_call("delete_all").encode() + b"]\n")
    answers = [raw.recv(), raw.recv()]
    codes = sorted(a["error"]["code"] for a in answers)
    # The inner array is invalid; the hidden tool is answered as unknown.
    assert codes == [-32602, -32600], answers
    assert raw.call("echo", {"text": "x"})["result"]["content"][0]["text"] == "x"
    assert "delete_all" not in raw.gw.received_tools()
    assert raw.gw.received_tools() == ["echo"]


def test_batch_of_non_messages_is_answered_invalid_request_each(raw_gateway, tmp_path):
    sent_log = tmp_path / "server-stdin.bin"
    raw = raw_gateway(BATCH_POLICY, server_command=tee(sent_log, [sys.executable, str(BATCH_SERVER)]))
    raw.call("echo", {"text": "first"})
    before = sent_log.read_bytes()
    raw.send_bytes(b'[1,2,"x"]\n')
    for _ in range(3):
        answer = raw.recv()
        assert answer["error"]["code"] == -32600 and answer["id"] is None, answer
    for single in (b"5", b'"tools/call"', b"null", b"true"):
        raw.send_bytes(single + b"\n")
        answer = raw.recv()
        assert answer["error"]["code"] == -32600, answer
    raw.call("echo", {"text": "x"})
    sent = sent_log.read_bytes()[len(before):]
    # Nothing of the batch or the bare values reached the server: only the echo call.
    assert [json.loads(line)["method"] for line in sent.splitlines()] == ["tools/call"]


def test_minus_zero_id_tools_list_is_filtered(raw_gateway):
    raw = raw_gateway(HIDDEN)
    raw.send_bytes(b'{"jsonrpc":"2.0","id":-0,"method":"tools/list","params":{}}\n')
    line = raw.recv_line()
    assert line.startswith(b'{"jsonrpc":"2.0","id":-0,'), line
    names = [t["name"] for t in json.loads(line)["result"]["tools"]]
    assert "echo" in names and "delete_all" not in names, names


def test_minus_zero_id_call_is_audited_at_once_and_not_left_in_flight(raw_gateway):
    raw = raw_gateway(HIDDEN)
    message = b'{"jsonrpc":"2.0","id":-0,"method":"tools/call","params":{"name":"echo","arguments":{"text":"z"}}}\n'
    raw.send_bytes(message)
    line = raw.recv_line()
    assert line.startswith(b'{"jsonrpc":"2.0","id":-0,') and b'"result"' in line, line
    records = raw.gw.wait_audit(1)
    assert [(r["tool"], r["decision"], r["outcome"]) for r in records] == [("echo", "allow", "ok")]
    raw.send_bytes(message)
    line = raw.recv_line()
    assert b'"result"' in line and b"in flight" not in line, line
    assert raw.gw.received_tools() == ["echo", "echo"]


@pytest.mark.parametrize(
    "spelling",
    ["1e2", "100.0", "123456789012345678901", "-7.50", '"\\u0061"', "12345678901234567890123456789"],
)
def test_ids_are_echoed_as_the_client_spelled_them(raw_gateway, spelling):
    raw = raw_gateway(HIDDEN)
    prefix = b'{"jsonrpc":"2.0","id":' + spelling.encode() + b","
    # Answered by the server (an allowed call), and by the gateway (a hidden tool, a denied one).
    for tool in ("echo", "delete_all", "not_in_policy"):
        raw.send_bytes(prefix + b'"method":"tools/call","params":{"name":"' + tool.encode() + b'","arguments":{"text":"s"}}}\n')
        line = raw.recv_line()
        assert line.startswith(prefix), (tool, line)
    raw.send_bytes(prefix + b'"method":"tools/list","params":{}}\n')
    line = raw.recv_line()
    assert line.startswith(prefix), line
    assert "delete_all" not in [t["name"] for t in json.loads(line)["result"]["tools"]]
    assert raw.gw.received_tools() == ["echo"]


def test_two_spellings_of_one_id_in_flight_never_meet_at_the_server(raw_gateway, tmp_path):
    sent_log = tmp_path / "server-stdin.bin"
    raw = raw_gateway(HIDDEN, server_command=tee(sent_log, [sys.executable, str(PROBE_SERVER)]))
    raw.send_bytes(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"seconds":1.5}}}\n')
    # A server may read 1.0 as 1: it is sent under an id of the gateway's own,
    # and answered under the client's.
    raw.send_bytes(b'{"jsonrpc":"2.0","id":1.0,"method":"tools/list","params":{}}\n')
    line = raw.recv_line()
    assert line.startswith(b'{"jsonrpc":"2.0","id":1.0,'), line
    assert "delete_all" not in [t["name"] for t in json.loads(line)["result"]["tools"]]
    # The same id again while it is in flight is refused.
    raw.send_bytes(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
    line = raw.recv_line()
    assert line.startswith(b'{"jsonrpc":"2.0","id":1,') and b"already in flight" in line, line
    line = raw.recv_line(timeout=10)
    assert line.startswith(b'{"jsonrpc":"2.0","id":1,') and b"slept" in line, line
    ids = [json.loads(l).get("id") for l in sent_log.read_bytes().splitlines()]
    assert 1.0 not in [i for i in ids if isinstance(i, float)] and ids.count(1) == 1, ids


def test_a_ping_with_the_id_of_a_tools_list_in_flight_cannot_unfilter_it(raw_gateway):
    raw = raw_gateway(HIDDEN)
    raw.send_bytes(
        b'{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}\n'
        b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{}}\n'
    )
    answers = [json.loads(raw.recv_line()), json.loads(raw.recv_line())]
    lists = [a for a in answers if "tools" in a.get("result", {})]
    assert len(lists) == 1, answers
    assert "delete_all" not in [t["name"] for t in lists[0]["result"]["tools"]]
    refused = [a for a in answers if "error" in a]
    assert len(refused) == 1 and "already in flight" in refused[0]["error"]["message"], answers


@pytest.mark.parametrize("mode", MODES)
def test_null_id_tools_call_is_answered_invalid_request(raw_gateway, mode):
    raw = raw_gateway(HIDDEN, mode=mode)
    raw.send_bytes(b'{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo","arguments":{"text":"n"}}}\n')
    answer = raw.recv()
    assert answer["error"]["code"] == -32600 and answer["id"] is None, answer
    assert raw.gw.received_tools() == []


def test_arguments_with_200000_distinct_keys_do_not_hold_the_gateway(raw_gateway):
    raw = raw_gateway(HIDDEN)
    arguments = {f"k{i}": i for i in range(200_000)}
    arguments["text"] = "many keys"
    raw.send(raw.call_message("echo", arguments, id=77))
    # Quadratic, this took over a minute of a core; linear, well under a second in release.
    answer = raw.recv(timeout=60)
    assert answer["id"] == 77 and answer["result"]["content"][0]["text"] == "many keys", str(answer)[:300]
    dup = json.dumps(raw.call_message("echo", {"text": "d"}, id=78))[:-2] + ', "k": 1, "k": 2}}'
    raw.send_bytes(dup.encode() + b"\n")
    answer = raw.recv()
    assert answer["id"] == 78 and answer["error"]["code"] == -32600, answer


def test_a_tools_list_answer_the_gateway_cannot_read_is_not_passed_on_unfiltered(raw_gateway, monkeypatch):
    monkeypatch.setenv("BATCH_SERVER_LIST_NAN", "1")
    raw = raw_gateway(BATCH_POLICY, server_command=[sys.executable, str(BATCH_SERVER)])
    raw.send_bytes(b'{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}\n')
    line = raw.recv_line()
    assert b"delete_all" not in line, line
    answer = json.loads(line)
    assert answer["id"] == 4 and answer["error"]["code"] == -32603, answer
    assert raw.call("echo", {"text": "x"})["result"]["content"][0]["text"] == "x"
