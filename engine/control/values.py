"""Values the control store accepts: from callers, and read back from its file.

Caller input that is malformed raises :class:`InvalidConfiguration` before anything
is written. Values read back are checked too (:class:`Row`): a file edited by hand or
damaged in a way SQLite's own checks let through raises :class:`DamagedState` naming
the file, the row, the column and the value, never a bare ``KeyError`` or
``ValueError`` far from the cause.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from engine.control.schema import damaged
from engine.errors import InvalidConfiguration, InvalidName
from engine.names import validate_disk_name

TEXT_CHARACTERS_MAX: Final = 64
"""Phases, directions and operation names are short identifiers from the model."""

PARAMS_BYTES_MAX: Final = 64 * 1024
"""Operation parameters are a few ids and flags; the bound stops a caller from turning
the control file into a data store."""

DISK_BYTES_MAX: Final = 2**63 - 1
"""The largest size SQLite's INTEGER holds."""


# -- values read back (DamagedState otherwise) -----------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """Checks the values of one row read back from the file ``path``.

    Each method returns the value typed when it is one the engine writes, and raises
    :class:`DamagedState` naming the file, the row, the column and the value otherwise
    (a file edited by hand, or damaged in a way SQLite's own checks let through).
    """

    path: Path
    where: str

    def refuse(self, column: str, value: object, allowed: str) -> NoReturn:
        what = f"{self.where} has {column}={value!r}; allowed: {allowed}"
        raise damaged(self.path, what)

    def integer(self, column: str, value: object, *, minimum: int) -> int:
        if type(value) is not int or value < minimum:
            self.refuse(column, value, f"an int >= {minimum}")
        return value

    def time(self, column: str, value: object) -> float:
        if type(value) is not float:
            self.refuse(column, value, "a time (a float of seconds)")
        return value

    def text(self, column: str, value: object) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= TEXT_CHARACTERS_MAX:
            self.refuse(column, value, f"text of 1 to {TEXT_CHARACTERS_MAX} characters")
        return value

    def name(
        self, column: str, value: object, validate: Callable[[object], str]
    ) -> str:
        try:
            return validate(value)
        except InvalidName as error:
            self.refuse(column, value, str(error).partition("allowed: ")[2] or "a name")

    def json_text(self, column: str, value: object) -> str:
        if not isinstance(value, str) or not _parses(value):
            self.refuse(column, value, "JSON text")
        return value


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# -- caller input (InvalidConfiguration otherwise) -------------------------------------


def disk_rows(vm_name: str, disks: object) -> list[tuple[str, str, int, int]]:
    if not isinstance(disks, Mapping) or not disks:
        msg = f"disks={disks!r} must be a non-empty mapping of disk name -> bytes "
        msg += f"(got {type(disks).__name__}); a VM needs at least one disk"
        raise InvalidConfiguration(msg)
    rows = []
    for ordinal, (disk, size) in enumerate(disks.items()):
        validate_disk_name(disk)
        if type(size) is not int or not 0 < size <= DISK_BYTES_MAX:
            msg = f"disks[{disk!r}]={size!r} must be a positive int of bytes up to "
            msg += f"{DISK_BYTES_MAX} (got {type(size).__name__})"
            raise InvalidConfiguration(msg)
        rows.append((vm_name, disk, size, ordinal))
    return rows


def checked_text(argument: str, value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= TEXT_CHARACTERS_MAX:
        msg = f"{argument}={value!r} must be a str of 1 to {TEXT_CHARACTERS_MAX} "
        msg += f"characters (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    return value


def checked_count(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{argument}={value!r} must be an int >= 0 (got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    return value


def checked_sequence(disk: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        msg = f"positions[{disk!r}]={value!r} must be an int >= -1 (-1: no record yet)"
        raise InvalidConfiguration(msg)
    return value


def checked_json_text(argument: str, value: object) -> str:
    if not isinstance(value, str) or len(value.encode()) > PARAMS_BYTES_MAX:
        msg = f"{argument} must be a str of JSON text up to {PARAMS_BYTES_MAX} bytes "
        msg += f"(got {type(value).__name__})"
        raise InvalidConfiguration(msg)
    try:
        json.loads(value)
    except json.JSONDecodeError as error:
        msg = f"{argument}={value[:80]!r} is not valid JSON: {error}"
        raise InvalidConfiguration(msg) from error
    return value
