"""Fixtures for the end-to-end suite: the real `toolgate` binary between real
MCP clients (the Python SDK, or raw pipes) and real MCP servers (the probe
server in tests/servers, and @modelcontextprotocol/server-everything).

Every test gets its own directory (tmp_path) holding its policy, the audit
file and the probe server's call log, so a test can assert on three things:
what the client saw, what the server received, and what the gateway audited.

The binary comes from the environment variable TOOLGATE_BIN (scripts/test.sh
sets it to target/debug/toolgate).
"""

from __future__ import annotations

import hashlib
import json
import socket
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

REPO = Path(__file__).resolve().parents[2]
PROBE_SERVER = REPO / "tests" / "servers" / "probe_server.py"
EVERYTHING_SERVER = REPO / "tests" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"

# The two protocol generations the SDK speaks; tests parametrized over MODES run in both.
LEGACY = "legacy"
MODERN = "2026-07-28"
MODES = [LEGACY, MODERN]
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "toolgate-e2e", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}

# How long a test waits for one answer before calling the gateway stuck.
ANSWER_TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def toolgate_bin() -> Path:
    value = os.environ.get("TOOLGATE_BIN")
    if not value:
        pytest.fail(
            "TOOLGATE_BIN is not set: build the gateway (cargo build -p toolgate) and run "
            "TOOLGATE_BIN=target/debug/toolgate .venv/bin/python -m pytest tests/e2e, or use scripts/test.sh",
            pytrace=False,
        )
    path = Path(value)
    if not path.is_absolute():
        path = REPO / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"TOOLGATE_BIN={value}: no executable there (build it with cargo build -p toolgate)", pytrace=False)
    return path


def canonical_sha256(arguments: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no white space) of the arguments, as the audit records it."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wait_for(predicate, timeout: float = ANSWER_TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_listening(port: int, timeout: float = ANSWER_TIMEOUT, what: str = "the server to listen") -> None:
    """Waits until something accepts connections on 127.0.0.1:`port`."""

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout, what)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    for line in status.splitlines():
        if line.startswith("State:"):
            return "Z" not in line.split()[1]
    return True


@dataclass
class Gateway:
    """One `toolgate run` set-up: its policy, audit file and upstream server, in its own directory."""

    bin: Path
    dir: Path
    policy: Path
    extra_args: list[str] = field(default_factory=list)
    server: str = "probe"
    audit_path: Path = field(init=False)
    probe_log: Path = field(init=False)
    pidfile: Path = field(init=False)
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.audit_path = self.dir / "audit.jsonl"
        self.probe_log = self.dir / "probe-calls.jsonl"
        self.pidfile = self.dir / "probe.pid"
        self.stderr_path = self.dir / "gateway.stderr"

    def server_command(self) -> list[str]:
        if self.server == "probe":
            return [sys.executable, str(PROBE_SERVER)]
        if self.server == "everything":
            return ["node", str(EVERYTHING_SERVER), "stdio"]
        raise ValueError(self.server)

    def argv(self, server_command: list[str] | None = None) -> list[str]:
        return [
            str(self.bin),
            "run",
            "--policy",
            str(self.policy),
            "--audit",
            str(self.audit_path),
            *self.extra_args,
            "--",
            *(server_command or self.server_command()),
        ]

    def env(self) -> dict[str, str]:
        # Each gateway keeps its state (counters, audit trail) in its own directory.
        return {"PROBE_LOG": str(self.probe_log), "PROBE_PIDFILE": str(self.pidfile), "TOOLGATE_DATA_DIR": str(self.dir / "data")}

    @asynccontextmanager
    async def client(self, mode: str, **kwargs: Any):
        """An SDK Client whose server is `toolgate run ... -- <server>`."""
        argv = self.argv()
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=self.env(), cwd=str(self.dir))
        kwargs.setdefault("read_timeout_seconds", ANSWER_TIMEOUT)
        with open(self.stderr_path, "a", encoding="utf-8") as errlog:
            async with Client(_StdioWithErrlog(params, errlog), mode=mode, **kwargs) as client:
                yield client

    def received(self) -> list[dict[str, Any]]:
        """Every tools/call the probe server received: [{"tool":..., "arguments":...}]."""
        return read_jsonl(self.probe_log)

    def received_tools(self) -> list[str]:
        return [call["tool"] for call in self.received()]

    def audit(self) -> list[dict[str, Any]]:
        return read_jsonl(self.audit_path)

    def wait_audit(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The audit records once there are at least `count` (the writer is asynchronous)."""
        wait_for(lambda: len(self.audit()) >= count, timeout, f"{count} audit records in {self.audit_path}")
        return self.audit()

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace") if self.stderr_path.exists() else ""


class _StdioWithErrlog:
    """A Transport: the SDK's stdio_client with the gateway's stderr sent to a file, not the test's stderr."""

    def __init__(self, params: StdioServerParameters, errlog) -> None:
        from mcp.client.stdio import stdio_client

        self._cm = stdio_client(params, errlog=errlog)

    async def __aenter__(self):
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc):
        return await self._cm.__aexit__(*exc)


@pytest.fixture
def write_policy(tmp_path: Path):
    """write_policy(policy, name="policy.json") -> Path. A dict is written as JSON, a str as is."""

    def write(policy: dict[str, Any] | str, name: str = "policy.json", directory: Path | None = None) -> Path:
        path = (directory or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(policy, indent=2, ensure_ascii=False) if isinstance(policy, dict) else policy
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def gateway(toolgate_bin: Path, tmp_path: Path, write_policy):
    """gateway(policy, *extra_args, server="probe") -> Gateway, each in its own subdirectory of tmp_path."""
    counter = iter(range(1000))

    def make(policy: dict[str, Any] | str, *extra_args: str, server: str = "probe") -> Gateway:
        directory = tmp_path / f"gw{next(counter)}"
        directory.mkdir()
        path = write_policy(policy, directory=directory)
        return Gateway(bin=toolgate_bin, dir=directory, policy=path, extra_args=list(extra_args), server=server)

    return make


class RawGateway:
    """`toolgate run` driven over raw pipes, one JSON-RPC message per line, no SDK in between."""

    def __init__(self, gw: Gateway, mode: str, server_command: list[str] | None = None) -> None:
        self.gw = gw
        self.mode = mode
        self._stderr = open(gw.stderr_path, "ab")
        self.proc = subprocess.Popen(
            gw.argv(server_command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=gw.dir,
            env={**os.environ, **gw.env()},
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.notifications: list[dict[str, Any]] = []
        self._next_id = 1000

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    # -- sending -----------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_bytes(json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n")

    def params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Request params for this mode: in 2026-07-28 mode every request carries the `_meta` envelope."""
        params = dict(params or {})
        if self.mode == MODERN:
            params["_meta"] = {**MODERN_META, **params.get("_meta", {})}
        return params

    def request_message(self, method: str, params: dict[str, Any] | None = None, id: Any = None) -> dict[str, Any]:
        if id is None:
            self._next_id += 1
            id = self._next_id
        return {"jsonrpc": "2.0", "id": id, "method": method, "params": self.params(params)}

    def call_message(self, name: str, arguments: dict[str, Any] | None = None, id: Any = None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        return self.request_message("tools/call", params, id)

    # -- receiving ---------------------------------------------------------
    def recv_line(self, timeout: float = ANSWER_TIMEOUT) -> bytes | None:
        """The next line from the gateway's stdout; None at EOF."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the gateway within {timeout}s; stderr:\n{self.gw.stderr()}") from None
        return line

    def recv(self, timeout: float = ANSWER_TIMEOUT) -> Any:
        """The next message that is not a notification."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.recv_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"gateway closed its stdout; stderr:\n{self.gw.stderr()}")
            message = json.loads(line)
            if isinstance(message, dict) and "id" not in message and "method" in message:
                self.notifications.append(message)
                continue
            return message

    def request(self, method: str, params: dict[str, Any] | None = None, id: Any = None) -> dict[str, Any]:
        message = self.request_message(method, params, id)
        self.send(message)
        answer = self.recv()
        assert answer.get("id") == message["id"], f"answer to another request: {answer}"
        return answer

    def call(self, name: str, arguments: dict[str, Any] | None = None, id: Any = None) -> dict[str, Any]:
        message = self.call_message(name, arguments, id)
        self.send(message)
        answer = self.recv()
        assert answer.get("id") == message["id"], f"answer to another request: {answer}"
        return answer

    def handshake(self) -> None:
        """Legacy mode: initialize + notifications/initialized. Modern mode has no handshake."""
        if self.mode == LEGACY:
            answer = self.request(
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "toolgate-e2e-raw", "version": "0"},
                },
            )
            assert "result" in answer, answer
            self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    # -- lifecycle ---------------------------------------------------------
    def close_stdin(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def wait(self, timeout: float = ANSWER_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def server_pid(self, timeout: float = ANSWER_TIMEOUT) -> int:
        """The probe server's pid (it writes PROBE_PIDFILE at start)."""
        wait_for(
            lambda: self.gw.pidfile.exists() and self.gw.pidfile.read_text().strip() != "",
            timeout,
            "the probe server's pid file",
        )
        return int(self.gw.pidfile.read_text().strip())

    def cleanup(self) -> None:
        self.close_stdin()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.gw.pidfile.exists():
            try:
                pid = int(self.gw.pidfile.read_text().strip())
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        self._stderr.close()


@pytest.fixture
def raw_gateway(gateway) -> Iterator[Any]:
    """raw_gateway(policy, *extra_args, mode=LEGACY, server_command=None, handshake=True) -> RawGateway."""
    started: list[RawGateway] = []

    def start(
        policy: dict[str, Any] | str,
        *extra_args: str,
        mode: str = LEGACY,
        server_command: list[str] | None = None,
        handshake: bool = True,
    ) -> RawGateway:
        raw = RawGateway(gateway(policy, *extra_args), mode, server_command)
        started.append(raw)
        if handshake:
            raw.handshake()
        return raw

    yield start
    for raw in started:
        raw.cleanup()


def run_toolgate(toolgate_bin: Path, *args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolgate_bin), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# The policies recommended on the five product pages in shared/seeds, verbatim
# (two pages indent the JSON, three print it flush left).
def _seed_policy(name: str, indent: str) -> str:
    lines = [
        (0, "{"),
        (1, '"version": "1",'),
        (1, '"default": "deny",'),
        (1, '"tools": {'),
        (2, f'"{name}": {{'),
        (3, '"limits": ['),
        (4, "{"),
        (5, f'"counter": "{name}_rate",'),
        (5, '"window": "minute",'),
        (5, '"max": 30,'),
        (5, '"scope": "grant"'),
        (4, "}"),
        (3, "]"),
        (2, "}"),
        (1, "}"),
        (0, "}"),
    ]
    return "".join(indent * depth + text + "\n" for depth, text in lines)


SEED_POLICIES: dict[str, str] = {
    "send-message": _seed_policy("send-message", "  "),  # 000 iMessage; 003 Agentic Framework prints it flush left
    "send_message": _seed_policy("send_message", ""),  # 001 Mcp Ap2
    "send_text_message": _seed_policy("send_text_message", ""),  # 002 Mcp Ap2
    "send_text": _seed_policy("send_text", "  "),  # 004 Mcp Ap2
}


@pytest.fixture
def serve_factory(toolgate_bin, tmp_path):
    """serve_factory(config, policies={name: policy}, env=None, start=True) -> a ServeGateway (tests/e2e/servekit.py),
    started in its own directory and stopped after the test."""
    from servekit import ServeGateway

    started: list[Any] = []
    counter = iter(range(100))

    def make(config, policies=None, env=None, start=True, extra_args=None):
        gw = ServeGateway(toolgate_bin, tmp_path / f"serve{next(counter)}", config, policies or {}, env, extra_args)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.stop()
