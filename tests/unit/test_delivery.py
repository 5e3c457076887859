"""Unit tests for engine.transport.delivery: files reach the inbox whole or not."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from engine.errors import InvalidConfiguration, InvalidName, StorageFull
from engine.transport import delivery


@pytest.fixture
def root(tmp_path: Path) -> Path:
    target = tmp_path / "secondary"
    target.mkdir()
    return target


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    files = {"os": outbox / "os.hrl", "data": outbox / "data.hrl"}
    files["os"].write_bytes(b"os log bytes")
    files["data"].write_bytes(b"data log bytes" * 1000)
    return files


def test_a_cycle_lands_in_the_inbox_with_the_same_bytes(
    root: Path, logs: dict[str, Path]
) -> None:
    """Every log of a delivered cycle is in inbox/<vm>/cycle-<id>, byte for byte."""
    delivered, size = delivery.deliver_cycle(root, "vm-1", 7, logs)
    inbox = root / "inbox" / "vm-1" / "cycle-7"
    assert {"os": inbox / "os.hrl", "data": inbox / "data.hrl"} == delivered
    assert {d: p.read_bytes() for d, p in logs.items()} == {
        d: p.read_bytes() for d, p in delivered.items()
    }
    assert size == sum(p.stat().st_size for p in logs.values())


def test_delivering_a_cycle_again_replaces_the_copy(
    root: Path, logs: dict[str, Path]
) -> None:
    """A retry leaves one complete copy and no temporary directory."""
    delivery.deliver_cycle(root, "vm-1", 2, logs)
    delivered, _ = delivery.deliver_cycle(root, "vm-1", 2, logs)
    assert sorted(os.listdir(delivered["os"].parent)) == ["data.hrl", "os.hrl"]
    assert os.listdir(delivered["os"].parent.parent) == ["cycle-2"]


def test_removing_a_delivered_cycle_leaves_no_folder(
    root: Path, logs: dict[str, Path]
) -> None:
    """Once the store took the cycle, its inbox folder goes."""
    delivery.deliver_cycle(root, "vm-1", 3, logs)
    delivery.remove_delivered(root, "vm-1", 3)
    assert os.listdir(root / "inbox" / "vm-1") == []


def test_an_initial_copy_image_stays_sparse(root: Path, tmp_path: Path) -> None:
    """An image arrives equal, without allocating its holes, with progress."""
    image = tmp_path / "os.img"
    with image.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024)
        handle.seek(4096)
        handle.write(b"boot sector")
    seen: list[tuple[int, int]] = []
    delivery.deliver_disk_image(
        root,
        "vm-1",
        "os",
        image,
        progress=lambda done, total: seen.append((done, total)),
    )
    shipped = root / "inbox" / "vm-1" / "initial" / "os.img"
    assert image.read_bytes() == shipped.read_bytes()
    assert shipped.stat().st_blocks * 512 < 2 * 1024 * 1024
    assert seen[-1] == (8 * 1024 * 1024, 8 * 1024 * 1024)


def test_a_hostile_vm_name_is_refused(root: Path, logs: dict[str, Path]) -> None:
    """A VM name that would escape the inbox is refused before anything is copied."""
    with pytest.raises(InvalidName):
        delivery.deliver_cycle(root, "../../etc", 1, logs)
    assert not (root / "inbox").exists()


def test_a_hostile_disk_name_is_refused(root: Path, logs: dict[str, Path]) -> None:
    """A disk name with a path in it is refused."""
    with pytest.raises(InvalidName):
        delivery.deliver_cycle(root, "vm-1", 1, {"../x": logs["os"]})


def test_a_missing_log_delivers_nothing(root: Path, logs: dict[str, Path]) -> None:
    """A missing log refuses the whole cycle before anything is copied."""
    logs["data"].unlink()
    with pytest.raises(InvalidConfiguration, match="does not exist"):
        delivery.deliver_cycle(root, "vm-1", 1, logs)
    assert not (root / "inbox").exists()


def test_a_bad_cycle_id_is_refused(root: Path, logs: dict[str, Path]) -> None:
    """Cycle ids are ints >= 0 (a bool is not one)."""
    for bad in (-1, True, "1"):
        with pytest.raises(InvalidConfiguration, match="cycle_id"):
            delivery.deliver_cycle(root, "vm-1", bad, logs)  # type: ignore[arg-type]


def test_a_full_target_delivers_nothing(
    file_size_limit: Callable[[int], AbstractContextManager[None]],
    root: Path,
    tmp_path: Path,
) -> None:
    """A target without room raises StorageFull and keeps no partial cycle."""
    big_log = tmp_path / "os.hrl"
    big_log.write_bytes(os.urandom(2 * 1024 * 1024))
    with (
        file_size_limit(1024 * 1024),
        pytest.raises(StorageFull, match="out of space receiving cycle 1"),
    ):
        delivery.deliver_cycle(root, "vm-1", 1, {"os": big_log})
    assert not os.listdir(root / "inbox" / "vm-1")
