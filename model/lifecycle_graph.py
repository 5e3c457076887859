"""The lifecycle as a networkx graph and as a Markdown table, both derived from it.

``lifecycle_graph()`` has one node per phase and one edge per concrete row of
``LIFECYCLE`` (a ``Dest.STEADY`` row becomes one edge per steady phase it may land on),
keyed by trigger and carrying its guards. Graph questions (what is reachable, what can
get back to a steady phase) are asked of it; the Markdown table in
``diagrams/lifecycle.md`` is printed from the same rows.
"""

from __future__ import annotations

import networkx as nx

from model.lifecycle import LIFECYCLE, STEADY, Dest, Phase, possible_destinations


def lifecycle_graph() -> nx.MultiDiGraph[Phase]:
    """Phases as nodes; one edge per (row, source, destination), keyed by trigger."""
    graph: nx.MultiDiGraph[Phase] = nx.MultiDiGraph()
    graph.add_nodes_from(Phase)
    for edge in LIFECYCLE:
        for source in edge.sources:
            for dest in possible_destinations(edge, source):
                graph.add_edge(source, dest, key=edge.trigger, guards=edge.guards)
    return graph


def phases_that_cannot_reach_a_steady_phase() -> set[Phase]:
    """Phases from which no path of the table leads back to a steady phase."""
    graph = lifecycle_graph()
    can_reach: set[Phase] = set(STEADY)
    for phase in STEADY:
        can_reach |= nx.ancestors(graph, phase)
    return set(Phase) - can_reach


def markdown_table() -> str:
    """The lifecycle table as Markdown, one line per row, in declaration order."""
    lines = [
        "| trigger | from | to | guards |",
        "| --- | --- | --- | --- |",
    ]
    for edge in LIFECYCLE:
        sources = ", ".join(phase.value for phase in edge.sources)
        if edge.dest is Dest.STEADY:
            dest = "steady phase of the direction"
        elif edge.dest is Dest.SAME:
            dest = "(stays)"
        else:
            dest = edge.dest.value
        guards = ", ".join(edge.guards) or "-"
        lines.append(f"| `{edge.trigger}` | {sources} | {dest} | {guards} |")
    return "\n".join(lines) + "\n"
