"""Where the engine reads the time: one injected ``Clock``, never ``time.time()``.

Recovery points carry a creation time, jobs a start and an end, and the RPO a lag in
seconds. Each of those reads ``clock.now()`` from a clock handed in by the embedder, so
a test (or a replayed fuzzing run) drives time by hand with
``engine.testing.ManualClock`` and gets the same bytes and the same catalogue on every
run (TigerBeetle, FoundationDB).

``now()`` returns seconds since the Unix epoch as a float. The engine records these
values and subtracts them for reports; it never orders anything by them (recovery points
are ordered by their id), because a host's wall clock may step backwards (NTP, an
operator).

A loop that runs on a timer (the scheduler's ``run``) also waits on its clock:
``WaitingClock.wait_until(deadline, stop)``. The host's clock sleeps on the stop event;
``ManualClock`` jumps to the deadline at once, so a test of a timed loop never sleeps.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in seconds since the Unix epoch."""

    def now(self) -> float:
        """Return the current time in seconds since the Unix epoch."""
        ...


class WaitingClock(Clock, Protocol):
    """A clock a timed loop can also wait on."""

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        """Return once ``now() >= deadline`` (False) or ``stop`` is set (True)."""
        ...


class SystemClock:
    """The host's wall clock (``time.time()``), for production use."""

    def now(self) -> float:
        """Return the host's current time in seconds since the Unix epoch."""
        return time.time()

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        """Sleep on ``stop`` until ``deadline``; True as soon as ``stop`` is set.

        Waits again after an early wake-up, and returns at once for a deadline in
        the past (a wall clock stepped forward)."""
        while not stop.is_set():
            remaining = deadline - time.time()
            if remaining <= 0:
                return False
            stop.wait(remaining)
        return True
