"""States packed into a few bytes each: how the explorer stores what it has seen.

A key of ``invariants.projection`` is a tuple of small integers (environment id,
plan runs id, VM id per VM). Kept as tuples, each state the search has seen costs a
tuple object: 96 bytes with five fields, and tracked by the garbage collector, which
walks every one of them at each full collection. Packed, a key is one ``bytes``
object of fixed-width unsigned fields (``struct``, little-endian): 48 bytes for up
to 14 bytes of fields (seven 2-byte ids), never tracked, hashed once and the hash
kept, and made or read by one call into C::

    code = struct.pack("<HHHHH", env, plans, vm0, vm1, vm2)

Fields are 1 byte while every id is below 256, 2 bytes below 65,536 and 4 past
that. Ids grow
during a search (a new VM state met late), so a packing that no longer fits is
replaced by a wider one (``grown``) and the explorer repacks the codes it holds
(``repack``: ids never change, only their width). Every field has the same width
in one packing, so two keys are equal exactly when their codes are.
"""

from __future__ import annotations

import struct

Key = tuple[int, ...]  # (environment id, plan runs id, vm id, vm id, ...)

#: Field formats, narrowest first, with how many ids each can hold.
WIDTHS = (("B", 1 << 8), ("H", 1 << 16), ("I", 1 << 32))


class Packing:
    """How keys of ``vm_count`` VMs pack: one ``struct`` format (a value: equal
    when the formats are)."""

    __slots__ = ("format", "limit", "pack", "unpack", "vm_count")

    def __init__(self, vm_count: int, field: str = "B") -> None:
        self.vm_count = vm_count
        self.format = struct.Struct("<" + field * (vm_count + 2))
        #: How many ids of each kind fit.
        self.limit = dict(WIDTHS)[field]
        #: ``pack(env, plans, *vms)``: the code of a key, given as its fields.
        self.pack = self.format.pack
        #: ``unpack(code)``: the key of a code.
        self.unpack = self.format.unpack

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Packing) and self.format.format == other.format.format

    def __hash__(self) -> int:
        return hash(self.format.format)

    def __repr__(self) -> str:
        return f"Packing({self.format.format!r})"

    @property
    def size(self) -> int:
        """The bytes of fields in one code."""
        return self.format.size

    def fits(self, envs: int, plans: int, vms: int) -> bool:
        """Whether every id below these counts has room in its field."""
        return max(envs, plans, vms) <= self.limit

    def grown(self, envs: int, plans: int, vms: int) -> Packing:
        """The narrowest packing that fits these counts (at least this one)."""
        most = max(envs, plans, vms)
        for field, limit in WIDTHS:
            if most <= limit and limit >= self.limit:
                return Packing(self.vm_count, field)
        msg = f"{most:,} ids do not fit in 4 bytes"
        raise OverflowError(msg)

    def code(self, key: Key) -> bytes:
        """The code of ``key``."""
        return self.pack(*key)

    def repack(self, code: bytes, wider: Packing) -> bytes:
        """``code`` (of this packing) as a code of ``wider``."""
        return wider.pack(*self.unpack(code))
