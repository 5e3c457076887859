"""``hvdr serve`` as a real process: start, SIGTERM during an apply, SIGKILL during an
apply and a restart, and a second server on the same storage.

The primary's engine runs in the test; the secondary's replicas are behind
``hvdr serve --config`` in a subprocess (certificates from ``hvdr certs``' code). A
kill is timed on a condition, not a clock: the test waits until the replica store's
``intent.json`` exists (an apply is under way) and kills the server then.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import pytest

from engine.errors import TransportError
from engine.orchestration.engine import ReplicationEngine
from engine.transport.http.certificates import make_certificates
from engine.transport.http.client import HttpReplica, RetryPolicy
from engine.transport.http.tls import client_context
from hvdr.commands.serve_process import ServeProcess, certificate_config

MIB = 1024 * 1024
DISKS = {"os": 128 * MIB}
LISTENING = " listening on "


def write_config(path: Path, certs: Path, storage: Path, port: int) -> None:
    path.write_text(
        certificate_config(
            site="secondary", port=port, certificate=certs / "localhost.pem",
            private_key=certs / "localhost.key", ca=certs / "ca.pem",
            primary="primary-host", storage=storage,
        ),
        encoding="utf-8",
    )  # fmt: skip


@dataclass
class Setup:
    served: ServeProcess
    engine: ReplicationEngine
    client: HttpReplica
    secondary: Path
    certs: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    certs = tmp_path / "certs"
    make_certificates(certs, ["localhost", "primary-host"], ca_name="test CA")
    secondary = tmp_path / "s"
    config = tmp_path / "server.toml"
    write_config(config, certs, secondary, 0)
    served = ServeProcess(config)
    served.start()
    write_config(config, certs, secondary, served.port)  # a restart keeps the port
    context = client_context(
        certs / "primary-host.pem", certs / "primary-host.key", certs / "ca.pem"
    )
    client = HttpReplica(
        f"https://localhost:{served.port}", site_name="secondary", ssl_context=context,
        retry=RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.1),
    )  # fmt: skip
    engine = ReplicationEngine.open(
        tmp_path / "p", secondary, replica_servers={"secondary": client}
    )
    try:
        yield Setup(served, engine, client, secondary, certs)
    finally:
        engine.close()
        client.close()
        served.close()


def protect_and_change(engine: ReplicationEngine, seed: int) -> dict[str, bytes]:
    """Protect a VM, then change 40 MiB of it (a large cycle to apply)."""
    if "web" not in engine.vm_names():
        engine.create_vm("web", DISKS)
        engine.enable_protection("web")
    for index in range(40):
        engine.write("web", "os", index * MIB, bytes([(seed + index) % 250 + 1]) * MIB)
    return {"os": engine.read("web", "os", 0, DISKS["os"])}


def wait_for(condition: object, seconds: float = 30.0) -> None:
    """Until ``condition()`` holds (bounded in time; a file check per millisecond)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{condition} did not hold within {seconds} s")
        time.sleep(0.001)


def intent(setup: Setup) -> Path:
    return setup.secondary / "replicas" / "web" / "intent.json"


def in_thread(work: object) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())  # type: ignore[operator]
        except Exception as error:  # reported to the test
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def newest_point_matches_source(setup: Setup, source: dict[str, bytes]) -> None:
    point = setup.engine.status("web").recovery_points[-1].recovery_point_id
    reader = setup.client.point_reader("web", point)
    assert reader.read("os", 0, DISKS["os"]) == source["os"]


def test_sigterm_during_an_apply_lets_it_complete(setup: Setup) -> None:
    source = protect_and_change(setup.engine, seed=1)
    points = len(setup.engine.status("web").recovery_points)
    thread, outcome = in_thread(lambda: setup.engine.replicate("web"))
    wait_for(lambda: intent(setup).exists())
    assert setup.served.stop(signal.SIGTERM) == 0  # it waited for the apply
    thread.join(60)
    assert not intent(setup).exists()  # applied whole: nothing left to finish
    assert any('"stopping"' in line for line in setup.served.output)
    setup.served.start()
    replica = setup.client.status("web")
    assert replica.recovered is None  # the restart had nothing to finish or undo
    assert len(replica.points) == points + 1, (replica, outcome)
    reader = setup.client.point_reader("web", replica.points[-1].recovery_point_id)
    assert reader.read("os", 0, DISKS["os"]) == source["os"]
    # The engine heard no answer after the stop (its next request found the server
    # gone) or heard it; either way its next cycle agrees with the replica.
    setup.engine.replicate("web")
    newest_point_matches_source(setup, source)


def test_sigkill_during_an_apply_then_a_restart_recovers(setup: Setup) -> None:
    before = protect_and_change(setup.engine, seed=3)
    setup.engine.replicate("web")
    points = setup.engine.status("web").recovery_points
    source = protect_and_change(setup.engine, seed=40)
    thread, outcome = in_thread(lambda: setup.engine.replicate("web"))
    wait_for(lambda: intent(setup).exists())
    assert setup.served.stop(signal.SIGKILL) == -signal.SIGKILL
    thread.join(60)
    assert isinstance(outcome[0], TransportError), outcome
    assert intent(setup).exists()  # killed mid-apply: the store must finish or undo it
    setup.served.start()
    status = setup.client.status("web")
    assert status.recovered is not None, status  # the restart finished or undid it
    newest = status.points[-1]
    reader = setup.client.point_reader("web", newest.recovery_point_id)
    expected = before if newest == points[-1] else source
    assert reader.read("os", 0, DISKS["os"]) == expected["os"]
    setup.engine.replicate("web")  # the cycle goes again, or was applied already
    newest_point_matches_source(setup, source)


def test_a_second_server_on_the_same_storage_is_refused(
    setup: Setup, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    write_config(other, setup.certs, setup.secondary, 0)
    second = subprocess.run(
        [sys.executable, "-m", "hvdr", "serve", "--config", str(other)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert second.returncode == 2, second
    assert "hvdr serve:" in second.stderr
    assert "replica.lock" in second.stderr or "held by" in second.stderr
    assert "Traceback" not in second.stderr
    assert setup.client.health().status == "ready"  # the first one serves on


def test_sigterm_while_a_chunk_is_arriving_stops_at_once_and_loses_nothing(
    setup: Setup,
) -> None:
    """A chunk whose body is still arriving when SIGTERM comes is abandoned (it was
    never acknowledged), not awaited for the stop's 120 s grace; the upload stands
    where it did, and the restarted server takes the chunk again (found by the
    outside review: the stop waited for the body, 60 to 120 s)."""
    setup.client.create_replica("raw", {"os": 64 * MIB}, 2)
    key = "/v1/vms/raw/uploads/initial.os"
    first = bytes(range(256)) * 4096  # 1 MiB, acknowledged before the stop
    setup.client._send(
        "PUT", key, params={"offset": "0"}, content=first,
        headers={"X-Hvdr-Crc32c": f"{google_crc32c.value(first):08x}"},
    )  # fmt: skip
    context = client_context(
        setup.certs / "primary-host.pem", setup.certs / "primary-host.key",
        setup.certs / "ca.pem",
    )  # fmt: skip
    with (
        socket.create_connection(("127.0.0.1", setup.served.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            f"PUT {key}?offset={MIB} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {8 * MIB}\r\nX-Hvdr-Crc32c: 00000000\r\n\r\n".encode()
            + b"\x01" * MIB
        )
        assert setup.client.health().status == "ready"  # the server read it all
        started = time.monotonic()
        assert setup.served.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 20  # not the 120 s grace
        assert tls.recv(65536) == b""  # closed with no answer: nothing acknowledged
    logged = [json.loads(line) for line in setup.served.output if line.startswith("{")]
    [stopping] = [line for line in logged if line["event"] == "stopping"]
    assert stopping["bodies_abandoned"] == 1
    [abandoned] = [line for line in logged if line["event"] == "abandoned"]
    assert (abandoned["method"], abandoned["path"]) == ("PUT", key)
    setup.served.start()
    # The clean stop made what was received durable: the restart resumes there.
    assert setup.client._send("GET", key).json() == {"received": MIB, "durable": MIB}


def test_a_port_in_use_is_refused_before_the_storage_is_touched(
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs, ["localhost", "primary-host"], ca_name="test CA")
    storage = tmp_path / "never-created"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "server.toml"
        write_config(config, certs, storage, port)
        refused = subprocess.run(
            [sys.executable, "-m", "hvdr", "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert refused.returncode == 2, refused
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert not storage.exists()  # not created, not locked, nothing recovered


def test_what_a_restart_finished_or_undid_is_logged(setup: Setup) -> None:
    protect_and_change(setup.engine, seed=5)
    thread, _ = in_thread(lambda: setup.engine.replicate("web"))
    wait_for(lambda: intent(setup).exists())
    assert setup.served.stop(signal.SIGKILL) == -signal.SIGKILL
    thread.join(60)
    setup.served.output.clear()
    setup.served.start()
    recovered = setup.client.status("web").recovered
    assert recovered is not None
    wait_for(lambda: any('"listening"' in line for line in setup.served.output))
    logged = [json.loads(line) for line in setup.served.output if line.startswith("{")]
    lines = [line for line in logged if line["event"] == "recovered"]
    assert [(line["vm"].rsplit(":", 1)[1], line["outcome"]) for line in lines] == [
        ("web", recovered)
    ]
