"""Subcommands of ``hvdr``; add a module and list it here."""

from types import ModuleType

from hvdr.commands import (
    certs,
    check,
    demo,
    diagram,
    explore,
    fuzz,
    jobs,
    plan,
    replay,
    run,
    serve,
    status,
    vm,
)

COMMANDS: tuple[ModuleType, ...] = (
    demo,
    diagram,
    check,
    fuzz,
    replay,
    explore,
    certs,
    serve,
    vm,
    plan,
    jobs,
    status,
    run,
)
