"""Unit tests for engine/names.py: name validation and safe child paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidName
from engine.names import (
    NAME_CHARACTERS_MAX,
    safe_child,
    validate_disk_name,
    validate_name,
    validate_site_name,
    validate_vm_name,
)


@pytest.mark.parametrize(
    "name",
    ["a", "sql-01", "vm_2.os", "A.b-c_d", "0", "x" * NAME_CHARACTERS_MAX, "a.b.c"],
)
def test_valid_names_are_returned_unchanged(name):
    """A valid name comes back as it went in."""
    assert name == validate_name(name, argument="vm_name")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".hidden",
        ".",
        "..",
        "a..b",
        "a/b",
        "/abs",
        "a\\b",
        "a\x00b",
        "with space",
        "é",
        "a\n",
        "x" * (NAME_CHARACTERS_MAX + 1),
    ],
)
def test_invalid_names_are_refused(name):
    """Every name outside the portable rule is refused with InvalidName."""
    with pytest.raises(InvalidName):
        validate_name(name, argument="vm_name")


def test_message_names_argument_value_and_rule():
    """The message gives the argument, the value's repr and what is allowed."""
    with pytest.raises(InvalidName) as caught:
        validate_name("a/b", argument="disk_id")
    message = str(caught.value)
    assert message.startswith("disk_id='a/b'")
    assert "letters, digits" in message


def test_non_string_is_refused_with_its_type():
    """A non-str name is refused and the message names its type."""
    with pytest.raises(InvalidName, match=r"vm_name=7 must be a str \(got int\)"):
        validate_vm_name(7)


def test_long_name_message_gives_the_length():
    """A too-long name's message says how long it was."""
    with pytest.raises(InvalidName, match="65 characters long"):
        validate_site_name("s" * 65)


def test_specific_validators_name_their_argument():
    """site/vm/disk validators name their own argument in messages."""
    for validator, argument in [
        (validate_site_name, "site_name"),
        (validate_vm_name, "vm_name"),
        (validate_disk_name, "disk_name"),
    ]:
        with pytest.raises(InvalidName, match=f"^{argument}="):
            validator("..")


def test_safe_child_joins_under_root(tmp_path):
    """safe_child returns root/site/vm, resolved."""
    expected = tmp_path.resolve() / "site-a" / "vm-1"
    assert expected == safe_child(tmp_path, "site-a", "vm-1")


def test_safe_child_refuses_invalid_component(tmp_path):
    """Any invalid component is refused, naming its position."""
    with pytest.raises(InvalidName, match=r"names\[1\]='\.\.'"):
        safe_child(tmp_path, "site", "..")


def test_safe_child_needs_a_name(tmp_path):
    """The root itself is never returned."""
    with pytest.raises(InvalidName, match="at least one name"):
        safe_child(tmp_path)


def test_safe_child_refuses_symlink_escaping_root(tmp_path):
    """A symlink planted under the root cannot lead outside it."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    with pytest.raises(InvalidName, match="outside the root"):
        safe_child(root, "evil", "disk.img")


def test_safe_child_follows_symlink_inside_root(tmp_path):
    """A symlink that stays under the root is fine."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    expected = tmp_path.resolve() / "real" / "d"
    assert expected == safe_child(Path(tmp_path), "alias", "d")
