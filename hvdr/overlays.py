"""The lifecycle drawn with something laid over it: a trace's path, or coverage.

``hvdr diagram`` draws the lifecycle itself (``hvdr.diagrams``). The checkers need
two more pictures of the same edges, laid over the same drawing (``hvdr.drawing``:
the same phases, names and places as every other picture of the lifecycle):

* ``trace_graph``: the path a counterexample takes, its arrows red and numbered by
  step (per VM; an arrow standing for several edges numbers each source); the steps
  that fire no edge (writes, faults) as numbered orange ``↻`` lines inside the box of
  the phase they happened in; the decisive last step crossed (``✗``) in red; the
  phase it ends in outlined;
* ``coverage_graph``: each arrow coloured by how often a fuzzing run took its edges
  (grey and dotted: never), with the count per source phase.

Both return a ``graphviz.Digraph`` with a legend of its marks; ``render_svg`` turns
one into SVG text when Graphviz's ``dot`` is installed, and the callers fall back to
the DOT text. ``scalable_svg`` makes that SVG fit the width of a page.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import graphviz

from hvdr import drawing
from hvdr.diagrams import dot_available
from model import Call, ModelConfig, Phase, initial_state
from model.successor import RULES, Rules, try_apply

EdgeKey = tuple[str, Phase, Phase]

#: Colours from rarely to often taken (coverage), light to dark.
SHADES = ("#9ecae1", "#6baed6", "#2171b5", "#08306b")
NEVER_COLOR = "#8c8c8c"  # a grey both Graphviz and CSS know
TRACE_COLOR = "red"
STEP_COLOR = "darkorange3"  # a step that changes no phase (a write, a fault)
UNTAKEN_COLOR = "gray65"


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
    """The lifecycle with the path of ``calls`` highlighted (see the module essay);
    ``failed`` names the property the last step broke, which is crossed."""
    labels: dict[EdgeKey, list[str]] = defaultdict(list)
    lines: dict[Phase, list[tuple[str, str]]] = defaultdict(list)
    decisive = len(calls) if failed is not None else None
    last: Phase | None = None
    for number, vm, drawn in _drawn_steps(config, calls, rules):
        step = _step_label(number, vm, calls[number - 1], config)
        if isinstance(drawn, tuple):
            prefix = f"vm{vm}:" if config.vm_count > 1 else ""
            mark = " ✗" if number == decisive else ""
            labels[drawn].append(f"{prefix}{number}{mark}")
            last = drawn[2]
        elif number == decisive:
            lines[drawn].append((TRACE_COLOR, f"✗ {step}"))
            last = drawn
        else:
            lines[drawn].append((STEP_COLOR, f"↻ {step}"))

    def arrow(drawn: drawing.Arrow) -> drawing.Look:
        notes: dict[Phase, str] = {}
        for _, source, dest in drawn.edges:
            steps = labels.get((drawn.trigger, source, dest))
            if steps:
                note = f"{_towards(drawn, dest)}[{', '.join(steps)}]"
                notes[source] = _join(notes.get(source, ""), note, drawn)
        if not notes:
            attrs = {"color": UNTAKEN_COLOR, "fontcolor": UNTAKEN_COLOR}
            return drawing.Look(attrs=attrs, color=UNTAKEN_COLOR)
        attrs = {"color": TRACE_COLOR, "fontcolor": TRACE_COLOR, "penwidth": "2.5"}
        return drawing.Look(attrs=attrs, notes=notes, color=TRACE_COLOR)

    def phase(shown: Phase) -> drawing.Look:
        attrs = {"color": TRACE_COLOR, "penwidth": "3"} if shown is last else {}
        return drawing.Look(attrs=attrs, lines=lines.get(shown, ()))

    graph = drawing.draw(
        title, drawing.Looks(arrow, phase, _trace_legend(config, labels, lines, failed))
    )
    for (trigger, source, dest), steps in _outside(labels).items():
        label = f"{trigger} [{', '.join(steps)}]{drawing.NEWLINE}(not in the table)"
        graph.edge(source.value, dest.value, label, color=TRACE_COLOR,
                   fontcolor=TRACE_COLOR, penwidth="2.5", style="dotted",
                   constraint="false")  # fmt: skip
    return graph


def _outside(labels: Mapping[EdgeKey, list[str]]) -> dict[EdgeKey, list[str]]:
    """The steps whose edge the lifecycle table does not have (a mutated rule)."""
    drawn = {edge for each in drawing.arrows() for edge in each.edges}
    return {edge: steps for edge, steps in labels.items() if edge not in drawn}


def _trace_legend(
    config: ModelConfig,
    labels: Mapping[EdgeKey, list[str]],
    lines: Mapping[Phase, list[tuple[str, str]]],
    failed: str | None,
) -> list[tuple[str, str]]:
    """Legend rows of the marks ``trace_graph`` lays over the lifecycle."""
    legend = [
        (drawing.line(TRACE_COLOR, width=2), "a step of the trace; [n]: its number"
         + (", vmN: the VM" if config.vm_count > 1 else "")),
        (drawing.line(UNTAKEN_COLOR), "not taken by the trace"),
        (drawing.swatch("white", TRACE_COLOR), "the phase the trace ends in"),
    ]  # fmt: skip
    if any(color == STEP_COLOR for each in lines.values() for color, _ in each):
        legend.append((drawing.line(STEP_COLOR, "↻ n step"), (
            "a step of the trace that changes no phase (a write, a fault),\n"
            "in the box of the phase it happened in; n: its number")))  # fmt: skip
    if failed is not None:
        legend.append((drawing.line(TRACE_COLOR, "✗", width=2),
                       f"the step that broke {failed}"))  # fmt: skip
    if _outside(labels):  # a mutated rule took a step the lifecycle table does not have
        sample = drawing.line(TRACE_COLOR, "· · · ▶", width=2)
        legend.append((sample, "a step the lifecycle table does not have"))
    return legend


def _join(before: str, note: str, drawn: drawing.Arrow) -> str:
    """Notes about one source: one a line when they are about two destinations."""
    if not before:
        return note
    return f"{before}{drawing.NEWLINE if len(drawn.dests) > 1 else ' '}{note}"


def _towards(drawn: drawing.Arrow, dest: Phase) -> str:
    """Which destination a note is about, when the arrow has two (the steady frame)."""
    return f"to {dest.value} " if len(drawn.dests) > 1 else ""


def coverage_graph(counts: Mapping[EdgeKey, int], title: str) -> graphviz.Digraph:
    """The lifecycle with each arrow coloured by how often its edges were taken."""
    most = max(counts.values(), default=1)

    def arrow(drawn: drawing.Arrow) -> drawing.Look:
        taken = {edge: counts.get(edge, 0) for edge in drawn.edges}
        notes: dict[Phase, str] = {}
        for (_, source, dest), count in taken.items():
            note = f"{_towards(drawn, dest)}({count or 'never'})"
            notes[source] = _join(notes.get(source, ""), note, drawn)
        total = sum(taken.values())
        if not total:
            attrs = {"color": NEVER_COLOR, "fontcolor": NEVER_COLOR, "style": "dotted"}
            return drawing.Look(attrs=attrs, notes=notes, color=NEVER_COLOR)
        color = shade(max(taken.values()), most)
        attrs = {"color": color, "fontcolor": "black", "penwidth": "2"}
        return drawing.Look(attrs=attrs, notes=notes, color=color)

    return drawing.draw(
        title, drawing.Looks(arrow, lambda _: drawing.Look(), coverage_legend(most))
    )


def shade(count: int, most: int) -> str:
    """The colour of an edge taken ``count`` times when the most taken was ``most``."""
    return SHADES[min(len(SHADES) - 1, (len(SHADES) * count) // (most + 1))]


def shade_bands(most: int) -> list[tuple[str, str]]:
    """(colour, "taken a..b times") for each shade, as ``shade`` assigns them."""
    bands: dict[str, list[int]] = {}
    for count in range(1, most + 1):
        bands.setdefault(shade(count, most), []).append(count)
    return [
        (color, f"taken {c[0]:,} time{'s' * (c[-1] > 1)}" if len(c) == 1
         else f"taken {c[0]:,} to {c[-1]:,} times")
        for color, c in bands.items()
    ]  # fmt: skip


def coverage_legend(most: int) -> list[tuple[str, str]]:
    """Legend rows of the coverage colours (the most taken edge was taken ``most``)."""
    rows = [(drawing.line(color, width=2), words) for color, words in shade_bands(most)]
    never = drawing.line(NEVER_COLOR, "· · · ▶")
    return [
        *rows,
        (never, "never taken"),
        ("(n)", "times taken, per source phase"),
        ("(never)", "that edge of the arrow was never taken"),
    ]


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


def scalable_svg(svg: str) -> str:
    """``svg`` sized to the width of its container (its ``viewBox`` keeps the shape).

    Graphviz writes a fixed ``width="...pt" height="...pt"``: a page showing it
    scrolls sideways on a small window and leaves it small on a large one.
    """
    opening = re.search(r"<svg\b[^>]*>", svg)
    assert opening is not None, svg[:200]
    tag = opening.group(0)
    assert "viewBox=" in tag, tag
    sized = re.sub(r'\s(width|height)="[^"]*"', "", tag)
    sized = sized.replace("<svg", '<svg width="100%" style="height: auto"', 1)
    return svg[: opening.start()] + sized + svg[opening.end() :]
