"""Unit tests for engine.clock and the ManualClock fake in engine.testing."""

from __future__ import annotations

import math
import threading
import time

import pytest

from engine.clock import Clock, SystemClock, WaitingClock
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


def test_manual_clock_wait_jumps_to_the_deadline_never_back() -> None:
    """wait_until moves a ManualClock to the deadline at once; an earlier deadline
    leaves it where it is."""
    clock: WaitingClock = ManualClock(100.0)
    stop = threading.Event()
    stopped = (clock.wait_until(130.0, stop), clock.wait_until(110.0, stop))
    assert stopped == (False, False)
    assert clock.now() == 130.0


def test_manual_clock_wait_returns_at_once_when_stopped() -> None:
    """A stop set before the wait: True, and the time does not move."""
    clock = ManualClock(100.0)
    stop = threading.Event()
    stop.set()
    assert clock.wait_until(500.0, stop) is True
    assert clock.now() == 100.0


def test_system_clock_wait_never_sleeps_when_it_need_not() -> None:
    """The host's clock returns at once when stopped, or for a past deadline."""
    clock = SystemClock()
    stop = threading.Event()
    started = time.monotonic()
    assert clock.wait_until(clock.now() - 1.0, stop) is False
    stop.set()
    assert clock.wait_until(clock.now() + 3600.0, stop) is True
    assert time.monotonic() - started < 5.0
