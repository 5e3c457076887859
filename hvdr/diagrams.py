"""Lifecycle diagrams generated from the model: DOT, Mermaid, and SVG/PNG via Graphviz.

Nothing here is drawn by hand. The DOT picture is ``hvdr.drawing``'s, the one every
picture of the lifecycle starts from (the happy path as a straight spine, a trigger
from many phases as one arrow, loops inside the phase's box, a legend), with each
phase filled by its protected status. The Mermaid text comes from ``transitions``'
diagram extension (its mermaid engine, with the guards on the edges), built from the
same ``transition_rows()``; both name the phases by ``Phase.value``, as the CLI does.
Two things are *computed* from the model and drawn as styles:

* the protected status of each phase (decision 2): the explorer visits every state of
  a one-VM model with faults and records, per phase, whether ``is_protected`` was true,
  false, or both (after a planned failover yes, after an unplanned one no);
* the happy path (protect -> failover -> commit -> reverse -> failback): the edges that
  replaying ``model.scenarios.FAILOVER_AND_FAILBACK`` takes.

The DOT and Mermaid texts are deterministic and committed under ``diagrams/``; a test
regenerates them and fails when they are stale. SVG and PNG embed the renderer's
version, so they are rendered but not compared.
"""

from __future__ import annotations

import functools
import shutil
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import graphviz
from transitions.extensions import GraphMachine

from hvdr import drawing
from model import ModelConfig, Phase, initial_state, is_protected, successors
from model.lifecycle_graph import markdown_table
from model.machine import MACHINE_OPTIONS, PhaseHolder, transition_rows
from model.state import SystemState

TITLE = "hvdr: protection lifecycle of one VM"

#: The small model whose reachable states decide each phase's protected status.
STATUS_CONFIG = ModelConfig(vm_count=1, fault_budget=1, write_lag_max=1)

#: Fill and border per protected status (the DOT boxes and the Mermaid classes).
NODE_STYLES = {
    "protected": {"fillcolor": "palegreen", "color": "darkgreen"},
    "unprotected": {"fillcolor": "white", "color": "gray40"},
    "depends": {"fillcolor": "lightyellow", "color": "darkgoldenrod"},
}
STATUS_WORDS = {
    "protected": "status: protected",
    "unprotected": "status: not protected",
    "depends": "status: protected after a planned failover, not after an unplanned one",
}
LEGEND_WORDS = {
    "protected": "the VM is protected in this phase",
    "unprotected": "the VM is not protected",
    "depends": "protected after a planned failover, not after an unplanned one",
}


@dataclass(frozen=True)
class DiagramTexts:
    """The generated texts: Graphviz DOT and Mermaid."""

    dot: str
    mermaid: str


@functools.cache
def phase_statuses(config: ModelConfig = STATUS_CONFIG) -> dict[Phase, str]:
    """Per phase: ``protected``, ``unprotected`` or ``depends``, as reached."""
    seen: dict[Phase, set[bool]] = {phase: set() for phase in Phase}
    for state in _reachable(config):
        vm = state.vms[0]
        seen[vm.phase].add(is_protected(vm))
    statuses = {}
    for phase, values in seen.items():
        if values == {True}:
            statuses[phase] = "protected"
        elif values == {True, False}:
            statuses[phase] = "depends"
        else:
            statuses[phase] = "unprotected"
    return statuses


def happy_path_edges() -> frozenset[tuple[str, str]]:
    """(source, destination) phase names taken by the failover-and-failback scenario."""
    return frozenset(
        (source.value, dest.value) for source, dest in drawing.happy_path_edges()
    )


def _reachable(config: ModelConfig) -> Iterable[SystemState]:
    start = initial_state(config)
    seen = {start}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        yield state
        for _, after in successors(config, state):
            if after not in seen:
                seen.add(after)
                queue.append(after)


def status_phase(phase: Phase) -> drawing.Look:
    """A phase filled by its protected status."""
    return drawing.Look(attrs=NODE_STYLES[phase_statuses()[phase]])


def status_legend() -> list[tuple[str, str]]:
    """The legend rows of the status fills and of the happy path."""
    rows = [
        (drawing.swatch(style["fillcolor"], style["color"]), LEGEND_WORDS[status])
        for status, style in NODE_STYLES.items()
    ]
    happy = drawing.line(drawing.HAPPY_COLOR, width=2)
    return [*rows, (happy, "the happy path: protect, fail over, commit, reverse")]


def lifecycle_graph(title: str = TITLE) -> graphviz.Digraph:
    """The lifecycle picture of ``hvdr diagram``: statuses and the happy path."""
    looks = drawing.Looks(drawing.plain_arrow, status_phase, status_legend())
    return drawing.draw(title, looks)


def generate() -> DiagramTexts:
    """Build the DOT and Mermaid texts of the lifecycle from the model."""
    dot: str = lifecycle_graph().source
    return DiagramTexts(dot=dot, mermaid=_mermaid())


def _mermaid() -> str:
    """``transitions``' mermaid engine over the rows, its phases named by value."""
    holder = PhaseHolder()
    rows = [
        {**row, "source": row["source"].value, "dest": row["dest"].value}
        for row in transition_rows()
    ]
    options = {**MACHINE_OPTIONS, "states": [phase.value for phase in Phase],
               "initial": Phase.UNPROTECTED.value}  # fmt: skip
    machine = GraphMachine(
        model=holder, transitions=rows, show_conditions=True,
        graph_engine="mermaid", title=TITLE, **options,
    )  # fmt: skip
    machine.machine_attributes["rankdir"] = "TB"  # LR is too wide for 12 phases
    cast(dict[str, Any], machine.style_attributes["node"]).update(NODE_STYLES)
    graph: Any = machine.model_graphs[id(holder)]
    graph.reset_styling()  # no "current phase" highlight: this is the whole lifecycle
    for phase, status in phase_statuses().items():
        graph.set_node_style(phase.value, status)
    return _mark_happy_path(graph.get_graph(TITLE).source)


def _mark_happy_path(mermaid: str) -> str:
    """Mermaid state diagrams cannot style edges: label the happy ones instead."""
    happy = happy_path_edges()
    lines = []
    for line in mermaid.splitlines():
        head, _, label = line.partition(": ")
        source, arrow, dest = head.strip().partition(" --> ")
        marked = arrow and (source, dest) in happy
        lines.append(f"{head}: ★ {label}" if marked else line)
    statuses = phase_statuses()
    for phase in Phase:
        words = STATUS_WORDS[statuses[phase]]
        lines.append(f"    note right of {phase.value}: {words}")
    lines.append(
        "    %% ★ marks the happy path; fill: green = protected, white = not "
        "protected, yellow = depends on the failover kind"
    )
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """The lifecycle table as a Markdown page, generated from ``LIFECYCLE``."""
    return (
        "# The protection lifecycle (generated by `hvdr diagram`; do not edit)\n\n"
        "One row per edge of `model/lifecycle.py`. *steady phase of the direction* is "
        "`protected` while the primary is active, `reverse_replicating` while the "
        "secondary is.\n\n" + markdown_table()
    )


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on PATH (needed for SVG and PNG)."""
    return shutil.which("dot") is not None


def write(out_dir: Path, formats: Iterable[str]) -> list[Path]:
    """Write the formats asked for (dot, mermaid, markdown, svg, png) to ``out_dir``."""
    wanted = set(formats)
    known = ("dot", "mermaid", "markdown", "svg", "png")
    unknown = wanted - set(known)
    if unknown:
        msg = f"formats {sorted(unknown)} are unknown; choose from {', '.join(known)}"
        raise ValueError(msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = generate()
    written = []
    stem = out_dir / "lifecycle"
    if "dot" in wanted:
        written.append(_write_text(stem.with_suffix(".dot"), texts.dot))
    if "mermaid" in wanted:
        written.append(_write_text(stem.with_suffix(".mmd"), texts.mermaid))
    if "markdown" in wanted:
        written.append(_write_text(stem.with_suffix(".md"), markdown()))
    for image in sorted(wanted & {"svg", "png"}):
        if not dot_available():
            msg = (
                f"cannot render {image}: Graphviz's 'dot' is not installed "
                "(apt-get install graphviz); the DOT and Mermaid files were written"
            )
            raise FileNotFoundError(msg)
        source = graphviz.Source(texts.dot)
        data = source.pipe(format=image)
        target = stem.with_suffix(f".{image}")
        target.write_bytes(data)
        written.append(target)
    return written


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
