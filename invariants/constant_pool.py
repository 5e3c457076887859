"""Seeded runs that depend on their seed only, not on what else the process loaded.

Hypothesis mixes into generation constants it collects from every *local* module in
``sys.modules`` (the project's own code, tests included), found anew whenever
``sys.modules`` grows. The same seed therefore generated other examples depending on
which modules happened to be imported before: ``hvdr explore`` importing its web stack,
or a pytest worker that had run the network tests first, turned a seeded fuzzing run
that killed a mutant into one that did not. A run of ``hvdr fuzz --seed N`` must be
repeatable wherever it runs, so :func:`fixed_constant_pool` gives Hypothesis a fixed,
empty pool of local constants for the duration of a run (its built-in constants stay):
the model's choices are finite and drawn from its own tables, so nothing is lost that
the pool supplied.

This reaches into ``hypothesis.internal`` (there is no public setting for it); where
a Hypothesis release has no such function the run goes on unchanged, and
``tests/stateful/test_seed_repeatability.py`` fails if the seed stops deciding alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def fixed_constant_pool() -> Iterator[None]:
    """Within the block, Hypothesis draws no constants from the loaded modules."""
    try:
        from hypothesis.internal.conjecture import providers  # noqa: PLC0415
    except ImportError:  # pragma: no cover (a Hypothesis without it)
        yield
        return
    original: Any = getattr(providers, "_get_local_constants", None)
    empty: Any = getattr(providers, "Constants", None)
    cache: Any = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or empty is None:  # pragma: no cover
        yield
        return
    pool = empty()

    def fixed() -> Any:
        return pool

    providers._get_local_constants = fixed
    if cache is not None:
        cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        if cache is not None:
            cache.cache.clear()
