"""Where fuzzing keeps its examples: Hypothesis' example database, named by a string.

Hypothesis saves every failing example it finds (the choices that make it, shrunk)
in an example database and replays them first on the next run, so a failure found
once fails again at once, whatever the seed; HypoFuzz keeps its corpus there too.
``hvdr fuzz --database SPEC``, and ``HVDR_EXAMPLE_DATABASE`` for the pytest
wrappers HypoFuzz runs (``tests/conftest.py``), name the database the same way:

- ``none``: keep nothing (each run starts from its seed alone);
- ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``): Hypothesis'
  ``RedisExampleDatabase``, one database that workers on several machines share
  (each saves what it finds and replays what the others found); needs the
  ``redis`` package (``pip install 'hvdr[redis]'``);
- anything else: a directory (``DirectoryBasedExampleDatabase``), created when
  first written; a directory on a shared file system is shared the same way.

The examples are choices, not steps: they replay on the same state machine over the
same configuration and rules (``key_examples`` keys them by both, so a mutant's
failures never replay on the model), and a changed model simply makes an old one
replay differently, which Hypothesis tolerates.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.stateful import RuleBasedStateMachine

from invariants.configuration import config_to_json
from model import ModelConfig

#: Where ``hvdr fuzz`` keeps its examples unless told otherwise (the working folder,
#: as for Hypothesis' own ``.hypothesis/``, so a rerun in the same place replays).
DEFAULT_DATABASE = Path(".hvdr") / "examples"

#: The URL schemes that name a Redis server (those ``redis.Redis.from_url`` takes).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class DatabaseUnavailable(ValueError):
    """The database named cannot be opened: the redis package is missing, or the
    server does not answer. Install the package, start the server or name another."""


def example_database(spec: str) -> ExampleDatabase | None:
    """The example database ``spec`` names (see the module essay); None for ``none``.

    A Redis server is asked for a PING, so a wrong address fails here, naming it,
    rather than in the middle of a run.
    """
    if spec.lower() == "none":
        return None
    if not spec.startswith(REDIS_SCHEMES):
        return DirectoryBasedExampleDatabase(_directory(spec))
    try:
        import redis  # noqa: PLC0415 (optional: only a Redis database needs it)
        from hypothesis.extra.redis import RedisExampleDatabase  # noqa: PLC0415
    except ImportError as error:
        msg = (
            f"database {spec!r} is a Redis URL but the redis package is not "
            "installed; pip install 'hvdr[redis]', or give a directory"
        )
        raise DatabaseUnavailable(msg) from error
    try:
        client = redis.Redis.from_url(spec)
    except ValueError as error:
        msg = f"database {spec!r} is not a Redis URL Redis can read: {error}"
        raise DatabaseUnavailable(msg) from error
    try:
        client.ping()
    except redis.RedisError as error:
        msg = f"database {spec!r}: the Redis server does not answer ({error})"
        raise DatabaseUnavailable(msg) from error
    return RedisExampleDatabase(client)


def _directory(spec: str) -> str:
    """``spec`` as a directory database's path: an existing directory, or a new one
    whose parent exists (DatabaseUnavailable otherwise: another URL scheme, a file,
    a parent missing, a folder that cannot be written)."""
    if "://" in spec:
        msg = (
            f"database {spec!r}: only redis://, rediss:// and unix:// URLs are "
            "databases; give one of those, a directory, or none"
        )
        raise DatabaseUnavailable(msg)
    path = Path(spec)
    if path.exists() and not path.is_dir():
        msg = f"database {spec!r} is a file, not a directory; give a directory"
        raise DatabaseUnavailable(msg)
    parent = path if path.is_dir() else path.parent
    if path == DEFAULT_DATABASE:
        parent.mkdir(parents=True, exist_ok=True)  # the default's own folder, .hvdr
    if not parent.is_dir():
        msg = f"database {spec!r}: its folder {str(parent)!r} does not exist"
        raise DatabaseUnavailable(msg)
    if not os.access(parent, os.W_OK | os.X_OK):
        msg = f"database {spec!r}: {str(parent)!r} is not writable"
        raise DatabaseUnavailable(msg)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        msg = f"database {spec!r}: cannot write in {str(parent)!r}: {error.strerror}"
        raise DatabaseUnavailable(msg) from None
    return spec


@functools.cache
def shared_example_database(spec: str) -> ExampleDatabase | None:
    """``example_database(spec)``, one instance per ``spec`` in a process.

    For Hypothesis settings profiles (``tests/conftest.py``): HypoFuzz collects the
    tests in its hub process and again in each worker it forks, which runs the
    conftest again, and it skips a test whose database differs from the loaded
    profile's. Two directory databases on one path compare equal, two Redis
    databases on one server do not (their clients compare by identity).
    """
    return example_database(spec)


def key_examples(
    machine: type[RuleBasedStateMachine], label: str, config: ModelConfig
) -> None:
    """Key ``machine``'s examples by ``label`` (the rules: ``model``, a mutant's name)
    and ``config``, the same in every process.

    Hypothesis keys a state machine's examples by a digest of its class, the same
    for every configuration and rules built by one factory; it mixes in this
    attribute when present. The configuration goes in as sorted JSON: its repr
    holds a frozenset, whose order changes from one interpreter to the next.
    """
    canonical = json.dumps(config_to_json(config), sort_keys=True)
    key = f"hvdr {machine.__name__}: {label}: {canonical}".encode()
    setattr(machine, "_hypothesis_internal_add_digest", key)  # noqa: B010
