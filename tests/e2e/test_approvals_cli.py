"""`toolgate approvals list|show|approve|deny`: the CLI a person uses to
decide the calls that `require_approval` rules hold, against the same state
the gateways use (--data-dir for the embedded store, --state redis://...).

Other tests approve through the CLI with `approve_via_cli` / `deny_via_cli`
and read requests with `list_via_cli` / `show_via_cli` (below).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import LEGACY, run_toolgate
from servekit import free_port

# ---- helpers for other tests --------------------------------------------------


def approve_via_cli(
    toolgate_bin: Path,
    approval_id: str,
    *state_args: str,
    reason: str | None = None,
    by: str | None = None,
    deny: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`toolgate approvals approve ID [--reason R] [--by B] STATE_ARGS...` (or `deny` with deny=True).

    state_args name the gateway's state, e.g. ("--data-dir", str(gw.dir / "data")) for a `toolgate run`
    started by the `gateway` fixture, or ("--state", redis_url, "--state-prefix", prefix). With check=True
    (the default) a failure fails the test with the CLI's output."""
    args = ["approvals", "deny" if deny else "approve", approval_id, *state_args]
    if reason is not None:
        args += ["--reason", reason]
    if by is not None:
        args += ["--by", by]
    done = run_toolgate(toolgate_bin, *args)
    if check:
        assert done.returncode == 0, f"toolgate {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def deny_via_cli(toolgate_bin: Path, approval_id: str, *state_args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`toolgate approvals deny ID ...`: approve_via_cli with deny=True."""
    return approve_via_cli(toolgate_bin, approval_id, *state_args, deny=True, **kwargs)


def list_via_cli(toolgate_bin: Path, *state_args: str, all: bool = False) -> list[dict[str, Any]]:
    """The requests `toolgate approvals list --json` prints (pending only unless all=True), newest first.
    Each (the admin API's fields): id, status, expired, grant, server, tool, arguments, reason, rule, key,
    created_ms, expires_ms, and once decided `decision` ({by, via, at_ms, reason}), once used `used_at_ms`."""
    args = ["approvals", "list", "--json", *state_args, *(["--all"] if all else [])]
    done = run_toolgate(toolgate_bin, *args)
    assert done.returncode == 0, f"toolgate {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


def show_via_cli(toolgate_bin: Path, approval_id: str, *state_args: str) -> dict[str, Any]:
    """One request as `toolgate approvals show ID --json` prints it (the same fields as list_via_cli)."""
    done = run_toolgate(toolgate_bin, "approvals", "show", approval_id, "--json", *state_args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---- what the CLI says without a gateway ---------------------------------------


def test_list_on_an_empty_data_dir_shows_nothing_and_creates_nothing(toolgate_bin, tmp_path):
    data = tmp_path / "data"
    done = run_toolgate(toolgate_bin, "approvals", "list", "--data-dir", str(data))
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "no pending approval requests", "")
    done = run_toolgate(toolgate_bin, "approvals", "list", "--all", "--data-dir", str(data))
    assert (done.returncode, done.stdout.strip()) == (0, "no approval requests")
    assert list_via_cli(toolgate_bin, "--data-dir", str(data)) == []
    assert list_via_cli(toolgate_bin, "--data-dir", str(data), all=True) == []
    assert not data.exists(), "looking must not create the data directory"


@pytest.mark.parametrize("command", ["approve", "deny", "show"])
def test_an_unknown_id_exits_1_naming_it(toolgate_bin, tmp_path, command):
    data = tmp_path / "data"
    data.mkdir()
    done = run_toolgate(toolgate_bin, "approvals", command, "apr_0123456789abcdef", "--data-dir", str(data))
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert 'no approval request "apr_0123456789abcdef"' in done.stderr, done.stderr


def test_memory_state_has_nothing_the_cli_can_approve(toolgate_bin):
    for command in (["approve", "apr_0123456789abcdef"], ["deny", "apr_0123456789abcdef"], ["list"]):
        done = run_toolgate(toolgate_bin, "approvals", *command, "--state", "memory")
        assert done.returncode == 1, done
        assert "--state memory" in done.stderr and "cannot reach them" in done.stderr, done.stderr


def test_an_unreachable_redis_exits_1_as_unavailable(toolgate_bin):
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = run_toolgate(toolgate_bin, "approvals", "approve", "apr_0123456789abcdef", "--state", url, timeout=10)
    assert done.returncode == 1, done
    assert "approval store unavailable" in done.stderr and "unreachable" in done.stderr, done.stderr


def test_decide_needs_an_id(toolgate_bin):
    done = run_toolgate(toolgate_bin, "approvals", "approve")
    assert done.returncode == 2 and "<ID>" in done.stderr, done.stderr


# ---- a call held by a real gateway ------------------------------------------------

HELD_TRANSFERS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "transfer": {
            "action": "require_approval",
            "reason": "money leaves the account",
            "approval": {"via": ["client", "admin"], "hold": "1s", "expires": "10m"},
        },
    },
}


@pytest.mark.anyio
async def test_a_call_held_by_run_is_approved_through_the_cli_and_runs_once(gateway):
    gw = gateway(HELD_TRANSFERS)
    state = ("--data-dir", str(gw.dir / "data"))  # the gateway fixture's TOOLGATE_DATA_DIR
    arguments = {"to": "bob", "amount": 5}
    async with gw.client(LEGACY) as client:  # no elicitation: someone else decides
        pending = await client.call_tool("transfer", arguments)
        facts = pending.structured_content["toolgate"]
        assert facts["decision"] == "approval_pending", facts
        approval_id = facts["approval_id"]

        [listed] = list_via_cli(gw.bin, *state)
        assert listed["id"] == approval_id and listed["status"] == "pending"
        assert (listed["tool"], listed["arguments"], listed["reason"]) == ("transfer", arguments, "money leaves the account")
        table = run_toolgate(gw.bin, "approvals", "list", *state).stdout
        assert approval_id in table and "transfer" in table and '"amount":5' in table, table
        shown = run_toolgate(gw.bin, "approvals", "show", approval_id, *state).stdout
        assert "status:      pending" in shown and '    "amount": 5' in shown, shown

        done = approve_via_cli(gw.bin, approval_id, *state, reason="known payee", by="carol")
        assert f"approved {approval_id}" in done.stdout
        decided = show_via_cli(gw.bin, approval_id, *state)
        assert decided["status"] == "approved"
        assert decided["decision"]["by"] == "carol" and decided["decision"]["via"] == "cli"
        assert decided["decision"]["reason"] == "known payee" and decided["reason"] == "money leaves the account"
        assert decided["expired"] is False
        assert list_via_cli(gw.bin, *state) == [], "no longer pending"

        again = deny_via_cli(gw.bin, approval_id, *state, check=False)
        assert again.returncode == 1 and f"approval request {approval_id} was already approved (by carol via cli" in again.stderr

        ran = await client.call_tool("transfer", arguments)
        assert not ran.is_error, ran
        assert show_via_cli(gw.bin, approval_id, *state)["status"] == "used"
        late = approve_via_cli(gw.bin, approval_id, *state, check=False)
        assert late.returncode == 1 and "was already used" in late.stderr, late.stderr
    assert gw.received() == [{"tool": "transfer", "arguments": arguments}], "the approved call ran exactly once"
