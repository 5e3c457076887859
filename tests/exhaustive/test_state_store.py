"""The packed state store: codes stand for keys one to one, through every widening."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from itertools import combinations_with_replacement

import pytest

from invariants.configuration import DEFAULT_CONFIG
from invariants.explorer import _unreduced
from invariants.packing import Key, Packing
from invariants.projection import Projection
from invariants.state_store import StateStore
from model import ModelConfig, initial_state

TWO = replace(DEFAULT_CONFIG, vm_count=2, fault_budget=0)


def _search(config: ModelConfig, *, symmetry: bool) -> tuple[StateStore, list[Key]]:
    """A breadth-first search over codes beside one over tuple keys."""
    projection = Projection(config, symmetry=symmetry)
    start = projection.canonical(projection.encode(initial_state(config)))
    store = StateStore(projection.packing)
    store.repack(projection.fitted())
    projection.on_widen.append(store.repack)
    store.add(store.packing.code(start), -1)
    keys, index = [start], {start: 0}
    current = 0
    while current < len(store):
        codes = projection.successor_codes(store.codes[current])
        after = projection.successor_keys(keys[current])
        assert [tuple(store.packing.unpack(code)) for code in codes] == after
        for code, key in zip(codes, after, strict=True):
            number = store.add(code, current)
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
            assert number == index[key]
        current += 1
    return store, keys


@pytest.mark.parametrize("symmetry", [True, False])
def test_every_reachable_state_round_trips_through_its_code(symmetry: bool) -> None:
    """Two VMs without faults: the packed search numbers the states as the tuple
    search does, every code unpacks to its key, and the packing was widened on the
    way (974 VM states do not fit one byte), so repacking kept every number."""
    store, keys = _search(TWO, symmetry=symmetry)
    assert store.unpacked() == keys
    assert len(set(store.codes)) == len(keys) == len(store.index)
    assert all(store.index[code] == i for i, code in enumerate(store.codes))
    assert store.packing != Packing(2)  # widened from one byte per field
    assert store.parent[0] == -1
    assert all(0 <= store.parent[i] < i for i in range(1, len(store)))


def test_a_packing_grows_only_when_needed_and_refuses_what_cannot_fit() -> None:
    """Fields widen from one byte to two to four, never narrow, and a code moves
    to a wider packing with its ids."""
    narrow = Packing(3)
    assert narrow.fits(256, 1, 256)
    assert not narrow.fits(1, 1, 257)
    assert narrow.grown(1, 1, 257) == Packing(3, "H")
    assert narrow.grown(1, 1, 1 << 20) == Packing(3, "I")
    assert Packing(3, "H").grown(1, 1, 2) == Packing(3, "H")  # never narrower
    with pytest.raises(OverflowError):
        narrow.grown(1, 1, (1 << 32) + 1)
    wide = Packing(3, "H")
    code = narrow.code((1, 0, 2, 2, 255))
    assert wide.unpack(narrow.repack(code, wide)) == (1, 0, 2, 2, 255)


def test_orbit_sizes_count_every_permutation() -> None:
    """``_unreduced`` adds n!/(m1! m2! ...) per sorted key: checked on every sorted
    key of four VMs over three ids against the count of distinct permutations."""
    store = StateStore(Packing(4))
    for vms in combinations_with_replacement(range(3), 4):
        store.add(store.packing.code((0, 0, *vms)), -1)
    expected = 0
    for key in store.unpacked():
        orbit = math.factorial(4)
        for repeats in Counter(key[2:]).values():
            orbit //= math.factorial(repeats)
        expected += orbit
    assert _unreduced(store) == expected == 3**4
