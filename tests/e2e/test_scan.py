"""`toolgate scan`: the real binary against real MCP servers
(@modelcontextprotocol/server-everything, server-filesystem, server-memory).

The category assertions (write_file is Write, delete is not Read, ...) rest on
the classifier in crates/toolgate-scan; the shape assertions (every tool
exactly once, the table, the JSON schema, exit codes) on `toolgate scan` itself.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import EVERYTHING_SERVER, REPO, run_toolgate

NODE_MODULES = REPO / "tests" / "node" / "node_modules" / "@modelcontextprotocol"
FILESYSTEM_SERVER = NODE_MODULES / "server-filesystem" / "dist" / "index.js"
MEMORY_SERVER = NODE_MODULES / "server-memory" / "dist" / "index.js"

CATEGORIES = ["Read", "Write", "Execute", "Destructive", "Financial", "Other"]
RISKS = ["low", "medium", "high", "critical"]

# The JSON output: one array of objects with exactly these fields.
SCAN_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["server", "tool", "category", "risk", "evidence"],
        "properties": {
            "server": {"type": "string", "minLength": 1},
            "tool": {"type": "string", "minLength": 1},
            "category": {"enum": CATEGORIES},
            "risk": {"enum": RISKS},
            "evidence": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["source", "detail"],
                    "properties": {
                        "source": {"enum": ["annotation", "name", "description", "schema"]},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    },
}


def everything_command() -> list[str]:
    return ["node", str(EVERYTHING_SERVER), "stdio"]


def filesystem_command(root: Path) -> list[str]:
    return ["node", str(FILESYSTEM_SERVER), str(root)]


def memory_command() -> list[str]:
    return ["node", str(MEMORY_SERVER)]


def memory_env(directory: Path) -> dict[str, str]:
    return {"MEMORY_FILE_PATH": str(directory / "memory.jsonl")}


def scan(toolgate_bin: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolgate_bin), "scan", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def scan_json(toolgate_bin: Path, *args: str, **kwargs: Any) -> list[dict[str, Any]]:
    done = scan(toolgate_bin, "--format", "json", *args, **kwargs)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    jsonschema.validate(rows, SCAN_SCHEMA)
    return rows


def listed_tools(command: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The names in the server's own tools/list (every page), asked directly over stdio."""
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdin and proc.stdout

    def request(id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}) + "\n")
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            assert line, "the server closed its stdout"
            message = json.loads(line)
            if message.get("id") == id and "method" not in message:
                assert "result" in message, message
                return message["result"]

    try:
        # The capabilities toolgate declares upstream: server-everything lists some tools only to such clients.
        capabilities = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
        request(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": capabilities,
                                  "clientInfo": {"name": "test-scan", "version": "0"}})
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        names: list[str] = []
        params: dict[str, Any] = {}
        for id in range(2, 100):
            result = request(id, "tools/list", params)
            names += [tool["name"] for tool in result["tools"]]
            if not result.get("nextCursor"):
                return names
            params = {"cursor": result["nextCursor"]}
        raise AssertionError("tools/list never ended")
    finally:
        proc.kill()
        proc.wait()


def table_rows(stdout: str) -> tuple[list[str], list[list[str]], str]:
    """(header, rows split into their first four columns plus evidence, summary line)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header, *body, summary = lines
    rows = [line.split(None, 4) for line in body if not line.startswith(" ")]
    return header.split(), rows, summary


def by_tool(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {row["tool"]: row for row in rows}
    assert len(found) == len(rows), "a tool appears twice"
    return found


# -- shape -------------------------------------------------------------------


def test_table_lists_every_tool_of_server_everything_once(toolgate_bin):
    expected = listed_tools(everything_command())
    assert len(expected) >= 10, expected

    done = scan(toolgate_bin, "--", *everything_command())
    assert done.returncode == 0, done.stderr
    header, rows, summary = table_rows(done.stdout)
    assert header == ["SERVER", "TOOL", "CATEGORY", "RISK", "EVIDENCE"]
    assert sorted(row[1] for row in rows) == sorted(expected)
    for row in rows:
        assert len(row) == 5, row
        server, _, category, risk, _ = row
        assert server == "server"
        assert category in CATEGORIES and risk in RISKS, row
    # Sorted by risk (critical first), then by name.
    keys = [(-RISKS.index(row[3]), row[1]) for row in rows]
    assert keys == sorted(keys)
    assert summary.startswith(f"{len(expected)} tools: "), summary
    counts = {c: sum(1 for row in rows if row[2] == c) for c in CATEGORIES}
    for category, n in counts.items():
        assert (f"{n} {category}" in summary) == (n > 0), summary
    # stderr is not a terminal here: no progress line.
    assert "scanning" not in done.stderr


def test_json_lists_every_tool_of_server_everything_once(toolgate_bin):
    expected = listed_tools(everything_command())
    rows = scan_json(toolgate_bin, "--", *everything_command())
    assert sorted(row["tool"] for row in rows) == sorted(expected)
    assert {row["server"] for row in rows} == {"server"}
    assert [list(row) for row in rows] == [["server", "tool", "category", "risk", "evidence"]] * len(rows)
    keys = [(-RISKS.index(row["risk"]), row["tool"]) for row in rows]
    assert keys == sorted(keys)


def test_upstream_url(toolgate_bin, tmp_path):
    """--upstream: server-everything over Streamable HTTP lists the same tools as over stdio."""
    from servekit import free_port

    port = free_port()
    log = open(tmp_path / "server.stderr", "wb")
    server = subprocess.Popen(["node", str(EVERYTHING_SERVER), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while b"listening" not in (tmp_path / "server.stderr").read_bytes():
            assert time.monotonic() < deadline and server.poll() is None, "the HTTP server did not start"
            time.sleep(0.05)
        rows = scan_json(toolgate_bin, "--upstream", f"http://127.0.0.1:{port}/mcp")
        assert {row["server"] for row in rows} == {"server"}
        assert sorted(row["tool"] for row in rows) == sorted(listed_tools(everything_command()))
    finally:
        server.kill()
        server.wait()
        log.close()


def test_filesystem_and_memory_every_tool_once(toolgate_bin, tmp_path):
    fs_expected = listed_tools(filesystem_command(tmp_path))
    rows = scan_json(toolgate_bin, "--", *filesystem_command(tmp_path))
    assert sorted(row["tool"] for row in rows) == sorted(fs_expected)
    assert "write_file" in fs_expected and "read_text_file" in fs_expected

    mem_expected = listed_tools(memory_command(), memory_env(tmp_path))
    rows = scan_json(toolgate_bin, "--", *memory_command(), env=memory_env(tmp_path))
    assert sorted(row["tool"] for row in rows) == sorted(mem_expected)
    assert "delete_entities" in mem_expected and "read_graph" in mem_expected


# -- categories (the classifier in crates/toolgate-scan) ------------------------


def test_filesystem_categories(toolgate_bin, tmp_path):
    tools = by_tool(scan_json(toolgate_bin, "--", *filesystem_command(tmp_path)))
    assert tools["write_file"]["category"] == "Write"
    assert tools["edit_file"]["category"] == "Write"
    assert tools["create_directory"]["category"] == "Write"
    for read in ["read_text_file", "read_multiple_files", "list_directory", "directory_tree",
                 "search_files", "get_file_info", "list_allowed_directories"]:
        assert tools[read]["category"] == "Read", tools[read]
        assert tools[read]["risk"] == "low", tools[read]
    assert tools["move_file"]["category"] != "Read"
    assert RISKS.index(tools["write_file"]["risk"]) > RISKS.index(tools["read_text_file"]["risk"])
    # Every judgement that is not the fallback says why.
    for row in tools.values():
        if row["category"] != "Other":
            assert row["evidence"], row


def test_memory_categories(toolgate_bin, tmp_path):
    tools = by_tool(scan_json(toolgate_bin, "--", *memory_command(), env=memory_env(tmp_path)))
    for read in ["read_graph", "search_nodes", "open_nodes"]:
        assert tools[read]["category"] == "Read", tools[read]
    for write in ["create_entities", "create_relations", "add_observations"]:
        assert tools[write]["category"] == "Write", tools[write]
    for delete in ["delete_entities", "delete_observations", "delete_relations"]:
        assert tools[delete]["category"] not in ("Read", "Other"), tools[delete]
        assert tools[delete]["category"] == "Destructive", tools[delete]
        assert tools[delete]["risk"] in ("high", "critical"), tools[delete]
        assert any("delete" in e["detail"] for e in tools[delete]["evidence"]), tools[delete]


# -- --config, several servers -------------------------------------------------


def write_config(directory: Path, servers: dict[str, dict[str, Any]], **extra: Any) -> Path:
    (directory / "placeholder.json").write_text('{"version": "1", "default": "deny"}', encoding="utf-8")
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump({"policy": "placeholder.json", **extra, "servers": servers}), encoding="utf-8")
    return path


def two_servers(directory: Path) -> dict[str, dict[str, Any]]:
    root = directory / "files"
    root.mkdir(exist_ok=True)
    return {
        "files": {"command": "node", "args": [str(FILESYSTEM_SERVER), str(root)]},
        "memory": {"command": "node", "args": [str(MEMORY_SERVER)], "env": memory_env(directory)},
    }


def test_config_scans_every_server(toolgate_bin, tmp_path):
    config = write_config(tmp_path, two_servers(tmp_path))
    rows = scan_json(toolgate_bin, "--config", str(config))
    servers = [row["server"] for row in rows]
    # Sorted by server; each server's tools together.
    assert servers == sorted(servers) and set(servers) == {"files", "memory"}
    names = {(row["server"], row["tool"]) for row in rows}
    assert len(names) == len(rows)
    assert ("files", "write_file") in names and ("memory", "read_graph") in names

    done = scan(toolgate_bin, "--config", str(config))
    assert done.returncode == 0, done.stderr
    _, table, summary = table_rows(done.stdout)
    assert {row[0] for row in table} == {"files", "memory"}
    assert summary.startswith(f"{len(rows)} tools")


def test_config_write_policy_names_tools_by_gateway_name(toolgate_bin, tmp_path):
    config = write_config(tmp_path, two_servers(tmp_path), separator=".")
    out = tmp_path / "recommended.json"
    done = scan(toolgate_bin, "--config", str(config), "--write-policy", str(out))
    assert done.returncode == 0, done.stderr
    policy = json.loads(out.read_text(encoding="utf-8"))
    assert policy["version"] == "1" and policy["default"] == "deny"
    assert f"wrote {out}: {len(policy['tools'])} rules" in done.stderr
    assert policy["tools"], "the recommended policy names no tool"
    for name in policy["tools"]:
        assert name.startswith(("files.", "memory.")), name
    assert "files.read_text_file" in policy["tools"]
    assert "memory.read_graph" in policy["tools"]
    checked = run_toolgate(toolgate_bin, "validate", str(out))
    assert checked.returncode == 0, checked.stderr


def test_server_that_exits_at_once_is_named_and_the_others_still_listed(toolgate_bin, tmp_path):
    servers = {
        "broken": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]},
        **two_servers(tmp_path),
    }
    config = write_config(tmp_path, servers)
    started = time.monotonic()
    done = scan(toolgate_bin, "--config", str(config), "--format", "json")
    assert time.monotonic() - started < 20, "a dead server should fail at once, not wait for its restarts"
    assert done.returncode == 1
    assert 'server "broken" failed' in done.stderr, done.stderr
    rows = json.loads(done.stdout)
    jsonschema.validate(rows, SCAN_SCHEMA)
    assert {row["server"] for row in rows} == {"files", "memory"}

    done = scan(toolgate_bin, "--config", str(config))
    assert done.returncode == 1
    assert "broken" in done.stderr
    _, table, _ = table_rows(done.stdout)
    assert {row[0] for row in table} == {"files", "memory"}


def test_single_server_that_exits_at_once(toolgate_bin, tmp_path):
    done = scan(toolgate_bin, "--", sys.executable, "-c", "import sys; sys.exit(3)")
    assert done.returncode == 1
    assert 'server "server" failed' in done.stderr, done.stderr

    done = scan(toolgate_bin, "--", str(tmp_path / "no-such-command"))
    assert done.returncode == 1
    assert 'server "server" failed' in done.stderr and "no-such-command" in done.stderr, done.stderr


# -- the recommended policy ------------------------------------------------------


def test_write_policy_yaml_is_valid(toolgate_bin, tmp_path):
    out = tmp_path / "recommended.yaml"
    done = scan(toolgate_bin, "--write-policy", str(out), "--", *memory_command(), env=memory_env(tmp_path))
    assert done.returncode == 0, done.stderr
    policy = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert policy["version"] == "1" and policy["default"] == "deny"
    assert f"wrote {out}: {len(policy.get('tools') or {})} rules" in done.stderr
    checked = run_toolgate(toolgate_bin, "validate", str(out))
    assert checked.returncode == 0, checked.stderr
    # Tools are named by their own names without --config.
    assert "read_graph" in policy["tools"]


def test_strict_hides_destructive_tools(toolgate_bin, tmp_path):
    rows = scan_json(toolgate_bin, "--", *memory_command(), env=memory_env(tmp_path))
    destructive = [row["tool"] for row in rows if row["category"] == "Destructive"]
    assert destructive, rows

    relaxed = tmp_path / "relaxed.json"
    strict = tmp_path / "strict.json"
    for out, extra in [(relaxed, []), (strict, ["--strict"])]:
        done = scan(toolgate_bin, "--write-policy", str(out), *extra, "--", *memory_command(), env=memory_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert run_toolgate(toolgate_bin, "validate", str(out)).returncode == 0
    relaxed_tools = json.loads(relaxed.read_text())["tools"]
    strict_tools = json.loads(strict.read_text())["tools"]
    for tool in destructive:
        assert relaxed_tools[tool]["action"] == "require_approval", relaxed_tools[tool]
        assert tool not in strict_tools or strict_tools[tool].get("action") == "hide", strict_tools.get(tool)


def test_recommended_policy_in_front_of_the_server(toolgate_bin, tmp_path, raw_gateway):
    root = tmp_path / "files"
    root.mkdir()
    (root / "hello.txt").write_text("hello from the scan test\n", encoding="utf-8")
    out = tmp_path / "recommended.json"
    done = scan(toolgate_bin, "--write-policy", str(out), "--", *filesystem_command(root))
    assert done.returncode == 0, done.stderr

    raw = raw_gateway(out.read_text(encoding="utf-8"), server_command=filesystem_command(root))
    listed = {tool["name"] for tool in raw.request("tools/list")["result"]["tools"]}
    assert "read_text_file" in listed

    answer = raw.call("read_text_file", {"path": str(root / "hello.txt")})
    assert "result" in answer, answer
    assert not answer["result"].get("isError"), answer
    assert "hello from the scan test" in json.dumps(answer["result"])

    answer = raw.call("no_such_tool", {})
    assert answer.get("error", {}).get("message") == "Unknown tool: no_such_tool", answer


# -- arguments and the terminal --------------------------------------------------


def test_bad_arguments(toolgate_bin, tmp_path):
    done = scan(toolgate_bin)
    assert done.returncode != 0
    assert "--upstream URL or --config FILE" in done.stderr

    done = scan(toolgate_bin, "--write-policy", str(tmp_path / "policy.txt"), "--", *memory_command())
    assert done.returncode != 0
    assert "unknown policy format" in done.stderr
    assert not (tmp_path / "policy.txt").exists()

    bad = tmp_path / "gateway.yaml"
    bad.write_text("servers:\n  a:\n    command: x\n", encoding="utf-8")
    done = scan(toolgate_bin, "--config", str(bad))
    assert done.returncode == 1
    assert "no policy" in done.stderr


def test_progress_only_on_a_terminal(toolgate_bin, tmp_path):
    """With stderr on a terminal, a progress line is drawn (and cleared); stdout stays clean."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(toolgate_bin), "scan", "--format", "json", "--", *everything_command()],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    stdout, _ = proc.communicate(timeout=30)
    os.close(main)
    assert proc.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "scanning server\u2026" in text, text
    assert " tools" in text
    jsonschema.validate(json.loads(stdout), SCAN_SCHEMA)


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_no_progress_when_stderr_is_not_a_terminal(toolgate_bin, fmt):
    done = scan(toolgate_bin, "--format", fmt, "--", *everything_command())
    assert done.returncode == 0, done.stderr
    assert "scanning" not in done.stderr and "\x1b[" not in done.stderr
