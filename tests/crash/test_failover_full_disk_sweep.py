"""The storage full at sampled space-needing steps of the failover scenarios.

Each scenario runs once under a counting layer; then, for each sampled operation
that needs space (``SPACE_OPERATIONS``, sampled by ``failover_sweep.sampled``), again
with the disk full at exactly that operation (``FullDiskFileSystem``: ENOSPC once).
Checked: the error that surfaces is an engine error, never a bare ``OSError``; in
the same process, with space back, properties 0 to 3 of ``failover_scenario`` hold
and the lifecycle is driven to failback on the last writes (property 4); after a
reopen nothing is pending and the VM is where the drive left it.
``HVDR_FAILOVER_POINTS=100000`` fills the disk at every such operation.
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
    full_disk_point,
    sampled,
    space_operations,
)

POINTS_DEFAULT = 24  # per scenario and mode: the failover steps that need space, ~3 s
POINTS_MIN = 15  # fewer would leave steps of the failover half without a full disk


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "cached"])
@pytest.mark.parametrize("scenario", ["planned", "unplanned", "divergent"])
def test_a_full_disk_in_the_failover_half_is_refused_and_survived(
    scenario: str, durable: bool
) -> None:
    """ENOSPC at each sampled point: typed, the lifecycle goes on, nothing lost."""
    started = time.perf_counter()
    points_max = budget(POINTS_DEFAULT)
    with scratch_directory() as directory:
        counted = count_operations(scenario, directory / "count", durable=durable)
        indexes = sampled(counted, space_operations(counted), points_max)
        runner = partial(full_disk_point, name=scenario, durable=durable)
        results = sweep(directory, [(index, "") for index in indexes], runner)
    title = f"failover full-disk sweep, {scenario}, durable_writes={durable}, "
    title += f"{len(space_operations(counted))} of {counted.operations} operations "
    title += f"need space, {len(indexes)} points ({POINTS_VARIABLE}={points_max}), "
    title += f"{time.perf_counter() - started:.1f} s"
    report = format_report(title, results, counted.trace)
    print(report)
    assert len(indexes) >= min(POINTS_MIN, points_max)
    failing = [point for point, problems in results.items() if problems]
    assert not failing, report
