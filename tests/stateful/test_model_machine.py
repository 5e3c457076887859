"""The model's Hypothesis state machine (``invariants.fuzz``), run under pytest.

``test_model_examples`` is the thin wrapper HypoFuzz picks up for long campaigns
(``hypothesis fuzz -- tests/stateful/test_model_machine.py``; a plain ``@given``
test, for the reason ``invariants.fuzz.example_test`` gives); the other tests pin
the guidance (every lifecycle edge is taken by the default run) and show that
HypoFuzz really fuzzes it: a short campaign records behaviours and no input gives
up, into a directory database and into a real Redis server's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis
from hypofuzz.database import (
    DatabaseEvent,
    DatabaseEventKey,
    HypofuzzDatabase,
    Report,
)
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ListenerEventT
from hypothesis.extra.redis import RedisExampleDatabase
from hypothesis.internal.conjecture.data import Status
from hypothesis.internal.reflection import function_digest

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


def hypofuzz_campaign(database: str) -> subprocess.Popen[str]:
    """``hypothesis fuzz`` on the wrapper, one worker, in its own process group."""
    return subprocess.Popen(
        [
            Path(sys.executable).parent / "hypothesis", "fuzz", "--numprocesses",
            "1", "--no-dashboard", "--", NODE_ID,
        ],
        cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HVDR_EXAMPLE_DATABASE": database},
    )  # fmt: skip


def stop(campaign: subprocess.Popen[str]) -> str:
    """Ctrl-C to the campaign's own process group; its output."""
    os.killpg(campaign.pid, signal.SIGINT)
    output, _ = campaign.communicate(timeout=60)
    return output


def assert_fuzzed(reports: list[Report], output: str) -> None:
    """Some report has behaviours, and the latest counts only valid inputs."""
    assert any(report.behaviors > 0 for report in reports), output[-3000:]
    counts = max(reports, key=lambda report: report.elapsed_time).status_counts
    assert counts[Status.VALID] > 0
    assert (counts[Status.INVALID], counts[Status.OVERRUN]) == (0, 0)


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
    campaign = hypofuzz_campaign(str(tmp_path / "examples"))
    try:
        found.wait(CAMPAIGN_SECONDS_MAX)
    finally:
        output = stop(campaign)
        database.remove_listener(on_change)
    assert_fuzzed(reports, output)


def test_hypofuzz_fuzzes_into_a_shared_redis_database(redis_url: str) -> None:
    """The same through a real Redis server, as workers on several machines share."""
    client = redis.Redis.from_url(redis_url)
    changes = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    changes.subscribe(RedisExampleDatabase(client).listener_channel)  # each save
    database = HypofuzzDatabase(RedisExampleDatabase(client))
    key = hypofuzz_key(test_model_examples)
    reports: list[Report] = []
    campaign = hypofuzz_campaign(redis_url)
    deadline = time.monotonic() + CAMPAIGN_SECONDS_MAX
    try:
        while time.monotonic() < deadline:
            changes.get_message(timeout=1.0)  # returns at the next save, or after 1 s
            reports = database.reports.fetch(key)
            if any(report.behaviors > 0 for report in reports):
                break
    finally:
        output = stop(campaign)
        changes.close()
    assert_fuzzed(reports, output)


def hypofuzz_key(test: Any) -> bytes:
    """The key HypoFuzz files a test's reports under: Hypothesis' digest of the
    test with the pytest node id mixed in, as HypoFuzz's collection does."""
    inner = test.hypothesis.inner_test
    saved = getattr(inner, "_hypothesis_internal_add_digest", None)
    inner._hypothesis_internal_add_digest = NODE_ID.encode()
    try:
        return function_digest(inner)
    finally:
        if saved is None:
            del inner._hypothesis_internal_add_digest
        else:
            inner._hypothesis_internal_add_digest = saved
