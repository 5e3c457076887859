"""The one drawing of the lifecycle that every picture starts from.

``hvdr diagram``, the counterexample of ``hvdr check``, the coverage page of ``hvdr
fuzz`` and the explorer's diagram all draw the same lifecycle: the same phases under the
same names (``Phase.value``, the names the CLI prints), in the same places. Each lays
its own marks over it (a status fill, a path, counts, the current phase) through a
``Looks``. The arrows come from the concrete rows ``model.machine.transition_rows()``
derives from ``LIFECYCLE``; nothing here declares an edge.

Five rules keep the picture small enough to read (the first one, drawn by
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
* every other phase and box has its place, a row beside the spine and a side
  (``PLACES``, ``junction_place``), and each arrow weighs in Graphviz's ranking by
  where it runs (``_how_ranked``), so that no arrow crosses another's label or a box
  (a test lays the pictures out and checks);
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
from typing import Literal

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


Side = Literal["left", "right"]

#: Where each phase off the spine is drawn: in the row of a phase of the spine, on its
#: left or its right, listed from the spine outwards. Left to Graphviz's heuristics,
#: these phases landed where arrows ran across other arrows' labels. The round trips
#: from the steady phases (a test failover, a pause) sit on the left, under the steady
#: phase the spine does not take; a cancelled failover stops on the left beside the
#: failover; the resynchronization, which four phases lead to, is on the right, two
#: rows below the frame so that its arrows to and from the frame run apart. A phase not
#: listed goes on the right, a row below the first spine phase leading to it.
PLACES: Mapping[Phase, tuple[Phase, Side]] = {
    Phase.TEST_FAILOVER: (Phase.FAILOVER_PREPARED, "left"),
    Phase.REPLICATION_PAUSED: (Phase.FAILOVER_PREPARED, "left"),
    Phase.REPLICATION_STOPPED: (Phase.FAILING_OVER, "left"),
    Phase.RESYNCHRONIZING: (Phase.FAILING_OVER, "right"),
}


def _first_steady() -> Phase:
    return next(phase for phase in spine() if phase in STEADY)


def _other_steady() -> Phase:
    """The steady phase off the spine: drawn in the frame, left of the first."""
    return next(phase for phase in STEADY if phase is not _first_steady())


def on_spine(phase: Phase) -> bool:
    """Whether ``phase`` is drawn in the spine's column (the frame counts as one)."""
    return phase in spine() or phase in STEADY


@functools.cache
def row(phase: Phase) -> int:
    """The row ``phase`` is drawn in, counted down the spine from 0."""
    column = spine()
    if phase in column:
        return column.index(phase)
    if phase in STEADY:
        return column.index(_first_steady())
    anchor = PLACES.get(phase, (phase, "right"))[0]
    if anchor in column:
        return column.index(anchor)
    feeders = [
        row(source)
        for arrow in arrows()
        if phase in arrow.dests and not arrow.is_loop
        for source in arrow.sources
        if on_spine(source)
    ]
    return min(feeders, default=len(column) - 1) + 1


def side(phase: Phase) -> Side:
    """The side of the spine a phase off it is drawn on (``PLACES``)."""
    if phase is _other_steady():
        return "left"
    return PLACES.get(phase, (phase, "right"))[1]


def _in_frame(other: Phase) -> Phase:
    """The steady phase an arrow between the frame and ``other`` is drawn at: the
    frame's left one for a phase on the left, so that its arrows cross no other."""
    if not on_spine(other) and side(other) == "left":
        return _other_steady()
    return _first_steady()


def tail(arrow: Arrow) -> Phase | None:
    """The phase an arrow is drawn from (None: from its junction box)."""
    if arrow.from_steady:
        return _in_frame(arrow.dests[0])
    return None if arrow.is_junction else arrow.sources[0]


def head(arrow: Arrow) -> Phase:
    """The phase an arrow is drawn into (into the frame: at ``_in_frame``)."""
    if arrow.to_steady:
        return _first_steady() if arrow.is_junction else _in_frame(arrow.sources[0])
    return arrow.dests[0]


def junction_place(arrow: Arrow) -> tuple[int, Side]:
    """The row and side of a junction box, beside the phase it leads to. Leading to a
    phase off the spine, it sits a row below it, on its side (its arrow runs up a row).
    Leading to the spine, it sits on the right: in that phase's row when the phase is
    below the sources the box lists (the arrow runs along the row), else a row below
    it (``disable_protection``, whose arrow runs back up to the top)."""
    target = head(arrow)
    if not on_spine(target):
        return row(target) + 1, side(target)
    rows = [row(s) for s in arrow.sources if on_spine(s)]
    if rows and row(target) > min(rows):
        return row(target), "right"
    return row(target) + 1, "right"


def returns(arrow: Arrow) -> bool:
    """Whether the arrow is the way back of a round trip: another arrow is drawn
    between the same two phases the other way (pause and resume)."""
    ends = (head(arrow), tail(arrow))
    return any(
        (tail(other), head(other)) == ends
        for other in arrows()
        if not other.is_loop and not other.is_junction
    )


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
    _rows(graph)
    _legend(graph, looks.legend)
    return graph


def _junction_name(index: int) -> str:
    return f"junction{index}"


def _rows(graph: graphviz.Digraph) -> None:
    """Put each phase off the spine and each junction box in its row, on its side
    (``PLACES``, ``junction_place``), in order: a ``rank=same`` group with the spine's
    phase of that row, tied left to right by invisible edges (Graphviz keeps the order
    of an edge inside a row). On each side, from the spine outwards: the boxes leading
    to the spine, the phases, then the boxes leading to a phase off the spine."""
    items: dict[int, dict[Side, list[tuple[int, str]]]] = {}

    def put(place: tuple[int, Side], order: int, name: str) -> None:
        sides = items.setdefault(place[0], {"left": [], "right": []})
        sides[place[1]].append((order, name))

    for phase in dict.fromkeys([*PLACES, *Phase]):
        if not on_spine(phase) or phase is _other_steady():
            put((row(phase), side(phase)), 1, phase.value)
    for index, arrow in enumerate(arrows()):
        if not arrow.is_loop and tail(arrow) is None:
            order = 0 if on_spine(head(arrow)) else 2
            put(junction_place(arrow), order, _junction_name(index))
    column = spine()
    for number, sides in sorted(items.items()):
        left = [name for _, name in sorted(sides["left"], key=lambda i: i[0])]
        right = [name for _, name in sorted(sides["right"], key=lambda i: i[0])]
        anchor = [column[number].value] if number < len(column) else []
        names = [*reversed(left), *anchor, *right]
        with graph.subgraph() as same:
            same.attr(rank="same")
            for name in names:
                same.node(name)
        if not anchor:  # below the spine: a row under its last phase
            graph.edge(column[-1].value, names[0], style="invis")
        for before, after in itertools.pairwise(names):
            graph.edge(before, after, style="invis")


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
    drawn_tail = tail(arrow)
    if drawn_tail is None:
        _junction(graph, index, arrow, look, attrs)
        return
    drawn_head = head(arrow)
    reverse = _how_ranked(arrow, drawn_tail, drawn_head, attrs)
    head_end, tail_end = ("ltail", "lhead") if reverse else ("lhead", "ltail")
    if arrow.to_steady:
        attrs[head_end] = STEADY_FRAME
    if arrow.from_steady:
        attrs[tail_end] = STEADY_FRAME
    if arrow.from_steady:  # the notes say which steady phase they are about
        notes = NEWLINE.join(
            f"{source.value}: {look.notes[source]}"
            for source in arrow.sources
            if look.notes.get(source)
        )
        label = (
            f"{arrow.wrapped_label}{NEWLINE}{notes}" if notes else arrow.wrapped_label
        )
    else:
        note = look.notes.get(arrow.sources[0], "")
        label = f"{arrow.wrapped_label}{NEWLINE if NEWLINE in note else ' '}{note}"
        label = label.rstrip()
    ends = (drawn_head, drawn_tail) if reverse else (drawn_tail, drawn_head)
    graph.edge(ends[0].value, ends[1].value, label=_clear(label), **attrs)


def _how_ranked(
    arrow: Arrow, drawn_tail: Phase, drawn_head: Phase, attrs: dict[str, str]
) -> bool:
    """Set how the arrow weighs in Graphviz's ranking; True: draw it reversed.

    An arrow down the rows places its head below its tail (a spine step heavily,
    to keep the spine straight); one within a row places nothing. An arrow up is the
    way back of a round trip (Graphviz turns it round and draws the pair side by
    side); or it leads up to a phase off the spine, and is written from its head to
    its tail with ``dir=back`` (so Graphviz routes it like the arrows down rather
    than round the picture, across the spine); or it leads up into the spine, and
    places nothing, entering the frame from its own side.
    """
    down = row(drawn_head) - row(drawn_tail)
    if (drawn_tail, drawn_head) in _spine_edges():
        attrs["weight"] = SPINE_WEIGHT
    elif down == 0:
        attrs["constraint"] = "false"
    elif down < 0 and not returns(arrow):
        if not on_spine(drawn_head):
            attrs["dir"] = "back"
            return True
        attrs["constraint"] = "false"
        if arrow.to_steady:
            attrs["headport"] = "w" if side(drawn_tail) == "left" else "e"
    return False


def _junction(
    graph: graphviz.Digraph,
    index: int,
    arrow: Arrow,
    look: Look,
    attrs: dict[str, str],
) -> None:
    """The box listing an arrow's sources, and the arrow from it; the box is placed
    by ``_rows``, so the arrow places nothing when it runs up or along its row."""
    junction = _junction_name(index)
    title = [f"<B>{_escape(arrow.trigger)}</B>"]
    if arrow.conditions:
        guards = " & ".join(arrow.conditions)
        title.append(f"<B>{_escape(f'[{guards}]')}</B>")
    rows = [*title, "from any of:"] + [
        _escape(f"{source.value} {look.notes.get(source, '')}".rstrip())
        for source in arrow.sources
    ]
    graph.node(
        junction, _table(rows), shape="box", style="dashed,rounded",
        fontsize="9", color=look.attrs.get("color", "gray40"),
        fontcolor=look.attrs.get("fontcolor", "black"), tooltip=arrow.tooltip,
    )  # fmt: skip
    target = head(arrow)
    if arrow.to_steady:
        attrs["lhead"] = STEADY_FRAME
    if junction_place(arrow)[0] >= row(target):
        attrs["constraint"] = "false"
    graph.edge(junction, target.value, **attrs)


def _clear(label: str) -> str:
    """``label`` one space in from its arrow: Graphviz sets a label against the right
    of its line, and a heavy line (the happy path) covers its first letter."""
    return " " + label.replace(NEWLINE, NEWLINE + " ")


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
