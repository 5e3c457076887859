"""Diagrams come from the model, and the committed ones are not stale."""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hvdr import diagrams, drawing, overlays
from invariants import mutation
from model import Call, ModelConfig, Phase
from model.lifecycle import LIFECYCLE
from model.machine import transition_rows
from model.scenarios import FAILOVER_AND_FAILBACK

ROOT = Path(__file__).resolve().parent.parent
HVDR = Path(sys.executable).parent / "hvdr"

#: A screen shows a picture this wide at a readable size.
WIDTH_PX_MAX = 1800


def test_committed_dot_and_mermaid_are_current() -> None:
    """Regenerating from the model gives the committed text (run `make diagrams`)."""
    texts = diagrams.generate()
    committed_dot = (ROOT / "diagrams" / "lifecycle.dot").read_text(encoding="utf-8")
    committed_mmd = (ROOT / "diagrams" / "lifecycle.mmd").read_text(encoding="utf-8")
    assert texts.dot == committed_dot, "diagrams/lifecycle.dot is stale: make diagrams"
    assert texts.mermaid == committed_mmd, "lifecycle.mmd is stale: make diagrams"
    committed_md = (ROOT / "diagrams" / "lifecycle.md").read_text(encoding="utf-8")
    assert diagrams.markdown() == committed_md, "lifecycle.md is stale: make diagrams"


def test_readme_embeds_the_current_mermaid() -> None:
    """README.md shows the same Mermaid text, so it renders on a code host."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert diagrams.generate().mermaid in readme


def test_every_phase_and_trigger_is_drawn() -> None:
    """Every phase is a node and every trigger labels some edge."""
    texts = diagrams.generate()
    for phase in Phase:
        assert f'state "{phase.value}" as {phase.value}' in texts.mermaid
        assert f"\t{phase.value} [label=<" in texts.dot
    from model.lifecycle import TRIGGERS

    for trigger in TRIGGERS:
        assert trigger in texts.mermaid


def test_status_and_happy_path_are_computed_from_the_model() -> None:
    """Statuses follow decision 2; the happy path runs protect -> failback."""
    statuses = diagrams.phase_statuses()
    assert statuses[Phase.PROTECTED] == "protected"
    assert statuses[Phase.RESYNCHRONIZING] == "unprotected"
    assert statuses[Phase.COMMITTED] == "depends"
    happy = diagrams.happy_path_edges()
    assert ("committed", "reverse_replicating") in happy
    assert ("committed", "protected") in happy
    assert ("protected", "failover_prepared") in happy


def test_without_dot_the_cli_writes_text_and_says_how_to_get_svg(
    tmp_path: Path,
) -> None:
    """No Graphviz on PATH: DOT and Mermaid are written, and the fix is named."""
    env = {**os.environ, "PATH": str(HVDR.parent)}
    result = subprocess.run(
        [str(HVDR), "diagram", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert "apt-get install graphviz" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lifecycle.dot",
        "lifecycle.md",
        "lifecycle.mmd",
    ]


@pytest.mark.skipif(not diagrams.dot_available(), reason="Graphviz 'dot' not installed")
def test_with_dot_the_cli_renders_svg(tmp_path: Path) -> None:
    """With Graphviz, the SVG is rendered from the generated DOT."""
    subprocess.run(
        [str(HVDR), "diagram", "--format", "svg", "--out", str(tmp_path)], check=True
    )
    svg = (tmp_path / "lifecycle.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    assert "failed_over" in svg


def drawn_edges(dot: str) -> list[tuple[str, str, str]]:
    """The concrete edges the DOT's arrows and loops stand for, from their tooltips
    (a junction box repeats its arrow's: not counted)."""
    found = []
    statements = [s for s in dot.splitlines() if not re.match(r"\s*junction\d+ \[", s)]
    for tooltip in re.findall(r'tooltip="([^"]*)"', "\n".join(statements)):
        for line in tooltip.split("\\n"):
            match = re.fullmatch(r"(\w+): (\w+) → (\w+)", line)
            if match:
                found.append((match[1], match[2], match[3]))
    return found


def test_every_lifecycle_edge_is_drawn_exactly_once() -> None:
    """Grouping arrows (junctions, the steady frame, loops) drops no edge of the
    table and draws none twice: the tooltips list every concrete row once."""
    rows = [
        (row["trigger"], row["source"].value, row["dest"].value)
        for row in transition_rows()
    ]
    drawn = drawn_edges(diagrams.generate().dot)
    assert sorted(set(rows)) == sorted(drawn)
    for edge in LIFECYCLE:
        for source in edge.sources:
            assert any(t == edge.trigger and s == source.value for t, s, _ in drawn)


def test_every_arrow_of_the_drawing_is_in_the_dot() -> None:
    """Each arrow is drawn: a line in its phase, or an edge into its destination."""
    dot = diagrams.generate().dot
    for arrow in drawing.arrows():
        if arrow.is_loop:
            assert f'↻</FONT> <FONT POINT-SIZE="9" COLOR="black">{arrow.label}' in (
                dot.replace("&amp;", "&")
            )
        else:
            assert f"-> {drawing.head(arrow).value} " in dot


def test_the_happy_path_is_one_straight_spine() -> None:
    """The phases of the happy path share a group and its steps weigh heavily."""
    dot = diagrams.generate().dot
    column = drawing.spine()
    assert [phase.value for phase in column] == [
        "unprotected", "initial_replication", "protected", "failover_prepared",
        "failing_over", "failed_over", "committed",
    ]  # fmt: skip
    for phase in column:
        assert re.search(rf"\t{phase.value} \[label=<.*group=spine", dot)
    for before, after in itertools.pairwise(column):
        pattern = rf"\t{before.value} -> {after.value} \[[^\n]*weight="
        assert re.search(pattern, dot), (before, after)


def test_a_trigger_from_many_phases_is_one_arrow() -> None:
    """disable_protection is one arrow from a box naming its seven phases."""
    dot = diagrams.generate().dot
    assert dot.count("-> unprotected ") == 1
    (junction,) = [a for a in drawing.arrows() if a.trigger == "disable_protection"]
    assert len(junction.sources) == 7
    assert junction.is_junction


def test_the_legend_explains_every_mark() -> None:
    """The legend names the fills, the happy path, the actors, guards and groups."""
    dot = diagrams.generate().dot
    (legend,) = re.findall(r"\tlegend \[label=<(.*)>", dot)
    for words in (
        "the VM is protected in this phase",
        "the VM is not protected",
        "not after an unplanned one",
        "the happy path",
        "a trigger the operator fires",
        "a trigger the replication agent fires",
        "a condition on the VM",
        "steady phase of the",
        "from each phase listed",
        "↻",
    ):
        assert words in legend, words


def test_every_picture_names_the_phases_alike() -> None:
    """DOT, Mermaid, the Markdown table, the counterexample and the coverage picture
    all name the phases by ``Phase.value``, as the CLI prints them; none by
    ``Phase.name``."""
    scenario = FAILOVER_AND_FAILBACK
    pictures = {
        "dot": diagrams.generate().dot,
        "mermaid": diagrams.generate().mermaid,
        "markdown": diagrams.markdown(),
        "trace": overlays.trace_graph(scenario.config, scenario.calls, "t").source,
        "coverage": overlays.coverage_graph({}, "c").source,
    }
    for name, text in pictures.items():
        for phase in Phase:
            assert phase.name not in text, (name, phase.name)
        if name != "markdown":
            for phase in Phase:
                assert re.search(rf"\b{phase.value}\b", text), (name, phase)


PICTURES = {
    "lifecycle": lambda: diagrams.lifecycle_graph(),
    "trace": lambda: overlays.trace_graph(
        FAILOVER_AND_FAILBACK.config, FAILOVER_AND_FAILBACK.calls, "t"
    ),
    "coverage": lambda: overlays.coverage_graph({}, "c"),
}


@pytest.mark.skipif(not diagrams.dot_available(), reason="Graphviz 'dot' not installed")
@pytest.mark.parametrize("picture", sorted(PICTURES))
def test_pictures_fit_a_screen(picture: str) -> None:
    """Rendered at 96 dpi, each picture is narrower than 1,800 px (it was 4,289)."""
    png = PICTURES[picture]().pipe(format="png")
    width, height = struct.unpack(">II", png[16:24])
    assert width < WIDTH_PX_MAX, (width, height)
    assert height < WIDTH_PX_MAX, (width, height)


Box = tuple[float, float, float, float]  # left, bottom, right, top, in points
Point = tuple[float, float]

#: How far (points) a line or a box may reach into a label's box before it counts
#: as crossing it: Graphviz's boxes are a little larger than the letters they hold.
CLEARANCE = 2.0
#: How far a line may cut into a phase's box: its rounded corners are empty.
BOX_CLEARANCE = 6.0


def _text_box(ops: list[dict[str, Any]]) -> Box | None:
    """The box around the lines of text Graphviz draws (its ``T`` operations)."""
    boxes, size = [], 14.0
    for op in ops:
        if op["op"] == "F":
            size = op["size"]
        elif op["op"] == "T":
            (x, y), width = op["pt"], op["width"]
            left = {"l": x, "c": x - width / 2, "r": x - width}[op["align"]]
            boxes.append((left, y - 0.25 * size, left + width, y + 0.8 * size))
    if not boxes:
        return None
    lefts, bottoms, rights, tops = zip(*boxes, strict=True)
    return min(lefts), min(bottoms), max(rights), max(tops)


def _bezier(control: list[list[float]], t: float) -> Point:
    """The point at ``t`` of the cubic Bézier piece with these four control points."""
    weights = ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t**3)
    x = sum(w * point[0] for w, point in zip(weights, control, strict=True))
    y = sum(w * point[1] for w, point in zip(weights, control, strict=True))
    return x, y


def _curve(ops: list[dict[str, Any]]) -> list[Point]:
    """Points along the Bézier pieces (``b``) and arrowheads (``P``) of an edge."""
    points: list[Point] = []
    for op in ops:
        if op["op"] == "b":
            control = op["points"]
            for i in range(0, len(control) - 3, 3):
                points += [_bezier(control[i : i + 4], k / 40) for k in range(41)]
        elif op["op"] in ("P", "p"):
            points += [(x, y) for x, y in op["points"]]
    return points


def _inside(point: Point, box: Box, margin: float) -> bool:
    left, bottom, right, top = box
    x, y = point
    return left + margin < x < right - margin and bottom + margin < y < top - margin


def _overlap(one: Box, other: Box, margin: float) -> bool:
    return (
        one[0] + margin < other[2] and other[0] + margin < one[2]
        and one[1] + margin < other[3] and other[1] + margin < one[3]
    )  # fmt: skip


def layout_clashes(layout: dict[str, Any]) -> list[str]:
    """What a reader would see crossed in ``dot -Tjson``'s layout: a line through a
    label that is not its own, a label on another label or on a box, a line through
    a box it neither leaves nor enters."""
    names = {item["_gvid"]: item["name"] for item in layout["objects"]}
    boxes: dict[str, Box] = {}
    labels: list[tuple[str, Box]] = []
    for item in layout["objects"]:
        if "bb" in item:  # a frame: its label
            found = _text_box(item.get("_ldraw_", []))
            if found:
                labels.append((f"frame {item['name']}", found))
        elif "pos" in item:
            x, y = map(float, item["pos"].split(","))
            half_w, half_h = float(item["width"]) * 36, float(item["height"]) * 36
            boxes[item["name"]] = (x - half_w, y - half_h, x + half_w, y + half_h)
    lines: list[tuple[str, tuple[str, str], list[Point]]] = []
    owners: list[int | None] = [None] * len(labels)  # the line each label is of
    for edge in layout.get("edges", []):
        if edge.get("style") == "invis":
            continue
        ends = (names[edge["tail"]], names[edge["head"]])
        name = f"{ends[0]} -> {ends[1]} ({edge.get('label', '').strip()})"
        drawn = [*edge.get("_draw_", []), *edge.get("_hdraw_", [])]
        lines.append((name, ends, _curve(drawn + edge.get("_tdraw_", []))))
        found = _text_box(edge.get("_ldraw_", []))
        if found:
            labels.append((name, found))
            owners.append(len(lines) - 1)
    clashes = []
    for (label, box), owner in zip(labels, owners, strict=True):
        clashes += [
            f"{line} crosses the label of {label}"
            for number, (line, _, points) in enumerate(lines)
            if number != owner and any(_inside(p, box, CLEARANCE) for p in points)
        ]
        clashes += [
            f"the label of {label} lies on {node}"
            for node, node_box in boxes.items()
            if _overlap(box, node_box, CLEARANCE)
        ]
    for (one, one_box), (other, other_box) in itertools.combinations(labels, 2):
        if _overlap(one_box, other_box, CLEARANCE):
            clashes.append(f"the labels of {one} and {other} overlap")
    for line, ends, points in lines:
        clashes += [
            f"{line} runs through {node}"
            for node, node_box in boxes.items()
            if node not in ends
            and any(_inside(p, node_box, BOX_CLEARANCE) for p in points)
        ]
    return clashes


@pytest.mark.skipif(not diagrams.dot_available(), reason="Graphviz 'dot' not installed")
@pytest.mark.parametrize("picture", sorted(PICTURES))
def test_no_line_crosses_a_label_or_a_box(picture: str) -> None:
    """Laid out by Graphviz, no arrow runs through another arrow's label or through a
    box it does not touch, and no label lies on another or on a box (the lifecycle
    picture had complete_initial_replication's and cleanup_test_failover's labels
    crossed; a new phase that brings a crossing back wants a place in
    ``drawing.PLACES``)."""
    layout = json.loads(PICTURES[picture]().pipe(format="json"))
    assert layout_clashes(layout) == []


def test_the_check_of_crossings_sees_them() -> None:
    """``layout_clashes`` sees a line through a label, two labels on each other and
    a line through a box, in a layout written as ``dot -Tjson`` writes one."""
    places = {"a": (0, 200), "b": (0, 0), "c": (120, 103), "d": (-40, 103),
              "e": (100, 50), "f": (100, 200), "g": (100, -100)}  # fmt: skip
    numbers = {name: number for number, name in enumerate(places)}
    objects = [
        {"_gvid": numbers[name], "name": name, "pos": f"{x},{y}", "width": "0.5",
         "height": "0.5"}
        for name, (x, y) in places.items()
    ]  # fmt: skip

    def edge(ends: str, points: list[Point], words: str = "") -> dict[str, Any]:
        curve = [{"op": "b", "points": [list(point) for point in points]}]
        drawn = {"tail": numbers[ends[0]], "head": numbers[ends[1]], "label": words,
                 "_draw_": curve}  # fmt: skip
        if words:  # set 6 pt above and 30 pt right of the line's second point
            (x, y), font = points[1], {"op": "F", "size": 9.0, "face": "Helvetica"}
            text = {"op": "T", "pt": [x + 30, y + 6], "align": "c", "width": 40.0}
            drawn["_ldraw_"] = [font, {**text, "text": words}]
        return drawn

    edges = [
        edge("ab", [(0, 182), (0, 94), (0, 60), (0, 18)], "down"),
        edge("cd", [(102, 103), (5, 100), (0, 103), (-22, 103)], "across"),
        edge("fg", [(100, 182), (100, 100), (100, 0), (100, -82)]),
    ]
    assert layout_clashes({"objects": objects, "edges": edges}) == [
        "c -> d (across) crosses the label of a -> b (down)",
        "the labels of a -> b (down) and c -> d (across) overlap",
        "f -> g () runs through e",
    ]


def test_a_mutant_step_outside_the_table_is_drawn_and_explained() -> None:
    """A counterexample whose mutated rule lands off the table shows that step, and
    the legend says what the dotted red arrow is."""
    mutant = mutation.lookup("complete_failover_lands_committed")
    assert mutant is not None
    config = ModelConfig(vm_count=1)
    shutdown_skipped = (("point", "latest"), ("shutdown", "skip"))
    calls = [
        Call("enable_protection", vm=0),
        Call("copy_disk", vm=0),
        Call("copy_disk", vm=0),
        Call("complete_initial_replication", vm=0),
        Call("unplanned_failover", vm=0, args=shutdown_skipped),
        Call("complete_failover", vm=0),
    ]
    steps = overlays.trace_steps(config, calls, mutant)
    assert steps[-1][2] == ("complete_failover", Phase.FAILING_OVER, Phase.COMMITTED)
    dot = overlays.trace_graph(config, calls, "counterexample", mutant).source
    assert re.search(
        r"failing_over -> committed \[label=\"complete_failover \[6\]", dot
    )
    assert "a step the lifecycle table does not have" in dot
    plain = overlays.trace_graph(config, calls[:5], "counterexample").source
    assert "a step the lifecycle table does not have" not in plain
