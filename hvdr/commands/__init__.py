"""Subcommands of ``hvdr``; add a module and list it here."""

from types import ModuleType

from hvdr.commands import demo, diagram

COMMANDS: tuple[ModuleType, ...] = (demo, diagram)
