"""What an embedder imports works: `from hvdr import ReplicationEngine` and more."""

from __future__ import annotations

import subprocess
import sys

import engine
import hvdr


def test_hvdr_reexports_the_engine_surface() -> None:
    """hvdr.__all__ is engine.__all__, and every name resolves to the same object."""
    assert hvdr.__all__ == engine.__all__
    for name in engine.__all__:
        assert getattr(hvdr, name) is getattr(engine, name), name


def test_a_fresh_interpreter_imports_the_engine_from_hvdr() -> None:
    """The import an embedder writes first works in a new process."""
    script = "from hvdr import ReplicationEngine, ReplicationError; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "ok"


def test_no_package_docstring_says_placeholder() -> None:
    """Every engine package and hvdr state what they hold."""
    import importlib
    import pkgutil

    names = ["engine", "hvdr"] + [
        f"engine.{info.name}"
        for info in pkgutil.iter_modules(engine.__path__)
        if info.ispkg
    ]
    for name in names:
        doc = importlib.import_module(name).__doc__ or ""
        assert doc.strip(), name
        assert "placeholder" not in doc.lower(), name
