"""The explorer's tests share one thing: a real ``hvdr explore`` server."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: How long the server may take to start, or to stop.
START_SECONDS = 20

#: A started server: the process and the URL of its start-up line.
Started = tuple[subprocess.Popen[str], str]


def start(*arguments: str) -> Started:
    """A real ``hvdr explore --port 0 ARGUMENTS`` in a fresh interpreter, and the
    URL read from its start-up line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hvdr", "explore", "--port", "0", *arguments],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=START_SECONDS), "no start-up line"
        line = process.stdout.readline()
        found = re.fullmatch(
            r"hvdr explore: serving (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)\n", line
        )
        assert found, line + process.stderr.read() if process.stderr else line
    except BaseException:
        stop(process)
        raise
    return process, found.group(1)


def stop(process: subprocess.Popen[str]) -> None:
    """Terminate ``process`` if it still runs, and wait for it."""
    if process.poll() is None:
        process.terminate()
    process.communicate(timeout=START_SECONDS)


@pytest.fixture(scope="module")
def explore_url() -> Iterator[str]:
    """The URL of a real ``hvdr explore --port 0``, stopped after the module's tests."""
    process, url = start()
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture
def explore_server() -> Iterator[Callable[..., Started]]:
    """Starts a server of its own for one test (``start``); stopped after it."""
    started: list[subprocess.Popen[str]] = []

    def run(*arguments: str) -> Started:
        process, url = start(*arguments)
        started.append(process)
        return process, url

    yield run
    for process in started:
        stop(process)
