"""What the explorer refuses so that one request stays cheap and only its own page
can use it, on a real ``hvdr explore`` server over real HTTP: a configuration over
the caps (400), a POST that is not JSON (415), a foreign Host (421) or Origin (403),
a body over the limit (413, read no further); and the caps at start-up (exit 2)."""

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
from invariants.trace import TRACE_BYTES_MAX

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
            {
                "plans": [{"name": f"p{i}", "groups": [[0]]} for i in range(9)],
                "plan_operations": ["commit"],
            },
            "len(plans)=9 is over hvdr explore's cap of 8",
        ),
        (
            # Nine groups need nine VMs, over the VM cap; one VM in nine groups
            # is refused by the configuration itself, before any cap.
            {
                "plans": [{"name": "p", "groups": [[0]] * 9}],
                "plan_operations": ["commit"],
            },
            "recovery plan 'p': VM 0 is in group 1 and again in group 2",
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
    prefix = "the trace: the header's config: "
    if expected.startswith("recovery plan"):  # the configuration's own refusal
        prefix = "the trace, line 1: config: plans: "
    assert answer["error"].startswith(prefix + expected), answer["error"]
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


@pytest.mark.parametrize(
    "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_post_that_does_not_say_json_is_415(explore_url: str, kind: str) -> None:
    """The content types a page of another site may send without asking: refused."""
    status, answer = ask(explore_url, trace({}), {"Content-Type": kind})
    assert status == 415
    assert answer["error"] == (
        f"Content-Type {kind!r}: /api/view takes application/json only"
    )


def test_json_with_a_charset_is_taken(explore_url: str) -> None:
    """``application/json; charset=utf-8`` is JSON."""
    kind = {"Content-Type": "application/json; charset=utf-8"}
    assert ask(explore_url, trace({}), kind)[0] == 200


@pytest.mark.parametrize("path", ["api/view", "api/start", ""])
def test_a_foreign_host_is_421(explore_url: str, path: str) -> None:
    """DNS rebinding: another name for 127.0.0.1 is refused, on every route."""
    port = urllib.parse.urlsplit(explore_url).port
    body = None if path != "api/view" else trace({})
    status, answer = ask(explore_url, body, {"Host": f"evil.example:{port}"}, path)
    assert status == 421, answer
    assert answer["error"].startswith(f"Host 'evil.example:{port}' is not this")


def test_localhost_is_this_server(explore_url: str) -> None:
    """Host localhost:PORT is the same server."""
    port = urllib.parse.urlsplit(explore_url).port
    assert ask(explore_url, trace({}), {"Host": f"localhost:{port}"})[0] == 200


def test_a_cross_origin_post_is_403(explore_url: str) -> None:
    """An Origin of another site is refused; the page's own origin is taken."""
    status, answer = ask(explore_url, trace({}), {"Origin": "http://evil.example"})
    assert status == 403
    assert answer["error"].startswith("Origin 'http://evil.example' is another site's")
    own = explore_url.rstrip("/")
    assert ask(explore_url, trace({}), {"Origin": own})[0] == 200


def test_a_declared_length_over_the_limit_is_413_unread(explore_url: str) -> None:
    """Content-Length over the limit: 413 naming it, before a byte is sent."""
    where = urllib.parse.urlsplit(explore_url)
    connection = http.client.HTTPConnection(where.netloc, timeout=REFUSAL_SECONDS)
    try:
        connection.putrequest("POST", "/api/view")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(600 << 20))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert "over 64 MiB" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_a_streamed_body_is_refused_at_the_limit(explore_url: str) -> None:
    """A chunked body that goes on past the limit: answered 413 as soon as the
    limit is passed, without waiting for (or holding) the rest."""
    where = urllib.parse.urlsplit(explore_url)
    connection = http.client.HTTPConnection(where.netloc, timeout=30)
    chunk = b" " * (1 << 20)
    try:
        connection.putrequest("POST", "/api/view")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for _ in range(TRACE_BYTES_MAX // len(chunk)):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"1\r\n \r\n")  # one byte over; the body does not end
        response = connection.getresponse()
        assert response.status == 413
        assert "over 64 MiB" in json.loads(response.read())["error"]
    finally:
        connection.close()


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
