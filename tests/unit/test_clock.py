"""Unit tests for engine.clock and the ManualClock fake in engine.testing."""

from __future__ import annotations

import math
import time

import pytest

from engine.clock import Clock, SystemClock
from engine.errors import InvalidConfiguration
from engine.testing import ManualClock


def test_manual_clock_moves_only_when_told() -> None:
    """ManualClock returns its start until advanced, then the sum."""
    clock: Clock = ManualClock(100.0)
    first = clock.now()
    assert isinstance(clock, ManualClock)
    clock.advance(2.5)
    expected = (100.0, 102.5)
    assert expected == (first, clock.now())


def test_manual_clock_can_be_set_backwards() -> None:
    """set() may step the clock back, as a wall clock can be."""
    clock = ManualClock(100.0)
    clock.set(50.0)
    expected = 50.0
    assert expected == clock.now()


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan, "1", True])
def test_manual_clock_refuses_bad_advances(seconds: float) -> None:
    """advance() refuses negative, non-finite and non-numeric values."""
    with pytest.raises(InvalidConfiguration, match="seconds="):
        ManualClock().advance(seconds)


def test_system_clock_reads_the_host_time() -> None:
    """SystemClock agrees with time.time() to within a minute."""
    assert abs(time.time() - SystemClock().now()) < 60
