"""The lifecycle drawn with something laid over it: a trace's path, or coverage.

``hvdr diagram`` draws the lifecycle itself (``hvdr.diagrams``). The checkers need
two more pictures of the same edges, built here with the ``graphviz`` package from
the concrete rows ``model.machine.transition_rows()`` derives from ``LIFECYCLE``:

* ``trace_graph``: the path a counterexample takes, its edges red and numbered by
  step (per VM), the steps that fire no edge (writes, faults) as orange loops on
  the phase they happened in, the decisive last step crossed, the phase it ends
  in outlined;
* ``coverage_graph``: each edge coloured by how often a fuzzing run took it (grey
  and dashed: never), with the count on the edge.

Both return a ``graphviz.Digraph``; ``render_svg`` turns one into SVG text when
Graphviz's ``dot`` is installed, and the callers fall back to the DOT text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

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
    return [
        (number, vm, edge)
        for number, vm, edge in _drawn_steps(config, calls, rules)
        if isinstance(edge, tuple)
    ]


def _drawn_steps(
    config: ModelConfig, calls: Sequence[Call], rules: Rules
) -> list[tuple[int, int, EdgeKey | Phase]]:
    """Each step taken, as (number, VM, the lifecycle edge it fired), or, for a step
    that fires none (a write, a fault, a plan step), (number, VM, the VM's phase):
    once per VM it concerns (a site or link event: every VM, one per phase)."""
    state = initial_state(config)
    drawn: list[tuple[int, int, EdgeKey | Phase]] = []
    for number, call in enumerate(calls, start=1):
        after = try_apply(config, state, call, rules)
        if after is None:
            continue
        trigger = rules.actions[call.action].trigger
        if trigger is not None and call.vm is not None:
            edge = (trigger, state.vms[call.vm].phase, after.vms[call.vm].phase)
            drawn.append((number, call.vm, edge))
        elif call.vm is not None:
            drawn.append((number, call.vm, state.vms[call.vm].phase))
        else:
            phases = dict.fromkeys(vm.phase for vm in state.vms)
            drawn += [(number, -1, phase) for phase in phases]
        state = after
    return drawn


def _step_label(number: int, vm: int, call: Call, config: ModelConfig) -> str:
    prefix = f"vm{vm}:" if config.vm_count > 1 and vm >= 0 else ""
    return f"{prefix}{number} {call}"


def trace_graph(
    config: ModelConfig,
    calls: Sequence[Call],
    title: str,
    rules: Rules = RULES,
    failed: str | None = None,
) -> graphviz.Digraph:
    """The lifecycle with the path of ``calls`` highlighted (see the module essay):
    lifecycle edges red and numbered; the steps that change no phase (writes,
    faults, cycles that fire no edge) as orange loops on the phase they happened
    in; the last step, which broke property ``failed``, marked with a cross."""
    legend = (
        "red: the trace's lifecycle edges, numbered by step; orange loops: its "
        "steps that change no phase (writes, faults)"
    )
    if failed is not None:
        legend += f"; ✗: the step that broke {failed}"
    graph = _base(f"{title}\\n{legend}")
    labels: dict[EdgeKey, list[str]] = defaultdict(list)
    loops: dict[Phase, list[str]] = defaultdict(list)
    decisive = len(calls) if failed is not None else None
    last: Phase | None = None
    for number, vm, drawn in _drawn_steps(config, calls, rules):
        call = calls[number - 1]
        if isinstance(drawn, tuple):
            prefix = f"vm{vm}:" if config.vm_count > 1 else ""
            mark = " ✗" if number == decisive else ""
            labels[drawn].append(f"{prefix}{number}{mark}")
            last = drawn[2]
        elif number == decisive:
            label = f"✗ {_step_label(number, vm, call, config)}"
            graph.edge(drawn.name, drawn.name, label, color="red", fontcolor="red",
                       penwidth="3")  # fmt: skip
            last = drawn
        else:
            loops[drawn].append(_step_label(number, vm, call, config))
    for phase, steps in loops.items():
        graph.edge(phase.name, phase.name, "\\n".join(steps), color="darkorange",
                   fontcolor="darkorange3", style="dashed")  # fmt: skip
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


def write_drawing(graph: graphviz.Digraph, path: Path) -> Path:
    """Write ``graph`` as SVG to ``path``, or, without Graphviz's ``dot``, its DOT
    text beside it (``.dot``); the path written."""
    svg = render_svg(graph)
    if svg is None:
        path = path.with_suffix(".dot")
        path.write_text(graph.source, encoding="utf-8")
    else:
        path.write_text(svg, encoding="utf-8")
    return path


def render_svg(graph: graphviz.Digraph) -> str | None:
    """SVG text of ``graph``, or None when Graphviz's ``dot`` is not installed."""
    if not dot_available():
        return None
    svg: bytes = graph.pipe(format="svg")
    return svg.decode("utf-8")
