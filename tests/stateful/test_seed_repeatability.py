"""A seeded fuzzing run depends on its seed only, not on what the process loaded.

Hypothesis draws some values from constants it collects in the local modules loaded
(``invariants/constant_pool.py``); a run of ``hvdr fuzz --seed N`` must generate the
same examples whether or not other code (a test module, the web stack of ``hvdr
explore``) was imported in between.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from invariants.configuration import DEFAULT_CONFIG
from invariants.fuzz import fuzz


def test_the_same_seed_runs_the_same_examples_after_new_modules_are_loaded(
    tmp_path: Path,
) -> None:
    first = fuzz(DEFAULT_CONFIG, examples=60, shrink=False, seed_value=7)
    # A local module full of constants Hypothesis would collect and mix in.
    module = tmp_path / "constants_galore.py"
    values = ", ".join(str(n) for n in range(3, 4000, 7))
    module.write_text(f"VALUES = [{values}]\nNAMES = {['vm', 'disk', 'x' * 9]!r}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("constants_galore")
        second = fuzz(DEFAULT_CONFIG, examples=60, shrink=False, seed_value=7)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("constants_galore", None)
    assert (second.steps, second.prefix_steps, second.coverage) == (
        first.steps,
        first.prefix_steps,
        first.coverage,
    )
