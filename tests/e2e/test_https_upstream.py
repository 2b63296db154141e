"""`toolgate serve` in front of an https MCP server: the probe server (Python
SDK) served by uvicorn with a certificate from a test CA made by trustme.
The gateway trusts the CA through SSL_CERT_FILE; without it, the server's
certificate fails the check, the server is reported down and gets no calls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from conftest import MODES, PROBE_SERVER, read_jsonl, wait_for, wait_listening
from servekit import ServeGateway, free_port

POLICY = {"version": "1", "default": "deny", "tools": {
    "secure__echo": {}, "secure__delete_all": {"action": "deny", "reason": "never delete everything"}}}


@pytest.fixture(params=["sse", "json"])
def https_probe(tmp_path: Path, request):
    """(url, ca_pem_path, calls_log): the probe over https on a free port,
    answering with SSE streams, then (second run) with plain JSON bodies: the
    gateway passes a plain JSON result on as the server wrote it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_pem, key_pem, ca_pem = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    calls = tmp_path / "probe-calls.jsonl"
    port = free_port()
    probe = subprocess.Popen([sys.executable, str(PROBE_SERVER), "--http", str(port)],
                             env={**os.environ, "PROBE_TLS_CERT": str(cert_pem), "PROBE_TLS_KEY": str(key_pem),
                                  "PROBE_LOG": str(calls),
                                  "PROBE_JSON_RESPONSE": "1" if request.param == "json" else "0"})
    try:
        wait_listening(port, 30, "the probe server to listen over https")
        yield f"https://127.0.0.1:{port}/mcp", ca_pem, calls
    finally:
        probe.terminate()
        probe.wait(timeout=10)


def start(toolgate_bin: Path, directory: Path, url: str, env: dict[str, str]) -> ServeGateway:
    gw = ServeGateway(toolgate_bin, directory, {"policy": "policy.json", "servers": {"secure": {"url": url}}},
                      {"policy.json": POLICY}, env)
    # The probe's own log is the https server's (PROBE_LOG above), not the gateway's.
    gw.env.pop("PROBE_LOG")
    return gw.start()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_an_https_upstream_with_a_trusted_certificate(toolgate_bin, tmp_path, https_probe, mode):
    url, ca_pem, calls = https_probe
    gw = start(toolgate_bin, tmp_path / "gw", url, {"SSL_CERT_FILE": str(ca_pem)})
    try:
        async with gw.client(mode) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            assert tools == ["secure__delete_all", "secure__echo"], (tools, gw.stderr())
            result = await client.call_tool("secure__echo", {"text": "over tls", "nested": {"a": [1, 2.5, None]}})
            assert result.content[0].text == "over tls"
            assert not result.is_error
            denied = await client.call_tool("secure__delete_all", {})
            assert denied.is_error and "never delete everything" in denied.content[0].text
        received = [(c["tool"], c["arguments"]) for c in read_jsonl(calls)]
        assert received == [("echo", {"text": "over tls", "nested": {"a": [1, 2.5, None]}})], received
    finally:
        gw.stop()


def test_an_https_upstream_whose_certificate_is_not_trusted_gets_nothing(toolgate_bin, tmp_path, https_probe):
    url, _ca_pem, calls = https_probe
    # Another CA is trusted, not the one that signed the server's certificate.
    other = trustme.CA()
    other_pem = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_pem))
    gw = start(toolgate_bin, tmp_path / "gw", url, {"SSL_CERT_FILE": str(other_pem)})
    try:
        wait_for(lambda: "certificate" in gw.stderr().lower(), 20, "the gateway to report the certificate")
        from servekit import answer_of, initialize, post

        with gw.http() as http:
            session = initialize(http, gw.url)
            listed = answer_of(post(http, gw.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session))
            assert listed["result"]["tools"] == [], listed
            r = post(http, gw.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                    "params": {"name": "secure__echo", "arguments": {"text": "x"}}}, session)
            assert "error" in answer_of(r), answer_of(r)
        assert not calls.exists() or read_jsonl(calls) == [], "the untrusted server received a call"
        assert "UnknownIssuer" in gw.stderr() or "unknown issuer" in gw.stderr().lower(), gw.stderr()
    finally:
        gw.stop()
