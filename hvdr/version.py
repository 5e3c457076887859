"""The version of the installed ``hvdr`` package, for ``hvdr --version`` and the
``--json`` results."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def hvdr_version() -> str:
    """The installed package's version ('unknown' when run from a bare checkout)."""
    try:
        return version("hvdr")
    except PackageNotFoundError:
        return "unknown"
