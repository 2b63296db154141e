"""A real MCP server (Python SDK, stdio) that records what reaches it.

The end-to-end tests run it behind `toolgate run` and assert on two sides:
what the client sees, and what this server actually received. Every
`tools/call` that reaches the server is appended, before it is answered, as
one JSON line `{"tool": NAME, "arguments": {...}}` to the file named by the
environment variable PROBE_LOG (nothing is written when it is unset).
If PROBE_PIDFILE is set, the server writes its process id there at start;
PROBE_ECHO_DESCRIPTION replaces the description of `echo` (a server whose
tool definition changes between runs, for pinning tests);
if PROBE_PIDDIR is set, it also creates an empty file named by its process id
in that directory (to count the instances a gateway started).

It serves both protocol eras over stdio (the SDK's `serve_dual_era_loop`
decides per connection): the 2025-11-25 initialize handshake and the
stateless 2026-07-28 era.

Tools:
    echo(text)                          returns the text
    send_text(to, body)                 pretends to send a text message
    send_message(to, body)              pretends to send a message
    delete_all(confirm: bool)           pretends to delete everything
    transfer(amount, currency, to)      pretends to move money
    get_balance()                       returns a fixed balance
    fail_rpc()                          answers with a JSON-RPC *error* (not an isError result)
    slow(seconds)                       sleeps, then answers
    extra_000 .. extra_059              filler, so that tools/list paginates

tools/list is paginated, PAGE_SIZE tools per page, with an opaque cursor.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

PAGE_SIZE = 25
EXTRA_TOOLS = 60
FAIL_RPC_CODE = -32050
FAIL_RPC_MESSAGE = "probe server: fail_rpc always fails"


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required is not None:
        schema["required"] = required
    return schema


_STR = {"type": "string"}

TOOLS: list[types.Tool] = [
    types.Tool(name="echo", description=os.environ.get("PROBE_ECHO_DESCRIPTION", "Echo the text back"), input_schema=_schema({"text": _STR}, ["text"])),
    types.Tool(
        name="send_text",
        description="Send a text message",
        input_schema=_schema({"to": _STR, "body": _STR}, ["to", "body"]),
    ),
    types.Tool(
        name="send_message",
        description="Send a message to a contact",
        input_schema=_schema({"to": _STR, "body": _STR}, ["to", "body"]),
    ),
    types.Tool(
        name="delete_all",
        description="Delete every record",
        input_schema=_schema({"confirm": {"type": "boolean"}}, ["confirm"]),
    ),
    types.Tool(
        name="transfer",
        description="Transfer money",
        input_schema=_schema(
            {"amount": {"type": "number"}, "currency": _STR, "to": _STR}, ["amount", "currency", "to"]
        ),
    ),
    types.Tool(name="get_balance", description="Read the account balance", input_schema=_schema({})),
    types.Tool(name="fail_rpc", description="Always answers with a JSON-RPC error", input_schema=_schema({})),
    types.Tool(
        name="slow",
        description="Sleep for the given number of seconds, then answer",
        input_schema=_schema({"seconds": {"type": "number"}}, ["seconds"]),
    ),
] + [
    types.Tool(name=f"extra_{i:03d}", description=f"Filler tool {i}", input_schema=_schema({}))
    for i in range(EXTRA_TOOLS)
]
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}


def record_call(name: str, arguments: dict[str, Any] | None) -> None:
    """Append the call to PROBE_LOG, flushed before the call is answered."""
    path = os.environ.get("PROBE_LOG")
    if not path:
        return
    line = json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")
        log.flush()


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    cursor = params.cursor if params is not None else None
    start = 0
    if cursor is not None:
        if not cursor.startswith("probe-page:") or not cursor[len("probe-page:") :].isdigit():
            raise MCPError(code=types.INVALID_PARAMS, message=f"invalid cursor {cursor!r}")
        start = int(cursor[len("probe-page:") :])
    end = start + PAGE_SIZE
    next_cursor = f"probe-page:{end}" if end < len(TOOLS) else None
    return types.ListToolsResult(tools=TOOLS[start:end], next_cursor=next_cursor)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    name = params.name
    args = params.arguments or {}
    record_call(name, params.arguments)
    if name not in TOOLS_BY_NAME:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")
    if name == "echo":
        return _text(str(args.get("text", "")))
    if name in ("send_text", "send_message"):
        return _text(f"{name}: sent to {args.get('to')}: {args.get('body')}")
    if name == "delete_all":
        return _text("deleted everything" if args.get("confirm") else "nothing deleted (confirm was not true)")
    if name == "transfer":
        result = _text(f"transferred {args.get('amount')} {args.get('currency')} to {args.get('to')}")
        result.structured_content = {"amount": args.get("amount"), "currency": args.get("currency")}
        return result
    if name == "get_balance":
        result = _text("balance: 1234.50 EUR")
        result.structured_content = {"balance": 1234.5, "currency": "EUR"}
        return result
    if name == "fail_rpc":
        raise MCPError(code=FAIL_RPC_CODE, message=FAIL_RPC_MESSAGE, data={"tool": "fail_rpc"})
    if name == "slow":
        seconds = float(args.get("seconds", 1))
        await anyio.sleep(seconds)
        return _text(f"slept {seconds} seconds")
    return _text(f"{name}: ok")


server = Server("toolgate-probe", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    pidfile = os.environ.get("PROBE_PIDFILE")
    if pidfile:
        with open(pidfile, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    piddir = os.environ.get("PROBE_PIDDIR")
    if piddir:
        open(os.path.join(piddir, str(os.getpid())), "w").close()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(port: int) -> None:
    """The same server over Streamable HTTP on 127.0.0.1:PORT/mcp. The headers of
    every request are appended to PROBE_HEADERS (JSON lines), so a test can check
    what a gateway in front sent. With PROBE_TLS_CERT and PROBE_TLS_KEY (PEM
    files) it serves https instead; with PROBE_JSON_RESPONSE=1 it answers with
    JSON bodies rather than SSE streams."""
    import uvicorn

    # PROBE_JSON_RESPONSE=1: answers as plain JSON bodies instead of SSE streams.
    app = server.streamable_http_app(json_response=os.environ.get("PROBE_JSON_RESPONSE") == "1")
    headers_log = os.environ.get("PROBE_HEADERS")

    async def record_headers(scope, receive, send):
        if scope["type"] == "http" and headers_log:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            with open(headers_log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"method": scope["method"], "headers": headers}) + "\n")
        await app(scope, receive, send)

    tls = {}
    if os.environ.get("PROBE_TLS_CERT"):
        tls = {"ssl_certfile": os.environ["PROBE_TLS_CERT"], "ssl_keyfile": os.environ["PROBE_TLS_KEY"]}
    uvicorn.run(record_headers, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **tls)


if __name__ == "__main__":
    try:
        if len(sys.argv) == 3 and sys.argv[1] == "--http":
            serve_http(int(sys.argv[2]))
        else:
            anyio.run(main)
    except KeyboardInterrupt:
        sys.exit(130)
