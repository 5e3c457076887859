"""The engine's packages import one way: a test fails when an arrow runs back.

storage <- log <- replica <- transport, control <- source <- binding <- orchestration;
``errors``, ``clock``, ``names`` and ``configuration_files`` are below everything. The
source side reaches the target only through ``engine.transport.interface`` (and the
recovery-point value type); only ``engine.binding`` imports ``model``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"
FOUNDATION = {
    "engine.errors",
    "engine.clock",
    "engine.names",
    "engine.configuration_files",
}

#: package -> the engine packages (or single modules) it may import.
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "storage": {"storage"},
    "log": {"storage", "log"},
    "replica": {"storage", "log", "replica"},
    "transport": {"storage", "log", "replica", "transport"},
    "control": {"storage", "control", "engine.replica.recovery_point"},
    "source": {
        "storage",
        "log",
        "control",
        "source",
        "engine.replica.recovery_point",
        "engine.transport.interface",
    },
    "binding": {
        "storage",
        "log",
        "replica",
        "control",
        "source",
        "transport",
        "binding",
        "model",
    },
    "orchestration": {
        "storage",
        "log",
        "replica",
        "control",
        "source",
        "transport",
        "binding",
        "orchestration",
    },
    "testing": {"storage", "log", "replica", "control", "source", "transport"},
}


def package_of(module: str) -> str:
    """``engine.source.outbox`` -> ``source``; top-level foundation modules."""
    if module in FOUNDATION:
        return "foundation"
    if module == "engine.testing":
        return "testing"
    return module.split(".")[1]


def imported(source: str) -> set[str]:
    """Every ``engine.*`` and ``model*`` module a piece of source imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in {"engine", "model"}}


def violations(module: str, source: str) -> list[str]:
    """The imports of ``module`` that its package may not make."""
    allowed = ALLOWED[package_of(module)]
    found = []
    for name in sorted(imported(source)):
        if name == "model" or name.startswith("model."):
            if "model" not in allowed:
                found.append(f"{module} imports {name}")
            continue
        parts = name.split(".")
        if len(parts) < 2 or ".".join(parts[:2]) in FOUNDATION:
            continue
        prefixes = {".".join(parts[:n]) for n in range(2, len(parts) + 1)}
        if parts[1] in allowed or prefixes & allowed:
            continue
        found.append(f"{module} imports {name} (allowed: {sorted(allowed)})")
    return found


def engine_modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every engine module."""
    modules = []
    for path in sorted(ENGINE.rglob("*.py")):
        relative = path.relative_to(ENGINE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        if name != "engine":
            modules.append((name, path))
    return modules


@pytest.mark.parametrize(("module", "path"), engine_modules())
def test_imports_point_one_way(module: str, path: Path) -> None:
    """No engine module imports a layer above its own (nor model, but the binding)."""
    assert violations(module, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("engine.source.cycles", "from engine.replica.store import ReplicaStore"),
        ("engine.source.resync", "from engine.transport.in_process import X"),
        ("engine.storage.disk", "from engine.log.writer import ChangeLog"),
        ("engine.replica.store", "import engine.source.outbox"),
        ("engine.orchestration.engine", "from model import Phase"),
        ("engine.control.store", "from engine.binding.protected_vm import X"),
    ],
)
def test_a_backward_arrow_is_caught(module: str, line: str) -> None:
    """The checker itself reports a planted import that runs the wrong way."""
    assert violations(module, line) != []


def test_every_package_has_a_rule() -> None:
    """A new engine package must be placed in the table before it is used."""
    packages = {p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED)
