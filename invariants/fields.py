"""The abstract state as named fields: what a counterexample shows, a property reads.

A ``SystemState`` is a tree of frozen dataclasses; a person following a
counterexample, a JSON reader and a property's declaration all need the same flat
names for its parts. Two vocabularies, one derived from the other:

* **Declared fields** (``FIELDS``): what an ``Invariant`` says it reads
  (``Invariant.reads``). ``vm.<name>`` is one field of every VM (``VmState``'s
  fields), ``site.<name>`` one field of both sites (``SiteState``'s), and the
  system's own ``link_up``, ``faults_left`` and ``plan_runs``. A property quantifies
  over all VMs and both sites, so a declaration names the field, not an index.
* **Shown fields** (``flatten``): one value per concrete place, keyed
  ``vm0.phase``, ``primary.up``, ``secondary.storage_full``, ``link_up`` ...; the
  values are JSON-ready (enums as their values, sets sorted, dataclasses as
  objects), so the same dictionary serves the printout, the highlighting of what a
  step changed (``changed``) and the ``--json`` results.

``transplant(state, field, donor)`` takes one declared field from another state:
the test of the declarations changes a field a property does not declare and
checks that its verdict stays the same. Both vocabularies come from the
dataclasses' own fields, so a field added to the model appears here by itself.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import replace

from model import SystemState, VmState
from model.state import SiteState

#: The fields of one VM, in the order ``VmState`` declares them.
VM_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(VmState))

#: The fields of one site.
SITE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SiteState))

#: The fields of the system outside the sites and the VMs.
SYSTEM_FIELDS: tuple[str, ...] = ("link_up", "faults_left", "plan_runs")

#: Every field a property may declare it reads (see the module essay).
FIELDS: tuple[str, ...] = (
    *(f"vm.{name}" for name in VM_FIELDS),
    *(f"site.{name}" for name in SITE_FIELDS),
    *SYSTEM_FIELDS,
)

#: Every field of a VM that takes part in its equality (``closed_report`` is an
#: observation outside it): what a property comparing whole VMs reads.
EVERY_VM_FIELD: frozenset[str] = frozenset(
    f"vm.{f.name}" for f in dataclasses.fields(VmState) if f.compare
)

#: The two sites, as the shown fields name them.
SITES = ("primary", "secondary")

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def to_json(value: object) -> JsonValue:
    """``value`` as plain JSON data: enums by value, sets sorted, dataclasses as
    objects of their compared fields."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, frozenset):
        return sorted((to_json(item) for item in value), key=repr)
    if isinstance(value, tuple):
        return [to_json(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.compare
        }
    msg = f"cannot show a {type(value).__name__} as JSON: {value!r}"
    raise TypeError(msg)


def flatten(state: SystemState) -> dict[str, JsonValue]:
    """Every shown field of ``state``, keyed by its place (see the module essay)."""
    shown: dict[str, JsonValue] = {}
    for index, vm in enumerate(state.vms):
        for name in VM_FIELDS:
            shown[f"vm{index}.{name}"] = to_json(getattr(vm, name))
    for site in SITES:
        site_state = getattr(state, site)
        for name in SITE_FIELDS:
            shown[f"{site}.{name}"] = to_json(getattr(site_state, name))
    for name in SYSTEM_FIELDS:
        shown[name] = to_json(getattr(state, name))
    return shown


def shown_keys(field: str, vm_count: int) -> list[str]:
    """The shown fields a declared field stands for in a state of ``vm_count`` VMs."""
    assert field in FIELDS, field
    group, _, name = field.partition(".")
    if group == "vm":
        return [f"vm{index}.{name}" for index in range(vm_count)]
    if group == "site":
        return [f"{site}.{name}" for site in SITES]
    return [field]


def changed(before: SystemState, after: SystemState) -> frozenset[str]:
    """The shown fields whose values differ between two states of one model."""
    old, new = flatten(before), flatten(after)
    return frozenset(key for key, value in new.items() if old.get(key) != value)


def transplant(state: SystemState, field: str, donor: SystemState) -> SystemState:
    """``state`` with the declared ``field`` taken from ``donor`` (same VM count)."""
    assert field in FIELDS, field
    assert len(state.vms) == len(donor.vms), "transplant between equal VM counts"
    group, _, name = field.partition(".")
    if group == "vm":
        vms = tuple(
            replace(vm, **{name: getattr(giver, name)})
            for vm, giver in zip(state.vms, donor.vms, strict=True)
        )
        return replace(state, vms=vms)
    if group == "site":
        primary = replace(state.primary, **{name: getattr(donor.primary, name)})
        secondary = replace(state.secondary, **{name: getattr(donor.secondary, name)})
        return replace(state, primary=primary, secondary=secondary)
    return replace(state, **{field: getattr(donor, field)})
