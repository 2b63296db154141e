"""The `toolgate` command line: validate, check, schema, and `run` refusing a
bad policy. Diagnostics are compared to the exact `file:line:col: path: message`
form of notes/cli-contract.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import pytest
from conftest import PROBE_SERVER, SEED_POLICIES, run_toolgate

MINITE_JSON = """{
  "version": "1",
  "default": "deny",
  "tools": {
    "send_text": {
      "limits": [
        { "window": "minite", "counter": "send_text_rate", "max": 30, "scope": "grant" }
      ]
    }
  }
}
"""
MINITE_MESSAGE = 'unknown window "minite" (expected second, minute, hour, day or a number of seconds)'

MINITE_YAML = """version: "1"
default: deny
tools:
  send_text:
    limits:
      - counter: send_text_rate
        window: minite
        max: 30
        scope: grant
"""

SEED_YAML = """version: "1"
default: deny
tools:
  send_text:
    limits:
      - counter: send_text_rate
        window: minute
        max: 30
        scope: grant
"""

SUMMARY = re.compile(r"^(?P<file>\S+): valid policy \(version 1, default (allow|deny), \d+ tool rules?, \d+ counters?\)$")

CHECK_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "send_text": {"limits": [{"counter": "send_text_rate", "window": "minute", "max": 30, "scope": "grant"}]},
        "delete_all": {"action": "deny", "reason": "never from an agent"},
        "transfer": {
            "conditions": [{"path": "args.amount", "op": "lte", "value": 1000}],
            "limits": [{"counter": "spend", "window": "day", "max": 100, "cost": "args.amount", "scope": "grant"}],
        },
        "send_message": {"action": "require_approval", "reason": "a human reads it first"},
    },
}


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- validate ------------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(SEED_POLICIES))
def test_validate_accepts_every_seed_policy(toolgate_bin, tmp_path, seed):
    (tmp_path / "policy.json").write_text(SEED_POLICIES[seed])
    done = run_toolgate(toolgate_bin, "validate", "policy.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert len(out) == 1 and SUMMARY.match(out[0]) and SUMMARY.match(out[0])["file"] == "policy.json", out
    assert "default deny, 1 tool rule" in out[0] and "1 counter" in out[0], out


def test_validate_prints_one_line_per_file(toolgate_bin, tmp_path):
    (tmp_path / "a.json").write_text(SEED_POLICIES["send_text"])
    (tmp_path / "b.yaml").write_text(SEED_YAML)
    (tmp_path / "c.yml").write_text('version: "1"\ndefault: allow\ntools: {}\n')
    done = run_toolgate(toolgate_bin, "validate", "a.json", "b.yaml", "c.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert [SUMMARY.match(line)["file"] for line in out] == ["a.json", "b.yaml", "c.yml"], out
    assert "default allow" in out[2]


def test_validate_unknown_window_exact_diagnostic(toolgate_bin, tmp_path):
    (tmp_path / "policy.json").write_text(MINITE_JSON)
    done = run_toolgate(toolgate_bin, "validate", "policy.json", cwd=tmp_path)
    assert done.returncode == 1
    assert lines(done.stderr) == [f"policy.json:7:21: tools.send_text.limits[0].window: {MINITE_MESSAGE}"]


def test_validate_yaml_exact_diagnostic(toolgate_bin, tmp_path):
    (tmp_path / "policy.yaml").write_text(MINITE_YAML)
    done = run_toolgate(toolgate_bin, "validate", "policy.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert lines(done.stderr) == [f"policy.yaml:7:17: tools.send_text.limits[0].window: {MINITE_MESSAGE}"]


def test_validate_reports_every_problem(toolgate_bin, tmp_path):
    (tmp_path / "policy.json").write_text(
        "{\n"
        '  "version": "1",\n'
        '  "default": "maybe",\n'
        '  "tools": {\n'
        '    "send_text": {\n'
        '      "limits": [\n'
        '        { "window": "minite", "counter": "send_text_rate", "max": 30, "scope": "grant" }\n'
        "      ],\n"
        '      "limts": []\n'
        "    }\n"
        "  }\n"
        "}\n"
    )
    done = run_toolgate(toolgate_bin, "validate", "policy.json", cwd=tmp_path)
    assert done.returncode == 1
    problems = lines(done.stderr)
    assert len(problems) == 3, problems
    assert any(re.match(r'^policy\.json:3:14: default: .*"maybe"', p) for p in problems), problems
    assert f"policy.json:7:21: tools.send_text.limits[0].window: {MINITE_MESSAGE}" in problems
    assert any(re.match(r"^policy\.json:9:7: tools\.send_text(\.limts)?: unknown field.*limts", p) for p in problems), problems


def test_validate_unknown_top_level_field(toolgate_bin, tmp_path):
    policy = json.loads(SEED_POLICIES["send_text"])
    policy["defualt"] = "allow"
    (tmp_path / "policy.json").write_text(json.dumps(policy, indent=2))
    done = run_toolgate(toolgate_bin, "validate", "policy.json", cwd=tmp_path)
    assert done.returncode == 1
    assert len(lines(done.stderr)) == 1 and re.match(r"^policy\.json:\d+:3: (defualt: )?unknown field.*defualt", done.stderr), done.stderr


def test_validate_duplicate_key_json(toolgate_bin, tmp_path):
    (tmp_path / "policy.json").write_text('{\n  "version": "1",\n  "default": "deny",\n  "default": "allow",\n  "tools": {}\n}\n')
    done = run_toolgate(toolgate_bin, "validate", "policy.json", cwd=tmp_path)
    assert done.returncode == 1
    assert len(lines(done.stderr)) == 1 and re.match(r'^policy\.json:4:3: (default: )?duplicate key.*"default"', done.stderr), done.stderr


def test_validate_duplicate_key_yaml(toolgate_bin, tmp_path):
    (tmp_path / "policy.yaml").write_text('version: "1"\ndefault: deny\ntools:\n  echo: {}\n  echo:\n    action: deny\n')
    done = run_toolgate(toolgate_bin, "validate", "policy.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert len(lines(done.stderr)) == 1 and re.match(r'^policy\.yaml:5:3: (tools(\.echo)?: )?duplicate key.*"echo"', done.stderr), done.stderr


def test_validate_mixed_files_reports_only_the_bad_one(toolgate_bin, tmp_path):
    (tmp_path / "good.json").write_text(SEED_POLICIES["send_text"])
    (tmp_path / "policy.json").write_text(MINITE_JSON)
    done = run_toolgate(toolgate_bin, "validate", "good.json", "policy.json", cwd=tmp_path)
    assert done.returncode == 1
    assert lines(done.stderr) == [f"policy.json:7:21: tools.send_text.limits[0].window: {MINITE_MESSAGE}"]


def test_run_refuses_to_start_with_an_invalid_policy(toolgate_bin, tmp_path):
    (tmp_path / "policy.json").write_text(MINITE_JSON)
    pidfile = tmp_path / "probe.pid"
    done = subprocess.run(
        [str(toolgate_bin), "run", "--policy", "policy.json", "--", sys.executable, str(PROBE_SERVER)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=15,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "PROBE_PIDFILE": str(pidfile)},
    )
    assert done.returncode == 1
    assert f"policy.json:7:21: tools.send_text.limits[0].window: {MINITE_MESSAGE}" in done.stderr
    assert done.stdout == ""
    assert not pidfile.exists(), "the server must not be started"


# --- check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "decision", "rule"),
    [
        ("send_text", {"to": "a", "body": "b"}, "allow", 'tools["send_text"]'),
        ("echo", {"text": "x"}, "unknown", "default"),
        ("delete_all", {"confirm": True}, "deny", 'tools["delete_all"]'),
        ("transfer", {"amount": 50, "currency": "EUR", "to": "bob"}, "allow", 'tools["transfer"]'),
        ("transfer", {"amount": 5000, "currency": "EUR", "to": "bob"}, "deny", 'tools["transfer"]'),
        ("transfer", {"amount": 500, "currency": "EUR", "to": "bob"}, "rate_limited", 'tools["transfer"]'),
        ("send_message", {"to": "a", "body": "b"}, "approval_required", 'tools["send_message"]'),
    ],
)
def test_check_decisions(toolgate_bin, write_policy, tool, args, decision, rule):
    policy = write_policy(CHECK_POLICY)
    done = run_toolgate(toolgate_bin, "check", str(policy), "--tool", tool, "--args", json.dumps(args), "--expect", decision)
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = lines(done.stdout)
    assert f"decision: {decision}" in out
    assert f"rule: {rule}" in out
    if decision in ("deny", "approval_required", "rate_limited"):
        assert any(line.startswith("reason: ") for line in out), out
    if tool == "delete_all":
        assert "reason: never from an agent" in out


def test_check_expect_mismatch_exits_1(toolgate_bin, write_policy):
    policy = write_policy(CHECK_POLICY)
    done = run_toolgate(toolgate_bin, "check", str(policy), "--tool", "delete_all", "--expect", "allow")
    assert done.returncode == 1
    assert "decision: deny" in lines(done.stdout)
    without_expect = run_toolgate(toolgate_bin, "check", str(policy), "--tool", "delete_all")
    assert without_expect.returncode == 0


def test_check_with_grant(toolgate_bin, write_policy):
    policy = write_policy(CHECK_POLICY)
    done = run_toolgate(
        toolgate_bin, "check", str(policy), "--tool", "send_text", "--args", '{"to":"a","body":"b"}', "--grant", "ci-bot"
    )
    assert done.returncode == 0 and "decision: allow" in lines(done.stdout), (done.stdout, done.stderr)


def test_check_invalid_policy(toolgate_bin, tmp_path):
    (tmp_path / "policy.json").write_text(MINITE_JSON)
    done = run_toolgate(toolgate_bin, "check", "policy.json", "--tool", "send_text", cwd=tmp_path)
    assert done.returncode == 1
    assert f"policy.json:7:21: tools.send_text.limits[0].window: {MINITE_MESSAGE}" in lines(done.stderr)


# --- schema --------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_schema(toolgate_bin):
    done = run_toolgate(toolgate_bin, "schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def test_schema_is_draft_2020_12(policy_schema):
    assert "2020-12" in policy_schema.get("$schema", ""), policy_schema.get("$schema")


@pytest.mark.parametrize("seed", sorted(SEED_POLICIES))
def test_schema_accepts_seed_policies(policy_schema, seed):
    jsonschema.validate(json.loads(SEED_POLICIES[seed]), policy_schema, cls=jsonschema.Draft202012Validator)


def test_schema_accepts_the_policies_the_suite_uses(policy_schema):
    jsonschema.validate(CHECK_POLICY, policy_schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    "bad",
    [
        {"version": "1", "default": "deny", "tools": {}, "defualt": "allow"},
        {"version": "1", "default": "maybe", "tools": {}},
        {"version": "1", "default": "deny", "tools": {"x": {"limts": []}}},
        json.loads(MINITE_JSON),
    ],
    ids=["unknown-top-level-field", "bad-default", "unknown-rule-field", "unknown-window"],
)
def test_schema_rejects_what_validate_rejects(policy_schema, bad, toolgate_bin, tmp_path):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, policy_schema, cls=jsonschema.Draft202012Validator)
    (tmp_path / "bad.json").write_text(json.dumps(bad, indent=2))
    assert run_toolgate(toolgate_bin, "validate", "bad.json", cwd=tmp_path).returncode == 1


def test_grant_new_prints_a_token_whose_hash_is_the_config_line(toolgate_bin):
    import hashlib

    out = run_toolgate(toolgate_bin, "grant", "new", "alice")
    assert out.returncode == 0, out.stderr
    token = out.stdout.splitlines()[0].strip()
    assert token.startswith("tg_") and len(token) > 40
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert f'token_sha256: "{digest}"' in out.stdout
    assert "alice:" in out.stdout
    again = run_toolgate(toolgate_bin, "grant", "new", "alice")
    assert again.stdout.splitlines()[0] != token, "every token is fresh"
    hashed = subprocess.run([str(toolgate_bin), "grant", "hash"], input=token + "\n", capture_output=True, text=True, timeout=30)
    assert hashed.returncode == 0 and digest in hashed.stdout


def test_serve_refuses_a_non_loopback_address_without_grants(toolgate_bin, write_policy, tmp_path):
    policy = write_policy({"version": "1", "default": "allow"})
    pidfile = tmp_path / "probe.pid"
    out = subprocess.run(
        [str(toolgate_bin), "serve", "--policy", str(policy), "--listen", "0.0.0.0:0", "--", sys.executable, str(PROBE_SERVER)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env={**__import__("os").environ, "PROBE_PIDFILE": str(pidfile)},
    )
    assert out.returncode == 1
    assert "non-loopback listen address needs grants" in out.stderr
    assert not pidfile.exists(), "the server must not be started"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"listen: 0.0.0.0:0\npolicy: {policy}\nservers:\n  probe:\n    command: {sys.executable}\n    args: [{PROBE_SERVER}]\n")
    out = run_toolgate(toolgate_bin, "serve", "--config", str(config))
    assert out.returncode == 1
    assert "non-loopback listen address needs grants" in out.stderr


def test_serve_refuses_an_invalid_config_with_its_diagnostics(toolgate_bin, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("servers:\n  probe:\n    command: x\n    url: http://127.0.0.1:1/mcp\n    colour: blue\n")
    out = run_toolgate(toolgate_bin, "serve", "--config", str(config))
    assert out.returncode == 1
    assert re.search(r"gateway.yaml:\d+:\d+: servers\.probe", out.stderr), out.stderr
    assert "colour" in out.stderr
    assert "refusing to start with an invalid config" in out.stderr
