"""The lifecycle drawn with something laid over it: a trace's path, or coverage.

``hvdr diagram`` draws the lifecycle itself (``hvdr.diagrams``). The checkers need
two more pictures of the same edges, laid over the same drawing (``hvdr.drawing``:
the same phases, names and places as every other picture of the lifecycle):

* ``trace_graph``: the path a counterexample takes, its arrows red and numbered by
  step (per VM; an arrow standing for several edges numbers each source), the phase it
  ends in outlined;
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
UNTAKEN_COLOR = "gray65"


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
    labels: dict[EdgeKey, list[str]] = defaultdict(list)
    last: Phase | None = None
    for number, vm, edge in trace_steps(config, calls, rules):
        prefix = f"vm{vm}:" if config.vm_count > 1 else ""
        labels[edge].append(f"{prefix}{number}")
        last = edge[2]

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
        if shown is not last:
            return drawing.Look()
        return drawing.Look(attrs={"color": TRACE_COLOR, "penwidth": "3"})

    legend = [
        (drawing.line(TRACE_COLOR, width=2), "a step of the trace; [n]: its number"
         + (", vmN: the VM" if config.vm_count > 1 else "")),
        (drawing.line(UNTAKEN_COLOR), "not taken by the trace"),
        (drawing.swatch("white", TRACE_COLOR), "the phase the trace ends in"),
    ]  # fmt: skip
    drawn = {edge for each in drawing.arrows() for edge in each.edges}
    outside = {edge: steps for edge, steps in labels.items() if edge not in drawn}
    if outside:  # a mutated rule took a step the lifecycle table does not have
        sample = drawing.line(TRACE_COLOR, "· · · ▶", width=2)
        legend.append((sample, "a step the lifecycle table does not have"))
    graph = drawing.draw(title, drawing.Looks(arrow, phase, legend))
    for (trigger, source, dest), steps in outside.items():
        label = f"{trigger} [{', '.join(steps)}]{drawing.NEWLINE}(not in the table)"
        graph.edge(source.value, dest.value, label, color=TRACE_COLOR,
                   fontcolor=TRACE_COLOR, penwidth="2.5", style="dotted",
                   constraint="false")  # fmt: skip
    return graph


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
