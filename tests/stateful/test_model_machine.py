"""The model's Hypothesis state machine (``invariants.fuzz``), run under pytest.

``test_model_examples`` is the thin wrapper HypoFuzz picks up for long campaigns
(``hypothesis fuzz -- tests/stateful/test_model_machine.py``; a plain ``@given``
test, for the reason ``invariants.fuzz.example_test`` gives); the other tests pin
the guidance (every lifecycle edge is taken by the default run) and show that
HypoFuzz really fuzzes it: a short campaign records behaviours and no input gives
up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from hypofuzz.database import DatabaseEvent, DatabaseEventKey, Report
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ListenerEventT
from hypothesis.internal.conjecture.data import Status

from invariants.configuration import DEFAULT_CONFIG
from invariants.fuzz import example_test, fuzz, lifecycle_edges

ROOT = Path(__file__).resolve().parents[2]

#: How long the HypoFuzz campaign may take to report a behaviour (it takes a few
#: seconds: collecting the tests, then the first input and its replay).
CAMPAIGN_SECONDS_MAX = 120

#: The campaign's one target (HypoFuzz names its reports by the pytest node id).
NODE_ID = "tests/stateful/test_model_machine.py::test_model_examples"

# HypoFuzz ignores max_examples; under pytest a handful of examples shows it runs.
test_model_examples = settings(
    max_examples=10,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)(example_test(DEFAULT_CONFIG))


def test_default_run_takes_every_lifecycle_edge() -> None:
    """200 examples with the default seed take all the lifecycle's edges, no failure."""
    report = fuzz(DEFAULT_CONFIG, examples=200)
    assert (report.failure, report.untaken) == (None, ())
    assert len(report.edges) == len(lifecycle_edges())


def test_hypofuzz_records_behaviours_and_no_input_gives_up(tmp_path: Path) -> None:
    """A short HypoFuzz campaign on the wrapper reports behaviours, all inputs valid."""
    (tmp_path / "examples").mkdir()  # watched for changes from the start
    database = DirectoryBasedExampleDatabase(tmp_path / "examples")
    reports: list[Report] = []
    found = threading.Event()

    def on_change(change: ListenerEventT) -> None:
        event = DatabaseEvent.from_event(change)
        if event is None or event.key is not DatabaseEventKey.REPORT:
            return
        if event.value.nodeid == NODE_ID and event.type == "save":
            reports.append(event.value)
            if event.value.behaviors > 0:
                found.set()

    database.add_listener(on_change)
    campaign = subprocess.Popen(
        [
            Path(sys.executable).parent / "hypothesis", "fuzz", "--numprocesses",
            "1", "--no-dashboard", "--", NODE_ID,
        ],
        cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HVDR_EXAMPLE_DATABASE": str(tmp_path / "examples")},
    )  # fmt: skip
    try:
        found.wait(CAMPAIGN_SECONDS_MAX)
    finally:
        os.killpg(campaign.pid, signal.SIGINT)  # the campaign's own process group
        output, _ = campaign.communicate(timeout=60)
        database.remove_listener(on_change)
    assert found.is_set(), output[-3000:]
    counts = reports[-1].status_counts
    assert counts[Status.VALID] > 0
    assert (counts[Status.INVALID], counts[Status.OVERRUN]) == (0, 0)
