"""Names of sites, VMs and disks, and the paths built from them.

Every name the engine turns into a file or directory passes through here first. A name
comes from an operator, a configuration file or the other site, so it is *caller input*:
it is validated with :class:`~engine.errors.InvalidName`, never with ``assert``.

The rule is deliberately narrow, so that one name is one path component on every
filesystem we may meet (ext4, XFS, NTFS, SMB shares):

- 1 to :data:`NAME_CHARACTERS_MAX` characters of ``[A-Za-z0-9._-]``;
- not starting with ``.`` (no hidden files, no ``.`` or ``..``);
- no ``..`` anywhere (a sequence some tools still treat as "parent");
- not ending with ``.`` (Windows and SMB drop a trailing dot: two names, one file);
- not a Windows device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``COM9``,
  ``LPT0``-``LPT9``, in any case, with any extension).

The character set already excludes ``/``, ``\\``, NUL, spaces and anything non-ASCII, so
a valid name can never name a parent, a sibling, an absolute path or a device. Names
that differ only in case are one file on NTFS: the engine refuses a second VM, or a
second disk of a VM, whose name differs from an existing one only in case.

:func:`safe_child` builds ``root / name / ...`` from validated names and then *checks*
the resolved result is still under the resolved root. The check is redundant for valid
names, and that is the point: a symlink planted inside the storage root, or a future
change to the rule, cannot make the engine write outside its root.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import InvalidName

NAME_CHARACTERS_MAX = 64
"""Longest name accepted: fits a path component everywhere and keeps paths short
enough for Windows' 260-character limit with a few levels of nesting."""

SUFFIX_CHARACTERS_MAX = 32
"""What the engine may add to a name to make a file name (``.img.rolled-back.blocks``
and ``.tmp`` are the longest, 27): :func:`safe_child` accepts path components this
much longer than a name, so that every valid name yields usable file names (96
characters at most, far below the 255 bytes filesystems allow)."""

RESERVED_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{digit}" for digit in range(10)}
    | {f"LPT{digit}" for digit in range(10)}
)
"""Names Windows gives to devices, whatever the extension: never a file there."""

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")

_ALLOWED = (
    f"1 to {NAME_CHARACTERS_MAX} characters of letters, digits, '.', '_' and '-', "
    "not starting with '.' and without '..'"
)


def validate_name(
    value: object, *, argument: str, characters_max: int = NAME_CHARACTERS_MAX
) -> str:
    """Return ``value`` if it is a valid name, else raise :class:`InvalidName`.

    ``argument`` names the parameter in the message (``"vm_name"``, ``"disk_id"``);
    ``characters_max`` is larger only for file names derived from a name.
    """
    if not isinstance(value, str):
        msg = f"{argument}={value!r} must be a str (got {type(value).__name__})"
        raise InvalidName(msg)
    if len(value) > characters_max:
        allowed = _ALLOWED.replace(str(NAME_CHARACTERS_MAX), str(characters_max), 1)
        msg = (
            f"{argument}={value!r} is {len(value)} characters long; allowed: {allowed}"
        )
        raise InvalidName(msg)
    if _NAME_PATTERN.fullmatch(value) is None or ".." in value:
        msg = f"{argument}={value!r} is not a valid name; allowed: {_ALLOWED}"
        raise InvalidName(msg)
    if value.endswith("."):
        msg = f"{argument}={value!r} ends with '.', which Windows and SMB shares drop "
        msg += f"(two names would be one file); allowed: {_ALLOWED}"
        raise InvalidName(msg)
    if value.split(".", 1)[0].upper() in RESERVED_DEVICE_NAMES:
        msg = f"{argument}={value!r} names a device on Windows "
        msg += f"({value.split('.', 1)[0].upper()}, with any extension); choose another"
        raise InvalidName(msg)
    return value


def validate_site_name(value: object) -> str:
    """Validate a site name (``"primary-dc"``)."""
    return validate_name(value, argument="site_name")


def validate_vm_name(value: object) -> str:
    """Validate a virtual machine name (``"sql-01"``)."""
    return validate_name(value, argument="vm_name")


def validate_disk_name(value: object) -> str:
    """Validate a disk name or disk id (``"sql-01.os"``)."""
    return validate_name(value, argument="disk_name")


def safe_child(root: Path, *names: str) -> Path:
    """Return ``root / names[0] / names[1] / ...``, guaranteed to stay under ``root``.

    Every name is validated (a name with the suffix of a file derived from it, up to
    :data:`SUFFIX_CHARACTERS_MAX` more characters, is accepted); the joined path is
    resolved (following any symlink that already exists) and refused with
    :class:`InvalidName` unless it lies strictly under the resolved root. The path
    need not exist.
    """
    if not names:
        msg = "safe_child() needs at least one name below the root (got none)"
        raise InvalidName(msg)
    for position, name in enumerate(names):
        validate_name(
            name,
            argument=f"names[{position}]",
            characters_max=NAME_CHARACTERS_MAX + SUFFIX_CHARACTERS_MAX,
        )
    resolved_root = Path(root).resolve()
    candidate = resolved_root.joinpath(*names).resolve()
    if candidate == resolved_root or not candidate.is_relative_to(resolved_root):
        msg = (
            f"path {'/'.join(names)!r} under root {str(root)!r} resolves to "
            f"{str(candidate)!r}, outside the root; a symlink inside the root points "
            "elsewhere: remove it"
        )
        raise InvalidName(msg)
    return candidate
