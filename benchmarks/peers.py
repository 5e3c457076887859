"""The peers the benchmarks measure against, written once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def cp_then_fsync(source: Path, target: Path, *, sparse: bool = False) -> None:
    """``cp --reflink=never`` (``--sparse=always`` with ``sparse``) of ``source`` to
    ``target``, then an fsync of the copy: a plain full copy as durable as ours, the
    kernel's own I/O with no Python in it."""
    option = "--sparse=always" if sparse else "--reflink=never"
    subprocess.run(["cp", option, str(source), str(target)], check=True)
    descriptor = os.open(target, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
