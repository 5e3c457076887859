"""``--json FILE`` of check, fuzz and replay: real runs, validated against the schema
printed in docs/json-results.md (so the page and the writer cannot drift), and the
mistakes around the flag: one line, exit status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_cli_mistakes import interrupt_after_progress

from invariants.configuration import DEFAULT_CONFIG, config_to_json

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "json-results.md"


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m hvdr`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip


def schema() -> dict[str, Any]:
    """The JSON Schema block under the page's "## Schema" heading."""
    found = re.search(r"^## Schema$.*?```json\n(.*?)```", PAGE.read_text("utf-8"),
                      re.MULTILINE | re.DOTALL)  # fmt: skip
    assert found, "docs/json-results.md has no ```json block under ## Schema"
    loaded: dict[str, Any] = json.loads(found.group(1))
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


def errors(document: object) -> list[str]:
    """What the schema finds wrong with ``document`` (nothing: [])."""
    validator = jsonschema.Draft202012Validator(schema())
    return [error.message for error in validator.iter_errors(document)]


def run_json(tmp_path: Path, *arguments: str) -> tuple[int, dict[str, Any]]:
    """Run a command with --json; its exit status and the document it wrote."""
    out = tmp_path / "result.json"
    result = hvdr(*arguments, "--json", str(out))
    assert result.returncode in (0, 1, 3), result.stdout + result.stderr
    document: dict[str, Any] = json.loads(out.read_text("utf-8"))
    assert errors(document) == []
    assert document["exit_status"] == result.returncode
    return result.returncode, document


def outputs(tmp_path: Path) -> list[str]:
    return [
        "--trace-out",
        str(tmp_path / "ce.jsonl"),
        "--svg",
        str(tmp_path / "ce.svg"),
    ]


def test_check_results_are_valid_and_agree_with_the_run(tmp_path: Path) -> None:
    """A clean check: outcome ok, coverage summing to the transitions, a diameter."""
    status, document = run_json(tmp_path, "check", *outputs(tmp_path))
    body = document["check"]
    assert (status, document["outcome"], document["counterexample"]) == (0, "ok", None)
    assert sum(body["action_coverage"].values()) == body["transitions"]
    assert body["diameter"] == body["depth"] == 18
    assert body["never_fired"] == ["run_plan", "plan_step", "cancel_plan"]


def test_check_results_of_a_mutant_hold_the_counterexample(tmp_path: Path) -> None:
    """A failed check: the property with its fields, every step with the state."""
    status, document = run_json(
        tmp_path,
        "check",
        "--mutant",
        "commit_keeps_recovery_points",
        *outputs(tmp_path),
    )
    failure = document["counterexample"]
    assert (status, document["outcome"]) == (1, "failed")
    assert failure["property"]["reads"] == ["vm.chosen_point", "vm.phase", "vm.points"]
    last = failure["steps"][-1]
    assert last["violated"] == ["commit_discards_every_recovery_point"]
    assert last["state"]["vm0.phase"] == "committed"
    assert last["state"]["vm0.points"] != []
    assert document["mutant"] == "commit_keeps_recovery_points"


def test_an_incomplete_check_has_no_diameter(tmp_path: Path) -> None:
    """A check stopped by its state limit: outcome incomplete, exit 3, no diameter."""
    status, document = run_json(
        tmp_path, "check", "--max-states", "100", *outputs(tmp_path)
    )
    assert (status, document["outcome"]) == (3, "incomplete")
    assert document["check"]["diameter"] is None
    assert document["check"]["stopped_by"] == "state limit"


def test_fuzz_results_are_valid(tmp_path: Path) -> None:
    """A short fuzzing run, and one on a mutant with its shrunk counterexample."""
    status, document = run_json(tmp_path, "fuzz", "--examples", "10")
    assert (status, document["fuzz"]["examples"]) == (0, 10)
    status, document = run_json(
        tmp_path, "fuzz", "--examples", "50", "--mutant",
        "commit_keeps_recovery_points", *outputs(tmp_path),
    )  # fmt: skip
    assert status == 1
    assert document["counterexample"]["property"]["name"] == (
        "commit_discards_every_recovery_point"
    )


def test_replay_results_hold_every_step(tmp_path: Path) -> None:
    """A replay: one row per step and the initial state, the state in each."""
    trace = tmp_path / "t.jsonl"
    steps = [{"action": "enable_protection", "vm": 0}, {"action": "write", "vm": 0}]
    lines = [{"config": config_to_json(DEFAULT_CONFIG)}, *steps]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    status, document = run_json(tmp_path, "replay", str(trace))
    rows = document["replay"]["steps"]
    assert (status, document["replay"]["step_count"], len(rows)) == (0, 2, 3)
    assert rows[2]["changed"] == ["vm0.other"]
    assert rows[2]["state"]["vm0.other"] == {
        "behind": 1, "divergent": 0, "from_test": False
    }  # fmt: skip


def test_the_schema_rejects_what_the_writer_must_not_write(tmp_path: Path) -> None:
    """The schema is strict: a missing key, an unknown field or a wrong status fail."""
    _, document = run_json(tmp_path, "check", *outputs(tmp_path))
    missing = {key: value for key, value in document.items() if key != "check"}
    assert errors(missing)
    unknown = {**document, "check": {**document["check"], "speed": 1}}
    assert errors(unknown)
    wrong = {**document, "exit_status": 1}
    assert errors(wrong)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("fuzz", "--engine", "--json", "x.json"), "--json: not with --engine"),
        (
            (
                "replay",
                "tests/traces/unplanned_failover.jsonl",
                "--engine",
                "--json",
                "x.json",
            ),
            "--json: not with --engine",
        ),
        (("check", "--mutate", "--json", "x.json"), "--json: not with --list-mutants"),
        (
            ("check", "--json", "/nonexistent/r.json"),
            "--json '/nonexistent/r.json': its folder '/nonexistent' does not exist",
        ),
        (
            ("fuzz", "--svg", "/nonexistent/ce.svg", "--json", "r.json"),
            "--svg '/nonexistent/ce.svg': its folder '/nonexistent' does not exist",
        ),
        (
            ("check", "--dot", "/nonexistent/s.dot", "--json", "r.json"),
            "--dot '/nonexistent/s.dot': its folder '/nonexistent' does not exist",
        ),
    ],
    ids=[
        "fuzz-engine",
        "replay-engine",
        "check-mutate",
        "missing-folder",
        "fuzz-svg-missing-folder",
        "check-dot-missing-folder",
    ],
)
def test_output_mistakes_are_one_line_and_status_2(
    arguments: tuple[str, ...], words: str
) -> None:
    """An output (--json, --svg, --dot) that cannot be written, or --json where it
    has no meaning: one line, exit 2, refused before any work (no r.json)."""
    result = hvdr(*arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert not (ROOT / "r.json").exists()


def test_an_interrupted_check_writes_its_results(tmp_path: Path) -> None:
    """Ctrl-C (a real SIGINT): the document says interrupted, with status 130."""
    out = tmp_path / "result.json"
    status, text, _ = interrupt_after_progress(
        "check", "--vms", "3", "--json", str(out)
    )
    assert status == 130, text
    document = json.loads(out.read_text("utf-8"))
    assert errors(document) == []
    assert (document["outcome"], document["exit_status"]) == ("interrupted", 130)
    assert document["check"]["stopped_by"] == "interrupted"
    assert document["check"]["diameter"] is None
