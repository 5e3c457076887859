"""The demo's check of a copy: which prefix of the guest's writes it holds, and
every block that is not exactly that (so the demo's checks can fail)."""

from __future__ import annotations

from hvdr.commands.workload import BLOCK_BYTES, Placement, expected_image, holding


def test_holding_names_the_prefix_a_copy_holds_and_every_block_that_is_not_it() -> None:
    """The drill's check of a copy fails on one wrong block or one missing write."""
    placement = Placement({"a": 64 * BLOCK_BYTES, "b": 32 * BLOCK_BYTES})
    lineage = list(range(1, 41))
    copy = {d: bytes(i) for d, i in expected_image(placement, range(1, 31)).items()}
    found = holding(placement, lineage, copy)
    assert (found.newest, found.writes, found.exact) == (30, 30, True)
    assert found.blocks_checked == 96
    damaged = dict(copy, a=b"\1" + copy["a"][1:])
    assert holding(placement, lineage, damaged).blocks_mismatched == 1
    gap = [v for v in range(1, 31) if v != 10]
    missing = {d: bytes(i) for d, i in expected_image(placement, gap).items()}
    assert not holding(placement, lineage, missing).exact
    assert holding(placement, lineage, missing).describe().endswith("not matching")


def test_holding_follows_a_lineage_that_skips_lost_writes() -> None:
    """After a lossy failover the copy holds 1..10 and 21..25, never 11..20."""
    placement = Placement({"a": 64 * BLOCK_BYTES})
    kept = [*range(1, 11), *range(21, 26)]
    copy = {d: bytes(i) for d, i in expected_image(placement, kept).items()}
    found = holding(placement, kept, copy, lost=(11, 20))
    assert found.exact
    assert found.describe() == "writes 1..10 and 21..25"
    with_lost = {
        d: bytes(i) for d, i in expected_image(placement, range(1, 26)).items()
    }
    assert not holding(placement, kept, with_lost, lost=(11, 20)).exact
