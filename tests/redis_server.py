"""A real ``redis-server`` for the tests that share an example database through it.

``running_redis_server`` (the ``redis_url`` fixture of ``tests/stateful/conftest.py``)
starts one on a free port of 127.0.0.1, without persistence, and stops it after the
test. Where redis-server is missing it is installed with apt-get when we run as
root (as CI does; ``.ci/run`` installs it first); the test is skipped, saying so,
only when that is not possible.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest


def redis_server_path() -> str | None:
    """redis-server, installed with apt-get where it is missing and we may."""
    found = shutil.which("redis-server")
    if found is not None or shutil.which("apt-get") is None or os.geteuid() != 0:
        return found
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another installer may hold the lock
    install = ["apt-get", *wait, "install", "-y", "-qq", "redis-server"]
    for command in (["apt-get", "update", "-qq"], install):
        subprocess.run(
            command, capture_output=True, check=False, timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def running_redis_server() -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (a free port, no persistence) while the
    generator is open; its URL."""
    server = redis_server_path()
    if server is None:
        pytest.skip("redis-server is not installed and apt-get could not install it")
    port = free_port()
    process = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:  # wait until it listens, without sleeping
            if "Ready to accept connections" in line:
                break
        else:
            pytest.fail(f"redis-server exited with status {process.wait()}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.communicate(timeout=30)  # reads and closes its output too
