"""The mistakes people make with ``hvdr check``, ``fuzz`` and ``replay``, each run
through the real command in a fresh interpreter: its message and its exit status
(0 held, 1 failed, 2 bad usage or input, 3 incomplete, 130 interrupted)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hvdr.cli import main
from invariants import trace as traces
from invariants.configuration import DEFAULT_CONFIG, config_to_json
from invariants.conformance import CONFIG as ENGINE_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m hvdr`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The usage error: status 2, one line on stderr, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def states(result: subprocess.CompletedProcess[str]) -> int:
    """The number of states a ``hvdr check`` run reports."""
    found = re.search(r"│ states\s+│ ([\d,]+)", result.stdout)
    assert found, result.stdout
    return int(found.group(1).replace(",", ""))


def write_trace(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    return path


PROTECT = [
    {"action": "enable_protection", "vm": 0},
    {"action": "copy_disk", "vm": 0},
    {"action": "copy_disk", "vm": 0},
    {"action": "complete_initial_replication", "vm": 0},
]


# -- 1. nothing passes that should fail --------------------------------------------


def test_replay_fails_on_a_misspelt_action(tmp_path: Path) -> None:
    """A misspelt action is a refused step: exit 1, the model's words, no traceback."""
    path = write_trace(tmp_path / "t.jsonl", [{"action": "enabel_protection", "vm": 0}])
    result = hvdr("replay", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "unknown action 'enabel_protection'" in text
    assert "does not mark it as an expected refusal" in text
    assert "all properties held" not in text
    assert "Traceback" not in result.stderr


def test_replay_fails_on_a_step_in_the_wrong_phase(tmp_path: Path) -> None:
    """Commit before any failover is refused by the model: exit 1, not 'held'."""
    path = write_trace(tmp_path / "t.jsonl", [*PROTECT, {"action": "commit", "vm": 0}])
    result = hvdr("replay", str(path))
    assert result.returncode == 1, result.stdout
    text = " ".join(result.stdout.split())
    assert "5 commit(vm=0) not as the trace says" in text
    assert "1 of 5 step(s) did not do what the trace says" in text
    assert "all properties held" not in text


def test_replay_passes_a_refusal_the_trace_expects(tmp_path: Path) -> None:
    """The same step marked "expect": "refused" is a checked refusal: exit 0."""
    commit = {"action": "commit", "vm": 0, "expect": "refused"}
    path = write_trace(tmp_path / "t.jsonl", [*PROTECT, commit])
    result = hvdr("replay", str(path))
    assert result.returncode == 0, result.stdout
    text = " ".join(result.stdout.split())
    assert "5 commit(vm=0) refused, as expected" in text
    assert "all properties held" in text


def test_replay_fails_when_an_expected_refusal_is_taken(tmp_path: Path) -> None:
    """A step marked as a refusal that the model takes contradicts the trace: 1."""
    marked = {**PROTECT[0], "expect": "refused"}
    path = write_trace(tmp_path / "t.jsonl", [marked])
    result = hvdr("replay", str(path))
    assert result.returncode == 1, result.stdout
    assert "the model took the step" in " ".join(result.stdout.split())


def test_replay_engine_fails_on_an_unmarked_refusal_and_passes_a_marked_one(
    tmp_path: Path,
) -> None:
    """--engine holds a trace to its marks too, before any engine starts; marked,
    the refusal is checked on the engine (it must refuse as well)."""
    header: dict[str, object] = {"config": config_to_json(ENGINE_CONFIG)}
    unmarked = write_trace(
        tmp_path / "u.jsonl", [header, *PROTECT, {"action": "commit", "vm": 0}]
    )
    result = hvdr("replay", "--engine", str(unmarked))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "replayed on the engine" not in result.stdout
    marked = write_trace(
        tmp_path / "m.jsonl",
        [header, *PROTECT, {"action": "commit", "vm": 0, "expect": "refused"}],
    )
    result = hvdr("replay", "--engine", str(marked))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the engine followed the model at every step" in result.stdout


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "t.jsonl: the trace has no steps; a trace is an optional header line"),
        ("\n\n", "t.jsonl: the trace has no steps"),
        ('{"config": {"vm_count": 1}}\n', "t.jsonl: the trace has no steps"),
        (
            '{"action": "enable_protection", "vm": 0}\n{"config": {}}\n',
            (
                't.jsonl, line 2: a header line ({"config": ...}) is allowed only as '
                "the first line of a trace; this one follows 1 step(s)"
            ),
        ),
        (
            '{"action": "enable_protection", "vm": 0, "expect": "maybe"}\n',
            (
                "t.jsonl, line 1: expect='maybe': the only expectation a step may "
                "state is 'expect': 'refused'"
            ),
        ),
        (
            '{"action": "enable_protection", "vm": 0\n',
            "t.jsonl, line 1: not valid JSON",
        ),
        (
            '{"config": {"vm_cout": 2}}\n{"action": "write", "vm": 0}\n',
            "t.jsonl, line 1: config: key 'vm_cout' is unknown; known keys: vm_count",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "header-only",
        "header-in-the-middle",
        "bad-expect",
        "bad-json",
        "bad-header-key",
    ],
)
def test_replay_refuses_a_file_that_is_not_a_trace(
    tmp_path: Path, text: str, words: str
) -> None:
    """Not a trace: one line naming the file, the line and what is allowed; exit 2."""
    path = tmp_path / "t.jsonl"
    path.write_text(text, "utf-8")
    line = one_line_error(hvdr("replay", str(path)))
    assert line.startswith("hvdr replay: error: ")
    assert words in line


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (
            ("fuzz", "--examples", "0"),
            ("argument --examples: 0 is not allowed; give a whole number >= 1"),
        ),
        (("fuzz", "--examples", "-3"), "argument --examples: -3 is not allowed"),
        (("fuzz", "--steps", "0"), "argument --steps: 0 is not allowed"),
        (
            ("fuzz", "--timeout", "0"),
            (
                "argument --timeout: '0' is not allowed; give a "
                "number of seconds above 0"
            ),
        ),
        (
            ("check", "--max-states", "-5"),
            (
                "argument --max-states: '-5' is not "
                "allowed; give a whole number >= 1, or 'unlimited'"
            ),
        ),
        (("check", "--max-memory", "0"), "argument --max-memory: '0' is not allowed"),
        (
            ("check", "--vms", "0"),
            ("argument --vms: 0 is not allowed; give a whole number >= 1"),
        ),
        (("check", "--budget", "x"), "argument --budget: 'x' is not a whole number"),
        (
            ("check", "--faults", "site_crsh"),
            ("--faults: ['site_crsh'] unknown; choose 'all', 'none' or from"),
        ),
        (
            ("replay", "/nonexistent/t.jsonl"),
            ("/nonexistent/t.jsonl: cannot read the trace: No such file or directory"),
        ),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, tuple) else "",
)
def test_bad_arguments_are_one_line_and_status_2(
    arguments: tuple[str, ...], words: str
) -> None:
    """A bad count or limit: one line naming the flag and what it takes; exit 2."""
    line = one_line_error(hvdr(*arguments))
    assert words in line


# -- 2. one set of defaults ---------------------------------------------------------


def test_a_config_file_that_leaves_keys_out_gets_the_flags_defaults(
    tmp_path: Path,
) -> None:
    """{"vm_count": 1} explores what `hvdr check --vms 1` does (3,604 states), not
    what ModelConfig's own defaults would (58,008)."""
    config = tmp_path / "model.json"
    config.write_text('{"vm_count": 1}\n', "utf-8")
    from_file = hvdr("check", "--config", str(config))
    from_flag = hvdr("check", "--vms", "1")
    assert (from_file.returncode, from_flag.returncode) == (0, 0)
    assert states(from_file) == states(from_flag) == 3_604


def test_a_trace_header_that_leaves_keys_out_gets_the_same_defaults() -> None:
    """A header's missing keys take hvdr check's defaults, as a header left out."""
    trace = traces.loads('{"config": {"vm_count": 1}}\n{"action": "write", "vm": 0}')
    assert trace.config == DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            '{\n  "vm_count": 1,\n  "vm_cout": 2\n}\n',
            (
                "model.json, line 3: key 'vm_cout' is unknown; known keys: vm_count, "
                "disks_per_vm"
            ),
        ),
        (
            '{\n  "vm_count": 1,\n  "fault_budget": "2"\n}\n',
            (
                'model.json, line 3: fault_budget="2": input should be a valid '
                "integer; fault_budget takes an int >= 0"
            ),
        ),
        (
            '{\n  "vm_count": -1\n}\n',
            (
                "model.json, line 2: vm_count=-1: input should be greater than or "
                "equal to 1; vm_count takes an int >= 1"
            ),
        ),
        (
            '{\n  "faults": [\n    "site_crash",\n    "site_crsh"\n  ]\n}\n',
            "model.json, line 4: faults[1]=\"site_crsh\": input should be 'site_crash'",
        ),
        (
            '{\n  "vm_count": 1,\n}\n',
            "model.json, line 3, column 1: not valid JSON: Expecting property name",
        ),
        (
            '{"vm_count": 1,\n "plans": [{"name": "p", "groups": [[0, 1]]}]}\n',
            (
                "model.json, line 2: plans: recovery plan 'p' names VM index 1; valid "
                "indices are 0..0"
            ),
        ),
        ("[1, 2]\n", "model.json, line 1: a configuration must be a JSON object"),
    ],
    ids=[
        "unknown-key",
        "string-for-int",
        "below-minimum",
        "unknown-fault",
        "bad-json",
        "plan-names-no-vm",
        "not-an-object",
    ],
)
def test_a_bad_config_file_names_the_file_and_line(
    tmp_path: Path, text: str, words: str
) -> None:
    """Every configuration error names the file, the line and what is allowed."""
    config = tmp_path / "model.json"
    config.write_text(text, "utf-8")
    line = one_line_error(hvdr("check", "--config", str(config)))
    assert f"hvdr check: error: --config {tmp_path}/" in line
    assert words in line


def test_check_stops_at_the_state_limit_with_partial_statistics() -> None:
    """A state limit stops the run cleanly: statistics, the flag that lifts it, 3."""
    result = hvdr("check", "--vms", "2", "--max-states", "500")
    assert result.returncode == 3, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "│ complete │ no (state limit;" in text
    assert "search incomplete: stopped at the state limit of 500 states " in text
    assert "(--max-states)" in text
    assert "lift it with --max-states unlimited" in text
    assert 500 <= states(result) < 1_000


def test_check_stops_at_the_memory_limit() -> None:
    """A memory limit below what the process holds stops the run at once: 3."""
    result = hvdr("check", "--max-memory", "1")
    assert result.returncode == 3, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "stopped at the memory limit of 1 MiB (--max-memory)" in text
    assert "lift it with --max-memory unlimited" in text


def test_check_help_names_the_default_limits() -> None:
    """The limits are on by default, and --help says so."""
    text = " ".join(hvdr("check", "--help").stdout.split())
    assert "(default 10,000,000; 'unlimited' lifts it)" in text
    assert "(default 4,096; 'unlimited' lifts it)" in text


# -- 3. exit codes that scripts can use ---------------------------------------------


def test_help_documents_the_exit_statuses() -> None:
    """`hvdr --help` lists every exit status."""
    result = hvdr("--help")
    assert result.returncode == 0
    for line in ("0    every property held", "1    a property failed",
                 "2    bad usage or input", "3    search incomplete",
                 "130  interrupted"):  # fmt: skip
        assert line in result.stdout


def test_fuzz_cut_short_by_its_timeout_is_incomplete() -> None:
    """--timeout that ends the run before its examples: 3, naming --timeout."""
    result = hvdr("fuzz", "--examples", "100", "--timeout", "0.001")
    assert result.returncode == 3, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "incomplete: --timeout 0.001 s ended the run after 50 of 100 examples" in (
        text
    )


def interrupt_after_progress(*arguments: str) -> tuple[int, str, list[str]]:
    """Run hvdr (stdout not a terminal), wait for its first plain progress line,
    send it a real SIGINT; the status, the rest of stdout and the progress lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hvdr", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    progress = []
    for line in process.stdout:
        if line.startswith("progress: "):
            progress.append(line)
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    return process.returncode, out, progress


def test_ctrl_c_stops_check_with_statistics_and_where_it_was() -> None:
    """A long check prints plain progress lines off a terminal; Ctrl-C stops it with
    the statistics so far and the trace to where it was; exit 130."""
    status, out, progress = interrupt_after_progress("check", "--vms", "3")
    assert progress, out
    assert re.match(
        r"progress: [\d,]+ states, [\d,]+ queued, depth \d+, [\d,]+ states/s, "
        r"[\d,]+ MiB$",
        progress[0],
    )
    assert status == 130, out
    text = " ".join(out.split())
    assert "│ complete │ no (interrupted;" in text
    assert re.search(r"interrupted at depth \d+ with [\d,]+ states queued", text)
    assert "the state it was expanding is reached by" in text
    assert "enable_protection(vm=0) →" in text


def test_ctrl_c_stops_fuzz_with_its_figures() -> None:
    """Ctrl-C during a long fuzzing run ends it after the batch it is in: 130."""
    status, out, progress = interrupt_after_progress("fuzz", "--examples", "100000")
    assert progress[0].startswith("progress: 50/100000 examples, ")
    assert status == 130, out
    assert re.search(r"interrupted after \d+ of 100000 examples", out)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            ("fuzz", "--engine", "--trace-out", "/nonexistent/d/t.jsonl"),
            "does not exist",
        ),
        (
            (
                "fuzz",
                "--engine-mutant",
                "health_from_the_wrong_site",
                "--trace-out",
                ".",
            ),
            "is a folder",
        ),
        (("fuzz", "--trace-out", "/nonexistent/t.jsonl"), "does not exist"),
        (("fuzz", "--report", "/nonexistent/r.html"), "does not exist"),
        (("check", "--trace-out", "."), "is a folder"),
        (("check", "--svg", "/nonexistent/c.svg"), "does not exist"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_run(
    arguments: tuple[str, ...], said: str
) -> None:
    """Refused at once, not after a whole run whose trace would then be lost."""
    line = one_line_error(hvdr(*arguments))
    assert said in line
    assert arguments[-2] in line


def test_a_trace_that_is_not_text_or_far_too_big_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"action": "write"}\n\xff\xfe\x00')
    assert "not UTF-8 text" in one_line_error(hvdr("replay", str(binary)))
    line = one_line_error(hvdr("replay", "--engine", "/dev/zero"))
    assert "/dev/zero" in line
    assert "not a trace file" in line


def test_a_trace_step_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    """A key a step does not have (an argument outside ``args``) is not dropped."""
    path = write_trace(
        tmp_path / "t.jsonl",
        [{"action": "enable_protection", "vm": 0, "app_consistent": False}],
    )
    line = one_line_error(hvdr("replay", str(path)))
    assert "unknown keys ['app_consistent']" in line
    assert "line 1" in line


def test_a_trace_step_whose_vm_is_a_boolean_is_refused(tmp_path: Path) -> None:
    """JSON true is no VM index (Python would take it for 1)."""
    path = write_trace(tmp_path / "t.jsonl", [{"action": "write", "vm": True}])
    line = one_line_error(hvdr("replay", str(path)))
    assert "vm=True must be an int >= 0" in line


def refused_in_process(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    """``hvdr ARGUMENTS`` run in this process (a usage error needs no fresh
    interpreter: nothing is drawn): status 2, one line on stderr, returned."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    assert status == 2, captured.out + captured.err
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return " ".join(lines[0].split())


#: The operations every plan case below names (a plan needs some).
_OPS = '"plan_operations": ["commit"]'


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            '{"vm_count": 2, "plans": [{"name": "p", "groups": [[0], []]}], '
            + _OPS
            + "}",
            "plans: recovery plan 'p': group 2 is empty",
        ),
        (
            '{"vm_count": 2, "plans": [{"name": "p", "groups": []}], ' + _OPS + "}",
            "plans: recovery plan 'p' has no group",
        ),
        (
            '{"vm_count": 2, "plans": [{"name": "p", "groups": [[0], [0, 1]]}], '
            + _OPS
            + "}",
            "plans: recovery plan 'p': VM 0 is in group 1 and again in group 2",
        ),
        (
            '{"vm_count": 2, "plans": [{"name": "p", "groups": [[0, 0]]}], '
            + _OPS
            + "}",
            "plans: recovery plan 'p': VM 0 is twice in group 1",
        ),
        (
            '{"vm_count": 2, "plans": [{"name": "p", "groups": [[0]]}, '
            '{"name": "p", "groups": [[1]]}], ' + _OPS + "}",
            "plans: recovery plans ['p'] are named twice",
        ),
        (
            '{"vm_count": 2, "plans": [{"groups": [[0]]}], ' + _OPS + "}",
            "plans[0].name is missing: a plan needs a name and its groups",
        ),
        (
            '{"vm_count": 2, "plans": [{"name": "", "groups": [[0]]}], ' + _OPS + "}",
            'plans[0].name="": string should have at least 1 character',
        ),
        (
            '{"vm_count": 2, "plans": [{"name": "p", "groups": [[0]]}]}',
            "plans: recovery plans are given but no plan_operations",
        ),
        (
            '{"faults": ["site_crash", "site_crash"]}',
            "['site_crash'] given twice; name each fault kind once",
        ),
    ],
    ids=[
        "empty-group",
        "no-group",
        "vm-in-two-groups",
        "vm-twice-in-a-group",
        "plan-named-twice",
        "plan-without-name",
        "plan-with-empty-name",
        "plans-without-operations",
        "fault-twice",
    ],
)
def test_a_config_that_makes_no_sense_is_refused_naming_what(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    """A plan definition that cannot run as written (an empty group, a VM in two
    groups, two plans of one name ...) or a fault named twice: exit 2, one line."""
    config = tmp_path / "model.json"
    config.write_text(text + "\n", "utf-8")
    assert words in refused_in_process(capsys, "check", "--config", str(config))


def test_a_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "model.json"
    config.write_bytes(b"\xff{}")
    result = hvdr("check", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "not UTF-8 text (byte 0)" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (
            ("check", "--budget", "0", "--json", "/proc/hvdr-result.json"),
            "--json '/proc/hvdr-result.json': cannot write in '/proc'",
        ),
        (
            ("check", "--mutant", "commit_keeps_recovery_points", "--svg",
             "/proc/hvdr.svg"),
            "--svg '/proc/hvdr.svg': cannot write in '/proc'",
        ),
        (
            ("fuzz", "--examples", "1", "--report", "/proc/hvdr.html"),
            "--report '/proc/hvdr.html': cannot write in '/proc'",
        ),
        (
            ("fuzz", "--examples", "1", "--database", "http://example.org/db"),
            "only redis://, rediss:// and unix:// URLs are databases",
        ),
        (
            ("fuzz", "--examples", "1", "--database", "/hvdr-no-such-folder/db"),
            "its folder '/hvdr-no-such-folder' does not exist",
        ),
        (
            ("fuzz", "--examples", "1", "--database", "redis://localhost:port:x"),
            "is not a Redis URL Redis can read",
        ),
    ],
    ids=["json-unwritable", "svg-unwritable", "report-unwritable", "http-database",
         "database-folder-missing", "redis-url-unreadable"],
)  # fmt: skip
def test_an_output_or_database_that_cannot_be_used_is_refused_first(
    capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...], words: str
) -> None:
    """Refused before any work, in one line (exit 2): a folder that cannot be
    written (``/proc`` refuses new files even to root), a URL that is no database,
    a database folder whose parent is missing, a Redis URL Redis cannot read."""
    assert words in refused_in_process(capsys, *arguments)
    assert not Path("/hvdr-no-such-folder").exists()


def test_a_database_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "db"
    afile.write_text("not a database", "utf-8")
    result = hvdr("fuzz", "--examples", "1", "--database", str(afile))
    assert result.returncode == 2
    assert "is a file, not a directory" in result.stderr
    assert afile.read_text("utf-8") == "not a database"


def test_one_file_for_two_outputs_is_refused(tmp_path: Path) -> None:
    """--json and --trace-out naming one file: the second would overwrite the
    first (the counterexample lost); refused before the run, nothing written."""
    same = tmp_path / "out.x"
    result = hvdr("check", "--mutant", "commit_keeps_recovery_points",
                  "--json", str(same), "--trace-out", str(same))  # fmt: skip
    assert result.returncode == 2
    assert "--json and --trace-out name the same file" in " ".join(
        result.stderr.split()
    )
    assert not same.exists()


def test_diagram_out_that_is_a_file_or_under_a_missing_folder_is_refused(
    tmp_path: Path,
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("kept", "utf-8")
    line = one_line_error(hvdr("diagram", "--out", str(afile)))
    assert "is a file; give a directory" in line
    assert afile.read_text("utf-8") == "kept"
    missing = tmp_path / "no" / "such"
    line = one_line_error(hvdr("diagram", "--out", str(missing)))
    assert "does not exist" in line
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("check", "--operator", "drop_guard"), "--operator works only with --mutate"),
        (
            ("check", "--dot-max-states", "10"),
            "--dot-max-states works only with --dot FILE",
        ),
        (("check", "--faults", ","), "--faults ',' names no fault"),
    ],
    ids=["operator-without-mutate", "dot-limit-without-dot", "faults-empty-list"],
)
def test_a_flag_that_would_be_ignored_is_refused(
    capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...], words: str
) -> None:
    """A flag that only means something with another one, given alone, or a fault
    list naming nothing: refused (exit 2) rather than silently ignored."""
    assert words in refused_in_process(capsys, *arguments)
