"""The state graph of a small model as DOT text: ``hvdr check --dot FILE``.

Every reachable state is a node and every enabled call an edge labelled with the
call, found by a plain breadth-first search over the model's own ``successors``
on whole states: the concrete graph, without the explorer's symmetry reduction,
so with several VMs it has more states than ``check`` reports (as many as its
"states without it" figure). A node's label is what tells states apart at a
glance (each VM's phase, its replica's lag and its recovery points; the
environment when it is not healthy); its tooltip, shown by an SVG viewer, holds
the whole state. The initial state is drawn bold; a state no call leaves, red.

A DOT drawing past a few thousand nodes helps no one and its text grows fast, so
the search stops past ``states_max`` (``DEFAULT_STATES_MAX`` unless told) and the
command refuses, naming the flag that lifts the limit.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, replace

import graphviz

from hvdr.counterexample import copy_text
from invariants.fields import flatten, to_json
from model import Call, ModelConfig, SystemState, initial_state
from model.successor import RULES, Rules, successors

#: States a DOT dump holds at most unless told otherwise: the default one-VM
#: model (1,744 states) fits; a two-VM model (hundreds of thousands) does not.
DEFAULT_STATES_MAX = 5_000


@dataclass(frozen=True)
class StateGraph:
    """The reachable states (index 0: the initial one) and the labelled edges."""

    states: tuple[SystemState, ...]
    edges: tuple[tuple[int, Call, int], ...]


class TooLarge(Exception):
    """The graph has more than the states asked for (``states``: how many were
    found before the search stopped)."""

    def __init__(self, states: int) -> None:
        super().__init__(states)
        self.states = states


def _bare(state: SystemState) -> SystemState:
    """``state`` without the step's observations (they take no part in equality)."""
    return replace(
        state, vms=tuple(replace(vm, closed_report=None) for vm in state.vms)
    )


def _moves(
    config: ModelConfig, state: SystemState, rules: Rules
) -> list[tuple[Call, SystemState]]:
    """The successors of ``state``; none where a broken model (a mutant) fails
    to compute them, as the explorer does (``invariants.projection``): the check
    reports what the state violates, and the drawing shows it with no way out."""
    try:
        return list(successors(config, state, rules))
    except (AssertionError, LookupError, TypeError, ValueError):
        return []


def search(
    config: ModelConfig, rules: Rules = RULES, states_max: int = DEFAULT_STATES_MAX
) -> StateGraph:
    """Every reachable state and edge; TooLarge past ``states_max`` states."""
    start = initial_state(config)
    index = {start: 0}
    states = [start]
    edges: list[tuple[int, Call, int]] = []
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for call, after in _moves(config, state, rules):
            bare = _bare(after)
            found = index.get(bare)
            if found is None:
                if len(states) >= states_max:
                    raise TooLarge(len(states) + 1)
                found = index[bare] = len(states)
                states.append(bare)
                queue.append(bare)
            edges.append((index[state], call, found))
    return StateGraph(tuple(states), tuple(edges))


def label(state: SystemState) -> str:
    """What tells this state apart at a glance (see the module essay)."""
    lines = []
    for number, vm in enumerate(state.vms):
        text = f"vm{number} {vm.phase.value}"
        if vm.other is not None and (vm.other.behind or vm.other.divergent):
            text += f"\\nother {copy_text(to_json(vm.other))}"
        if vm.points:
            text += f"\\n{len(vm.points)} point(s)"
        lines.append(text)
    trouble = [
        f"{site} {word}"
        for site, site_state in (
            ("primary", state.primary),
            ("secondary", state.secondary),
        )
        for word, bad in (
            ("down", not site_state.up),
            ("disconnected", not site_state.connected),
            ("full", site_state.storage_full),
        )
        if bad
    ]
    if not state.link_up:
        trouble.append("link down")
    if trouble:
        lines.append(", ".join(trouble))
    return "\\n".join(lines)


def dot(graph: StateGraph, title: str) -> graphviz.Digraph:
    """The DOT drawing of ``graph``."""
    drawing = graphviz.Digraph("states", graph_attr={"label": title, "rankdir": "TB"})
    drawing.attr("node", shape="box", style="rounded", fontsize="10")
    drawing.attr("edge", fontsize="8")
    leaving = {source for source, _, _ in graph.edges}
    for number, state in enumerate(graph.states):
        fields = flatten(state)
        tooltip = "\\n".join(
            f"{key} = {json.dumps(value)}" for key, value in fields.items()
        )
        attributes = {"tooltip": tooltip}
        if number == 0:
            attributes["penwidth"] = "3"
        if number not in leaving:
            attributes["color"] = "red"
        drawing.node(f"s{number}", f"#{number}\\n{label(state)}", **attributes)
    for source, call, target in graph.edges:
        drawing.edge(f"s{source}", f"s{target}", str(call))
    return drawing
