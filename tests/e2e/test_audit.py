"""`toolgate audit`: the audit trail kept in the data directory's SQLite store
(`<data-dir>/audit.db`), listed, filtered, verified and pruned through the real
binary.

The store is filled with `toolgate audit import` from an audit file that a real
`toolgate run --audit` session wrote, or from records built here; tampering is
done as an intruder would do it, with Python's sqlite3 on the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import LEGACY

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {},
        "delete_all": {"action": "deny", "reason": "never from an agent"},
        "transfer": {"conditions": [{"path": "args.amount", "op": "lte", "value": 100}]},
    },
}

GENESIS = "0" * 64


def toolgate(toolgate_bin: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the binary with no data-dir variables but those given, so no test reads or writes a real home."""
    base = {k: v for k, v in os.environ.items() if k not in ("TOOLGATE_DATA_DIR", "XDG_DATA_HOME", "HOME")}
    return subprocess.run(
        [str(toolgate_bin), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
    )


def audit(toolgate_bin: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`toolgate audit [SUBCOMMAND] ARGS... --data-dir DATA_DIR`."""
    return toolgate(toolgate_bin, "audit", *args, "--data-dir", str(data_dir))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def record(moment: datetime, grant: str, tool: str, decision: str, server: str | None = None) -> dict[str, Any]:
    """A record shaped like the gateway's."""
    r: dict[str, Any] = {"time": rfc3339(moment), "grant": grant, "session": "s1"}
    if server is not None:
        r["server"] = server
    r.update(
        {
            "tool": tool,
            "decision": decision,
            "rule": f"tools.{tool}",
            "counters": [],
            "decision_us": 4.25,
            "outcome": "ok" if decision == "allow" else "refused",
            "args_sha256": hashlib.sha256(b"{}").hexdigest(),
        }
    )
    return r


def import_records(toolgate_bin: Path, data_dir: Path, records: list[dict[str, Any]], tmp_path: Path) -> None:
    source = tmp_path / f"import-{len(list(tmp_path.glob('import-*')))}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    done = audit(toolgate_bin, data_dir, "import", str(source))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"imported {len(records)} records into "), done.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def tamper(data_dir: Path, sql: str) -> None:
    db = sqlite3.connect(data_dir / "audit.db")
    try:
        db.executescript(sql)
        db.commit()
    finally:
        db.close()


@pytest.fixture
def session_audit(raw_gateway) -> tuple[Path, list[dict[str, Any]]]:
    """The audit file of a real `toolgate run` session (allowed, denied and unknown calls), and its records."""
    raw = raw_gateway(POLICY, mode=LEGACY)
    raw.call("echo", {"text": "one"})
    raw.call("delete_all", {"confirm": True})
    raw.call("transfer", {"amount": 500, "currency": "EUR", "to": "x"})
    raw.call("echo", {"text": "two"})
    raw.call("not_a_tool", {})
    raw.gw.wait_audit(5)
    raw.close_stdin()
    raw.wait()
    return raw.gw.audit_path, raw.gw.audit()


@pytest.fixture
def five(toolgate_bin: Path, tmp_path: Path) -> Path:
    """A data dir holding five records built here, a second apart, ending now."""
    data_dir = tmp_path / "data"
    now = datetime.now(timezone.utc)
    rows = [
        ("alice", "read_file", "allow", "fs"),
        ("bob", "write_file", "deny", "fs"),
        ("alice", "send", "rate_limited", "mail"),
        ("alice", "read_file", "allow", None),
        ("bob", "send", "allow", "mail"),
    ]
    records = [record(now - timedelta(seconds=5 - i), *row) for i, row in enumerate(rows)]
    import_records(toolgate_bin, data_dir, records, tmp_path)
    return data_dir


def test_audit_lists_a_real_session_as_a_table(toolgate_bin, tmp_path, session_audit):
    audit_file, session_audit = session_audit
    data_dir = tmp_path / "data"
    done = audit(toolgate_bin, data_dir, "import", str(audit_file))
    assert done.returncode == 0, done.stderr
    done = audit(toolgate_bin, data_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "GRANT", "SERVER", "TOOL", "DECISION", "OUTCOME", "REASON"]
    assert len(lines) == 1 + len(session_audit)
    for seq, (line, rec) in enumerate(zip(lines[1:], session_audit), start=1):
        cells = line.split()
        assert cells[:7] == [str(seq), rec["time"], rec["grant"], "-", rec["tool"], rec["decision"], rec["outcome"]], line
        if "reason" in rec:
            assert line.endswith(rec["reason"]), line
    assert [r["decision"] for r in session_audit][:2] == ["allow", "deny"]


def test_audit_json_prints_the_records_as_the_audit_file_has_them(toolgate_bin, tmp_path, session_audit):
    audit_file, session_audit = session_audit
    data_dir = tmp_path / "data"
    assert audit(toolgate_bin, data_dir, "import", str(audit_file)).returncode == 0
    done = audit(toolgate_bin, data_dir, "--json")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == session_audit
    # Key order too: a line reads as the gateway wrote it.
    first_line = audit_file.read_text().splitlines()[0]
    assert list(json.loads(done.stdout.splitlines()[0])) == list(json.loads(first_line))


FILTERS = [
    ([], [1, 2, 3, 4, 5]),
    (["--grant", "alice"], [1, 3, 4]),
    (["--grant", "carol"], []),
    (["--server", "mail"], [3, 5]),
    (["--tool", "read_file"], [1, 4]),
    (["--decision", "allow"], [1, 4, 5]),
    (["--decision", "rate_limited"], [3]),
    (["--limit", "2"], [4, 5]),
    (["--grant", "alice", "--limit", "1"], [4]),
    (["--grant", "bob", "--decision", "allow", "--server", "mail"], [5]),
    (["--since", "1h"], [1, 2, 3, 4, 5]),
    (["--since", "2999-01-01T00:00:00Z"], []),
    (["--since", "2000-01-01T00:00:00+02:00"], [1, 2, 3, 4, 5]),
]


@pytest.mark.parametrize("args,seqs", FILTERS, ids=[" ".join(a) or "none" for a, _ in FILTERS])
def test_audit_filters(toolgate_bin, five, args, seqs):
    done = audit(toolgate_bin, five, *args, "--json")
    assert done.returncode == 0, done.stderr
    all_records = json_lines(audit(toolgate_bin, five, "--json").stdout)
    assert json_lines(done.stdout) == [all_records[s - 1] for s in seqs]
    table = audit(toolgate_bin, five, *args)
    assert [int(line.split()[0]) for line in table.stdout.splitlines()[1:]] == seqs


@pytest.mark.parametrize(
    "args,message",
    [
        (["--since", "yesterday"], "neither a duration"),
        (["--decision", "maybe"], "invalid value 'maybe'"),
        (["--limit", "many"], "invalid value 'many' for '--limit"),
    ],
)
def test_audit_refuses_bad_arguments(toolgate_bin, five, args, message):
    done = audit(toolgate_bin, five, *args)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_verify_an_intact_trail(toolgate_bin, five):
    done = audit(toolgate_bin, five, "verify")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "audit trail intact: 5 records"


TAMPERING = [
    # A row keeps its strings as ids in `strings`: the decision of record 2 made 'allow'.
    ("edited record", "UPDATE records SET decision = (SELECT id FROM strings WHERE text = 'allow') WHERE seq = 2", 2),
    # Always a different hash (32 bytes).
    ("edited hash", "UPDATE records SET hash = CASE WHEN hash = zeroblob(32) THEN randomblob(32) ELSE zeroblob(32) END WHERE seq = 3", 3),
    ("deleted row", "DELETE FROM records WHERE seq = 3", 3),
    ("deleted last row", "DELETE FROM records WHERE seq = 5", 5),
    ("edited column", "INSERT INTO strings (text) VALUES ('carol'); UPDATE records SET grant = (SELECT id FROM strings WHERE text = 'carol') WHERE seq = 4", 4),
    ("two edits", "INSERT INTO strings (text) VALUES ('mallory'); UPDATE records SET grant = (SELECT id FROM strings WHERE text = 'mallory') WHERE seq IN (3, 4)", 3),
]


@pytest.mark.parametrize("name,sql,seq", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_verify_names_the_first_record_tampered_with(toolgate_bin, five, name, sql, seq):
    assert audit(toolgate_bin, five, "verify").returncode == 0
    tamper(five, sql)
    done = audit(toolgate_bin, five, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"broken at record {seq}:" in done.stdout, done.stdout
    # A broken chain is not pruned: that would hide the evidence.
    prune = audit(toolgate_bin, five, "prune", "--older-than", "0s")
    assert prune.returncode == 1
    assert f"broken at record {seq}" in prune.stderr, prune.stderr


def test_a_rewritten_record_with_a_fresh_hash_breaks_the_next_link(toolgate_bin, five):
    forged = json_lines(audit(toolgate_bin, five, "--json").stdout)[1]
    db = sqlite3.connect(five / "audit.db")
    (prev,) = db.execute("SELECT lower(hex(prev_hash)) FROM records WHERE seq = 2").fetchone()
    forged["decision"] = "allow"
    canonical = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fresh = hashlib.sha256((prev + canonical).encode()).digest()
    db.execute(
        "UPDATE records SET decision = (SELECT id FROM strings WHERE text = 'allow'), hash = ? WHERE seq = 2", (fresh,)
    )
    db.commit()
    db.close()
    done = audit(toolgate_bin, five, "verify")
    assert done.returncode == 1
    assert "broken at record 3: its prev_hash is not the hash of record 2" in done.stdout, done.stdout


def test_the_chain_is_sha256_of_the_previous_hash_and_the_canonical_record(toolgate_bin, five):
    """The format an outside verifier relies on, recomputed here from the file
    (the hashes, 32 bytes each) and the records as `toolgate audit --json`
    prints them."""
    records = json_lines(audit(toolgate_bin, five, "--json").stdout)
    db = sqlite3.connect(five / "audit.db")
    rows = db.execute("SELECT seq, lower(hex(prev_hash)), lower(hex(hash)) FROM records ORDER BY seq").fetchall()
    head = db.execute("SELECT head_seq, head_hash FROM chain").fetchone()
    db.close()
    prev = GENESIS
    assert len(records) == len(rows)
    for (seq, prev_hash, digest), rec in zip(rows, records):
        canonical = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert prev_hash == prev, seq
        assert digest == hashlib.sha256((prev + canonical).encode()).hexdigest(), seq
        prev = digest
    assert head == (5, prev)


def test_prune_deletes_old_records_and_the_chain_still_verifies(toolgate_bin, tmp_path):
    data_dir = tmp_path / "data"
    now = datetime.now(timezone.utc)
    old = [record(now - timedelta(days=40 - i), "a", "echo", "allow") for i in range(3)]
    recent = [record(now - timedelta(days=2 - i), "a", "echo", "deny") for i in range(2)]
    import_records(toolgate_bin, data_dir, old + recent, tmp_path)
    done = audit(toolgate_bin, data_dir, "prune", "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 3 records older than "), done.stdout
    verify = audit(toolgate_bin, data_dir, "verify")
    assert verify.returncode == 0, verify.stdout
    assert verify.stdout.splitlines()[0] == "audit trail intact: 2 records"
    listed = audit(toolgate_bin, data_dir)
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["4", "5"]
    # Appending goes on after a prune, and deleting the first record left is caught.
    import_records(toolgate_bin, data_dir, [record(now, "a", "echo", "allow")], tmp_path)
    assert audit(toolgate_bin, data_dir, "verify").stdout.splitlines()[0] == "audit trail intact: 3 records"
    tamper(data_dir, "DELETE FROM records WHERE seq = 4")
    broken = audit(toolgate_bin, data_dir, "verify")
    assert broken.returncode == 1
    assert "broken at record 4:" in broken.stdout, broken.stdout


def test_no_store_is_an_error_and_is_not_created(toolgate_bin, tmp_path):
    missing = tmp_path / "nowhere"
    for args in ([], ["verify"], ["prune", "--older-than", "1d"]):
        done = audit(toolgate_bin, missing, *args)
        assert done.returncode == 1, args
        assert f"no audit store at {missing / 'audit.db'}" in done.stderr, done.stderr
    assert not missing.exists()


@pytest.mark.parametrize(
    "env,where",
    [
        ({"TOOLGATE_DATA_DIR": "{tmp}/tg", "XDG_DATA_HOME": "{tmp}/xdg", "HOME": "{tmp}/home"}, "tg"),
        ({"XDG_DATA_HOME": "{tmp}/xdg", "HOME": "{tmp}/home"}, "xdg/toolgate"),
        ({"HOME": "{tmp}/home"}, "home/.local/share/toolgate"),
    ],
    ids=["TOOLGATE_DATA_DIR", "XDG_DATA_HOME", "HOME"],
)
def test_the_default_data_dir(toolgate_bin, tmp_path, env, where):
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    import_records(toolgate_bin, tmp_path / where, [record(datetime.now(timezone.utc), "g", "echo", "allow")], tmp_path)
    done = toolgate(toolgate_bin, "audit", "verify", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "audit trail intact: 1 records"
