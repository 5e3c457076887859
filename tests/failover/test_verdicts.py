"""In every phase the engine reaches, every operation gets exactly the model's verdict.

For each phase on the way through the whole lifecycle (drill, planned failover and
failback, unplanned failover, cancel), every engine operation is tried: one the model
refuses raises TransitionNotAllowed carrying the model's reason, and changes nothing;
one the model allows runs, on a copy of both sites (so the walk goes on from the
original).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from phase_walk import OPERATIONS, PHASES_WALKED, VM, WALK, model_refusal, step_forward

from engine.errors import ReplicationError, TransitionNotAllowed
from engine.orchestration.engine import ReplicationEngine

BLOCK = 4096
DISKS = {"os": 8 * BLOCK, "data": 8 * BLOCK}


def _copy_sites(tmp_path: Path, engine: ReplicationEngine, name: str) -> Path:
    engine.flush()
    target = tmp_path / name
    for site in ("p", "s"):
        shutil.copytree(
            tmp_path / "live" / site, target / site,
            ignore=shutil.ignore_patterns("site.lock"),
        )  # fmt: skip
    return target


def test_every_operation_in_every_phase_gets_the_models_verdict(tmp_path: Path) -> None:
    live = tmp_path / "live"
    engine = ReplicationEngine.open(live / "p", live / "s")
    engine.create_vm(VM, DISKS)
    phases_seen = []
    tried = {"allowed": 0, "refused": 0}
    try:
        for index, step in enumerate([*WALK, None]):
            phase = engine.status(VM).phase
            phases_seen.append(phase)
            for name, (action, call) in OPERATIONS.items():
                refusal = model_refusal(engine, action)
                if refusal is not None:
                    with pytest.raises(TransitionNotAllowed) as refused:
                        call(engine)
                    assert refusal in str(refused.value), (phase, name)
                    assert engine.status(VM).phase == phase, (phase, name)
                    tried["refused"] += 1
                    continue
                tried["allowed"] += 1
                engine.close()  # copy quiescent sites, then reopen the original
                copy = _copy_sites(tmp_path, engine, f"{index}-{name}")
                engine = ReplicationEngine.open(live / "p", live / "s")
                with ReplicationEngine.open(copy / "p", copy / "s") as trial:
                    try:
                        call(trial)
                    except TransitionNotAllowed as error:  # pragma: no cover
                        pytest.fail(f"{phase}: {name} allowed by the model, refused "
                                    f"by the engine: {error}")  # fmt: skip
                    except ReplicationError:
                        pass  # allowed, and failed for a reason of its own
            if step is None:
                break
            step_forward(engine, step, index + 1)
    finally:
        engine.close()
    assert tried["allowed"] >= 30, tried
    assert tried["refused"] >= 100, tried
    assert set(phases_seen) >= PHASES_WALKED
