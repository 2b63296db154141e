"""The admin API (docs/admin-api.md): out-of-band approvers. The config's
`admin` section checked by `toolgate validate`, and, with the real gateway,
an approver who decides a held call through the admin API, a webhook
receiver that gets a signed announcement, and a chat tool that answers with a
signed callback. Signatures are recomputed here with Python's hmac module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import LEGACY, run_toolgate, wait_for, wait_listening
from servekit import free_port, probe_server

ADMIN_TOKEN = "e2e-admin-token-0123456789"
SECRET = "e2e-webhook-secret"

APPROVE_TRANSFERS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "probe__transfer": {
            "action": "require_approval",
            "reason": "money leaves the account",
            "approval": {"via": ["admin"], "hold": "1s", "expires": "10m"},
        },
    },
}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# --- the config section, through `toolgate validate` ---------------------------

def validate(toolgate_bin: Path, directory: Path, config: str, env: dict[str, str] | None = None):
    (directory / "policy.json").write_text(json.dumps(APPROVE_TRANSFERS), encoding="utf-8")
    (directory / "gateway.yaml").write_text(config, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in ("TOOLGATE_WEBHOOK_SECRET", "TOOLGATE_SESSION_KEY")}
    return subprocess.run(
        [str(toolgate_bin), "validate", "gateway.yaml"],
        cwd=directory, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )


BASE = "policy: policy.json\nservers:\n  probe:\n    command: python3\n"


def test_validate_accepts_an_admin_section(toolgate_bin, tmp_path):
    config = (
        f"{BASE}admin:\n  listen: 127.0.0.1:8081\n  token_sha256: {sha256_hex(ADMIN_TOKEN)}\n"
        "  webhook:\n    url: http://127.0.0.1:9/hook\n    max_attempts: 3\n    initial_backoff: 500ms\n"
    )
    done = validate(toolgate_bin, tmp_path, config, {"TOOLGATE_WEBHOOK_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    assert "gateway.yaml: valid config (" in done.stdout, done.stdout


def test_validate_reports_every_admin_problem_with_its_position(toolgate_bin, tmp_path):
    config = (
        f"{BASE}admin:\n  listen: localhost:8081\n  webhook:\n    url: https://chat.example/hook\n"
        "    secret_env: MY_HOOK_SECRET\n    retries: 3\n"
    )
    done = validate(toolgate_bin, tmp_path, config)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        'gateway.yaml:5:1: admin: missing field "token_sha256" (the SHA-256 of the admin token; the admin API always needs a token)',
        'gateway.yaml:6:11: admin.listen: invalid listen address "localhost:8081" (expected an IP address and port such as "127.0.0.1:8080" or "[::1]:8080")',
        'gateway.yaml:8:10: admin.webhook.url: url "https://chat.example/hook": https is not supported here yet (use http:// on a trusted network)',
        "gateway.yaml:9:17: admin.webhook.secret_env: environment variable MY_HOOK_SECRET is not set (it holds the webhook secret that signs webhooks and callbacks)",
        'gateway.yaml:10:5: admin.webhook: unknown field "retries" (expected url, secret_env, max_attempts, initial_backoff or admin_url)',
    ], done.stderr


# --- the running gateway ----------------------------------------------------------

@pytest.fixture
def admin_wired(toolgate_bin):
    """The admin listener is started by `toolgate serve` once cli.rs/serve.rs
    call admin_args::admin_options; until then these tests cannot run."""
    if "--admin-listen" not in run_toolgate(toolgate_bin, "serve", "--help").stdout:
        pytest.skip("toolgate serve does not start the admin API yet (no --admin-listen)")


class WebhookReceiver:
    """A local HTTP server that records every POST and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/toolgate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, count: int) -> list[dict[str, Any]]:
        """The first `count` webhooks, each checked against its signature."""
        wait_for(lambda: len(self.received) >= count, what=f"{count} webhooks")
        out = []
        for headers, body in self.received[:count]:
            timestamp = headers["x-toolgate-timestamp"]
            assert abs(time.time() - int(timestamp)) < 30
            assert hmac.compare_digest(headers["x-toolgate-signature"], signature(SECRET, timestamp, body))
            out.append(json.loads(body))
        return out

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = WebhookReceiver()
    yield r
    r.close()


def start_with_admin(serve_factory, receiver: WebhookReceiver):
    port = free_port()
    config = {
        "policy": "policy.json",
        "servers": {"probe": probe_server()},
        "admin": {
            "listen": f"127.0.0.1:{port}",
            "token_sha256": sha256_hex(ADMIN_TOKEN),
            "webhook": {"url": receiver.url},
        },
    }
    gw = serve_factory(config, {"policy.json": APPROVE_TRANSFERS}, env={"TOOLGATE_WEBHOOK_SECRET": SECRET})
    admin = f"http://127.0.0.1:{port}"

    wait_listening(port, what="the admin listener")
    return gw, admin


def authed() -> httpx2.Client:
    return httpx2.Client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)


@pytest.mark.anyio
async def test_an_approver_approves_a_held_call_through_the_admin_api(admin_wired, serve_factory, receiver):
    gw, admin = start_with_admin(serve_factory, receiver)
    arguments = {"to": "bob", "amount": 5}
    async with gw.client(LEGACY) as client:
        pending = await client.call_tool("probe__transfer", arguments)
        facts = pending.structured_content["toolgate"]
        assert facts["decision"] == "approval_pending", facts
        approval_id = facts["approval_id"]

        [announced] = receiver.events(1)
        assert announced["event"] == "approval.requested"
        assert announced["request"]["id"] == approval_id
        assert announced["request"]["arguments"] == arguments
        assert announced["approve_url"] == f"{admin}/approvals/{approval_id}/approve"

        with httpx2.Client(timeout=10) as anonymous:
            refused = anonymous.get(f"{admin}/approvals")
            assert refused.status_code == 401 and "www-authenticate" in refused.headers
        with authed() as http:
            listed = http.get(f"{admin}/approvals").json()["approvals"]
            assert [r["id"] for r in listed] == [approval_id]
            approved = http.post(f"{admin}/approvals/{approval_id}/approve", json={"by": "bob", "reason": "ok"})
            assert approved.status_code == 200, approved.text
            assert approved.json()["decision"] == {"by": "bob", "via": "api", "at_ms": approved.json()["decision"]["at_ms"], "reason": "ok"}
            again = http.post(f"{admin}/approvals/{approval_id}/deny")
            assert (again.status_code, again.json()["error"]["code"]) == (409, "already_decided")

        ran = await client.call_tool("probe__transfer", arguments)
        assert not ran.is_error, ran
    assert gw.received() == [{"tool": "transfer", "arguments": arguments}]
    decided = receiver.events(2)[1]
    assert (decided["event"], decided["request"]["status"]) == ("approval.decided", "approved")


@pytest.mark.anyio
async def test_a_chat_tool_denies_through_the_signed_callback(admin_wired, serve_factory, receiver):
    gw, admin = start_with_admin(serve_factory, receiver)
    arguments = {"to": "mallory", "amount": 9999}
    async with gw.client(LEGACY) as client:
        pending = await client.call_tool("probe__transfer", arguments)
        approval_id = pending.structured_content["toolgate"]["approval_id"]
        [announced] = receiver.events(1)
        callback_url = announced["callback_url"]

        body = json.dumps({"id": approval_id, "decision": "deny", "by": "carol", "reason": "no"}).encode()
        timestamp = str(int(time.time()))
        with httpx2.Client(timeout=10) as http:
            def post(ts: str, sig: str):
                return http.post(callback_url, content=body, headers={
                    "content-type": "application/json", "x-toolgate-timestamp": ts, "x-toolgate-signature": sig})

            assert post(timestamp, signature("guessed", timestamp, body)).status_code == 401
            stale = str(int(time.time()) - 3600)
            assert post(stale, signature(SECRET, stale, body)).status_code == 401
            denied = post(timestamp, signature(SECRET, timestamp, body))
            assert denied.status_code == 200, denied.text
            assert denied.json()["decision"]["via"] == "webhook"
            assert post(timestamp, signature(SECRET, timestamp, body)).status_code == 401  # a replay
        with authed() as http:
            shown = http.get(f"{admin}/approvals/{approval_id}").json()
            assert (shown["status"], shown["decision"]["by"]) == ("denied", "carol")
    assert gw.received() == []
