"""The states a search has seen: one packed integer each, with its parent.

``codes[i]`` is the code (``invariants.packing``: a few bytes) of state ``i``,
numbered in the order the breadth-first search met them; ``index`` maps a code
back to its number;
``parent[i]`` is the number of the state ``i`` was first reached from (-1 for the
initial state), so the trace to any state is a shortest one. The list and the
dictionary share one ``bytes`` object per state; the parents are a C array of
4-byte integers. ``repack`` moves every code to a wider packing when the ids
interned during the search outgrow the one in use.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from invariants.packing import Key, Packing


@dataclass
class StateStore:
    """Codes in the order met, their numbers, and the parent of each."""

    packing: Packing
    codes: list[bytes] = field(default_factory=list)
    index: dict[bytes, int] = field(default_factory=dict)
    parent: array[int] = field(default_factory=lambda: array("i"))

    def __len__(self) -> int:
        return len(self.codes)

    def add(self, code: bytes, parent: int) -> int:
        """The number of ``code``, added (reached from ``parent``) if new."""
        found = self.index.get(code)
        if found is None:
            found = self.index[code] = len(self.codes)
            self.codes.append(code)
            self.parent.append(parent)
        return found

    def key(self, number: int) -> Key:
        """The key of state ``number``."""
        return tuple(self.packing.unpack(self.codes[number]))

    def unpacked(self, stop: int | None = None) -> list[Key]:
        """The keys of the states numbered below ``stop`` (all by default)."""
        unpack = self.packing.unpack
        return [tuple(unpack(code)) for code in self.codes[:stop]]

    def repack(self, wider: Packing) -> None:
        """Every code moved to ``wider`` (numbers and parents unchanged); the
        projection calls it when its ids outgrow the packing (``on_widen``)."""
        old, self.packing = self.packing, wider
        if wider != old:  # in place: a caller's references stay good
            self.codes[:] = [old.repack(code, wider) for code in self.codes]
            self.index.clear()
            self.index.update((code, number) for number, code in enumerate(self.codes))
