"""The explorer's tests share one thing: a real ``hvdr explore`` server."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: How long the server may take to start, or to stop.
START_SECONDS = 20


@pytest.fixture(scope="module")
def explore_url() -> Iterator[str]:
    """The URL of a real ``hvdr explore --port 0`` in a fresh interpreter, read from
    its start-up line; stopped after the module's tests."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hvdr", "explore", "--port", "0"],
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
        yield found.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=START_SECONDS)
