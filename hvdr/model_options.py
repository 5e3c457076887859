"""Command-line options that choose a model: its size, bounds, faults and rules.

``hvdr check`` and ``hvdr fuzz`` take the same options; a ``--config FILE`` (JSON,
the keys of ``ModelConfig``: ``vm_count``, ``fault_budget``, ``faults``, ``plans``
...) is read first and the flags given on the command line override it. Every flag
defaults to the small configuration ``hvdr check`` explores (every fault enabled,
budget 1, one unshipped write, two recovery points), so ``--vms 2`` alone is the
acceptance run.

``--mutant NAME`` swaps in one of the deliberately broken variants of
``invariants.mutants``: to watch a checker catch it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from invariants.mutants import BY_NAME as MUTANTS
from invariants.trace import DEFAULT_CONFIG, config_from_json
from model import FaultKind, ModelConfig
from model.successor import RULES, Rules

#: Flag -> ModelConfig field, for the integer bounds.
BOUNDS = {
    "vms": "vm_count",
    "disks": "disks_per_vm",
    "lag": "write_lag_max",
    "points": "recovery_points_max",
    "budget": "fault_budget",
}


def add_model_arguments(parser: Any) -> None:
    """Add the options that choose the model to ``parser``."""
    group = parser.add_argument_group("model")
    group.add_argument("--config", type=Path, help="JSON file of ModelConfig keys")
    group.add_argument("--vms", type=int, help="VMs (default 1)")
    group.add_argument("--disks", type=int, help="disks per VM (default 2)")
    group.add_argument("--lag", type=int, help="unshipped writes at most (default 1)")
    group.add_argument("--points", type=int, help="recovery points kept (default 2)")
    group.add_argument("--budget", type=int, help="faults per trace (default 1)")
    kinds = ", ".join(kind.value for kind in FaultKind)
    group.add_argument(
        "--faults",
        help=f"'all' (default), 'none', or a comma-separated list of: {kinds}",
    )
    group.add_argument(
        "--app-points",
        action="store_true",
        default=None,
        help="offer app-consistent recovery points as a choice",
    )
    group.add_argument(
        "--mutant",
        choices=sorted(MUTANTS),
        metavar="NAME",
        help="check a deliberately broken variant of the model (see 'hvdr check "
        "--list-mutants')",
    )


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The configuration the options describe (ValueError names a bad value)."""
    config = DEFAULT_CONFIG
    if args.config is not None:
        config = config_from_json(json.loads(args.config.read_text(encoding="utf-8")))
    changes: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in BOUNDS.items()
        if getattr(args, flag) is not None
    }
    if args.faults is not None:
        changes["faults"] = parse_faults(args.faults)
    if args.app_points is not None:
        changes["app_consistent_points"] = args.app_points
    return replace(config, **changes)


def parse_faults(text: str) -> frozenset[FaultKind]:
    """'all', 'none' or a comma-separated list of fault kinds."""
    if text == "all":
        return frozenset(FaultKind)
    if text == "none":
        return frozenset()
    kinds = {kind.value: kind for kind in FaultKind}
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in kinds]
    if unknown:
        msg = f"--faults: {unknown} unknown; choose 'all', 'none' or from {list(kinds)}"
        raise ValueError(msg)
    return frozenset(kinds[name] for name in names)


def rules_from_args(args: argparse.Namespace) -> Rules:
    """The model's rules, or the mutant's when ``--mutant`` is given."""
    if args.mutant is None:
        return RULES
    return MUTANTS[args.mutant].rules
