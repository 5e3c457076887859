"""Ctrl-C (SIGINT) and SIGTERM stop a real ``hvdr explore`` as documented:
``hvdr explore: stopped`` on stderr and exit status 0."""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from collections.abc import Callable

import pytest

#: How long the server may take to stop (conftest.START_SECONDS).
STOP_SECONDS = 20


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("when", ["after-a-request", "at-once"])
def test_a_signal_stops_the_server_with_status_0(
    explore_server: Callable[..., tuple[subprocess.Popen[str], str]],
    number: signal.Signals,
    when: str,
) -> None:
    """The signal after the start-up line (and after a request, or at once): the
    server stops, says so, and exits 0."""
    process, url = explore_server()
    if when == "after-a-request":
        with urllib.request.urlopen(url + "api/start", timeout=30) as response:
            assert response.status == 200
    process.send_signal(number)
    stdout, stderr = process.communicate(timeout=STOP_SECONDS)
    assert (process.returncode, stderr, stdout) == (0, "hvdr explore: stopped\n", "")
