"""Every example policy the project shows a reader must be valid: the files in
examples/ (*.json, *.yaml, *.yml) and every ```json / ```yaml fenced block in
README.md and docs/*.md. Each is checked twice: by `toolgate validate`, and
against the JSON Schema printed by `toolgate schema`.

Convention for writers: a fenced block that is not a policy (a JSON-RPC
message, an audit line) is fenced with another info string, e.g. ```jsonc,
```jsonl or ```text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml
from conftest import REPO, run_toolgate

FENCE = re.compile(r"^```(json|yaml|yml)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def collect_examples(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(where it comes from, file to validate, format) for every example policy."""
    found: list[tuple[str, Path, str]] = []
    for path in sorted((REPO / "examples").glob("*")):
        if path.suffix in (".json", ".yaml", ".yml"):
            found.append((str(path.relative_to(REPO)), path, "json" if path.suffix == ".json" else "yaml"))
    docs = sorted((REPO / "docs").glob("*.md"))
    if (REPO / "README.md").exists():
        docs.insert(0, REPO / "README.md")
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            fmt = "json" if match.group(1) == "json" else "yaml"
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
