"""The model's Hypothesis state machine (``invariants.fuzz``), run under pytest.

``TestModelMachine`` is the thin wrapper HypoFuzz picks up for long campaigns; the
other tests pin the guidance: every lifecycle edge is taken by the default run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from invariants.configuration import DEFAULT_CONFIG
from invariants.fuzz import fuzz, lifecycle_edges, machine_class

ModelMachine = machine_class(DEFAULT_CONFIG)
ModelMachine.TestCase.settings = settings(
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestModelMachine = ModelMachine.TestCase


def test_default_run_takes_every_lifecycle_edge() -> None:
    """200 examples with the default seed take all the lifecycle's edges, no failure."""
    report = fuzz(DEFAULT_CONFIG, examples=200)
    assert (report.failure, report.untaken) == (None, ())
    assert len(report.edges) == len(lifecycle_edges())
