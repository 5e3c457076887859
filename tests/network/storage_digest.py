"""What a replica server's storage holds, as one hash: "nothing was written" tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from engine.transport.http.server import LOCK_FILE


def tree_digest(root: Path) -> str:
    """A hash of every file's path (relative to ``root``) and bytes, in path order;
    the server's lock file (its owner's pid) is the only file left out."""
    hasher = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path == root / LOCK_FILE:
                continue
            hasher.update(str(path.relative_to(root)).encode() + b"\0")
            hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()
