"""Regression tests for issue 13's findings against `toolgate serve` and the
admin listener, each named after its finding: raw sockets and real clients
against the built binary (and a real redis-server), the probe server behind
it.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from pathlib import Path

import httpx2
from conftest import MODERN
from servekit import free_port, initialize, post, probe_server
from test_state import Redis

ALICE_TOKEN = "alice-token-0123456789abcdef"
ADMIN_TOKEN = "e2e-admin-token-0123456789"
POLICY = {"version": "1", "default": "deny", "tools": {"probe__echo": {}, "probe__delete_all": {}}}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config(**extra) -> dict:
    return {"policy": "policy.json", "servers": {"probe": probe_server()},
            "grants": {"alice": {"token_sha256": sha(ALICE_TOKEN)}}, **extra}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(addr: str, timeout: float = 10) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class RssWatch:
    """The highest VmRSS of a process while it runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def settle(pid: int, target_kib: int, addr: str, timeout: float = 10) -> int:
    """Waits (up to `timeout`, while small requests keep every serving
    thread busy) for the RSS to come down to `target_kib`; the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        now = rss_kib(pid)
        if now <= target_kib or time.monotonic() > deadline:
            return now
        for _ in range(4):
            with connect(addr) as s:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
                read_head(s)
        time.sleep(0.1)


def test_unauthenticated_body_is_not_read(serve_factory):
    """100 clients announce 16 MB bodies with no token and trickle them: each
    is answered 401 on its head alone, before it sends a byte of body, and the
    gateway's memory does not follow what they announce (it was 1.9 GB)."""
    gw = serve_factory(config(), {"policy.json": POLICY})
    pid = gw.proc.pid
    # Warm up: a real request, so what is measured is the burst.
    with gw.http(ALICE_TOKEN) as http:
        initialize(http, gw.url)
    baseline = rss_kib(pid)
    watch = RssWatch(pid)
    head = (f"POST /mcp HTTP/1.1\r\nHost: {gw.addr}\r\nContent-Type: application/json\r\n"
            "Content-Length: 16000000\r\n\r\n").encode()
    socks = [connect(gw.addr) for _ in range(100)]
    started = time.monotonic()
    for s in socks:
        s.sendall(head)
    answers = [read_head(s) for s in socks]
    answered_in = time.monotonic() - started
    for s in socks:
        # Trickle body bytes: nobody reads them; the connection is closed.
        try:
            for _ in range(8):
                s.sendall(b"x" * 8192)
                time.sleep(0.001)
        except OSError:
            pass
    for s in socks:
        s.close()
    peak = watch.stop()
    after = settle(pid, baseline + 8 * 1024, gw.addr)
    print(f"unauthenticated burst: RSS baseline {baseline} KiB, peak {peak} KiB, after {after} KiB; answered in {answered_in:.2f} s")
    for a in answers:
        assert a.startswith(b"HTTP/1.1 401 "), a[:200]
        assert b"connection: close" in a.lower(), a[:400]
    assert answered_in < 5, answered_in
    assert peak - baseline < 40 * 1024, (baseline, peak)
    assert after - baseline < 8 * 1024, (baseline, after)
    # Still serving.
    with gw.http(ALICE_TOKEN) as http:
        initialize(http, gw.url)


def test_large_bodies_share_one_budget_and_memory_stays_bounded(serve_factory):
    """Eight authenticated clients send 15 MB bodies at once, twice: the
    gateway holds no more than its body budget (and one parse of each
    admitted body) at a time, and a second burst does not grow it further
    (what the allocator keeps after the first is reused, not added to)."""
    gw = serve_factory(config(), {"policy.json": POLICY})
    pid = gw.proc.pid
    with gw.http(ALICE_TOKEN) as http:
        initialize(http, gw.url)
    baseline = rss_kib(pid)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 15_000_000}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: {gw.addr}\r\nAuthorization: Bearer {ALICE_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()

    def burst() -> tuple[int, int, list[int]]:
        statuses: list[int] = []

        def client() -> None:
            with connect(gw.addr, timeout=60) as s:
                s.sendall(head)
                try:
                    s.sendall(body)
                except OSError:
                    pass  # refused (503) before the body was read
                answer = read_head(s)
                statuses.append(int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0)

        watch = RssWatch(pid)
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        peak = watch.stop()
        return peak, settle(pid, baseline + 16 * 1024, gw.addr, timeout=5), statuses

    peak1, after1, statuses1 = burst()
    peak2, after2, statuses2 = burst()
    print(f"authenticated 8 x 15 MB, twice: RSS baseline {baseline} KiB, peaks {peak1}/{peak2} KiB, "
          f"after {after1}/{after2} KiB; statuses {sorted(statuses1 + statuses2)}")
    # Without a session the ping is refused (400) once its body was read whole.
    statuses = statuses1 + statuses2
    assert sorted(set(statuses)) <= [400, 503] and 400 in statuses, statuses
    # The budget (64 MiB) and one parse of each admitted body, not 8 x 15 MB x 2.
    assert max(peak1, peak2) - baseline < 200 * 1024, (baseline, peak1, peak2)
    assert after2 - after1 < 16 * 1024, (after1, after2)


def delete(http: httpx2.Client, url: str, session: str) -> httpx2.Response:
    return http.delete(url, headers={"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})


def list_tools(http: httpx2.Client, url: str, session: str) -> httpx2.Response:
    return post(http, url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)


def check_deleted_everywhere(one, other) -> None:
    with one.http(ALICE_TOKEN) as a, other.http(ALICE_TOKEN) as b:
        session = initialize(a, one.url)
        assert list_tools(b, other.url, session).status_code == 200, "the session moves between processes"
        r = delete(a, one.url, session)
        assert r.status_code == 200, r.text
        r = list_tools(b, other.url, session)
        assert r.status_code == 404 and r.json()["error"]["code"] == -32001, r.text
        assert list_tools(a, one.url, session).status_code == 404
        r = b.get(other.url, headers={"accept": "text/event-stream", "mcp-session-id": session})
        assert r.status_code == 404
        assert delete(b, other.url, session).status_code == 404
        # Other sessions are untouched.
        fresh = initialize(a, one.url)
        assert list_tools(b, other.url, fresh).status_code == 200


def test_deleted_session_is_refused_on_another_process(serve_factory, tmp_path):
    """Two processes sharing the session key and one data directory (the
    embedded store): a session deleted on one is refused (404) on the other."""
    shared = {"TOOLGATE_DATA_DIR": str(tmp_path / "shared-data")}
    one = serve_factory(config(), {"policy.json": POLICY}, env=shared)
    other = serve_factory(config(), {"policy.json": POLICY}, env=shared)
    check_deleted_everywhere(one, other)


def test_deleted_session_is_refused_on_another_process_with_redis(serve_factory, tmp_path):
    """The same with `--state redis://` (separate data directories); with
    Redis down a session request is refused (503), not let through."""
    redis = Redis(tmp_path / "redis").start()
    try:
        one = serve_factory(config(), {"policy.json": POLICY}, extra_args=["--state", redis.url])
        other = serve_factory(config(), {"policy.json": POLICY}, extra_args=["--state", redis.url])
        check_deleted_everywhere(one, other)
        with one.http(ALICE_TOKEN) as a:
            session = initialize(a, one.url)
            redis.stop()
            r = list_tools(a, one.url, session)
            assert r.status_code == 503 and "cannot check whether the session was ended" in r.text, r.text
            r = delete(a, one.url, session)
            assert r.status_code == 503, r.text
    finally:
        redis.stop()


def raw_post(addr: str, headers: list[bytes], body: bytes) -> tuple[int, bytes]:
    with connect(addr) as s:
        head = b"POST /mcp HTTP/1.1\r\nHost: " + addr.encode() + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
        s.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head[9:12]), rest


def test_non_ascii_routing_header_is_a_mismatch(serve_factory):
    """An Mcp-Name (or Mcp-Method) with bytes that are not ASCII is not an
    absent header: a header naming one tool and a body calling another was
    answered 200; it is a header mismatch (400, -32020), nothing forwarded."""
    gw = serve_factory(config(), {"policy.json": POLICY})
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "probe__delete_all", "arguments": {"confirm": True}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"}}}}).encode()
    base = [b"Authorization: Bearer " + ALICE_TOKEN.encode(), b"Content-Type: application/json",
            b"Accept: application/json, text/event-stream", b"MCP-Protocol-Version: " + MODERN.encode()]
    for routing in ([b"Mcp-Method: tools/call", b"Mcp-Name: probe__echo\xe9"],
                    [b"Mcp-Method: tools/call\xff", b"Mcp-Name: probe__delete_all"]):
        status, answer = raw_post(gw.addr, base + routing, body)
        assert status == 400, (status, answer)
        assert json.loads(answer)["error"]["code"] == -32020, answer
    assert gw.received() == []
    # Readable headers that agree still go through.
    status, answer = raw_post(gw.addr, base + [b"Mcp-Method: tools/call", b"Mcp-Name: probe__delete_all"], body)
    assert status == 200, (status, answer)


def test_legacy_sse_keeps_2024_11_05(serve_factory):
    """A client of the HTTP+SSE transport asking for 2024-11-05 (that
    transport's revision) is answered 2024-11-05, not 2025-11-25."""
    gw = serve_factory(config(), {"policy.json": POLICY})
    base = gw.url.removesuffix("/mcp")
    with connect(gw.addr) as stream:
        stream.sendall((f"GET /sse HTTP/1.1\r\nHost: {gw.addr}\r\nAuthorization: Bearer {ALICE_TOKEN}\r\n"
                        "Accept: text/event-stream\r\n\r\n").encode())
        seen = b""

        def wait(pattern: bytes) -> re.Match:
            nonlocal seen
            deadline = time.monotonic() + 10
            while not (m := re.search(pattern, seen)):
                assert time.monotonic() < deadline, seen
                seen += stream.recv(65536)
            return m

        endpoint = wait(rb"data: (/messages\?session_id=[0-9a-f]+)").group(1).decode()
        with httpx2.Client(headers={"Authorization": f"Bearer {ALICE_TOKEN}"}, timeout=10) as http:
            for id, asked in [(1, "2024-11-05"), (2, "2025-06-18")]:
                r = http.post(base + endpoint, json={"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
                    "protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "old", "version": "0"}}})
                assert r.status_code == 202, r.text
                line = wait(rb'data: (\{"jsonrpc":"2\.0","id":' + str(id).encode() + rb',[^\n]*)\n').group(1)
                assert json.loads(line)["result"]["protocolVersion"] == asked, line
    # /mcp still answers the Streamable HTTP revisions only.
    with gw.http(ALICE_TOKEN) as http:
        r = http.post(gw.url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}})
        assert r.json()["result"]["protocolVersion"] == "2025-11-25"


def test_admin_listener_checks_host(serve_factory):
    """The admin listener refuses a Host a DNS-rebinding page would send (and
    a foreign Origin), before its token check and for the dashboard's page
    too, as /mcp does."""
    port = free_port()
    gw = serve_factory(config(admin={"listen": f"127.0.0.1:{port}", "token_sha256": sha(ADMIN_TOKEN)}),
                       {"policy.json": POLICY})
    from conftest import wait_listening
    wait_listening(port, what="the admin listener")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx2.Client(timeout=10) as http:
        assert http.get(f"{url}/approvals", headers=auth).status_code == 200
        assert http.get(f"http://localhost:{port}/approvals", headers=auth).status_code == 200
        for headers in ({"Host": "evil.example"}, {"Host": f"evil.example:{port}"}, {"Host": "localhost.evil.example"},
                        {"Origin": "http://evil.example"}):
            r = http.get(f"{url}/approvals", headers={**auth, **headers})
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (headers, r.text)
            assert http.get(f"{url}/", headers=headers).status_code == 403, headers
        assert http.get(f"{url}/", headers={"Origin": url}).status_code == 200
    assert gw.proc.poll() is None
