"""A JSON-RPC 2.0 stdio server that accepts batches, as the 2025-03-26
revision of MCP allowed: an array is a batch, and every request in it is run
(an inner array too, as a lenient server would). It has the probe server's
`echo` and `delete_all` tools, and logs every tools/call it runs to
$PROBE_LOG, like the probe server, so tests can assert on what it ran.
With BATCH_SERVER_LIST_NAN set, its tools/list answer holds a NaN.

Written without an SDK on purpose: no SDK accepts batches any more, and a
gateway must be safe in front of a server that does.
"""

from __future__ import annotations

import json
import os
import sys

TOOLS = [
    {"name": "echo", "description": "Echo the text back", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "delete_all", "description": "Delete everything", "inputSchema": {"type": "object"}},
]


def log_call(name, arguments) -> None:
    path = os.environ.get("PROBE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": name, "arguments": arguments}) + "\n")


def handle(message):
    """The answer to one message (None for a notification); arrays are run as batches."""
    if isinstance(message, list):
        answers = [a for a in (handle(m) for m in message) if a is not None]
        return answers or None
    if not isinstance(message, dict) or "method" not in message:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
    if "id" not in message:
        return None
    method, params, id = message["method"], message.get("params") or {}, message["id"]
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "batch-server", "version": "0"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
        if os.environ.get("BATCH_SERVER_LIST_NAN"):
            # Not JSON (Python's json writes and reads NaN): a lenient client
            # would read it, hidden tools and all.
            result["score"] = float("nan")
    elif method == "tools/call":
        name, arguments = params.get("name"), params.get("arguments") or {}
        log_call(name, arguments)
        text = arguments.get("text", "") if name == "echo" else "deleted everything"
        result = {"content": [{"type": "text", "text": text}]}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}
    return {"jsonrpc": "2.0", "id": id, "result": result}


def main() -> None:
    for line in sys.stdin.buffer:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            answer = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        else:
            answer = handle(message)
        if answer is not None:
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
