"""Numbers a client writes to slip past a numeric condition (issue 13, item 4).

Conditions once compared arguments as f64s, so `lte 100` admitted
`100.00000000000001` (which reads as the f64 100.0) and
`lte 9007199254740992` admitted `9007199254740993`. Each test sends the
number as raw bytes (a JSON library would rewrite it) and asserts on the
gateway's answer and on what the probe server received: a refused call never
reaches it.
"""

from __future__ import annotations

import json

import pytest
from conftest import LEGACY, MODES
from servekit import initialize, post, probe_server

LIMITS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]},
        "slow": {"conditions": [{"path": "args.seconds", "op": "lte", "value": 9007199254740992}]},
    },
}

# (tool, the argument's name, the number as the client writes it, admitted?)
NUMBERS = [
    ("transfer", "amount", "100.00000000000001", False),
    ("transfer", "amount", "100." + "0" * 10_000 + "1", False),
    ("transfer", "amount", "1e400", False),  # out of range: refused before the policy
    ("transfer", "amount", "100", True),
    ("transfer", "amount", "100.0", True),
    ("transfer", "amount", "1e2", True),
    ("transfer", "amount", "99.5", True),
    ("transfer", "amount", "-0", True),
    ("transfer", "amount", "1e-400", True),
    ("slow", "seconds", "9007199254740993", False),
]


def call_bytes(raw, tool: str, name: str, number: str, id: int) -> bytes:
    """A tools/call whose argument is `number` exactly as written."""
    meta = "" if raw.mode == LEGACY else ',"_meta":' + json.dumps(raw.params()["_meta"])
    extra = ',"currency":"EUR","to":"eve"' if tool == "transfer" else ""
    return (
        f'{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}",'
        f'"arguments":{{"{name}":{number}{extra}}}{meta}}}}}\n'
    ).encode()


def refused(answer: dict) -> bool:
    return "error" in answer or answer.get("result", {}).get("isError") is True


@pytest.mark.parametrize("mode", MODES)
def test_inexact_number_does_not_pass_lte(raw_gateway, mode):
    raw = raw_gateway(LIMITS, mode=mode)
    raw.send_bytes(call_bytes(raw, "transfer", "amount", "100.00000000000001", 1))
    answer = raw.recv()
    assert answer["id"] == 1 and refused(answer), answer
    assert "args.amount lte 100" in json.dumps(answer), answer
    raw.send_bytes(call_bytes(raw, "slow", "seconds", "9007199254740993", 2))
    answer = raw.recv()
    assert answer["id"] == 2 and refused(answer), answer
    assert raw.gw.received_tools() == []


@pytest.mark.parametrize("mode", MODES)
def test_numbers_are_decided_by_their_exact_value(raw_gateway, mode):
    raw = raw_gateway(LIMITS, mode=mode)
    admitted = []
    for id, (tool, name, number, allow) in enumerate(NUMBERS, start=10):
        raw.send_bytes(call_bytes(raw, tool, name, number, id))
        answer = raw.recv()
        # A message serde_json cannot read at all (1e400) is answered without its id.
        assert answer.get("id") in (id, None), answer
        assert refused(answer) != allow, (number[:40], answer)
        if allow:
            admitted.append(tool)
    assert raw.gw.received_tools() == admitted
    # The probe server got the numbers the gateway admitted, and no other.
    amounts = [call["arguments"]["amount"] for call in raw.gw.received()]
    assert amounts == [100, 100.0, 100.0, 99.5, 0, 0.0], amounts


def test_inexact_number_does_not_pass_lte_in_serve(serve_factory):
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {
            "probe__echo": {},
            "probe__transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]},
            "probe__slow": {"conditions": [{"path": "args.seconds", "op": "lte", "value": 9007199254740992}]},
        },
    }
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": policy})
    with gw.http() as http:
        session = initialize(http, gw.url)
        for id, (tool, name, number) in enumerate(
            [("probe__transfer", "amount", "100.00000000000001"), ("probe__slow", "seconds", "9007199254740993")], start=1
        ):
            body = (
                f'{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}",'
                f'"arguments":{{"{name}":{number},"currency":"EUR","to":"eve"}}}}}}'
            )
            r = post(http, gw.url, body.encode(), session)
            answer = r.json()
            assert answer["id"] == id and refused(answer), answer
        # Spellings of numbers at or under the bound pass, compared by the
        # arguments' text as the client sent it.
        for id, number in enumerate(["100.0", "1e2", "99.99999999999999999", "100.000"], start=10):
            body = (
                f'{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"probe__transfer",'
                f'"arguments":{{"amount":{number},"currency":"EUR","to":"eve"}}}}}}'
            )
            answer = post(http, gw.url, body.encode(), session).json()
            assert answer["id"] == id and not refused(answer), (number, answer)
        answer = post(http, gw.url, call_echo(), session).json()
        assert answer["result"]["content"][0]["text"] == "still serving", answer
    assert gw.received_tools() == ["transfer"] * 4 + ["echo"]


def call_echo() -> bytes:
    return b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"probe__echo","arguments":{"text":"still serving"}}}'
