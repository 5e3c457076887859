"""Shared fixtures and Hypothesis profiles (``dev`` by default, ``ci`` in CI,
``shared`` when ``HVDR_EXAMPLE_DATABASE`` names a database).

``kdc_realm`` lives here rather than in ``tests/network/conftest.py``: that folder is
on mypy's path (its helpers are imported by bare name), where a second ``conftest``
module would clash with this one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import kdc
import pytest
from hypothesis import HealthCheck, settings

from invariants.databases import shared_example_database
from model import ModelConfig, SystemState, initial_state, successors

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# HVDR_EXAMPLE_DATABASE (a directory or a redis:// URL, invariants.databases) names
# the example database HypoFuzz workers share: set, it wins over the two above
# (derandomize implies no database, and HypoFuzz skips a test that sets it). It is
# turned off explicitly: with CI set, Hypothesis starts from its own "ci" profile,
# which derandomizes, and a new profile inherits from it.
SHARED_DATABASE = os.environ.get("HVDR_EXAMPLE_DATABASE")
if SHARED_DATABASE:
    settings.register_profile(
        "shared",
        deadline=None,
        derandomize=False,
        database=shared_example_database(SHARED_DATABASE),
    )
settings.load_profile(
    "shared" if SHARED_DATABASE else "ci" if os.environ.get("CI") else "dev"
)

#: A small model whose reachable states reach every phase and every edge.
SMALL = ModelConfig(vm_count=1, fault_budget=1, write_lag_max=1)


def reachable(config: ModelConfig) -> list[SystemState]:
    """Every state reachable from the initial one, breadth first."""
    start = initial_state(config)
    seen = {start}
    order = [start]
    queue = deque([start])
    while queue:
        for _, after in successors(config, queue.popleft()):
            if after not in seen:
                seen.add(after)
                order.append(after)
                queue.append(after)
    return order


@pytest.fixture(scope="session")
def small_states() -> list[SystemState]:
    """The reachable states of ``SMALL``, computed once per session."""
    return reachable(SMALL)


@pytest.fixture(scope="session")
def kdc_realm() -> Iterator[kdc.KdcRealm]:
    """A real MIT KDC of realm HVDR.TEST on 127.0.0.1 for the session: principals
    ``HTTP/localhost``, ``HTTP/elsewhere`` and ``primary``, each with a keytab
    (``tests/kdc.py``). Fails where MIT's KDC is not installed."""
    yield from kdc.session_realm()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run first: the two workers of ``make test`` (xdist)
    then end on short tests together instead of one waiting for the other's long
    sweep (the order of the others is kept)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


DISK_TEMPORARY: Final = Path("/var/tmp")
"""A folder on a disk file system, for a test of what one refuses (the system's
temporary folder may be a tmpfs, which takes what ext4 refuses)."""


@pytest.fixture
def disk_path() -> Iterator[Path]:
    """A fresh folder on a disk file system (not tmpfs), removed after the test;
    skipped where there is none."""
    if not DISK_TEMPORARY.is_dir() or _is_tmpfs(DISK_TEMPORARY):
        pytest.skip(f"{DISK_TEMPORARY} is not on a disk file system here")
    folder = Path(tempfile.mkdtemp(prefix="hvdr-test-", dir=DISK_TEMPORARY))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _is_tmpfs(path: Path) -> bool:
    """Whether ``path`` lies on a tmpfs (the mount table's longest matching entry)."""
    best, kind = "", ""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1]
            inside = str(path.resolve()) == point or str(path.resolve()).startswith(
                point.rstrip("/") + "/"
            )
            if inside and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind == "tmpfs"
