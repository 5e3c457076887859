"""The operator commands as a user meets them: each mistake is one line on stderr
naming what was wrong and what is allowed, with exit status 2 and nothing changed;
a second process is refused naming the first; ``hvdr run`` stops cleanly on
SIGTERM. Real processes (``python -m hvdr``), real files."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.orchestration.jobs import JobStore
from engine.orchestration.orchestrator import Orchestrator
from engine.orchestration.site_config import load_orchestrator_config
from engine.testing import ManualClock
from hvdr.commands import run as run_command

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
[orchestrator]
state = "state"

[replication]
frequency_seconds = 30

[sites.primary]
storage = "primary"

[sites.secondary]
storage = "secondary"
"""


def hvdr(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        cwd=folder, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def refused(run: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints (exit 2, no traceback, nothing on stdout)."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with hvdr.toml and one protected VM, 'web'."""
    (tmp_path / "hvdr.toml").write_text(CONFIG, encoding="utf-8")
    assert hvdr(tmp_path, "vm", "create", "web", "--disk", "os=1MiB").returncode == 0
    assert hvdr(tmp_path, "vm", "enable", "web").returncode == 0
    return tmp_path


def jobs_of(folder: Path) -> list[tuple[str, str, str]]:
    with JobStore.read(folder / "state" / "jobs.sqlite") as store:
        return [(job.kind, job.target, job.state.value) for job in store.jobs()]


def test_no_configuration_file_is_named(tmp_path: Path) -> None:
    line = refused(hvdr(tmp_path, "vm", "list"))
    assert line == (
        "hvdr vm: error: hvdr.toml: cannot read the configuration file: No such file "
        "or directory"
    )


def test_a_misspelt_key_is_named_with_its_line_and_the_keys_allowed(
    tmp_path: Path,
) -> None:
    (tmp_path / "hvdr.toml").write_text(
        CONFIG.replace("frequency_seconds", "frequency"), encoding="utf-8"
    )
    line = refused(hvdr(tmp_path, "vm", "list"))
    assert line == (
        "hvdr vm: error: hvdr.toml, line 5: key 'replication.frequency' is unknown; "
        "[replication] has the keys: frequency_seconds, additional_recovery_points, "
        "app_consistent_hours, [replication.vm.NAME] tables"
    )
    assert not (tmp_path / "state").exists()  # nothing created


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (("= 30", "= 60"), "line 5: [replication]: frequency_seconds=60 must be"),
        (('state = "state"', 'state = "st\\u0000"'), "holds a NUL character"),
        (('storage = "secondary"', 'storage = "primary/inner"'), "is inside"),
        (('state = "state"', 'state = "secondary/state"'), "orchestrator.state ("),
        (('storage = "secondary"', 'storage = "primary"'), "sites.secondary.storage"),
        (('state = "state"', "state = 3"), "orchestrator.state=3: input should be"),
    ],
)
def test_a_wrong_value_is_refused_naming_it(
    tmp_path: Path, change: tuple[str, str], said: str
) -> None:
    (tmp_path / "hvdr.toml").write_text(CONFIG.replace(*change), encoding="utf-8")
    line = refused(hvdr(tmp_path, "vm", "list"))
    assert line.startswith("hvdr vm: error: hvdr.toml, line ")
    assert said in line


def test_an_operation_the_model_refuses_exits_2_and_is_a_failed_job(
    site: Path,
) -> None:
    line = refused(hvdr(site, "vm", "commit", "web"))
    assert line.startswith(
        "hvdr vm: error: cannot commit VM 'web' in phase protected: commit is "
        "allowed only from: failed_over"
    )
    assert line.endswith("(job 2 (commit of 'web') failed)")
    assert jobs_of(site)[-1] == ("commit", "web", "failed")
    status = hvdr(site, "vm", "list")
    assert status.stdout == "web: protected, active at primary, 1 recovery point(s)\n"
    shown = hvdr(site, "jobs", "show", "2")  # the error once, whole, never cut
    assert shown.returncode == 0, shown.stderr
    error = line.removeprefix("hvdr vm: error: ").split(" (job 2")[0]
    assert shown.stdout.count("cannot commit VM 'web'") == 1
    assert f"step 0 error: {error}\n" in shown.stdout
    assert shown.stdout.endswith("job 2 failed: the error of its step above\n")
    assert "…" not in shown.stdout


def test_an_unknown_vm_is_refused_before_any_job(site: Path) -> None:
    line = refused(hvdr(site, "vm", "failover", "nosuch", "--planned"))
    assert "'nosuch'" in line
    assert len(jobs_of(site)) == 1  # the enable only


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("vm", "cancel", "web"), "cannot cancel_failover VM 'web' in phase protected"),
        (("jobs", "show", "9" * 23), f"job_id={'9' * 23} is not in the job store"),
        (("plan", "resume", "9" * 23), f"job_id={'9' * 23} is not in the job store"),
        (("vm", "failover", "web", "--unplanned", "--recovery-point", "²"), "'²'"),
        (("vm", "create", "db", "--disk", "os=1MiB", "--disk", "os=2"), "twice"),
        (
            ("vm", "read", "web", "--disk", "os", "--at", "9999999", "--length", "1"),
            "offset=9999999",
        ),
        (("vm", "failover", "web", "--test", "--shutdown-first"), "--shutdown-first"),
        (("vm", "failover", "web", "--planned", "--recovery-point", "3"), "no point"),
        (("vm", "failover", "web", "--unplanned", "--recovery-point", "x"), "'x'"),
        (("vm", "write", "web", "--disk", "os", "--hex", "zz"), "is not hex"),
        (("vm", "create", "db", "--disk", "os=4MB"), "NAME=SIZE"),
        (("jobs", "show", "99"), "99"),
        (("plan", "show", "nosuch"), "no recovery plan 'nosuch'"),
    ],
)
def test_a_mistake_changes_nothing(
    site: Path, arguments: tuple[str, ...], said: str
) -> None:
    before = jobs_of(site)
    line = refused(hvdr(site, *arguments))
    assert said in line
    assert jobs_of(site) == before


def test_a_second_process_is_refused_naming_the_first(site: Path) -> None:
    running = subprocess.Popen(
        [sys.executable, "-m", "hvdr", "run"], cwd=site, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert running.stdout is not None
        first = running.stdout.readline()  # it owns the sites once it says so
        assert first.startswith("hvdr run: 1 VM(s), a cycle every 30 s"), first
        line = refused(hvdr(site, "vm", "replicate", "web"))
        assert f"pid {running.pid}" in line
        assert "__main__.py run)" in line  # the command to stop, not only "python"
        jobs = hvdr(site, "jobs")  # reading the Jobs page is not refused
        assert jobs.returncode == 0, jobs.stderr
        running.send_signal(signal.SIGTERM)
        out, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 0, err
    assert "SIGTERM: stopping after this step" in out
    assert out.rstrip().endswith("round(s)")
    assert "replication health (1 VM(s))" in out


def test_run_prints_a_refusal_once_while_it_stands(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found running the README's drill: a VM whose failover was cancelled printed
    the model's whole refusal every round. Three rounds on a clock that jumps:
    'web' replicates each round, 'app' is refused, said once."""
    for command in (
        ("vm", "create", "app", "--disk", "os=1MiB"), ("vm", "enable", "app"),
        ("vm", "failover", "app", "--planned", "--prepare-only"),
        ("vm", "cancel", "app", "--force"),
    ):  # fmt: skip
        assert hvdr(site, *command).returncode == 0, command
    config = load_orchestrator_config(site / "hvdr.toml")
    clock = ManualClock(time.time() + 60)  # every VM due at the first round
    with Orchestrator.open(config, clock=clock) as orchestrator:
        said = run_command._loop(  # the loop itself, on an injected clock
            orchestrator, argparse.Namespace(ticks=3), threading.Event()
        )
    assert said == 0
    lines = capsys.readouterr().out.splitlines()
    cycles = [line.split(" ", 1)[1] for line in lines[1:] if line[:2].isdigit()]
    assert [line.split(":")[0] for line in cycles] == ["app", "web", "web", "web"]
    assert cycles[0].startswith("app: skipped: cannot replicate VM 'app' in phase ")


def test_status_json_is_what_a_script_reads(site: Path) -> None:
    run = hvdr(site, "status", "--json")
    assert run.returncode == 0, run.stderr
    (vm,) = json.loads(run.stdout)
    assert (vm["name"], vm["phase"], vm["health"]) == ("web", "protected", "Normal")
    assert vm["replication_state"] == "Replicating"
    assert vm["recovery_points"]["count"] == 1


def test_last_replication_says_never_only_before_the_first_one(site: Path) -> None:
    """After a commit (its points deleted) the table showed 'never' for a VM that
    had replicated: the column says '-' there, 'never' only before a first copy."""

    def last_column(folder: Path) -> str:
        run = hvdr(folder, "status")
        assert run.returncode == 0, run.stderr
        (row,) = [line for line in run.stdout.splitlines() if "│ web " in line]
        return row.split("│")[4].strip()

    fresh = site / "fresh"
    fresh.mkdir()
    (fresh / "hvdr.toml").write_text(CONFIG, encoding="utf-8")
    assert hvdr(fresh, "vm", "create", "web", "--disk", "os=1MiB").returncode == 0
    assert last_column(fresh) == "never"
    assert hvdr(site, "vm", "failover", "web", "--planned").returncode == 0
    assert hvdr(site, "vm", "commit", "web").returncode == 0
    assert last_column(site) == "-"


def test_cancel_asks_the_model_then_warns_and_needs_force(site: Path) -> None:
    """Found by the outside review: the warning came whatever the phase. Where the
    model allows the cancel, the product's warning is printed and nothing runs
    until --force; then the VM's replication stops for good."""
    prepared = hvdr(site, "vm", "failover", "web", "--planned", "--prepare-only")
    assert prepared.returncode == 0, prepared.stderr
    before = jobs_of(site)
    line = refused(hvdr(site, "vm", "cancel", "web"))
    assert "warning: cancelling a failover in progress stops it" in line
    assert jobs_of(site) == before
    forced = hvdr(site, "vm", "cancel", "web", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "'web' is replication_stopped" in forced.stdout


def test_recovery_points_are_listed_with_their_ids(site: Path) -> None:
    assert (
        hvdr(site, "vm", "write", "web", "--disk", "os", "--text", "x").returncode == 0
    )
    replicated = hvdr(site, "vm", "replicate", "web", "--app-consistent")
    assert replicated.returncode == 0, replicated.stderr
    run = hvdr(site, "vm", "points", "web")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "'web' (protected): 2 recovery point(s)"
    assert lines[1].startswith("  1: ")
    assert lines[1].endswith("crash-consistent")
    assert lines[2].startswith("  2: ")
    assert lines[2].endswith("UTC, app-consistent")


def test_the_jobs_page_of_a_fresh_configuration_is_empty_not_an_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "hvdr.toml").write_text(CONFIG, encoding="utf-8")
    run = hvdr(tmp_path, "jobs")
    assert run.returncode == 0, run.stderr
    assert "no jobs yet" in run.stdout
    assert "jobs (0)" in run.stdout
    assert not (tmp_path / "state").exists()  # reading created nothing
    assert "no job 1: no jobs yet" in refused(hvdr(tmp_path, "jobs", "show", "1"))


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"[]", 'it must be one JSON object {"plans": [...]}'),
        (b'{"plans": [5]}', "its plan 1 is not a JSON object"),
        (b'{"plans": [{"name": "a", "groups": [5]}]}', "its plan 1: plan 'a'"),
        (
            (
                b'{"plans": [{"name": "a", "groups": [["web"]]},'
                b' {"name": "a", "groups": [["web"]]}]}'
            ),
            "plan 'a' is in it twice",
        ),
        (b"\xff\xfe", "it is not UTF-8 text"),
        (None, "it cannot be read: Is a directory"),
    ],
)
def test_a_damaged_plans_file_is_named_and_left_as_it_is(
    site: Path, content: bytes | None, said: str
) -> None:
    plans = site / "state" / "plans.json"
    if content is None:
        plans.mkdir()
    else:
        plans.write_bytes(content)
    line = refused(hvdr(site, "plan", "show"))
    assert "the recovery plans file is damaged (" + said in line
    assert (plans.read_bytes() if content is not None else None) == content


def test_a_state_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("in the way", encoding="utf-8")
    config = CONFIG.replace('state = "state"', 'state = "afile/state"')
    (tmp_path / "hvdr.toml").write_text(config, encoding="utf-8")
    line = refused(hvdr(tmp_path, "vm", "list"))
    assert "creating the orchestrator's state folder" in line
    assert "Not a directory" in line
    config = CONFIG.replace('storage = "primary"', 'storage = "afile/primary"')
    (tmp_path / "hvdr.toml").write_text(config, encoding="utf-8")
    line = refused(hvdr(tmp_path, "vm", "list"))
    assert "opening the site at" in line
    assert "give a storage root this user can create and write" in line


@pytest.mark.parametrize("arguments", [("vm", "list"), ("status", "--json")])
def test_a_reader_gone_from_stdout_ends_it_quietly(
    site: Path, arguments: tuple[str, ...]
) -> None:
    """Found by the outside review: `hvdr status --json | head` said 'the file system
    failed: Broken pipe', exit 1. The pipe's reader is gone before anything is
    written: no message, 141 as SIGPIPE would."""
    running = subprocess.Popen(
        [sys.executable, "-m", "hvdr", *arguments], cwd=site,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert running.stdout is not None
    running.stdout.close()  # the reader goes before the first line is written
    _, err = running.communicate(timeout=120)
    assert (running.returncode, err) == (141, "")


def test_bytes_that_are_not_text_are_read_back_as_they_are(site: Path) -> None:
    """Found by the outside review: `vm read` decoded every disk as UTF-8 with
    replacement characters (00 ff 80 came back as 00 ef bf bd ef bf bd)."""
    written = hvdr(site, "vm", "write", "web", "--disk", "os", "--hex", "00ff80")
    assert written.returncode == 0, written.stderr
    command = [sys.executable, "-m", "hvdr", "vm", "read", "web", "--disk", "os"]
    raw = subprocess.run(
        [*command, "--length", "3"], cwd=site, capture_output=True, timeout=120,
        check=True,
    )  # fmt: skip
    assert raw.stdout == bytes.fromhex("00ff80")
    shown = hvdr(site, "vm", "read", "web", "--disk", "os", "--length", "3", "--hex")
    assert shown.stdout == "00ff80\n"


def test_no_app_consistent_point_is_said_in_words(site: Path) -> None:
    """Found by the outside review: the model's argument list came back
    ("arguments {'point': 'latest_app_consistent', ...} are not one of [...]")."""
    unplanned = ("vm", "failover", "web", "--unplanned")
    line = refused(hvdr(site, *unplanned, "--recovery-point", "app-consistent"))
    assert line.startswith(
        "hvdr vm: error: VM 'web' keeps no app-consistent recovery point (its points "
        "[1] are crash-consistent): fail over from 'latest' or a point's id"
    )
    status = hvdr(site, "vm", "list")
    assert status.stdout == "web: protected, active at primary, 1 recovery point(s)\n"


def test_one_damaged_vm_does_not_hide_the_others_from_vm_list(site: Path) -> None:
    """Found by the outside review: one VM's damaged replica made `vm list` exit 2
    listing nothing."""
    assert hvdr(site, "vm", "create", "db", "--disk", "os=1MiB").returncode == 0
    assert hvdr(site, "vm", "enable", "db").returncode == 0
    (site / "secondary" / "replicas" / "db" / "store.json").write_text("{ damaged")
    listed = hvdr(site, "vm", "list")
    assert listed.returncode == 0, listed.stderr
    db, web = listed.stdout.splitlines()
    assert db.startswith("db: cannot be read: ")
    assert web == "web: protected, active at primary, 1 recovery point(s)"


def test_a_comma_too_many_in_a_group_is_refused(site: Path) -> None:
    """Found by the outside review: `--group web,` was taken silently."""
    line = refused(hvdr(site, "plan", "create", "p", "--group", "web,"))
    assert line == (
        "hvdr plan: error: --group 'web,': a VM name is empty (a comma too many?); "
        "give VM names separated by commas, e.g. --group web,db"
    )
    assert not (site / "state" / "plans.json").exists()
