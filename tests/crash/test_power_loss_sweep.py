"""Power cut before sampled operations of one VM's life; after the reboot, recovery.

The scenario (``crash_scenario.PLAN``) runs once under a counting layer to learn its
operations, then once per sampled crash point under ``PowerLossFileSystem`` in a forked
child that cuts the power there and exits; the parent reopens the engine with the real
file system and checks the four properties of ``crash_scenario``. Run with ``-s`` to
see the report of a passing sweep too.
"""

from __future__ import annotations

import os
import time
from functools import partial

import pytest
from crash_sweep import (
    count_operations,
    format_report,
    power_loss_point,
    relative_trace,
    scratch_directory,
    sweep,
)

POINTS_MIN = 50  # fewer would leave whole steps of the scenario unvisited
POINTS_MAX = int(
    os.environ.get("HVDR_POWER_LOSS_POINTS", "200")
)  # per mode: two operations in five, 5 to 10 s on two cores


def sampled(operations: int) -> list[tuple[int, str]]:
    """Every operation when there are few; else POINTS_MAX spread evenly, 1 and last."""
    if operations <= POINTS_MAX:
        return [(index, "") for index in range(1, operations + 1)]
    step = (operations - 1) / (POINTS_MAX - 1)
    return [(1 + round(i * step), "") for i in range(POINTS_MAX)]


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "cached"])
def test_power_cut_at_every_sampled_operation_recovers(durable: bool) -> None:
    """After a cut at each sampled point: real cuts, no lost write, replica resumes."""
    started = time.perf_counter()
    with scratch_directory() as directory:
        counting = count_operations(directory / "count", durable_writes=durable)
        points = sampled(counting.operations)
        runner = partial(power_loss_point, durable=durable)
        results = sweep(directory, points, runner)
        trace = relative_trace(counting, directory / "count" / "sites")
    title = f"power-loss sweep, durable_writes={durable}, {counting.operations} "
    title += f"operations, {len(points)} crash points, "
    title += f"{time.perf_counter() - started:.1f} s"
    report = format_report(title, results, trace)
    print(report)
    assert len(set(points)) >= POINTS_MIN
    failing = [point for point, problems in results.items() if problems]
    assert not failing, report
