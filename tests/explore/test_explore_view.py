"""What the explorer's page shows, computed by ``hvdr.explore.view`` from a trace:
the model's enabled calls and refusals, the state, the highlighted phase, and the
errors bad input gets."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest

from hvdr.explore import view
from invariants import trace as traces
from invariants.configuration import DEFAULT_CONFIG
from model import (
    ActionRefused,
    Call,
    ModelConfig,
    SystemState,
    apply,
    enabled,
    initial_state,
    successors,
)
from model.successor import RULES

#: A small model whose first states reach several phases.
SMALL = ModelConfig(vm_count=1, fault_budget=1, write_lag_max=1)

PROTECT = [
    {"action": "enable_protection", "vm": 0},
    {"action": "copy_disk", "vm": 0},
    {"action": "copy_disk", "vm": 0},
    {"action": "complete_initial_replication", "vm": 0},
]


def walk(calls: list[dict[str, object]]) -> str:
    """The trace text after taking ``calls`` one by one from the initial state."""
    text = view.start(DEFAULT_CONFIG)
    for call in calls:
        text = view.take(view.load(text), None, call)
    return text


def first_states(count: int) -> list[SystemState]:
    """The first ``count`` states of the small model, breadth first."""
    start = initial_state(SMALL)
    seen, order, queue = {start}, [start], deque([start])
    while queue and len(order) < count:
        for _, after in successors(SMALL, queue.popleft()):
            if after not in seen:
                seen.add(after)
                order.append(after)
                queue.append(after)
    return order[:count]


def highlighted(svg: str) -> list[str]:
    """The phases the diagram's SVG marks as current."""
    pattern = r'<g id="node\d+" class="node current">\s*<title>(\w+)</title>'
    return re.findall(pattern, svg)


def test_the_initial_view_lists_enabled_and_refused_calls_with_reasons() -> None:
    """At the start: enable_protection is enabled, commit is refused by the phase."""
    shown = view.show(view.load(view.start(DEFAULT_CONFIG)))
    labels = [item["label"] for item in shown["enabled"]]
    assert "enable_protection(vm=0)" in labels
    refused = {item["label"]: item for item in shown["refused"]}
    assert refused["commit(vm=0)"]["guard"] == "phase"
    assert (
        "commit is allowed only from: failed_over" in refused["commit(vm=0)"]["reason"]
    )
    assert refused["commit(vm=0)"]["message"].startswith("cannot commit VM 'vm0'")
    assert shown["at"] == 0
    assert shown["phases"] == {"vm0": "unprotected"}
    assert not any(row["changed"] for row in shown["state"])
    assert highlighted(shown["diagram"]) == ["unprotected"]


def test_a_step_changes_the_state_the_marks_and_the_highlighted_phase() -> None:
    """enable_protection moves vm0 to initial_replication; the rows it changed are
    marked, and the diagram highlights the new phase."""
    shown = view.show(view.load(walk(PROTECT[:1])))
    rows = {row["path"]: row for row in shown["state"]}
    assert rows["vms[0].phase"] == {
        "path": "vms[0].phase",
        "value": "initial_replication",
        "changed": True,
    }
    assert rows["primary.up"]["changed"] is False
    assert highlighted(shown["diagram"]) == ["initial_replication"]
    assert [step["call"] for step in shown["steps"]] == ["enable_protection(vm=0)"]


def test_the_trace_built_is_a_trace_in_the_trace_format() -> None:
    """The text take returns is read back by invariants.trace as the calls taken."""
    trace = traces.loads(walk(PROTECT))
    assert [Call.from_json(call) for call in PROTECT] == list(trace.calls)
    assert trace.config == DEFAULT_CONFIG


def test_back_drops_the_steps_after_the_one_before() -> None:
    """back from step 4 keeps steps 1-3; back from step 2 of 4 keeps step 1."""
    loaded = view.load(walk(PROTECT))
    assert len(traces.loads(view.back(loaded)).calls) == 3
    assert len(traces.loads(view.back(loaded, 2)).calls) == 1


def test_back_at_the_initial_state_is_an_error() -> None:
    """There is nothing before step 0."""
    with pytest.raises(view.RequestError, match="nothing to go back to"):
        view.back(view.load(view.start(DEFAULT_CONFIG)))


def test_a_step_from_an_earlier_step_drops_the_later_ones() -> None:
    """Taking a call after step 1 of 4 gives a trace of 2 steps."""
    text = view.take(view.load(walk(PROTECT)), 1, {"action": "write", "vm": 0})
    calls = traces.loads(text).calls
    assert [str(call) for call in calls] == ["enable_protection(vm=0)", "write(vm=0)"]


@pytest.mark.parametrize("at", [5, -1, "1", True, 1.0])
def test_a_step_out_of_range_is_an_error(at: object) -> None:
    """A step number outside 0..len(trace), or not a whole number, is refused."""
    loaded = view.load(walk(PROTECT))
    with pytest.raises(
        view.RequestError, match=r"out of range.*give a whole number 0\.\.4"
    ):
        view.show(loaded, at)


def test_a_step_the_model_refuses_is_an_error_with_its_reason() -> None:
    """commit at the initial state: the model's refusal, word for word."""
    loaded = view.load(view.start(DEFAULT_CONFIG))
    with pytest.raises(view.RequestError) as caught:
        view.take(loaded, None, {"action": "commit", "vm": 0})
    message = str(caught.value)
    assert message.startswith("step 1, commit(vm=0): cannot commit VM 'vm0'")
    assert "allowed only from: failed_over" in message


def test_an_unknown_action_is_an_error_listing_the_actions() -> None:
    """A misspelt action names what the model has."""
    loaded = view.load(view.start(DEFAULT_CONFIG))
    with pytest.raises(
        view.RequestError, match="unknown action 'nope'; the model has: "
    ):
        view.take(loaded, None, {"action": "nope", "vm": 0})


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("enable_protection", "must be a trace step, a JSON object"),
        ({"vm": 0}, "needs an 'action' string"),
        ({"action": "write", "vm": 0, "when": 1}, "unknown keys ['when']"),
    ],
)
def test_a_malformed_call_is_an_error(call: object, expected: str) -> None:
    """A call that is not a trace step says what a step is."""
    loaded = view.load(view.start(DEFAULT_CONFIG))
    with pytest.raises(view.RequestError, match=re.escape(expected)):
        view.take(loaded, None, call)


def test_a_malformed_trace_is_an_error_naming_the_file_and_line() -> None:
    """An upload that is not a trace: the file and the line, as hvdr replay says."""
    text = '{"action": "enable_protection", "vm": 0}\n{"action": \n'
    with pytest.raises(view.RequestError) as caught:
        view.load(text, "upload.jsonl")
    assert str(caught.value).startswith("upload.jsonl, line 2: not valid JSON")


def test_a_trace_naming_an_unknown_mutant_is_an_error() -> None:
    """The header's mutant must exist."""
    text = '{"config": {}, "mutant": "no_such_mutant"}\n'
    with pytest.raises(view.RequestError, match="mutant 'no_such_mutant'"):
        view.load(text, "upload.jsonl")


def test_a_loaded_trace_with_an_unmarked_refusal_shows_it() -> None:
    """A step the model refuses that the trace does not mark: not as it says."""
    text = '{"action": "commit", "vm": 0}\n'
    shown = view.show(view.load(text))
    (step,) = shown["steps"]
    assert step["refused"].startswith("cannot commit VM 'vm0'")
    assert "does not mark it as an expected refusal" in step["unexpected"]
    assert shown["phases"] == {"vm0": "unprotected"}


def test_enabled_and_refused_cover_every_target_once_in_reachable_states() -> None:
    """In the first reachable states of the small model, every action and target is
    enabled or refused, never both, and every refusal is the model's own."""
    for state in first_states(150):
        calls = enabled(SMALL, state)
        refused = list(view.refusals(SMALL, state, calls, RULES))
        bares = {str(bare) for _, targets in RULES.targets(SMALL) for bare in targets}
        offered = {str(Call(c.action, c.vm, c.site, c.plan)) for c in calls}
        labels = {item["label"] for item in refused}
        assert bares == offered | labels
        assert not offered & labels
        for item in refused:
            assert item["reason"]
            if item["guard"] == "phase":
                action, _, target = item["label"].partition("(")
                vm = int(target.rstrip(")").split("=")[1])
                with pytest.raises(ActionRefused) as caught:
                    apply(SMALL, state, Call(action, vm=vm))
                assert str(caught.value) == item["message"]


def test_two_vms_in_one_phase_are_named_on_its_highlighted_node() -> None:
    """With two VMs, the state has both and the diagram names them on their phase."""
    config = ModelConfig(vm_count=2, fault_budget=1, write_lag_max=1)
    shown = view.show(view.load(view.start(config)))
    assert shown["phases"] == {"vm0": "unprotected", "vm1": "unprotected"}
    assert highlighted(shown["diagram"]) == ["unprotected"]
    assert "▶ vm0, vm1" in shown["diagram"]
    paths = [row["path"] for row in shown["state"]]
    assert "vms[1].phase" in paths
    text = view.take(view.load(view.start(config)), None, PROTECT[0])
    after = highlighted(view.show(view.load(text))["diagram"])
    assert sorted(after) == ["initial_replication", "unprotected"]


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "traces").glob("*.jsonl")),
    ids=lambda path: path.stem,
)
def test_every_step_of_the_seed_traces_can_be_shown(path: Path) -> None:
    """Each seed trace (plans, drills, failovers) loads, and every step shows with
    the enabled and refused calls covering the model's targets."""
    loaded = view.load(path.read_text(encoding="utf-8"), path.name)
    count = len(loaded.trace.calls)
    for at in range(count + 1):
        shown = view.show(loaded, at)
        assert shown["at"] == at
        assert shown["enabled"] or shown["refused"]
        assert not any(step["unexpected"] for step in shown["steps"])


def test_the_diagram_has_the_lifecycle_legend_and_the_current_phase_mark() -> None:
    """The explorer's diagram is the lifecycle of ``hvdr diagram`` with its legend,
    one more row saying what the red outline means, and the CLI's phase names."""
    shown = view.show(view.load(view.start(SMALL)))
    svg = shown["diagram"]
    assert "where the VMs are now" in svg
    assert "the happy path" in svg
    assert "a trigger the replication agent fires" in svg
    assert "UNPROTECTED" not in svg
    assert "<title>initial_replication</title>" in svg
