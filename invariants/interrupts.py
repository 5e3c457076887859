"""Ctrl-C as a request to stop, for the long runs of the checkers.

A long search or fuzzing campaign that Ctrl-C kills mid-step loses what it
measured, and a ``KeyboardInterrupt`` raised at any instruction can leave its
bookkeeping half written (or be swallowed by a library on the way: Hypothesis's
optimiser sometimes does). ``stop_requests()`` turns the first SIGINT into a flag
the run reads at a point of its own choosing (between states, between batches),
then ends cleanly with what it has; the second SIGINT interrupts at once, as
usual, for a run that does not reach such a point soon enough.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType


@dataclass
class StopRequest:
    """Whether Ctrl-C asked the run to stop."""

    asked: bool = False


@contextmanager
def stop_requests(*, enabled: bool = True) -> Iterator[StopRequest]:
    """While inside, the first SIGINT sets ``asked`` instead of raising.

    Off the main thread (where Python cannot set signal handlers), or when not
    ``enabled``, SIGINT keeps its usual meaning and ``asked`` stays False.
    """
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.getsignal(signal.SIGINT)

    def ask_to_stop(number: int, frame: FrameType | None) -> None:
        request.asked = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    signal.signal(signal.SIGINT, ask_to_stop)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
