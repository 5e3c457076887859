"""What the explorer refuses so that one request stays cheap, on a real ``hvdr
explore`` server over real HTTP: a configuration or a trace over the caps (400);
and the caps at start-up (exit 2)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hvdr.explore.view import STEPS_MAX

ROOT = Path(__file__).resolve().parents[2]

#: What one refused request may take (a configuration of 3000 VMs took minutes).
REFUSAL_SECONDS = 5


def ask(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = "api/view",
) -> tuple[int, Any]:
    """The status and JSON answer of a POST (GET without ``body``) to ``path``."""
    where = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(where.netloc, timeout=REFUSAL_SECONDS)
    sent = {"Content-Type": "application/json", **(headers or {})}
    try:
        method = "GET" if body is None else "POST"
        connection.request(method, "/" + path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        is_json = response.getheader("content-type") == "application/json"
        return response.status, json.loads(data) if is_json else data.decode()
    finally:
        connection.close()


def trace(config: Mapping[str, object], steps: int = 0) -> bytes:
    """A /api/view body: a trace of ``config`` and ``steps`` write steps."""
    lines = [json.dumps({"config": config})]
    lines += ['{"action": "enable_protection", "vm": 0}'] * steps
    return json.dumps({"trace": "\n".join(lines) + "\n"}).encode()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"vm_count": 3000}, "vm_count=3000 is over hvdr explore's cap of 4"),
        ({"disks_per_vm": 9}, "disks_per_vm=9 is over hvdr explore's cap of 8"),
        ({"write_lag_max": 10**6}, "write_lag_max=1000000 is over"),
        ({"recovery_points_max": 9}, "recovery_points_max=9 is over"),
        ({"fault_budget": 9}, "fault_budget=9 is over hvdr explore's cap of 8"),
        (
            {"plans": [{"name": f"p{i}", "groups": [[0]]} for i in range(9)]},
            "len(plans)=9 is over hvdr explore's cap of 8",
        ),
        (
            {"plans": [{"name": "p", "groups": [[0]] * 9}]},
            "len(plans[0].groups)=9 is over hvdr explore's cap of 8",
        ),
    ],
)
def test_a_trace_over_the_caps_is_refused_at_once(
    explore_url: str, config: dict[str, object], expected: str
) -> None:
    """A header over a cap: 400 naming the field, the value and the cap, quickly."""
    began = time.monotonic()
    status, answer = ask(explore_url, trace(config))
    assert status == 400
    assert answer["error"].startswith("the trace: the header's config: " + expected)
    assert time.monotonic() - began < REFUSAL_SECONDS


def test_a_trace_at_the_caps_is_answered_within_a_second_or_two(
    explore_url: str,
) -> None:
    """Every bound at its cap, and a step: answered (not refused) quickly."""
    config = {"vm_count": 4, "disks_per_vm": 8, "write_lag_max": 8,
              "recovery_points_max": 8, "fault_budget": 8}  # fmt: skip
    began = time.monotonic()
    status, answer = ask(explore_url, trace(config, 1))
    assert (status, answer["at"]) == (200, 1)
    assert time.monotonic() - began < 2


def test_a_trace_over_the_step_cap_is_refused(explore_url: str) -> None:
    """More steps than STEPS_MAX: 400 naming the count and the cap."""
    status, answer = ask(explore_url, trace({}, STEPS_MAX + 1))
    assert status == 400
    expected = f"the trace: {STEPS_MAX + 2} lines is over hvdr explore's cap of "
    assert answer["error"].startswith(expected + f"{STEPS_MAX} steps")


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m hvdr`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--vms", "5"], "vm_count=5 is over hvdr explore's cap of 4"),
        (["--lag", "100"], "write_lag_max=100 is over hvdr explore's cap of 8"),
        (["--budget", "9"], "fault_budget=9 is over hvdr explore's cap of 8"),
    ],
)
def test_flags_over_the_caps_are_exit_2(flags: list[str], expected: str) -> None:
    """The same caps at start-up: exit 2, one line, no server."""
    result = hvdr("explore", "--port", "0", *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"hvdr explore: error: {expected}")


def test_a_config_file_over_the_caps_is_exit_2(tmp_path: Path) -> None:
    """--config asking for 3000 VMs: exit 2, one line."""
    config = tmp_path / "big.json"
    config.write_text('{"vm_count": 3000}\n')
    result = hvdr("explore", "--port", "0", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    expected = "hvdr explore: error: vm_count=3000 is over hvdr explore's cap of 4"
    assert result.stderr.startswith(expected)
