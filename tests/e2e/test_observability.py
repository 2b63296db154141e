"""Metrics and traces (docs/observability.md), through the built binary.

Metrics: `toolgate serve` and `toolgate run` with an admin listener, real
calls from the Python SDK client (and raw pipes), and the scrape parsed with
prometheus_client's own text parser, done the way the documented Prometheus
scrape config says. Traces: a small OTLP/HTTP collector in the test (Python
http.server) that decodes what the gateway sends with the official
generated classes of opentelemetry-proto (protobuf) or as OTLP/JSON, over
plain http or over https with a certificate from a test CA (trustme) that
the gateway trusts through SSL_CERT_FILE.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trustme
import yaml
from conftest import LEGACY, REPO, wait_for
from mcp import Client, MCPError
from servekit import _Http, answer_of, free_port, initialize, post, probe_server

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as missing:  # pragma: no cover - a set-up problem, reported as a failure
    pytest.fail(
        f"{missing}: the observability tests need prometheus-client and opentelemetry-proto; "
        "install the test requirements: bash scripts/setup.sh "
        "(or .venv/bin/pip install -r tests/requirements.txt)",
        pytrace=False,
    )

ADMIN_TOKEN = "e2e-admin-token-0123456789"
ALICE_TOKEN = "tg_alice_token_for_tests"
BOB_TOKEN = "tg_bob_token_for_tests"

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
META_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
META_PARENT_ID = "b7ad6b7169203331"

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "probe__echo": {"limits": [{"counter": "echoes", "window": "minute", "max": 3, "scope": "grant"}]},
        "probe__delete_all": {"action": "deny", "reason": "never delete everything"},
        "probe__fail_rpc": {},
        "probe__transfer": {
            "action": "require_approval",
            "reason": "money leaves the account",
            "approval": {"via": ["admin"], "hold": "1s", "expires": "10m"},
        },
    },
}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def scrape_config() -> dict[str, Any]:
    """The Prometheus scrape job documented in docs/observability.md."""
    text = (REPO / "docs" / "observability.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]
    jobs = [job for b in blocks if isinstance(b, dict) for job in b.get("scrape_configs", [])]
    assert len(jobs) == 1, f"expected one documented scrape job, found {jobs}"
    return jobs[0]


def scrape(admin_addr: str, tmp_path: Path, token: str = ADMIN_TOKEN) -> httpx2.Response:
    """GET the metrics as Prometheus would with the documented job: its scheme,
    path and authorization, the token read from its credentials file (here a
    file of the test's own), and the target replaced by the gateway's admin address."""
    job = scrape_config()
    assert job["static_configs"][0]["targets"], job
    auth = job["authorization"]
    credentials = tmp_path / "toolgate-admin-token"
    credentials.write_text(token + "\n", encoding="utf-8")
    header = f"{auth['type']} {credentials.read_text(encoding='utf-8').strip()}"
    url = f"{job.get('scheme', 'http')}://{admin_addr}{job.get('metrics_path', '/metrics')}"
    with httpx2.Client(timeout=10) as http:
        return http.get(url, headers={"Authorization": header})


class Scrape:
    """One scrape, parsed by prometheus_client."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def series(self, name: str) -> dict[tuple, float]:
        return {tuple(sorted(s.labels.items())): s.value for s in self.samples if s.name == name}

    def total(self, name: str) -> float:
        return sum(s.value for s in self.samples if s.name == name)


def wait_scrape(admin_addr: str, tmp_path: Path, predicate, what: str) -> Scrape:
    """Scrapes until `predicate(scrape)` holds (the records reach the metrics on the audit writer thread)."""
    found: list[Scrape] = []

    def ready() -> bool:
        r = scrape(admin_addr, tmp_path)
        assert r.status_code == 200, (r.status_code, r.text)
        found.append(Scrape(r.text))
        return predicate(found[-1])

    wait_for(ready, what=what)
    return found[-1]


# --- a small OTLP/HTTP collector ------------------------------------------------

def _attr_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _json_attr(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    return None


class Collector:
    """Accepts POST /v1/traces in http/protobuf (decoded with opentelemetry-proto's
    ExportTraceServiceRequest) or http/json, and keeps every span as a dict."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.problems: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                collector.requests.append(headers)
                try:
                    if self.path != "/v1/traces":
                        raise ValueError(f"POST to {self.path}")
                    if headers.get("content-type") == "application/x-protobuf":
                        spans = collector.decode_protobuf(body)
                        answer, ctype = ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
                    elif headers.get("content-type") == "application/json":
                        spans = collector.decode_json(yaml.safe_load(body.decode("utf-8")))
                        answer, ctype = b"{}", "application/json"
                    else:
                        raise ValueError(f"content-type {headers.get('content-type')!r}")
                except Exception as e:  # noqa: BLE001 - reported by the test
                    collector.problems.append(repr(e))
                    self.send_response(400)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                collector.spans.extend(spans)
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.base = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def decode_protobuf(body: bytes) -> list[dict[str, Any]]:
        request = ExportTraceServiceRequest.FromString(body)
        # Every byte was a field the schema knows, in the schema's encoding.
        assert request.SerializeToString() == body, "the request re-encodes differently: unknown or misencoded fields"
        out = []
        for rs in request.resource_spans:
            resource = {kv.key: _attr_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(), "trace_state": s.trace_state,
                        "name": s.name, "kind": s.kind, "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                        "attributes": {kv.key: _attr_value(kv.value) for kv in s.attributes},
                        "status": s.status.code, "resource": resource, "scope": ss.scope.name, "encoding": "protobuf",
                    })
        return out

    @staticmethod
    def decode_json(body: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for rs in body["resourceSpans"]:
            resource = {kv["key"]: _json_attr(kv["value"]) for kv in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    out.append({
                        "trace_id": s["traceId"], "span_id": s["spanId"],
                        "parent_span_id": s.get("parentSpanId", ""), "trace_state": s.get("traceState", ""),
                        "name": s["name"], "kind": s["kind"],
                        "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                        "attributes": {kv["key"]: _json_attr(kv["value"]) for kv in s["attributes"]},
                        "status": s["status"].get("code", 0), "resource": resource, "scope": ss["scope"]["name"],
                        "encoding": "json",
                    })
        return out

    def wait_spans(self, count: int) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.spans) >= count or self.problems, what=f"{count} spans at the collector")
        assert not self.problems, self.problems
        return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture
def tls_collector(tmp_path):
    """(collector, ca_pem): the collector over https, its certificate issued
    for 127.0.0.1 by a test CA whose certificate is in ca_pem."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_pem = tmp_path / "collector-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    c = Collector(tls=context)
    yield c, ca_pem
    c.close()


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(admin_port: int | None = None, telemetry: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "policy": "policy.json",
        "servers": {"probe": probe_server()},
        "grants": {"alice": {"token_sha256": sha256_hex(ALICE_TOKEN)}, "bob": {"token_sha256": sha256_hex(BOB_TOKEN)}},
    }
    if admin_port is not None:
        config["admin"] = {"listen": f"127.0.0.1:{admin_port}", "token_sha256": sha256_hex(ADMIN_TOKEN)}
    if telemetry is not None:
        config["telemetry"] = telemetry
    return config


def sdk_client(url: str, token: str, **headers: str):
    """The Python SDK's Streamable HTTP client, sending `headers` on every request."""

    class _Session:
        async def __aenter__(self):
            self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", **headers}, timeout=10)
            await self.http.__aenter__()
            self.client = Client(_Http(url, self.http), mode=LEGACY, read_timeout_seconds=10)
            return await self.client.__aenter__()

        async def __aexit__(self, *exc):
            await self.client.__aexit__(*exc)
            await self.http.__aexit__(*exc)

    return _Session()


# --- metrics ---------------------------------------------------------------------

@pytest.mark.anyio
async def test_serve_metrics_count_every_call_by_server_tool_grant_and_decision(serve_factory, tmp_path):
    admin_port = free_port()
    gw = serve_factory(serve_config(admin_port), {"policy.json": POLICY})
    admin = f"127.0.0.1:{admin_port}"
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", admin_port)) == 0, what="the admin listener")

    async with sdk_client(gw.url, ALICE_TOKEN) as alice:
        for text in ["a", "b"]:
            assert (await alice.call_tool("probe__echo", {"text": text})).content[0].text == text
        assert (await alice.call_tool("probe__delete_all", {"confirm": True})).is_error
        with pytest.raises(MCPError):
            await alice.call_tool("no_such_tool", {})
        with pytest.raises(MCPError):
            await alice.call_tool("probe__fail_rpc", {})
        held = await alice.call_tool("probe__transfer", {"amount": 5, "currency": "EUR", "to": "bob"})
        assert held.structured_content["toolgate"]["decision"] == "approval_pending", held
    async with sdk_client(gw.url, BOB_TOKEN) as bob:
        for _ in range(3):
            assert not (await bob.call_tool("probe__echo", {"text": "x"})).is_error
        limited = await bob.call_tool("probe__echo", {"text": "x"})
        assert limited.structured_content["toolgate"]["decision"] == "rate_limited", limited

    made = 10
    m = wait_scrape(admin, tmp_path, lambda m: m.total("toolgate_tool_calls_total") >= made, f"{made} calls counted")
    assert m.series("toolgate_tool_calls_total") == {
        tuple(sorted({"server": server, "tool": tool, "grant": grant, "decision": decision}.items())): n
        for server, tool, grant, decision, n in [
            ("probe", "probe__echo", "alice", "allow", 2),
            ("probe", "probe__delete_all", "alice", "deny", 1),
            ("", "(unknown)", "alice", "unknown", 1),
            ("probe", "probe__fail_rpc", "alice", "allow", 1),
            ("probe", "probe__transfer", "alice", "approval_pending", 1),
            ("probe", "probe__echo", "bob", "allow", 3),
            ("probe", "probe__echo", "bob", "rate_limited", 1),
        ]
    }
    assert m.families["toolgate_tool_calls"].type == "counter"  # the parser drops _total from the family name
    # Every call went through a decision; the forwarded ones to the server.
    assert m.total("toolgate_decision_duration_seconds_count") == made
    assert m.value("toolgate_decision_duration_seconds_bucket", decision="rate_limited", le="+Inf") == 1
    assert m.families["toolgate_decision_duration_seconds"].type == "histogram"
    assert m.value("toolgate_upstream_duration_seconds_count", server="probe") == 6
    assert m.value("toolgate_upstream_calls_total", server="probe", outcome="ok") == 5
    assert m.value("toolgate_upstream_calls_total", server="probe", outcome="error") == 1
    # Counters' use after the last call admitted, per grant.
    assert m.value("toolgate_counter_used", counter="echoes", grant="alice") == 2
    assert m.value("toolgate_counter_used", counter="echoes", grant="bob") == 3
    assert m.value("toolgate_counter_limit", counter="echoes", grant="bob") == 3
    assert m.value("toolgate_approvals_pending") == 1
    assert m.value("toolgate_upstream_up", server="probe") == 1
    assert m.value("toolgate_build_info", version=m.samples[0].labels["version"]) == 1
    assert m.value("toolgate_trace_spans_exported_total") == 0
    # Every record of these calls was written: none dropped.
    assert m.families["toolgate_audit_records_dropped"].type == "counter"
    assert m.value("toolgate_audit_records_dropped_total") == 0


def test_metrics_need_the_admin_token(serve_factory, tmp_path):
    admin_port = free_port()
    serve_factory(serve_config(admin_port), {"policy.json": POLICY})
    admin = f"127.0.0.1:{admin_port}"
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", admin_port)) == 0, what="the admin listener")
    ok = scrape(admin, tmp_path)
    assert ok.status_code == 200, ok.text
    assert ok.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert Scrape(ok.text).value("toolgate_upstream_up", server="probe") == 1
    with httpx2.Client(timeout=10) as http:
        anonymous = http.get(f"http://{admin}/metrics")
        assert anonymous.status_code == 401 and "toolgate_" not in anonymous.text
        assert "www-authenticate" in anonymous.headers
        agent = http.get(f"http://{admin}/metrics", headers={"Authorization": f"Bearer {ALICE_TOKEN}"})
        assert agent.status_code == 401 and "toolgate_" not in agent.text
    assert scrape(admin, tmp_path, token="not-the-admin-token").status_code == 401


# --- traces ----------------------------------------------------------------------

def span_by(spans: list[dict[str, Any]], **attributes: Any) -> dict[str, Any]:
    found = [s for s in spans if all(s["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (attributes, spans)
    return found[0]


@pytest.mark.anyio
async def test_serve_spans_join_the_clients_trace(serve_factory, collector, tmp_path):
    telemetry = {"service_name": "toolgate-e2e", "otlp": {"endpoint": collector.base}}
    gw = serve_factory(serve_config(telemetry=telemetry), {"policy.json": POLICY})

    async with sdk_client(gw.url, ALICE_TOKEN, traceparent=TRACEPARENT, tracestate="vendor=abc") as client:
        assert (await client.call_tool("probe__echo", {"text": "joined"})).content[0].text == "joined"
        assert (await client.call_tool("probe__delete_all", {"confirm": True})).is_error
        with pytest.raises(MCPError):
            await client.call_tool("probe__fail_rpc", {})
    async with sdk_client(gw.url, BOB_TOKEN) as client:
        assert not (await client.call_tool("probe__echo", {"text": "fresh"})).is_error
    # Upper-case hex: not a valid traceparent, so not trusted.
    async with sdk_client(gw.url, BOB_TOKEN, traceparent=TRACEPARENT.upper()) as client:
        assert not (await client.call_tool("probe__echo", {"text": "bad"})).is_error
    # No header, but the MCP convention: params._meta.traceparent.
    with gw.http(ALICE_TOKEN) as http:
        session = initialize(http, gw.url)
        r = post(http, gw.url, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "probe__echo", "arguments": {"text": "meta"},
            "_meta": {"traceparent": f"00-{META_TRACE_ID}-{META_PARENT_ID}-01"}}}, session)
        assert answer_of(r)["result"]["content"][0]["text"] == "meta", r.text

    spans = collector.wait_spans(6)
    assert len(spans) == 6, spans
    for s in spans:
        assert s["encoding"] == "protobuf"
        assert s["kind"] == 2, s  # SPAN_KIND_SERVER
        assert s["resource"]["service.name"] == "toolgate-e2e"
        assert s["scope"] == "toolgate"
        assert s["attributes"]["mcp.method.name"] == "tools/call"
        assert s["attributes"]["mcp.protocol.version"] == "2025-11-25"
        assert s["start"] <= s["end"]
        assert len(s["span_id"]) == 16 and s["span_id"] != "0" * 16

    alice = [s for s in spans if s["attributes"]["toolgate.grant"] == "alice" and s["trace_id"] == TRACE_ID]
    assert len(alice) == 3, spans
    echo = span_by(alice, **{"gen_ai.tool.name": "probe__echo"})
    assert echo["name"] == "tools/call probe__echo"
    assert echo["parent_span_id"] == PARENT_ID
    assert echo["span_id"] != PARENT_ID
    assert echo["trace_state"] == "vendor=abc"
    assert echo["status"] == 0
    assert {k: echo["attributes"][k] for k in ["toolgate.server", "toolgate.decision", "toolgate.rule", "toolgate.outcome"]} == {
        "toolgate.server": "probe", "toolgate.decision": "allow", "toolgate.rule": 'tools["probe__echo"]', "toolgate.outcome": "ok"}
    assert echo["attributes"]["mcp.session.id"]
    denied = span_by(alice, **{"gen_ai.tool.name": "probe__delete_all"})
    assert (denied["attributes"]["toolgate.decision"], denied["attributes"]["toolgate.outcome"], denied["status"]) == ("deny", "refused", 0)
    failed = span_by(alice, **{"gen_ai.tool.name": "probe__fail_rpc"})
    assert (failed["attributes"]["toolgate.outcome"], failed["status"]) == ("error", 2)  # STATUS_CODE_ERROR
    assert failed["attributes"]["error.type"] == "tool_error"

    bob = [s for s in spans if s["attributes"]["toolgate.grant"] == "bob"]
    assert len(bob) == 2, spans
    for s in bob:
        # A root span of a fresh trace: no parent, a trace id of its own, no tracestate.
        assert s["parent_span_id"] == "" and s["trace_state"] == ""
        assert s["trace_id"] not in (TRACE_ID, TRACE_ID.upper(), "0" * 32)
    assert bob[0]["trace_id"] != bob[1]["trace_id"]

    meta = [s for s in spans if s["trace_id"] == META_TRACE_ID]
    assert len(meta) == 1 and meta[0]["parent_span_id"] == META_PARENT_ID, spans


def test_run_spans_join_meta_traceparent_and_run_has_metrics(raw_gateway, collector, monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    admin_port = free_port()
    policy = {"version": "1", "default": "deny", "tools": {"echo": {}}}
    raw = raw_gateway(
        policy, "--name", "probe", "--otlp-endpoint", collector.base, "--otlp-protocol", "http/json",
        "--admin-listen", f"127.0.0.1:{admin_port}",
    )
    answer = raw.request("tools/call", {
        "name": "echo", "arguments": {"text": "hi"},
        "_meta": {"traceparent": f"00-{META_TRACE_ID}-{META_PARENT_ID}-01", "tracestate": "k=v"},
    })
    assert answer["result"]["content"][0]["text"] == "hi", answer
    unknown = raw.call("get_balance", {})
    assert unknown["error"]["code"] == -32602, unknown
    # The server got the call with its _meta as the client wrote it.
    assert raw.gw.received_tools() == ["echo"]

    spans = collector.wait_spans(2)
    assert len(spans) == 2, spans
    joined = span_by(spans, **{"gen_ai.tool.name": "echo"})
    assert joined["encoding"] == "json"
    assert (joined["trace_id"], joined["parent_span_id"], joined["trace_state"]) == (META_TRACE_ID, META_PARENT_ID, "k=v")
    assert joined["name"] == "tools/call echo" and joined["kind"] == 2
    assert joined["attributes"]["toolgate.server"] == "probe"
    assert joined["attributes"]["toolgate.grant"] == "local"
    assert joined["attributes"]["toolgate.rule"] == 'tools["echo"]'
    assert joined["attributes"]["toolgate.outcome"] == "ok"
    assert joined["resource"]["service.name"] == "toolgate"
    root = span_by(spans, **{"gen_ai.tool.name": "get_balance"})
    assert root["parent_span_id"] == "" and root["attributes"]["toolgate.decision"] == "unknown"

    m = wait_scrape(f"127.0.0.1:{admin_port}", tmp_path, lambda m: m.total("toolgate_tool_calls_total") >= 2
                    and m.value("toolgate_trace_spans_exported_total") == 2, "2 calls counted and 2 spans exported")
    assert m.value("toolgate_tool_calls_total", server="probe", tool="echo", grant="local", decision="allow") == 1
    assert m.value("toolgate_tool_calls_total", server="probe", tool="(unknown)", grant="local", decision="unknown") == 1
    assert m.value("toolgate_upstream_up", server="probe") == 1
    assert m.value("toolgate_approvals_pending") == 0


def test_spans_reach_an_https_collector_trusted_through_ssl_cert_file(raw_gateway, tls_collector, monkeypatch):
    collector, ca_pem = tls_collector
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
    policy = {"version": "1", "default": "deny", "tools": {"echo": {}}}
    raw = raw_gateway(policy, "--name", "probe", "--otlp-endpoint", collector.base)
    answer = raw.request("tools/call", {
        "name": "echo", "arguments": {"text": "hi"},
        "_meta": {"traceparent": f"00-{META_TRACE_ID}-{META_PARENT_ID}-01"},
    })
    assert answer["result"]["content"][0]["text"] == "hi", answer
    [span] = collector.wait_spans(1)
    assert span["encoding"] == "protobuf"
    assert (span["trace_id"], span["parent_span_id"]) == (META_TRACE_ID, META_PARENT_ID)
    assert span["name"] == "tools/call echo" and span["attributes"]["toolgate.outcome"] == "ok"
    assert collector.base.startswith("https://") and "cannot export" not in raw.gw.stderr()


def test_an_https_collector_not_trusted_gets_no_spans(raw_gateway, tls_collector, monkeypatch, tmp_path):
    collector, _ = tls_collector
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    policy = {"version": "1", "default": "deny", "tools": {"echo": {}}}
    raw = raw_gateway(policy, "--name", "probe", "--otlp-endpoint", collector.base)
    answer = raw.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    assert answer["result"]["content"][0]["text"] == "hi", answer
    wait_for(lambda: "cannot export" in raw.gw.stderr(), what="the gateway to log the failed export")
    assert f"{collector.base}/v1/traces" in raw.gw.stderr() and "certificate" in raw.gw.stderr().lower(), raw.gw.stderr()
    assert collector.spans == []


@pytest.mark.anyio
async def test_a_dead_collector_neither_fails_nor_stops_calls(serve_factory, tmp_path):
    admin_port = free_port()
    port = dead_port()
    gw = serve_factory(serve_config(admin_port), {"policy.json": POLICY},
                       extra_args=["--otlp-endpoint", f"http://127.0.0.1:{port}"])
    async with sdk_client(gw.url, ALICE_TOKEN, traceparent=TRACEPARENT) as client:
        for text in ["1", "2", "3"]:
            assert (await client.call_tool("probe__echo", {"text": text})).content[0].text == text
        assert (await client.call_tool("probe__delete_all", {"confirm": True})).is_error
    assert gw.received_tools() == ["echo", "echo", "echo"]
    wait_for(lambda: "cannot export" in gw.stderr() and f"http://127.0.0.1:{port}/v1/traces" in gw.stderr(),
             what="the gateway to log the failed export")
    m = wait_scrape(f"127.0.0.1:{admin_port}", tmp_path, lambda m: m.value("toolgate_trace_spans_failed_total") >= 1,
                    "a failed export counted")
    assert m.value("toolgate_trace_spans_exported_total") == 0
    assert m.total("toolgate_tool_calls_total") == 4
    # Logged once, not once per span.
    assert gw.stderr().count("cannot export") == 1, gw.stderr()


def test_bad_otlp_settings_stop_the_gateway_at_start(toolgate_bin, tmp_path, monkeypatch):
    from conftest import run_toolgate

    (tmp_path / "policy.json").write_text('{"version": "1", "default": "deny"}', encoding="utf-8")
    for args, env, message in [
        (["--otlp-endpoint", "collector:4318"], {}, "must start with http:// or https://"),
        (["--otlp-endpoint", "http://c:4318", "--otlp-protocol", "grpc"], {}, "OTLP over gRPC is not supported"),
        ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "protobuf"},
         "OTEL_EXPORTER_OTLP_PROTOCOL: unknown OTLP protocol \"protobuf\""),
    ]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        done = run_toolgate(toolgate_bin, "run", "--policy", str(tmp_path / "policy.json"), "--state", "memory",
                            *args, "--", "true", cwd=tmp_path)
        for name in env:
            monkeypatch.delenv(name)
        assert done.returncode != 0, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
