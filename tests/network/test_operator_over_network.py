"""The operator commands on a configuration whose secondary site is a replica server
(``[sites.secondary.replica_server]`` in ``hvdr.toml``): ``hvdr serve`` in its own
process with certificates from ``hvdr certs``' code, each ``hvdr`` command a process
of its own, as an operator runs them.

Found running it by hand: with the server gone, every command (a write, a status)
waited the client's retries and backoff (6 attempts over about 6 s) once or twice per
process before it answered; now what shows the VM asks the server once, with a short
timeout, so they answer at the pace they answer while the server is up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.transport.http.certificates import make_certificates
from engine.transport.http.client import RetryPolicy
from hvdr.commands.serve_process import ServeProcess, certificate_config


@dataclass
class Operator:
    folder: Path
    served: ServeProcess

    def hvdr(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hvdr", *arguments], cwd=self.folder,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def ok(self, *arguments: str) -> str:
        ran = self.hvdr(*arguments)
        assert ran.returncode == 0, (arguments, ran.stdout, ran.stderr)
        return ran.stdout

    def timed(self, *arguments: str) -> float:
        started = time.monotonic()
        self.ok(*arguments)
        return time.monotonic() - started


def _server_config(folder: Path, port: int) -> Path:
    certs = folder / "certs"
    path = folder / "server.toml"
    path.write_text(
        certificate_config(
            site="secondary", port=port, certificate=certs / "localhost.pem",
            private_key=certs / "localhost.key", ca=certs / "ca.pem",
            primary="primary-host", storage=folder / "secondary",
        ),
        encoding="utf-8",
    )  # fmt: skip
    return path


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Operator]:
    make_certificates(tmp_path / "certs", ["localhost", "primary-host"], ca_name="lab")
    served = ServeProcess(_server_config(tmp_path, 0))
    port = served.start()
    _server_config(tmp_path, port)  # a restart listens on the same port
    (tmp_path / "hvdr.toml").write_text(
        f"""\
[orchestrator]
state = "state"

[sites.primary]
storage = "primary"

[sites.secondary]
storage = "secondary"

[sites.secondary.replica_server]
url = "https://localhost:{port}"
certificate = "certs/primary-host.pem"
private_key = "certs/primary-host.key"
ca_certificate = "certs/ca.pem"
""",
        encoding="utf-8",
    )
    try:
        yield Operator(tmp_path, served)
    finally:
        served.close()


def _backoff_seconds(policy: RetryPolicy) -> float:
    """How long the client's default retries sleep before they give up."""
    delays, delay = 0.0, policy.first_delay
    for _ in range(policy.attempts - 1):
        delays += delay
        delay = min(delay * 2, policy.max_delay)
    return delays


@pytest.mark.slow
def test_the_cli_drives_a_replica_server_and_never_waits_on_one_gone(
    operator: Operator,
) -> None:
    operator.ok("vm", "create", "web", "--disk", "os=4MiB")
    operator.ok("vm", "write", "web", "--disk", "os", "--text", "order 1")
    assert "'web' is protected" in operator.ok("vm", "enable", "web")
    up = operator.timed("vm", "write", "web", "--disk", "os", "--text", "order 2")
    assert "recovery point 2" in operator.ok("vm", "replicate", "web")
    assert list((operator.folder / "secondary").iterdir())  # the server's store

    operator.served.stop(signal.SIGKILL)
    margin = _backoff_seconds(RetryPolicy()) / 2
    down = operator.timed("vm", "write", "web", "--disk", "os", "--text", "order 3")
    assert down < up + margin, (down, up, margin)
    started = time.monotonic()
    (vm,) = json.loads(operator.ok("status", "--json"))
    assert time.monotonic() - started < up + margin
    assert (vm["phase"], vm["health"]) == ("protected", "Warning")
    assert "the link between the sites is down" in vm["reason"]
    assert vm["recovery_points"]["count"] == 2  # the catalogue's mirror
    refused = operator.hvdr("vm", "replicate", "web")
    assert refused.returncode == 2, refused.stderr
    assert "the link between the sites is down [guard link_up]" in refused.stderr

    operator.served.start()
    assert "recovery point 3" in operator.ok("vm", "replicate", "web")
    failed_over = operator.ok("vm", "failover", "web", "--planned")
    assert "'web' is failed_over, active at secondary" in failed_over
    read = operator.ok("vm", "read", "web", "--disk", "os", "--length", "7")
    assert read == "order 3\n"
