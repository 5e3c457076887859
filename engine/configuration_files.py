"""Configuration files: reading their text, and saying where in it a mistake is.

A configuration file is caller input written by hand: ``hvdr check --config`` reads a
JSON file (``invariants.configuration``), ``hvdr serve --config`` a TOML file
(``engine.transport.http.server_config``). Both refuse a mistake the same way: the
message starts with the file and, when it can be found, the line, then names the key
(as a *key path*, the keys and list indices from the top, as pydantic's error
locations give them: ``("authorization", "primary", 1, "storage")``, written
``authorization.primary[1].storage``), its value and what is allowed. This module
holds what the formats share:

- :func:`read_text`: the file's text, or one message for a file that cannot be read
  or is not UTF-8;
- :func:`dotted`, :func:`line_of` and :func:`where`: a key path in words, the line of
  a key (a key left out is placed at the nearest enclosing key that is present), and
  the ``FILE, line N`` prefix;
- :func:`first_error` and :func:`reason`: which of pydantic's errors to report (an
  unknown key first: a misspelt key is usually why another one is missing) and its
  reason in the project's words;
- :func:`toml_key_lines`: where each key of a TOML text is. ``tomllib`` gives the line
  of a syntax error, but not where a key stands; rather than a second TOML parser,
  the locator splits the text into statements and asks ``tomllib`` itself for the
  key each one defines, so quoting and dotted keys follow TOML's own rules.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from engine.errors import InvalidConfiguration

KeyPath = tuple[str | int, ...]
"""Where in a configuration: keys and list indices from the top."""


def read_text(
    path: Path,
    *,
    kind: str,
    error: Callable[[str], Exception] = InvalidConfiguration,
) -> str:
    """The UTF-8 text of configuration file ``path``.

    A file that cannot be read, or is not UTF-8, raises ``error(message)`` naming the
    file and the cause; ``kind`` ends the second message with what the file should be
    (``"a configuration is a JSON file"``).
    """
    try:
        return path.read_text(encoding="utf-8")
    except OSError as cause:
        msg = f"{path}: cannot read the configuration file: {cause.strerror}"
        raise error(msg) from None
    except UnicodeDecodeError as cause:
        msg = f"{path}: not UTF-8 text (byte {cause.start}); {kind}"
        raise error(msg) from None


def dotted(path: KeyPath) -> str:
    """A key path as it reads in a message: ``plans[0].name``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path`` in ``lines``; for a key left out, that of the nearest
    enclosing key present; None when not even the first key is there."""
    for length in range(len(path), 0, -1):
        if path[:length] in lines:
            return lines[path[:length]]
    return None


def where(path: Path, line: int | None) -> str:
    """The start of a message about ``path``: ``FILE, line N`` or ``FILE``."""
    return f"{path}, line {line}" if line is not None else f"{path}"


def first_error(error: ValidationError) -> ErrorDetails:
    """The error of ``error`` to report: an unknown key first (it is often the cause
    of what else is wrong: a misspelt key leaves the one meant missing)."""
    errors = error.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def reason(details: ErrorDetails) -> str:
    """pydantic's message of one error, as the middle of a sentence."""
    text = details["msg"].removeprefix("Value error, ")
    return text[:1].lower() + text[1:]


def toml_syntax_error(path: Path, error: tomllib.TOMLDecodeError) -> str:
    """tomllib's message about ``path``, with its line and column in front."""
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(error), re.S)
    if found is None:
        return f"{path}: not valid TOML: {error}"
    text, line, column = found.groups()
    return f"{path}, line {line}, column {column}: not valid TOML: {text}"


def toml_key_lines(text: str) -> dict[KeyPath, int]:
    """The line (from 1) where each key and table of the TOML ``text`` is defined.

    ``text`` must be valid TOML. A table header gives its path the header's line
    (an array of tables, ``[[a.b]]``, gives ``("a", "b", index)`` and, once, the
    path ``("a", "b")``); a key gives its path, within the current table, the line
    its statement starts on, and so do the keys of a one-key inline table.
    """
    lines = text.splitlines()
    found: dict[KeyPath, int] = {}
    table: KeyPath = ()
    arrays: dict[KeyPath, int] = {}
    number = 0
    while number < len(lines):
        start = number
        statement = lines[number]
        number += 1
        stripped = statement.strip()
        if not stripped or stripped.startswith("#"):
            continue
        # A statement may go on for lines (a multi-line string or array): add lines
        # until tomllib reads it.
        while True:
            try:
                parsed = tomllib.loads(statement)
                break
            except tomllib.TOMLDecodeError:
                if number == len(lines):
                    return found  # not valid TOML: what was found so far
                statement += "\n" + lines[number]
                number += 1
        keys = _defined_path(parsed)
        if stripped.startswith("[["):
            index = arrays.get(keys, 0)
            arrays[keys] = index + 1
            table = defined = (*keys, index)
        elif stripped.startswith("["):
            table = defined = keys
        else:
            defined = (*table, *keys)
        for length in range(1, len(defined) + 1):
            found.setdefault(defined[:length], start + 1)
    return found


def _defined_path(parsed: dict[str, Any]) -> KeyPath:
    """The keys one statement, parsed alone, defines: down the one-key tables."""
    path: KeyPath = ()
    node: object = parsed
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path = (*path, key)
    return path
