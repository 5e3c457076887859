"""The one drawing of the lifecycle that every picture starts from.

``hvdr diagram``, the counterexample of ``hvdr check``, the coverage page of ``hvdr
fuzz`` and the explorer's diagram all draw the same lifecycle: the same phases under the
same names (``Phase.value``, the names the CLI prints), in the same places. Each lays
its own marks over it (a status fill, a path, counts, the current phase) through a
``Looks``. The arrows come from the concrete rows ``model.machine.transition_rows()``
derives from ``LIFECYCLE``; nothing here declares an edge.

Four rules keep the picture small enough to read (the first one, drawn by
``transitions``' graphviz engine, one edge per pair of phases, was 4,289 px wide, and
six ``disable_protection`` edges filled a third of it):

* the happy path (``model.scenarios.FAILOVER_AND_FAILBACK`` replayed: protect, fail
  over, commit, reverse) is a straight spine: its phases share a ``group`` and its
  forward edges are heavy, so Graphviz keeps them in one column;
* a trigger that takes three phases or more (``JUNCTION_SOURCES_MIN``) to the same
  phase under the same guards is one arrow from a box listing them ("disable_protection
  from: ..."), not one arrow each;
* a trigger that stays in its phase (a delta cycle, a disk copied) is a line inside the
  phase's box (``↻ replicate [log_usable]``), not a self-loop whose label overlaps;
* a legend says what each colour, line and mark means.

Every concrete edge is still drawn, exactly once: each arrow carries a ``tooltip``
listing the edges it stands for (``trigger: source → dest``), which the SVG shows on
hover and a test compares with ``transition_rows()``.
"""

from __future__ import annotations

import functools
import html
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import graphviz

from model import Phase, apply, initial_state
from model.action import Actor
from model.lifecycle import STEADY
from model.machine import DIRECTION_GUARDS, transition_rows
from model.scenarios import FAILOVER_AND_FAILBACK
from model.successor import RULES

EdgeKey = tuple[str, Phase, Phase]

#: A trigger taking at least this many phases to one phase is drawn from one box that
#: lists them: below three, two plain arrows are as easy to read as a box.
JUNCTION_SOURCES_MIN = 3

#: Weight of a spine edge against 1 for the others: high enough that Graphviz draws
#: the happy path straight down whatever else leaves its phases.
SPINE_WEIGHT = "20"

#: Line style per actor: what the operator does is solid, what the agent does dashed.
ACTOR_STYLES = {Actor.OPERATOR: "solid", Actor.AGENT: "dashed"}

HAPPY_COLOR = "royalblue"

#: A line break in a DOT label or tooltip, written as Graphviz's escape so that each
#: statement of the DOT text stays on one line.
NEWLINE = "\\n"
FONT = "Helvetica"


#: The frame holding both steady phases; arrows to or from it stand for both.
STEADY_FRAME = "cluster_steady"


@dataclass(frozen=True)
class Arrow:
    """One arrow of the picture, standing for the concrete ``edges`` it lists.

    ``sources`` are the phases it leaves: one, both steady phases (drawn from the
    steady frame), or a list (drawn from a box naming them). ``dests`` is one phase, or
    both steady phases (drawn into the steady frame: the VM lands on the steady phase
    of its direction). ``conditions`` are the data guards, without the direction.
    """

    trigger: str
    sources: tuple[Phase, ...]
    dests: tuple[Phase, ...]
    conditions: tuple[str, ...]
    actor: Actor
    edges: tuple[EdgeKey, ...]

    @property
    def is_loop(self) -> bool:
        """The trigger stays in its phase: drawn inside the phase's box."""
        return len(self.sources) == 1 and self.sources == self.dests

    @property
    def from_steady(self) -> bool:
        """Leaves either steady phase: drawn from the steady frame."""
        return set(self.sources) == set(STEADY)

    @property
    def to_steady(self) -> bool:
        """Lands on the steady phase of the direction: drawn into the steady frame."""
        return set(self.dests) == set(STEADY) and not self.is_loop

    @property
    def is_junction(self) -> bool:
        """Drawn from a box that lists the sources."""
        return len(self.sources) > 1 and not self.from_steady

    @property
    def label(self) -> str:
        """The trigger with its guards in brackets, as ``transitions`` writes them."""
        if not self.conditions:
            return self.trigger
        return f"{self.trigger} [{' & '.join(self.conditions)}]"

    @property
    def wrapped_label(self) -> str:
        """The label with the guards on a line of their own, for narrow arrows."""
        if not self.conditions:
            return self.trigger
        return f"{self.trigger}{NEWLINE}[{' & '.join(self.conditions)}]"

    @property
    def tooltip(self) -> str:
        """Every concrete edge of the arrow, ``trigger: source → dest``, one a line."""
        return NEWLINE.join(f"{t}: {s.value} → {d.value}" for t, s, d in self.edges)


@functools.cache
def arrows() -> tuple[Arrow, ...]:
    """The arrows of the lifecycle, from ``transition_rows()`` (see the module essay).

    First the rows that differ only by direction (``[primary_active]`` to protected,
    ``[secondary_active]`` to reverse_replicating) become one arrow into the steady
    frame; then the arrows of one trigger into one place under the same guards are
    drawn as one, from the steady frame or from a box listing their sources.
    """
    direction = set(DIRECTION_GUARDS.values())
    by_source: dict[tuple[str, Phase, tuple[str, ...]], list[Phase]] = {}
    for row in transition_rows():
        conditions = tuple(c for c in row.get("conditions", ()) if c not in direction)
        by_source.setdefault((row["trigger"], row["source"], conditions), []).append(
            row["dest"]
        )
    by_place: dict[tuple[str, tuple[Phase, ...], tuple[str, ...]], list[Phase]] = {}
    loops = []
    for (trigger, source, conditions), dests in by_source.items():
        if tuple(dests) == (source,):
            loops.append(_arrow_of(trigger, (source,), (source,), conditions))
        else:
            by_place.setdefault((trigger, tuple(dests), conditions), []).append(source)
    result = loops
    for (trigger, places, conditions), sources in by_place.items():
        if len(sources) >= JUNCTION_SOURCES_MIN or set(sources) == set(STEADY):
            result.append(_arrow_of(trigger, tuple(sources), places, conditions))
        else:
            result += [_arrow_of(trigger, (s,), places, conditions) for s in sources]
    return tuple(result)


def _arrow_of(
    trigger: str,
    sources: tuple[Phase, ...],
    dests: tuple[Phase, ...],
    conditions: tuple[str, ...],
) -> Arrow:
    # A steady source with a steady destination keeps its direction: that is a loop,
    # so the product of sources and destinations is exactly the rows grouped here.
    edges = tuple((trigger, source, dest) for source in sources for dest in dests)
    actor = RULES.actions[trigger].actor
    return Arrow(trigger, sources, dests, conditions, actor, edges)


@functools.cache
def happy_path() -> tuple[Phase, ...]:
    """The phases ``FAILOVER_AND_FAILBACK`` passes through, in order, with repeats."""
    scenario = FAILOVER_AND_FAILBACK
    state = initial_state(scenario.config)
    phases = [state.vms[0].phase]
    for call in scenario.calls:
        state = apply(scenario.config, state, call)
        if state.vms[0].phase is not phases[-1]:
            phases.append(state.vms[0].phase)
    return tuple(phases)


@functools.cache
def happy_path_edges() -> frozenset[tuple[Phase, Phase]]:
    """(source, destination) of every step of the happy path."""
    path = happy_path()
    return frozenset(itertools.pairwise(path))


@functools.cache
def spine() -> tuple[Phase, ...]:
    """The happy path's phases in the order first reached, the picture's column, but
    for the second steady phase: it sits beside the first (``steady_row``)."""
    first_steady = next(phase for phase in happy_path() if phase in STEADY)
    return tuple(
        phase
        for phase in dict.fromkeys(happy_path())
        if phase not in STEADY or phase is first_steady
    )


def _spine_edges() -> frozenset[tuple[Phase, Phase]]:
    column = spine()
    return frozenset(itertools.pairwise(column))


def tail(arrow: Arrow) -> Phase | None:
    """The phase an arrow is drawn from (None: from its junction box)."""
    if arrow.from_steady:
        return _first_steady()
    return None if arrow.is_junction else arrow.sources[0]


def head(arrow: Arrow) -> Phase:
    """The phase an arrow is drawn into (the steady frame is entered at its first)."""
    return _first_steady() if arrow.to_steady else arrow.dests[0]


def _first_steady() -> Phase:
    return next(phase for phase in spine() if phase in STEADY)


@functools.cache
def _ranking_arrows() -> frozenset[Arrow]:
    """The arrows that place the phases in rows: the spine's, and for each phase off
    it the arrow from the earliest phase of the spine. The others do not pull phases
    up or down, so a phase off the spine sits beside the spine just below where it is
    first reached, rather than at the bottom of the picture."""
    column = spine()
    chosen = {
        arrow for arrow in arrows() if (tail(arrow), head(arrow)) in _spine_edges()
    }
    for phase in Phase:
        if phase in column:
            continue
        feeders = [
            arrow
            for arrow in arrows()
            if head(arrow) is phase and tail(arrow) in column and not arrow.is_loop
        ]
        if feeders:
            chosen.add(min(feeders, key=lambda a: column.index(_some(tail(a)))))
    return frozenset(chosen)


def _some(phase: Phase | None) -> Phase:
    assert phase is not None
    return phase


@dataclass(frozen=True)
class Look:
    """How a picture marks one arrow or phase: Graphviz attributes and a note.

    ``notes`` is per source phase (a junction lists its sources, each with its note;
    a plain arrow or a loop has one source); the note follows the label. ``lines``
    are a phase's own extra lines, each (colour, text), drawn in its box below its
    triggers (a counterexample's steps that change no phase).
    """

    attrs: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[Phase, str] = field(default_factory=dict)
    color: str = "black"
    lines: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Looks:
    """What one picture lays over the lifecycle."""

    arrow: Callable[[Arrow], Look]
    phase: Callable[[Phase], Look]
    legend: Sequence[tuple[str, str]]  # (HTML sample, meaning), before the common rows


def on_happy_path(arrow: Arrow) -> bool:
    """Whether the failover-and-failback scenario takes one of the arrow's edges."""
    return any((source, dest) in happy_path_edges() for _, source, dest in arrow.edges)


def plain_arrow(arrow: Arrow) -> Look:
    """The arrow as ``hvdr diagram`` draws it: blue and bold on the happy path."""
    if not on_happy_path(arrow):
        return Look()
    attrs = {"color": HAPPY_COLOR, "fontcolor": HAPPY_COLOR, "penwidth": "2.5"}
    return Look(attrs=attrs, color=HAPPY_COLOR)


def plain_phase(phase: Phase) -> Look:
    """A white box."""
    del phase
    return Look()


def draw(title: str, looks: Looks) -> graphviz.Digraph:
    """The lifecycle with ``looks`` laid over it (see the module essay)."""
    graph = graphviz.Digraph(
        "lifecycle",
        graph_attr={
            "label": title, "labelloc": "t", "fontname": FONT, "fontsize": "16",
            "rankdir": "TB", "nodesep": "0.3", "ranksep": "0.4", "newrank": "true",
            "compound": "true",
        },
        node_attr={"fontname": FONT, "fontsize": "11"},
        edge_attr={"fontname": FONT, "fontsize": "9", "arrowsize": "0.7"},
    )  # fmt: skip
    loops: dict[Phase, list[tuple[Arrow, Look]]] = {phase: [] for phase in Phase}
    for arrow in arrows():
        if arrow.is_loop:
            loops[arrow.dests[0]].append((arrow, looks.arrow(arrow)))
    frame = {"label": "steady phases: replicating away from the active site",
             "style": "rounded,dashed", "color": "gray50", "fontsize": "9",
             "fontname": FONT, "labeljust": "l"}  # fmt: skip
    with graph.subgraph(name=STEADY_FRAME, graph_attr=frame) as steady:
        steady.attr(rank="same")
        for phase in STEADY:
            _phase_node(steady, phase, looks.phase(phase), loops[phase])
    for phase in Phase:
        if phase not in STEADY:
            _phase_node(graph, phase, looks.phase(phase), loops[phase])
    for index, arrow in enumerate(arrows()):
        if not arrow.is_loop:
            _arrow(graph, index, arrow, looks.arrow(arrow))
    _legend(graph, looks.legend)
    return graph


def _phase_node(
    graph: graphviz.Digraph,
    phase: Phase,
    look: Look,
    loops: list[tuple[Arrow, Look]],
) -> None:
    note = look.notes.get(phase, "")
    rows = [f"<B>{_escape(phase.value)}</B>"]
    if note:
        rows.append(f'<FONT COLOR="{look.color}">{_escape(note)}</FONT>')
    for arrow, loop_look in loops:
        text = f"{arrow.label} {loop_look.notes.get(phase, '')}".rstrip()
        color = loop_look.attrs.get("fontcolor", loop_look.color)
        rows.append(
            f'<FONT POINT-SIZE="9" COLOR="{loop_look.color}">↻</FONT> '
            f'<FONT POINT-SIZE="9" COLOR="{color}">{_escape(text)}</FONT>'
        )
    rows += [
        f'<FONT POINT-SIZE="9" COLOR="{color}">{_escape(text)}</FONT>'
        for color, text in look.lines
    ]
    attrs = {
        "shape": "box", "style": "rounded,filled", "fillcolor": "white",
        "margin": "0.12,0.05", "tooltip": NEWLINE.join(a.tooltip for a, _ in loops)
        or phase.value,
        **({"group": "spine"} if phase in spine() else {}),
        **look.attrs,
    }  # fmt: skip
    graph.node(phase.value, _table(rows), **attrs)


def _arrow(graph: graphviz.Digraph, index: int, arrow: Arrow, look: Look) -> None:
    attrs = {"style": ACTOR_STYLES[arrow.actor], "tooltip": arrow.tooltip, **look.attrs}
    if arrow.to_steady:
        attrs["lhead"] = STEADY_FRAME
    if arrow.from_steady:
        attrs["ltail"] = STEADY_FRAME
    drawn_tail = tail(arrow)
    if arrow in _ranking_arrows() and (drawn_tail, head(arrow)) in _spine_edges():
        attrs["weight"] = SPINE_WEIGHT
    elif arrow not in _ranking_arrows():
        attrs["constraint"] = "false"
    if drawn_tail is None:
        junction = f"junction{index}"
        rows = [f"<B>{_escape(arrow.label)}</B>", "from any of:"] + [
            _escape(f"{source.value} {look.notes.get(source, '')}".rstrip())
            for source in arrow.sources
        ]
        graph.node(
            junction, _table(rows), shape="box", style="dashed,rounded",
            fontsize="9", color=look.attrs.get("color", "gray40"),
            fontcolor=look.attrs.get("fontcolor", "black"), tooltip=arrow.tooltip,
        )  # fmt: skip
        attrs.pop("constraint", None)
        _place_junction(graph, junction, arrow, attrs)
        graph.edge(junction, head(arrow).value, **attrs)
        return
    if arrow.from_steady:  # the notes say which steady phase they are about
        notes = NEWLINE.join(
            f"{source.value}: {look.notes[source]}"
            for source in arrow.sources
            if look.notes.get(source)
        )
        label = f"{arrow.wrapped_label}{NEWLINE}{notes}".rstrip()
    else:
        note = look.notes.get(arrow.sources[0], "")
        label = f"{arrow.wrapped_label}{NEWLINE if NEWLINE in note else ' '}{note}"
        label = label.rstrip()
    graph.edge(drawn_tail.value, head(arrow).value, label=label, **attrs)


def _place_junction(
    graph: graphviz.Digraph, junction: str, arrow: Arrow, attrs: dict[str, str]
) -> None:
    """Put a junction one row below its earliest source on the spine (an invisible
    edge from it), and let its arrow run up when its phase is higher still."""
    column = spine()
    on_spine = [source for source in arrow.sources if source in column]
    if not on_spine:
        return
    first = min(on_spine, key=column.index)
    graph.edge(first.value, junction, style="invis")
    target = head(arrow)
    if target in column and column.index(target) <= column.index(first):
        attrs["constraint"] = "false"


LEGEND_COMMON = (
    ("<B>name</B>", "a phase; its ↻ lines: triggers that keep the VM in it"),
    ("────▶", "a trigger the operator fires"),
    ("- - - ▶", "a trigger the replication agent fires"),
    ("[guard]", "a condition on the VM's data that must hold"),
    ("┆steady phases┆", (
        "an arrow into the frame lands on the steady phase of the\n"
        "direction: protected while the primary is active, reverse_replicating\n"
        "while the secondary is; an arrow out of the frame leaves either"
    )),
    ("┆from any of┆", "one arrow for the trigger from each phase listed"),
)  # fmt: skip


def _legend(graph: graphviz.Digraph, extra: Sequence[tuple[str, str]]) -> None:
    rows = "".join(
        f'<TR><TD ALIGN="CENTER">{sample}</TD>'
        f'<TD ALIGN="LEFT" BALIGN="LEFT">{_lines(text)}</TD></TR>'
        for sample, text in (*extra, *LEGEND_COMMON)
    )
    table = (
        '<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2" '
        f'BGCOLOR="whitesmoke" COLOR="gray60"><TR><TD COLSPAN="2"><B>legend</B></TD>'
        f"</TR>{rows}</TABLE>>"
    )
    graph.node("legend", table, shape="plaintext", fontsize="9")
    graph.edge(spine()[-1].value, "legend", style="invis")  # below the picture


def swatch(fill: str, border: str) -> str:
    """An HTML sample of a box filled with ``fill``, for a legend row."""
    return (
        f'<FONT COLOR="{border}">▉</FONT>'
        if fill == border
        else (
            f'<TABLE BORDER="1" COLOR="{border}" CELLBORDER="0" CELLPADDING="0">'
            f'<TR><TD BGCOLOR="{fill}" WIDTH="24" HEIGHT="10"> </TD></TR></TABLE>'
        )
    )


def line(color: str, text: str = "────▶", width: int = 1) -> str:
    """An HTML sample of an arrow in ``color``, bold when ``width`` > 1."""
    sample = f'<FONT COLOR="{color}">{text}</FONT>'
    return f"<B>{sample}</B>" if width > 1 else sample


def _table(rows: Sequence[str]) -> str:
    cells = "".join(f"<TR><TD>{row}</TD></TR>" for row in rows)
    return f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="1">{cells}</TABLE>>'


def _lines(text: str) -> str:
    return "<BR/>".join(_escape(part) for part in text.split("\n"))


def _escape(text: str) -> str:
    return html.escape(text, quote=False)
