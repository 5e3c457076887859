"""The storage full at every step that needs space: refused cleanly, never silent.

The crash scenario (``crash_scenario.py``) is run once to count its operations; then,
for every operation that needs space (a create, a write, an allocation, a new
folder), it is run again with the disk full at exactly that operation
(``FullDiskFileSystem``: ENOSPC once, then space again). Checked at each point: the
error that surfaces is an engine error (``StorageFull`` or another typed one, never a
bare ``OSError``); in the same process, following what the model allows, replication
resumes until the replica equals the source; and after a reopen the four properties
of the crash sweeps hold (every point a real cut, every acknowledged write present,
convergence, sound control files).
"""

from __future__ import annotations

import time
from functools import partial

import pytest
from crash_sweep import (
    count_operations,
    format_report,
    full_disk_point,
    relative_trace,
    scratch_directory,
    sweep,
)

from engine.storage.simulation import SPACE_OPERATIONS

POINTS_MIN = 100  # fewer would leave whole steps of the scenario without a full disk


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "cached"])
def test_a_full_disk_at_every_step_is_refused_and_survived(durable: bool) -> None:
    """ENOSPC at each space-needing operation: typed, resumed, nothing lost."""
    with scratch_directory() as directory:
        counting = count_operations(directory / "count", durable_writes=durable)
        trace = relative_trace(counting, directory / "count" / "sites")
        points = [
            (entry.index, "")
            for entry in counting.trace
            if entry.operation in SPACE_OPERATIONS
        ]
        started = time.perf_counter()
        results = sweep(directory, points, partial(full_disk_point, durable=durable))
        title = f"full-disk sweep, durable_writes={durable}, {len(points)} of "
        title += f"{counting.operations} operations need space, "
        title += f"{time.perf_counter() - started:.1f} s"
        report = format_report(title, results, trace)
        print(report)
        assert len(points) >= POINTS_MIN
        failing = [point for point, problems in results.items() if problems]
        assert not failing, report
