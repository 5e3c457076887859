"""The lifecycle drawn with something laid over it: a trace's path, or coverage.

``hvdr diagram`` draws the lifecycle itself (``hvdr.diagrams``). The checkers need
two more pictures of the same edges, built here with the ``graphviz`` package from
the concrete rows ``model.machine.transition_rows()`` derives from ``LIFECYCLE``:

* ``trace_graph``: the path a counterexample takes, its edges red and numbered by
  step (per VM), the phase it ends in outlined;
* ``coverage_graph``: each edge coloured by how often a fuzzing run took it (grey
  and dashed: never), with the count on the edge.

Both return a ``graphviz.Digraph``; ``render_svg`` turns one into SVG text when
Graphviz's ``dot`` is installed, and the callers fall back to the DOT text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import graphviz

from hvdr.diagrams import dot_available
from model import Call, ModelConfig, Phase, initial_state
from model.machine import transition_rows
from model.successor import RULES, Rules, try_apply

EdgeKey = tuple[str, Phase, Phase]

#: Colours from rarely to often taken (coverage), light to dark.
SHADES = ("#c6dbef", "#6baed6", "#2171b5", "#08306b")


def _edges() -> list[EdgeKey]:
    return list(
        dict.fromkeys(
            (row["trigger"], row["source"], row["dest"]) for row in transition_rows()
        )
    )


def _base(title: str) -> graphviz.Digraph:
    graph = graphviz.Digraph("lifecycle", graph_attr={"rankdir": "TB", "label": title})
    graph.attr("node", shape="box", style="rounded,filled", fillcolor="white")
    for phase in Phase:
        graph.node(phase.name, phase.value)
    return graph


def trace_steps(
    config: ModelConfig, calls: Sequence[Call], rules: Rules = RULES
) -> list[tuple[int, int, EdgeKey]]:
    """(step number, VM, edge) for each step of ``calls`` that fires a trigger."""
    state = initial_state(config)
    steps = []
    for number, call in enumerate(calls, start=1):
        after = try_apply(config, state, call, rules)
        if after is None:
            continue
        trigger = rules.actions[call.action].trigger
        if trigger is not None and call.vm is not None:
            edge = (trigger, state.vms[call.vm].phase, after.vms[call.vm].phase)
            steps.append((number, call.vm, edge))
        state = after
    return steps


def trace_graph(
    config: ModelConfig, calls: Sequence[Call], title: str, rules: Rules = RULES
) -> graphviz.Digraph:
    """The lifecycle with the path of ``calls`` highlighted (see the module essay)."""
    graph = _base(title)
    labels: dict[EdgeKey, list[str]] = defaultdict(list)
    last: Phase | None = None
    for number, vm, edge in trace_steps(config, calls, rules):
        prefix = f"vm{vm}:" if config.vm_count > 1 else ""
        labels[edge].append(f"{prefix}{number}")
        last = edge[2]
    for trigger, source, dest in _edges():
        taken = labels.get((trigger, source, dest))
        if taken:
            label = f"{trigger} [{', '.join(taken)}]"
            graph.edge(source.name, dest.name, label, color="red", fontcolor="red",
                       penwidth="2.5")  # fmt: skip
        else:
            graph.edge(source.name, dest.name, trigger, color="gray70",
                       fontcolor="gray60")  # fmt: skip
    if last is not None:
        graph.node(last.name, last.value, color="red", penwidth="3")
    return graph


def coverage_graph(counts: Mapping[EdgeKey, int], title: str) -> graphviz.Digraph:
    """The lifecycle with each edge coloured by how often it was taken."""
    graph = _base(title)
    most = max(counts.values(), default=1)
    for edge in _edges():
        trigger, source, dest = edge
        count = counts.get(edge, 0)
        if not count:
            graph.edge(source.name, dest.name, f"{trigger} (0)", color="gray60",
                       style="dashed", fontcolor="gray50")  # fmt: skip
            continue
        shade = SHADES[min(len(SHADES) - 1, (len(SHADES) * count) // (most + 1))]
        graph.edge(source.name, dest.name, f"{trigger} ({count})", color=shade,
                   penwidth="2")  # fmt: skip
    return graph


def render_svg(graph: graphviz.Digraph) -> str | None:
    """SVG text of ``graph``, or None when Graphviz's ``dot`` is not installed."""
    if not dot_available():
        return None
    svg: bytes = graph.pipe(format="svg")
    return svg.decode("utf-8")
