"""Command-line options that choose a model: its size, bounds, faults and rules.

``hvdr check`` and ``hvdr fuzz`` take the same options; a ``--config FILE`` (JSON,
the keys of ``ModelConfig``: ``vm_count``, ``fault_budget``, ``faults``, ``plans``
...; ``invariants.configuration`` validates it) is read first and the flags given
on the command line override it. Every flag, and every key a file leaves out,
defaults to the small configuration ``hvdr check`` explores (``DEFAULT_CONFIG``:
every fault enabled, budget 1, one unshipped write, two recovery points,
app-consistent points offered), so
``--vms 2`` alone, or a file holding only ``{"vm_count": 2}``, is the acceptance
run. A bad value is a ``UsageError`` naming the flag, or the file and line.

``--mutant NAME`` swaps in one of the deliberately broken variants, hand-written
(``invariants.mutants``) or generated (``invariants.rule_mutants``): to watch a
checker catch it. A recovery-plan mutant brings the plan configuration it is looked
for in, unless ``--config`` gives another.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hvdr.status import UsageError
from invariants import mutants as hand
from invariants import mutation
from invariants.configuration import DEFAULT_CONFIG, ConfigurationError, read_config
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


def whole_number(lowest: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``lowest``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            msg = f"{text!r} is not a whole number; give one >= {lowest}"
            raise argparse.ArgumentTypeError(msg) from None
        if value < lowest:
            msg = f"{value} is not allowed; give a whole number >= {lowest}"
            raise argparse.ArgumentTypeError(msg)
        return value

    parse.__name__ = f"whole number >= {lowest}"
    return parse


#: The lowest value of each bound, as ``ModelConfig`` checks it.
LOWEST = {"vms": 1, "disks": 1, "lag": 1, "points": 1, "budget": 0}


def add_model_arguments(parser: Any) -> None:
    """Add the options that choose the model to ``parser``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--config",
        type=Path,
        help="JSON file of ModelConfig keys; a key left out takes the flag's default",
    )
    default = DEFAULT_CONFIG
    helps = {
        "vms": f"VMs (default {default.vm_count})",
        "disks": f"disks per VM (default {default.disks_per_vm})",
        "lag": f"unshipped writes at most (default {default.write_lag_max})",
        "points": f"recovery points kept (default {default.recovery_points_max})",
        "budget": f"faults per trace (default {default.fault_budget})",
    }
    for flag, text in helps.items():
        group.add_argument(
            f"--{flag}", type=whole_number(LOWEST[flag]), metavar="N", help=text
        )
    kinds = ", ".join(kind.value for kind in FaultKind)
    group.add_argument(
        "--faults",
        help=f"'all' (default), 'none', or a comma-separated list of: {kinds}",
    )
    group.add_argument(
        "--app-points",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="offer app-consistent delta cycles as a choice (default: on)",
    )
    group.add_argument(
        "--mutant",
        type=mutant_name,
        metavar="NAME",
        help="check a deliberately broken variant of the model, hand-written or "
        "generated (see 'hvdr check --list-mutants')",
    )


def mutant_name(text: str) -> str:
    """An argparse ``type``: the name of a hand-written or generated mutant."""
    if mutation.lookup(text) is None:
        msg = f"{text!r} is not a mutant; 'hvdr check --list-mutants' lists them"
        raise argparse.ArgumentTypeError(msg)
    return text


def mutant_config(name: str | None) -> ModelConfig | None:
    """The configuration a hand-written mutant is looked for in, when it needs its own
    (a recovery-plan mutant needs plans); the flags still override it."""
    found = hand.BY_NAME.get(name or "")
    return None if found is None else found.config


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The configuration the options describe (UsageError names a bad value)."""
    config = mutant_config(getattr(args, "mutant", None)) or DEFAULT_CONFIG
    if args.config is not None:
        try:
            config = read_config(args.config)
        except ConfigurationError as error:
            msg = f"--config {error}"
            raise UsageError(msg) from None
    changes: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in BOUNDS.items()
        if getattr(args, flag) is not None
    }
    if args.faults is not None:
        changes["faults"] = parse_faults(args.faults)
    if args.app_points is not None:
        changes["app_consistent_points"] = args.app_points
    try:
        return replace(config, **changes)
    except ValueError as error:  # a plan names a VM the flags took away
        source = (
            f"--config {args.config}"
            if args.config is not None
            else f"mutant {args.mutant}'s own configuration"
        )
        msg = f"--vms {args.vms} with {source}: {error}"
        raise UsageError(msg) from None


def parse_faults(text: str) -> frozenset[FaultKind]:
    """'all', 'none' or a comma-separated list of fault kinds (else UsageError)."""
    if text == "all":
        return frozenset(FaultKind)
    if text == "none":
        return frozenset()
    kinds = {kind.value: kind for kind in FaultKind}
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        msg = f"--faults {text!r} names no fault; give 'none' for no faults, 'all', "
        msg += "or a comma-separated list"
        raise UsageError(msg)
    unknown = [name for name in names if name not in kinds]
    if unknown:
        msg = f"--faults: {unknown} unknown; choose 'all', 'none' or from {list(kinds)}"
        raise UsageError(msg)
    return frozenset(kinds[name] for name in names)


def rules_from_args(args: argparse.Namespace) -> Rules:
    """The model's rules, or the mutant's when ``--mutant`` is given."""
    if args.mutant is None:
        return RULES
    rules = mutation.lookup(args.mutant)
    assert rules is not None, args.mutant  # mutant_name checked it
    return rules
