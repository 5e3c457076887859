"""Per-block digests of a replica: what a resynchronisation compares instead of bytes.

``engine.storage.digests.block_digest`` is the one definition both sides use (BLAKE2b
with a 16-byte digest, the same as ``b2sum -l 128``); ``ReplicaStore.block_digests``
computes it for every block of a replica disk, reading large chunks and skipping
holes. The property: two images' digests differ exactly at the blocks that differ.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import DiskRangeError, InvalidConfiguration
from engine.replica.store import ReplicaStore
from engine.storage.digests import DIGEST_BYTES, block_digest
from engine.testing import ManualClock

MIB = 1024 * 1024
BLOCK = 4096


def write_sparse(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` leaving every all-zero 4 KiB page a hole."""
    with path.open("wb") as target:
        target.truncate(len(data))
        for start in range(0, len(data), BLOCK):
            page = data[start : start + BLOCK]
            if page.count(0) != len(page):
                target.seek(start)
                target.write(page)


def store_with(root: Path, images: dict[str, bytes]) -> ReplicaStore:
    """A store whose replica disks hold ``images`` (installed as a sparse initial
    copy, so the replica has holes wherever a page is zero)."""
    sizes = {disk: len(data) for disk, data in images.items()}
    store = ReplicaStore.create(root, "vm-1", sizes, 1, ManualClock())
    copies = {}
    for disk, data in images.items():
        copies[disk] = root.parent / f"{root.name}-{disk}.img"
        write_sparse(copies[disk], data)
    store.install_initial_copy(copies)
    return store


def test_block_digest_is_blake2b_128() -> None:
    """The digest is BLAKE2b-128 of the bytes, reproducible with any tool."""
    data = b"one block of a disk" * 200
    expected = hashlib.blake2b(data, digest_size=16).digest()
    assert (expected, 16) == (block_digest(data), DIGEST_BYTES)
    assert block_digest(memoryview(data)) == block_digest(bytearray(data))


def test_digests_of_every_block_match_block_digest(tmp_path: Path) -> None:
    """Across 1 MiB chunk boundaries, with data around them and holes between."""
    generator = random.Random(3)
    image = bytearray(3 * MIB)
    for offset in (0, MIB - 50, 2 * MIB + 4096, 3 * MIB - 100):
        image[offset : offset + 100] = generator.randbytes(100)
    store = store_with(tmp_path / "replicas", {"os": bytes(image)})
    allocated = (store.directory / "replica" / "os.img").stat().st_blocks * 512
    assert allocated < len(image) // 2  # mostly holes: the hole path is exercised
    digests = store.block_digests("os", BLOCK)
    expected = [
        block_digest(image[start : start + BLOCK])
        for start in range(0, len(image), BLOCK)
    ]
    assert expected == digests


def test_a_fresh_sparse_replica_is_all_zero_blocks(tmp_path: Path) -> None:
    """A new replica (all holes) has the zero block's digest everywhere."""
    store = ReplicaStore.create(
        tmp_path / "replicas", "vm-1", {"os": 4 * MIB}, 1, ManualClock()
    )
    expected = [block_digest(bytes(65536))] * 64
    assert expected == store.block_digests("os", 65536)


def test_data_starting_inside_a_block_digests_the_whole_block(tmp_path: Path) -> None:
    """With blocks larger than a page, data may start mid-block after a hole: the
    block is still digested from its first byte."""
    block = 65536
    image = bytearray(4 * block)
    image[block + 40960 : block + 41000] = b"x" * 40
    store = store_with(tmp_path / "replicas", {"os": bytes(image)})
    expected = [
        block_digest(image[start : start + block])
        for start in range(0, len(image), block)
    ]
    assert expected == store.block_digests("os", block)


def test_a_range_of_blocks(tmp_path: Path) -> None:
    """start_block and block_count select a run of blocks; zero blocks give []."""
    image = bytes(range(256)) * 64  # 16 KiB, four distinct 4 KiB blocks
    store = store_with(tmp_path / "replicas", {"os": image})
    everything = store.block_digests("os", BLOCK)
    assert everything[1:3] == store.block_digests(
        "os", BLOCK, start_block=1, block_count=2
    )
    assert everything[2:] == store.block_digests("os", BLOCK, start_block=2)
    nothing: list[bytes] = []
    assert nothing == store.block_digests("os", BLOCK, start_block=4, block_count=0)


@given(
    size_blocks=st.integers(min_value=1, max_value=24),
    block_power=st.integers(min_value=9, max_value=13),
    changes=st.lists(
        st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=3)),
        max_size=8,
    ),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_digests_differ_exactly_where_blocks_differ(
    tmp_path_factory: pytest.TempPathFactory,
    size_blocks: int,
    block_power: int,
    changes: list[tuple[int, bytes]],
    seed: int,
) -> None:
    """For two images, the digests differ at block i exactly when block i differs."""
    block = 1 << block_power
    size = size_blocks * block
    generator = random.Random(seed)
    ours = bytearray(generator.randbytes(size)) if seed % 2 else bytearray(size)
    theirs = bytearray(ours)
    for position, data in changes:
        offset = position % size
        theirs[offset : offset + len(data)] = data[: size - offset]
    root = tmp_path_factory.mktemp("digests")
    first = store_with(root / "a", {"os": bytes(ours)})
    second = store_with(root / "b", {"os": bytes(theirs)})
    differs = [
        a != b
        for a, b in zip(
            first.block_digests("os", block),
            second.block_digests("os", block),
            strict=True,
        )
    ]
    expected = [
        ours[start : start + block] != theirs[start : start + block]
        for start in range(0, size, block)
    ]
    assert expected == differs


@pytest.mark.parametrize(
    ("block_bytes", "match"),
    [
        (3000, "power of two"),
        (0, "power of two"),
        (True, "power of two"),
        (256, "power of two"),
        (2 * MIB, "power of two"),
        (65536, "must divide"),  # disk "data" is 32 KiB
    ],
)
def test_block_bytes_are_validated(
    tmp_path: Path, block_bytes: int, match: str
) -> None:
    """block_bytes must be a power of two (512 B to 1 MiB) dividing the disk size."""
    store = ReplicaStore.create(
        tmp_path / "r", "vm-1", {"data": 32 * 1024}, 1, ManualClock()
    )
    with pytest.raises(InvalidConfiguration, match=match):
        store.block_digests("data", block_bytes)


@pytest.mark.parametrize(
    ("start_block", "block_count", "error", "match"),
    [
        (-1, None, DiskRangeError, "start_block=-1"),
        (9, None, DiskRangeError, "8 blocks"),
        (0, 9, DiskRangeError, "8 blocks"),
        (4, 5, DiskRangeError, "8 blocks"),
        (0, -1, DiskRangeError, "block_count=-1"),
        ("0", None, InvalidConfiguration, "start_block='0'"),
        (0, 1.0, InvalidConfiguration, "block_count=1.0"),
    ],
)
def test_block_ranges_must_lie_inside_the_disk(
    tmp_path: Path,
    start_block: object,
    block_count: object,
    error: type[Exception],
    match: str,
) -> None:
    """A range outside the disk is DiskRangeError naming the disk's block count."""
    store = ReplicaStore.create(
        tmp_path / "r", "vm-1", {"data": 32 * 1024}, 1, ManualClock()
    )
    with pytest.raises(error, match=match):
        store.block_digests(
            "data",
            BLOCK,
            start_block=start_block,  # type: ignore[arg-type]
            block_count=block_count,  # type: ignore[arg-type]
        )


def test_unknown_disk_names_the_choices(tmp_path: Path) -> None:
    """An unknown disk lists the disks there are."""
    store = ReplicaStore.create(tmp_path / "r", "vm-1", {"os": BLOCK}, 1, ManualClock())
    with pytest.raises(InvalidConfiguration, match=r"choices: \['os'\]"):
        store.block_digests("swap", BLOCK)


# -- digests of chosen blocks ----------------------------------------------------------


def test_digests_of_chosen_blocks_match_the_whole_list(tmp_path: Path) -> None:
    """Listed blocks, in the order listed (repeats too), across chunks and holes."""
    generator = random.Random(11)
    image = bytearray(3 * MIB)
    for offset in (0, MIB - 50, 2 * MIB + 4096, 3 * MIB - 100):
        image[offset : offset + 100] = generator.randbytes(100)
    store = store_with(tmp_path / "replicas", {"os": bytes(image)})
    everything = store.block_digests("os", BLOCK)
    chosen = [767, 0, 1, 2, 255, 256, 257, 513, 512, 767, 3, 400]
    assert [everything[b] for b in chosen] == store.digests_of_blocks(
        "os", BLOCK, chosen
    )
    assert everything == store.digests_of_blocks("os", BLOCK, range(768))
    assert store.digests_of_blocks("os", BLOCK, []) == []


@pytest.mark.parametrize(
    ("blocks", "error", "match"),
    [
        ([8], DiskRangeError, r"blocks \[8\] of disk 'data' must lie within its 8 "),
        ([0, -1, 9], DiskRangeError, r"blocks \[-1, 9\] of disk 'data'"),
        ([True], InvalidConfiguration, "blocks must be ints"),
        ([1.0], InvalidConfiguration, "blocks must be ints"),
    ],
)
def test_chosen_blocks_must_lie_inside_the_disk(
    tmp_path: Path, blocks: list[object], error: type[Exception], match: str
) -> None:
    """A listed block outside the disk is DiskRangeError naming the disk and count."""
    store = ReplicaStore.create(
        tmp_path / "r", "vm-1", {"data": 32 * 1024}, 1, ManualClock()
    )
    with pytest.raises(error, match=match):
        store.digests_of_blocks("data", BLOCK, blocks)  # type: ignore[arg-type]


def test_chosen_blocks_check_the_disk_and_block_size(tmp_path: Path) -> None:
    """The same checks as for every block: the disk and block_bytes."""
    store = ReplicaStore.create(tmp_path / "r", "vm-1", {"os": BLOCK}, 1, ManualClock())
    with pytest.raises(InvalidConfiguration, match=r"choices: \['os'\]"):
        store.digests_of_blocks("swap", BLOCK, [0])
    with pytest.raises(InvalidConfiguration, match="power of two"):
        store.digests_of_blocks("os", 3000, [0])
