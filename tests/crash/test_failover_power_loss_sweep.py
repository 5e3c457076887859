"""Power cut before sampled operations of the failover scenarios; after the reboot,
the properties.

Each scenario runs once under a counting layer, then once per sampled point
(``failover_sweep.sampled``) under ``PowerLossFileSystem`` in a forked child that
cuts the power there; the parent reopens the engine with the real file system and
checks the properties of ``failover_scenario``: with ``durable_writes=False`` a write
acknowledged but not flushed may be lost only if the engine says a
resynchronisation is needed. ``HVDR_FAILOVER_POINTS=100000`` cuts before every
operation.
"""

from __future__ import annotations

import time
from functools import partial

import pytest
from crash_sweep import format_report, scratch_directory, sweep
from failover_sweep import (
    POINTS_VARIABLE,
    budget,
    count_operations,
    power_loss_point,
    sampled,
)

POINTS_DEFAULT = 28  # per scenario and mode: every step at least once, ~4 s
POINTS_MIN = 19  # fewer would leave steps of the failover half unvisited


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "cached"])
@pytest.mark.parametrize("scenario", ["planned", "unplanned", "divergent"])
def test_a_power_cut_in_the_failover_half_recovers(
    scenario: str, durable: bool
) -> None:
    """After each cut: a phase of the step, no flushed write lost, points are cuts,
    and the lifecycle reaches failback on the last writes."""
    started = time.perf_counter()
    points_max = budget(POINTS_DEFAULT)
    with scratch_directory() as directory:
        counted = count_operations(scenario, directory / "count", durable=durable)
        indexes = sampled(counted, range(1, counted.operations + 1), points_max)
        runner = partial(power_loss_point, name=scenario, durable=durable)
        results = sweep(directory, [(index, "") for index in indexes], runner)
    title = f"failover power-loss sweep, {scenario}, durable_writes={durable}, "
    title += f"{counted.operations} operations, {len(indexes)} crash points "
    title += f"({POINTS_VARIABLE}={points_max}), {time.perf_counter() - started:.1f} s"
    report = format_report(title, results, counted.trace)
    print(report)
    assert len(indexes) >= min(POINTS_MIN, points_max)
    failing = [point for point, problems in results.items() if problems]
    assert not failing, report
