"""`toolgate serve`'s HTTP/1.1 server, byte by byte: what clients other than
the SDKs send (chunked bodies, `Expect: 100-continue`, pipelined requests,
HTTP/1.0), and framing that could be read two ways, which is refused before
anything reaches the server. Raw sockets against the built binary, with the
probe server (Python SDK) behind it.
"""

from __future__ import annotations

import json
import socket
import time

from servekit import ServeGateway, initialize, probe_server

POLICY = {"version": "1", "default": "deny", "tools": {"probe__echo": {}}}


def start(serve_factory) -> ServeGateway:
    return serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()}}, {"policy.json": POLICY})


def call(id: int, tool: str, text: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": tool, "arguments": {"text": text}}}).encode()


class Conn:
    """One raw connection to the gateway, and a reader of its responses."""

    def __init__(self, gw: ServeGateway) -> None:
        host, port = gw.addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        self.addr = gw.addr

    def head(self, method: str, session: str | None, extra: str = "", version: str = "1.1") -> bytes:
        lines = [f"{method} /mcp HTTP/{version}", f"Host: {self.addr}",
                 "Accept: application/json, text/event-stream", "Content-Type: application/json"]
        if session:
            lines += [f"Mcp-Session-Id: {session}", "MCP-Protocol-Version: 2025-11-25"]
        return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-line: {self.buf!r}"
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            assert self._fill(), f"connection closed mid-body: {self.buf!r}"
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed before a response: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        if status < 200:
            body = b""
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._take_line().split(b";")[0], 16)
                if size == 0:
                    self._take_line()
                    break
                body += self._take(size)
                assert self._take(2) == b"\r\n"
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return status, headers, body

    def closed(self) -> bool:
        """Whether the gateway closed the connection (after what it sent)."""
        try:
            return not self._fill()
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def new_session(gw: ServeGateway) -> str:
    with gw.http() as http:
        return initialize(http, gw.url)


def test_a_chunked_body_with_expect_100_continue_is_answered(serve_factory):
    gw = start(serve_factory)
    session = new_session(gw)
    c = Conn(gw)
    body = call(1, "probe__echo", "chunked")
    c.send(c.head("POST", session, "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"))
    status, _, _ = c.response()
    assert status == 100
    half = len(body) // 2
    for piece in (body[:half], body[half:]):
        c.send(f"{len(piece):x};note=x\r\n".encode() + piece + b"\r\n")
    c.send(b"0\r\nX-Trailer: ignored\r\n\r\n")
    status, headers, answer = c.response()
    assert status == 200, answer
    assert json.loads(answer)["result"]["content"][0]["text"] == "chunked"
    # The connection stays open for the next request.
    body = call(2, "probe__echo", "again")
    c.send(c.head("POST", session, f"Content-Length: {len(body)}\r\n") + body)
    status, _, answer = c.response()
    assert status == 200 and json.loads(answer)["id"] == 2
    c.close()
    assert gw.received() == [{"tool": "echo", "arguments": {"text": "chunked"}},
                             {"tool": "echo", "arguments": {"text": "again"}}]


def test_pipelined_requests_are_answered_in_order(serve_factory):
    gw = start(serve_factory)
    session = new_session(gw)
    c = Conn(gw)
    bodies = [call(i, "probe__echo", f"p{i}") for i in range(1, 4)]
    c.send(b"".join(c.head("POST", session, f"Content-Length: {len(b)}\r\n") + b for b in bodies))
    ids = []
    for _ in bodies:
        status, _, answer = c.response()
        assert status == 200, answer
        ids.append(json.loads(answer)["id"])
    assert ids == [1, 2, 3]
    c.close()
    assert gw.received_tools() == ["echo"] * 3


def test_framing_that_reads_two_ways_is_refused_and_nothing_reaches_the_server(serve_factory):
    gw = start(serve_factory)
    session = new_session(gw)
    smuggled = call(9, "probe__echo", "smuggled")
    for framing in [
        # Content-Length and Transfer-Encoding: the classic request smuggling.
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        # Two lengths that disagree.
        "Content-Length: 4\r\nContent-Length: 5\r\n",
        "Content-Length: 4, 5\r\n",
        # A coding the gateway does not read.
        "Transfer-Encoding: gzip, chunked\r\n",
        "Content-Length: -1\r\n",
    ]:
        c = Conn(gw)
        c_head = c.head("POST", session, framing)
        inner = c.head("POST", session, f"Content-Length: {len(smuggled)}\r\n") + smuggled
        c.send(c_head + b"0\r\n\r\n" + inner)
        status, headers, text = c.response()
        assert status == 400, (framing, status, text)
        assert headers.get("connection") == "close"
        assert c.closed(), framing
        c.close()
    time.sleep(0.3)
    assert gw.received() == []


def test_malformed_and_oversized_heads_are_refused(serve_factory):
    gw = start(serve_factory)
    c = Conn(gw)
    c.send(b"POST /mcp HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert c.response()[0] == 400
    c.close()
    c = Conn(gw)
    c.send(b"POST /mcp HTTP/1.1\r\n" + b"X-Filler: " + b"a" * (70 * 1024) + b"\r\n\r\n")
    assert c.response()[0] == 431
    c.close()
    c = Conn(gw)
    c.send(b"POST /mcp HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\n{}")
    assert c.response()[0] == 417
    c.close()


def test_an_http_1_0_client_is_answered_and_the_connection_closed(serve_factory):
    gw = start(serve_factory)
    session = new_session(gw)
    c = Conn(gw)
    body = call(1, "probe__echo", "old")
    c.send(c.head("POST", session, f"Content-Length: {len(body)}\r\n", version="1.0") + body)
    status, headers, answer = c.response()
    assert status == 200 and json.loads(answer)["result"]["content"][0]["text"] == "old"
    assert headers.get("connection") == "close"
    assert c.closed()
    c.close()


def test_a_body_over_the_limit_gets_413_and_the_connection_is_closed(serve_factory):
    gw = serve_factory({"policy": "policy.json", "servers": {"probe": probe_server()},
                "http": {"max_message_bytes": 1024}}, {"policy.json": POLICY})
    session = new_session(gw)
    for framing, body in [
        ("Content-Length: 5000\r\n", b" " * 5000),
        ("Transfer-Encoding: chunked\r\n", b"".join(b"200\r\n" + b" " * 512 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"),
    ]:
        c = Conn(gw)
        c.send(c.head("POST", session, framing) + body)
        status, headers, answer = c.response()
        assert status == 413, (framing, answer)
        assert json.loads(answer)["error"]["code"] == -32600
        assert headers.get("connection") == "close"
        assert c.closed()
        c.close()
