"""The failover benchmarks run end to end on small disks (figures not checked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a benchmark in a subprocess: seconds

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(name: str, tmp_path: Path, path: str) -> str:
    environment = {**os.environ, "HVDR_BENCH_DISK_MIB": "16",
                   "HVDR_BENCH_DIR": str(tmp_path), "PATH": path}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", name],
        capture_output=True, text=True, check=True, cwd=ROOT, env=environment,
    )  # fmt: skip
    return result.stdout


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_the_resync_benchmark_compares_both_runs_with_rsync(tmp_path: Path) -> None:
    """Targeted and fallback each get a verdict against rsync."""
    out = run_benchmark("failover_resync", tmp_path, os.environ["PATH"])
    assert "targeted: " in out
    assert "digest fallback: " in out
    assert "rsync's bytes sent" in out


def test_the_resync_benchmark_without_rsync_says_so_and_skips_it(
    tmp_path: Path,
) -> None:
    """No rsync on PATH: the engine runs are printed, the comparison is skipped."""
    empty = tmp_path / "bin"
    empty.mkdir()
    out = run_benchmark("failover_resync", tmp_path, str(empty))
    assert "rsync was not found on PATH" in " ".join(out.split())
    assert "digest fallback" in out


def test_the_failover_times_benchmark_runs(tmp_path: Path) -> None:
    """Every step of the round trip and the rolled-back commit is printed."""
    out = run_benchmark("failover_times", tmp_path, os.environ["PATH"])
    for step in ("planned failover", "commit", "failback, in total", "rolled back"):
        assert step in out, step
