"""Every example policy the project shows a reader must be valid: the files in
examples/ (*.json, *.yaml, *.yml) and every ```json / ```yaml fenced block in
README.md and docs/*.md. Each is checked twice: by `toolgate validate`, and
against the JSON Schema printed by `toolgate schema`.

Gateway configs are examples too: every file in examples/ and every fenced
block (```yaml, ```toml, ```json) in docs/config.md whose top level has
`servers` (and no `version`), or which is TOML, must pass `toolgate validate`
as a config. Each is validated in a directory holding the policy files of
examples/ (the policies configs name, such as gateway.policy.yaml), with the
environment variables the examples reference set.

A Prometheus scrape config (a top-level `scrape_configs`, in
docs/observability.md) is neither: test_observability.py scrapes the
gateway with it.

Convention for writers: a fenced block that is neither a policy nor a config
(a JSON-RPC message, an audit line) is fenced with another info string, e.g.
```jsonc, ```jsonl or ```text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml
from conftest import REPO, run_toolgate

FENCE = re.compile(r"^```(json|yaml|yml)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CONFIG_FENCE = re.compile(r"^```(json|yaml|yml|toml)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

# Variables the example configs reference as ${VAR}; the session key variable
# is cleared so a developer's own value cannot change the outcome.
CONFIG_ENV = {"MY_TOKEN": "example-token", "REMOTE_TOKEN": "example-remote-token"}
CONFIG_ENV_CLEARED = ("TOOLGATE_SESSION_KEY", "MY_GATEWAY_SESSION_KEY")


def is_config(text: str, fmt: str) -> bool:
    """The same rule as toolgate_config::is_config_document (plus TOML)."""
    if fmt == "toml":
        return True
    try:
        document = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and "servers" in document and "version" not in document


def is_scrape_config(text: str) -> bool:
    """A Prometheus scrape config: checked by test_observability.py, which scrapes with it."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(document, dict) and "scrape_configs" in document


def collect_configs(tmp_path: Path) -> list[tuple[str, Path]]:
    """(where it comes from, file to validate) for every example config, each
    written into a directory that also holds the example policies."""
    workdir = tmp_path / "configs"
    workdir.mkdir()
    found: list[tuple[str, Path]] = []
    for path in sorted((REPO / "examples").glob("*")):
        fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}.get(path.suffix)
        if fmt is None:
            continue
        if is_config(path.read_text(encoding="utf-8"), fmt):
            found.append((str(path.relative_to(REPO)), path))
        else:
            shutil.copy(path, workdir / path.name)
    for doc in [REPO / "docs" / "config.md", REPO / "docs" / "observability.md"]:
        text = doc.read_text(encoding="utf-8")
        for match in CONFIG_FENCE.finditer(text):
            fmt = {"yml": "yaml"}.get(match.group(1), match.group(1))
            if fmt != "toml" and is_scrape_config(match.group(2)):
                continue  # a Prometheus scrape config: see test_observability.py
            line = text.count("\n", 0, match.start()) + 1
            out = workdir / f"{doc.stem}-{line}.{fmt}"
            out.write_text(match.group(2), encoding="utf-8")
            found.append((f"{doc.relative_to(REPO)}:{line}", out))
    return found


def collect_examples(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(where it comes from, file to validate, format) for every example policy."""
    found: list[tuple[str, Path, str]] = []
    for path in sorted((REPO / "examples").glob("*")):
        if path.suffix in (".json", ".yaml", ".yml"):
            if is_config(path.read_text(encoding="utf-8"), "json" if path.suffix == ".json" else "yaml"):
                continue  # a gateway config: see test_every_example_config_is_valid
            found.append((str(path.relative_to(REPO)), path, "json" if path.suffix == ".json" else "yaml"))
    docs = sorted((REPO / "docs").glob("*.md"))
    if (REPO / "README.md").exists():
        docs.insert(0, REPO / "README.md")
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            fmt = "json" if match.group(1) == "json" else "yaml"
            if is_config(match.group(2), fmt):
                continue  # a gateway config: see test_every_example_config_is_valid
            if is_scrape_config(match.group(2)):
                continue  # a Prometheus scrape config: see test_observability.py
            where = f"{doc.relative_to(REPO)}:{line}"
            out = tmp_path / f"{doc.stem}-{line}.{fmt}"
            out.write_text(match.group(2), encoding="utf-8")
            found.append((where, out, fmt))
    return found


def test_every_example_policy_is_valid(toolgate_bin, tmp_path):
    examples = collect_examples(tmp_path)
    assert examples, "no example policies found in examples/, README.md or docs/*.md"

    done = run_toolgate(toolgate_bin, "schema")
    assert done.returncode == 0, done.stderr
    validator = jsonschema.Draft202012Validator(json.loads(done.stdout))

    failures = []
    for where, path, fmt in examples:
        checked = run_toolgate(toolgate_bin, "validate", str(path))
        if checked.returncode != 0:
            failures.append(f"{where}: toolgate validate failed:\n{checked.stderr}")
        text = path.read_text(encoding="utf-8")
        try:
            document = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            failures.append(f"{where}: not {fmt}: {e}")
            continue
        for error in validator.iter_errors(document):
            failures.append(f"{where}: schema: {'/'.join(map(str, error.absolute_path))}: {error.message}")
    assert not failures, "\n".join(failures)


def test_every_example_config_is_valid(toolgate_bin, tmp_path):
    configs = collect_configs(tmp_path)
    where_all = [where for where, _ in configs]
    assert "examples/gateway.yaml" in where_all, where_all
    assert any(w.startswith("docs/config.md:") for w in where_all), where_all
    assert any(w.startswith("docs/observability.md:") for w in where_all), where_all

    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV_CLEARED}
    env.update(CONFIG_ENV)
    failures = []
    for where, path in configs:
        checked = subprocess.run(
            [str(toolgate_bin), "validate", path.name],
            cwd=path.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if checked.returncode != 0 or ": valid config (" not in checked.stdout:
            failures.append(f"{where}: toolgate validate failed:\n{checked.stdout}{checked.stderr}")
    assert not failures, "\n".join(failures)


SH_FENCE = re.compile(r"^```(sh|bash|text)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def test_every_toolgate_command_line_in_the_docs_uses_real_flags(toolgate_bin):
    """Each `toolgate SUB ...` line in a ```sh/```text block of README.md and
    docs/*.md names a real subcommand, and every --flag it uses is one that
    subcommand's --help lists."""
    checked = 0
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for _, block in SH_FENCE.findall(doc.read_text(encoding="utf-8")):
            for line in block.splitlines():
                command = line.split("#", 1)[0].strip()
                if not command.startswith("toolgate "):
                    continue
                words = command.split()
                sub = [w for w in words[1:3] if not w.startswith("-")]
                # `toolgate audit verify`, `toolgate grant new NAME`: the deepest subcommand that has help.
                path = []
                for word in sub:
                    probe = run_toolgate(toolgate_bin, *path, word, "--help")
                    if probe.returncode != 0:
                        break
                    path.append(word)
                assert path, f"{doc.name}: `{command}` names no toolgate subcommand"
                help_text = run_toolgate(toolgate_bin, *path, "--help").stdout
                before_args = words[: words.index("--")] if "--" in words else words
                for flag in [w.split("=")[0] for w in before_args if w.startswith("--")]:
                    assert flag in help_text, f"{doc.name}: `{command}` uses {flag}, which `toolgate {' '.join(path)} --help` does not list"
                checked += 1
    assert checked >= 5, f"only {checked} command lines found"
