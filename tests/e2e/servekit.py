"""`toolgate serve` for the end-to-end tests: a gateway process with its own
config, policies, audit file and probe-server log in its own directory, and
clients for it (the Python SDK over Streamable HTTP, and raw httpx).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import yaml
from conftest import ANSWER_TIMEOUT, EVERYTHING_SERVER, PROBE_SERVER, read_jsonl, wait_for
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

SESSION_KEY = "11" * 32


def probe_server(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(PROBE_SERVER)], **extra}


def everything_server(**extra: Any) -> dict[str, Any]:
    return {"command": "node", "args": [str(EVERYTHING_SERVER), "stdio"], **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeGateway:
    """One `toolgate serve --config` process."""

    def __init__(self, bin: Path, directory: Path, config: dict[str, Any], policies: dict[str, Any],
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None) -> None:
        self.bin = bin
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "gateway.yaml"
        self.audit_path = self.dir / "audit.jsonl"
        self.probe_log = self.dir / "probe-calls.jsonl"
        self.pidfile = self.dir / "probe.pid"
        self.stderr_path = self.dir / "gateway.stderr"
        for name, policy in policies.items():
            (self.dir / name).write_text(json.dumps(policy), encoding="utf-8")
        self.write_config(config)
        self.env = {"PROBE_LOG": str(self.probe_log), "PROBE_PIDFILE": str(self.pidfile),
                    "TOOLGATE_SESSION_KEY": SESSION_KEY, "TOOLGATE_DATA_DIR": str(self.dir / "data"), **(env or {})}
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = ""

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def start(self, listen: str = "127.0.0.1:0") -> "ServeGateway":
        offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--config", str(self.config_path), "--listen", listen,
             "--audit", str(self.audit_path), *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.dir,
            env={**os.environ, **self.env},
        )
        stderr.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.stderr_path.read_bytes()[offset:].decode("utf-8", "replace")
            m = re.search(r"toolgate serve: listening on (\S+) \(MCP endpoint", text)
            if m:
                self.addr = m.group(1)
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"toolgate serve exited with {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"toolgate serve did not start listening within 60 s:\n{self.stderr()}")

    @property
    def url(self) -> str:
        return f"http://{self.addr}/mcp"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"toolgate serve did not stop within 15 s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace") if self.stderr_path.exists() else ""

    def received(self) -> list[dict[str, Any]]:
        return read_jsonl(self.probe_log)

    def received_tools(self) -> list[str]:
        return [c["tool"] for c in self.received()]

    def audit(self) -> list[dict[str, Any]]:
        return read_jsonl(self.audit_path)

    def wait_audit(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.audit()) >= count, timeout, f"{count} audit records")
        return self.audit()

    def probe_pid(self) -> int:
        wait_for(lambda: self.pidfile.exists() and self.pidfile.read_text().strip() != "", what="the probe's pid file")
        return int(self.pidfile.read_text())

    @asynccontextmanager
    async def client(self, mode: str = "legacy", token: str | None = None, **kwargs: Any):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("read_timeout_seconds", ANSWER_TIMEOUT)
        async with httpx2.AsyncClient(headers=headers, timeout=ANSWER_TIMEOUT) as http:
            async with Client(_Http(self.url, http), mode=mode, **kwargs) as client:
                yield client

    def http(self, token: str | None = None) -> httpx2.Client:
        headers = {"Accept": "application/json, text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx2.Client(headers=headers, timeout=ANSWER_TIMEOUT)


class _Http:
    """A Transport: the SDK's Streamable HTTP client with our own httpx client (headers)."""

    def __init__(self, url: str, http: httpx2.AsyncClient) -> None:
        self._cm = streamable_http_client(url, http_client=http)

    async def __aenter__(self):
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc):
        return await self._cm.__aexit__(*exc)


def initialize(http: httpx2.Client, url: str, version: str = "2025-11-25") -> str:
    """A raw handshake; returns the session id."""
    r = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
    assert r.status_code == 200, (r.status_code, r.text)
    session = r.headers["mcp-session-id"]
    r = http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                  headers={"mcp-session-id": session, "mcp-protocol-version": version})
    assert r.status_code == 202, (r.status_code, r.text)
    return session


def post(http: httpx2.Client, url: str, message: Any, session: str | None = None, **headers: str) -> httpx2.Response:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if session:
        h["mcp-session-id"] = session
        h.setdefault("mcp-protocol-version", "2025-11-25")
    body = message if isinstance(message, (bytes, str)) else json.dumps(message)
    return http.post(url, content=body, headers={"content-type": "application/json", **h})


def answer_of(r: httpx2.Response) -> Any:
    """The JSON-RPC answer in a response, whether JSON or an SSE stream (last message)."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        return messages[-1]
    return r.json()
