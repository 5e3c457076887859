"""Unit tests for engine.transport.in_process: copying between storage roots."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from engine.errors import (
    InvalidConfiguration,
    InvalidName,
    StorageFull,
    TransportError,
)
from engine.transport.in_process import InProcessTransport, Transport


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    sites = {"primary": tmp_path / "primary", "secondary": tmp_path / "secondary"}
    for root in sites.values():
        root.mkdir()
    return sites


@pytest.fixture
def transport(roots: dict[str, Path]) -> InProcessTransport:
    return InProcessTransport(roots)


@pytest.fixture
def logs(roots: dict[str, Path]) -> dict[str, Path]:
    outbox = roots["primary"] / "outbox"
    outbox.mkdir()
    files = {"os": outbox / "os.hrl", "data": outbox / "data.hrl"}
    files["os"].write_bytes(b"os log bytes")
    files["data"].write_bytes(b"data log bytes" * 1000)
    return files


def test_in_process_transport_is_a_transport(transport: InProcessTransport) -> None:
    """InProcessTransport satisfies the Transport protocol."""
    shipper: Transport = transport
    assert shipper.reachable("primary", "secondary")


def test_ship_cycle_delivers_every_log_to_the_inbox(
    transport: InProcessTransport, logs: dict[str, Path], roots: dict[str, Path]
) -> None:
    """A shipped cycle lands in the target inbox with the same bytes."""
    shipped = transport.ship_cycle("primary", "secondary", "vm-1", 7, logs)
    inbox = roots["secondary"] / "inbox" / "vm-1" / "cycle-7"
    assert {"os": inbox / "os.hrl", "data": inbox / "data.hrl"} == shipped
    assert {d: p.read_bytes() for d, p in logs.items()} == {
        d: p.read_bytes() for d, p in shipped.items()
    }


def test_link_down_refuses_and_delivers_nothing(
    transport: InProcessTransport, logs: dict[str, Path], roots: dict[str, Path]
) -> None:
    """With the link down a transfer raises TransportError naming both sites."""
    transport.link_up = False
    with pytest.raises(TransportError, match="'primary' to site 'secondary' is down"):
        transport.ship_cycle("primary", "secondary", "vm-1", 1, logs)
    assert not (roots["secondary"] / "inbox").exists()
    expected = (False, 1)
    assert expected == (
        transport.reachable("secondary", "primary"),
        transport.statistics().transfers_refused,
    )


def test_link_back_up_ships_again(
    transport: InProcessTransport, logs: dict[str, Path]
) -> None:
    """After the link comes back the same cycle ships."""
    transport.link_up = False
    with pytest.raises(TransportError):
        transport.ship_cycle("primary", "secondary", "vm-1", 1, logs)
    transport.link_up = True
    shipped = transport.ship_cycle("primary", "secondary", "vm-1", 1, logs)
    expected = ["data", "os"]
    assert expected == sorted(shipped)


def test_reshipping_a_cycle_replaces_the_copy(
    transport: InProcessTransport, logs: dict[str, Path]
) -> None:
    """Shipping the same cycle twice leaves one complete copy."""
    transport.ship_cycle("primary", "secondary", "vm-1", 2, logs)
    shipped = transport.ship_cycle("primary", "secondary", "vm-1", 2, logs)
    expected = (["data.hrl", "os.hrl"], ["cycle-2"])
    actual = (
        sorted(os.listdir(shipped["os"].parent)),
        os.listdir(shipped["os"].parent.parent),
    )
    assert expected == actual


def test_initial_copy_stays_sparse(
    transport: InProcessTransport, roots: dict[str, Path]
) -> None:
    """An initial-copy image arrives equal and without allocating its holes."""
    image = roots["primary"] / "os.img"
    with image.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024)
        handle.seek(4096)
        handle.write(b"boot sector")
    seen: list[tuple[int, int]] = []
    shipped = transport.ship_disk_image(
        "primary", "secondary", "vm-1", "os", image,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert image.read_bytes() == shipped.read_bytes()
    assert shipped.stat().st_blocks * 512 < 2 * 1024 * 1024
    assert seen[-1] == (8 * 1024 * 1024, 8 * 1024 * 1024)


def test_a_disk_image_is_not_shipped_while_the_link_is_down(
    transport: InProcessTransport, roots: dict[str, Path]
) -> None:
    """Link down: TransportError naming both sites, nothing in the inbox."""
    image = roots["primary"] / "data.img"
    image.write_bytes(b"x" * 4096)
    transport.link_up = False
    with pytest.raises(TransportError, match="'primary' to site 'secondary' is down"):
        transport.ship_disk_image("primary", "secondary", "vm-1", "data", image)
    assert not (roots["secondary"] / "inbox" / "vm-1" / "initial").exists()


def test_unknown_site_names_the_choices(
    transport: InProcessTransport, logs: dict[str, Path]
) -> None:
    """An unknown site is refused, listing the sites there are."""
    with pytest.raises(InvalidConfiguration, match=r"\['primary', 'secondary'\]"):
        transport.ship_cycle("primary", "tertiary", "vm-1", 1, logs)


def test_same_site_is_refused(transport: InProcessTransport) -> None:
    """A transfer from a site to itself is refused."""
    with pytest.raises(InvalidConfiguration, match="two different sites"):
        transport.reachable("primary", "primary")


def test_hostile_vm_name_is_refused(
    transport: InProcessTransport, logs: dict[str, Path]
) -> None:
    """A VM name that would escape the inbox is refused."""
    with pytest.raises(InvalidName):
        transport.ship_cycle("primary", "secondary", "../../etc", 1, logs)


def test_missing_source_file_ships_nothing(
    transport: InProcessTransport, logs: dict[str, Path], roots: dict[str, Path]
) -> None:
    """A missing log refuses the whole cycle before anything is copied."""
    logs["data"].unlink()
    with pytest.raises(InvalidConfiguration, match="does not exist"):
        transport.ship_cycle("primary", "secondary", "vm-1", 1, logs)
    assert not (roots["secondary"] / "inbox").exists()


def test_statistics_count_files_and_bytes(
    transport: InProcessTransport, logs: dict[str, Path]
) -> None:
    """statistics() counts cycles, files and bytes shipped."""
    transport.ship_cycle("primary", "secondary", "vm-1", 1, logs)
    statistics = transport.statistics()
    total = sum(path.stat().st_size for path in logs.values())
    assert (1, 2, total) == (
        statistics.cycles_shipped,
        statistics.files_shipped,
        statistics.bytes_shipped,
    )


def test_full_target_delivers_nothing(
    file_size_limit: Callable[[int], AbstractContextManager[None]],
    transport: InProcessTransport,
    roots: dict[str, Path],
) -> None:
    """A target without room raises StorageFull and keeps no partial cycle."""
    big_log = roots["primary"] / "os.hrl"
    big_log.write_bytes(os.urandom(2 * 1024 * 1024))
    with (
        file_size_limit(1024 * 1024),
        pytest.raises(StorageFull, match="'secondary' is out of space"),
    ):
        transport.ship_cycle("primary", "secondary", "vm-1", 1, {"os": big_log})
    assert not os.listdir(roots["secondary"] / "inbox" / "vm-1")
