"""A real MCP server (Python SDK, Streamable HTTP) that speaks only the
stateless generation, 2026-07-28, and records what reaches it.

It is the probe server's `Server` (the same tools; every `tools/call` that
reaches it is appended to PROBE_LOG, see probe_server.py), with a prompt
`greet(name)`, a resource `modern://note` and a tool `ask(question)` added,
served by the SDK's
Streamable HTTP app, behind a small ASGI wrapper that refuses the 2025
handshake the way a modern-only server does: any POST whose
`MCP-Protocol-Version` header is absent or names a handshake-era version
(`initialize` included) is answered HTTP 400 with the JSON-RPC error -32022
UNSUPPORTED_PROTOCOL_VERSION and `data.supported == ["2026-07-28"]`; a GET
or DELETE (a session's stream, a session's end) gets 405. Everything else
goes to the SDK, which serves 2026-07-28 requests statelessly
(`server/discover`, and each request checked against its `_meta` envelope
and its `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` headers).

Every HTTP request is appended to MODERN_LOG (when set) as one JSON line,
before it is handled: {"http": METHOD, "headers": {...lower-case...},
"body": the JSON body or null}.

`ask` needs the user's answer, the 2026-07-28 way: called without
`inputResponses` it answers `resultType: "input_required"` with one
`elicitation/create` request (key "answer") and a `requestState`; called
again with the answer and that state, it completes with the answer's
action and content. Each time it runs it appends {"tool": "ask",
"arguments": ..., "inputResponses": ..., "requestState": ...} to PROBE_LOG.

MODERN_ERA chooses what it speaks: `modern` (the default, as above),
`both` (nothing is refused: the SDK serves the 2025 handshake and stateless
2026-07-28 requests alike; to 2026-07-28 clients only it also lists
`fresh()` and `wipe()`, which record their calls like any other) or
`handshake` (a 2025-11-25 server: the handshake, its session's GET stream
and DELETE are served; a POST naming a 2026-07-28 version is refused with
HTTP 400, -32022 and `data.supported` the handshake versions).

With MODERN_LISTEN=1 it serves `subscriptions/listen` (so its
`server/discover` says its lists change) and has a tool `grow()` that adds
a tool `grown` to its list and tells the listen streams.

With MODERN_NULL_ID=1 the refusal carries `"id": null` (a server that
refuses before reading the request). With PROBE_JSON_RESPONSE=1 the SDK
answers with JSON bodies instead of SSE streams.

    python modern_server.py PORT
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import mcp_types as types
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
import probe_server
from probe_server import server

UNSUPPORTED_PROTOCOL_VERSION = -32022
NOTE_URI = "modern://note"
NOTE_TEXT = "a note from the modern server"


async def list_prompts(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=[types.Prompt(
        name="greet", description="Greet someone", arguments=[types.PromptArgument(name="name", required=True)])])


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    name = (params.arguments or {}).get("name", "nobody")
    return types.GetPromptResult(messages=[types.PromptMessage(
        role="user", content=types.TextContent(type="text", text=f"hello, {name}"))])


async def list_resources(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=[types.Resource(uri=NOTE_URI, name="note", mime_type="text/plain")])


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    return types.ReadResourceResult(contents=[types.TextResourceContents(
        uri=params.uri, mime_type="text/plain", text=NOTE_TEXT)])


ASK = types.Tool(name="ask", description="Ask the user a question",
                 input_schema={"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]})
probe_server.TOOLS.append(ASK)
probe_server.TOOLS_BY_NAME[ASK.name] = ASK
ASK_STATE = "ask-state-1"


ERA = os.environ.get("MODERN_ERA", "modern")
STATELESS_ONLY = [types.Tool(name=name, description=f"{name}: listed only to 2026-07-28 clients",
                             input_schema={"type": "object"}) for name in ("fresh", "wipe")]


async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    result = await probe_server.list_tools(ctx, params)
    if ERA == "both" and result.next_cursor is None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        result.tools = [*result.tools, *STATELESS_ONLY]
    return result


GROWN = types.Tool(name="grown", description="added by grow()", input_schema={"type": "object"})
if os.environ.get("MODERN_LISTEN") == "1":
    from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
    from mcp.shared.subscriptions import ToolsListChanged

    BUS = InMemorySubscriptionBus()
    GROW = types.Tool(name="grow", description="adds the tool grown", input_schema={"type": "object"})
    probe_server.TOOLS.append(GROW)
    probe_server.TOOLS_BY_NAME[GROW.name] = GROW
    server.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, ListenHandler(BUS))


async def call_tool(ctx: Any, params: types.CallToolRequestParams):
    if params.name == "grow" and os.environ.get("MODERN_LISTEN") == "1":
        probe_server.record_call(params.name, params.arguments)
        if GROWN.name not in probe_server.TOOLS_BY_NAME:
            probe_server.TOOLS.append(GROWN)
            probe_server.TOOLS_BY_NAME[GROWN.name] = GROWN
        await BUS.publish(ToolsListChanged())
        return types.CallToolResult(content=[types.TextContent(type="text", text="grown")])
    if ERA == "both" and params.name in ("fresh", "wipe") and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        probe_server.record_call(params.name, params.arguments)
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"{params.name}: ok")])
    if params.name != "ask":
        return await probe_server.call_tool(ctx, params)
    responses = params.input_responses
    path = os.environ.get("PROBE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({
                "tool": "ask", "arguments": params.arguments,
                "inputResponses": {k: v.model_dump(mode="json", by_alias=True, exclude_none=True)
                                   for k, v in (responses or {}).items()} or None,
                "requestState": params.request_state}) + "\n")
    answer = (responses or {}).get("answer")
    if answer is None or params.request_state != ASK_STATE:
        question = str((params.arguments or {}).get("question", ""))
        return types.InputRequiredResult(
            input_requests={"answer": types.ElicitRequest(params=types.ElicitRequestFormParams(
                message=question,
                requested_schema={"type": "object", "properties": {"reply": {"type": "string"}}}))},
            request_state=ASK_STATE)
    return types.CallToolResult(content=[types.TextContent(
        type="text", text=f"answer: {answer.action} {json.dumps(answer.content, sort_keys=True)}")])


server.add_request_handler("tools/call", types.CallToolRequestParams, call_tool)
server.add_request_handler("tools/list", types.PaginatedRequestParams, list_tools)
server.add_request_handler("prompts/list", types.PaginatedRequestParams, list_prompts)
server.add_request_handler("prompts/get", types.GetPromptRequestParams, get_prompt)
server.add_request_handler("resources/list", types.PaginatedRequestParams, list_resources)
server.add_request_handler("resources/read", types.ReadResourceRequestParams, read_resource)


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get("MODERN_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry, ensure_ascii=False) + "\n")
        log.flush()


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(send, status: int, body: Any | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    head = list(headers or [])
    if body is not None:
        head.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


def modern_only(app):
    """The ASGI wrapper described in the module docstring."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(receive)
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        _log({"http": scope["method"], "headers": headers, "body": decoded})

        version = headers.get("mcp-protocol-version")
        if ERA == "both":
            pass
        elif ERA == "handshake":
            if scope["method"] == "POST" and version in MODERN_PROTOCOL_VERSIONS:
                await _answer(send, 400, {
                    "jsonrpc": "2.0", "id": decoded.get("id") if isinstance(decoded, dict) else None,
                    "error": {"code": UNSUPPORTED_PROTOCOL_VERSION, "message": "Unsupported protocol version",
                              "data": {"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": version}}})
                return
        elif scope["method"] in ("GET", "DELETE") and version not in MODERN_PROTOCOL_VERSIONS:
            await _answer(send, 405, headers=[(b"allow", b"POST")])
            return
        if ERA == "modern" and scope["method"] == "POST" and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS):
            params = decoded.get("params") if isinstance(decoded, dict) else None
            requested = (params or {}).get("protocolVersion") if isinstance(params, dict) else None
            request_id = None
            if isinstance(decoded, dict) and os.environ.get("MODERN_NULL_ID") != "1":
                request_id = decoded.get("id")
            await _answer(send, 400, {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {
                    "code": UNSUPPORTED_PROTOCOL_VERSION,
                    "message": "Unsupported protocol version",
                    "data": {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": requested or version},
                },
            })
            return

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return wrapped


def main(port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(json_response=os.environ.get("PROBE_JSON_RESPONSE") == "1")
    # Open listen streams do not hold a stop up.
    uvicorn.run(modern_only(app), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                timeout_graceful_shutdown=1)


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]))
    except KeyboardInterrupt:
        sys.exit(130)
