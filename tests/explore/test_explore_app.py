"""The explorer's HTTP interface, on a real ``hvdr explore`` server, and the
command's bad usage (the real command, in a fresh interpreter): each mistake gets
a clear message, status 400 from the server and exit 2 from the command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def request(url: str, body: bytes | None = None) -> tuple[int, Any]:
    """The status and the JSON answer of a GET (no body) or POST."""
    headers = {} if body is None else {"Content-Type": "application/json"}
    ask = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(ask, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.loads(refused.read())


def post(url: str, body: object) -> Any:
    """The JSON answer of a POST that must succeed."""
    status, answer = request(url, json.dumps(body).encode())
    assert status == 200, answer
    return answer


def error(url: str, body: object) -> str:
    """The error message of a POST that must be refused with 400."""
    status, answer = request(url, json.dumps(body).encode())
    assert status == 400, answer
    message: str = answer["error"]
    return message


def test_the_page_and_the_initial_state_are_served(explore_url: str) -> None:
    """GET / is the page; /api/start is step 0 of an empty trace."""
    with urllib.request.urlopen(explore_url, timeout=30) as response:
        assert response.status == 200
        assert "<title>hvdr explore</title>" in response.read().decode()
    status, start = request(explore_url + "api/start")
    assert status == 200
    assert start["at"] == 0
    assert start["steps"] == []
    assert start["trace"].startswith('{"config": {"vm_count": 1')


def test_a_step_and_back_through_the_interface(explore_url: str) -> None:
    """step appends the call; back returns to the initial state."""
    trace = request(explore_url + "api/start")[1]["trace"]
    call = {"action": "enable_protection", "vm": 0}
    stepped = post(explore_url + "api/step", {"trace": trace, "call": call})
    assert stepped["at"] == 1
    assert stepped["phases"] == {"vm0": "initial_replication"}
    back = post(explore_url + "api/back", {"trace": stepped["trace"]})
    assert back["at"] == 0
    assert back["trace"] == trace


def test_a_body_that_is_not_json_is_refused(explore_url: str) -> None:
    """Bytes that are not JSON: 400, saying so."""
    status, answer = request(explore_url + "api/view", b"{not json")
    assert status == 400
    assert answer["error"].startswith("the request body is not JSON")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "must be a JSON object with keys"),
        ({"trace": "", "when": 1}, "unknown keys ['when']; /api/view takes"),
        ({"at": 0}, "'trace' must be the text of a trace"),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused(
    explore_url: str, body: object, expected: str
) -> None:
    """The body's keys and types are checked, and the message says what is allowed."""
    assert expected in error(explore_url + "api/view", body)


def test_a_malformed_trace_upload_is_refused_with_its_line(explore_url: str) -> None:
    """An uploaded file that is not a trace: its name and the line."""
    body = {"trace": '{"action": "write", "vm": 0}\n[1]\n', "source": "mine.jsonl"}
    message = error(explore_url + "api/view", body)
    assert message == "mine.jsonl, line 2: a line must be a JSON object"


def test_an_unknown_action_is_refused(explore_url: str) -> None:
    """A step naming an action the model does not have."""
    body = {"trace": "", "call": {"action": "failover_now", "vm": 0}}
    message = error(explore_url + "api/step", body)
    assert "unknown action 'failover_now'; the model has: enable_protection" in message


def test_a_step_out_of_range_is_refused(explore_url: str) -> None:
    """Viewing step 3 of a trace of 1 step."""
    body = {"trace": '{"action": "enable_protection", "vm": 0}\n', "at": 3}
    message = error(explore_url + "api/view", body)
    assert message.startswith("step at=3 is out of range: this trace has 1 step(s)")


def test_back_from_the_initial_state_is_refused(explore_url: str) -> None:
    """There is no step before 0."""
    message = error(explore_url + "api/back", {"trace": ""})
    assert message == "nothing to go back to: this is the initial state"


def hvdr(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m hvdr`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "hvdr", *arguments],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The usage error: status 2, one line on stderr, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_bad_config_file_is_exit_2_naming_the_file_and_line(tmp_path: Path) -> None:
    """--config with a wrong value: the file, the line and the key; no server."""
    config = tmp_path / "bad.json"
    config.write_text('{\n  "vm_count": 0\n}\n')
    line = one_line_error(hvdr("explore", "--config", str(config), "--port", "0"))
    assert line.startswith(f"hvdr explore: error: --config {config}, line 2")
    assert "vm_count" in line


def test_a_port_in_use_is_exit_2() -> None:
    """A port another socket holds: which, and what to do."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(hvdr("explore", "--port", str(port)))
    assert line.startswith(f"hvdr explore: error: --port {port}: cannot listen on")
    assert "give another port, or 0 for a free one" in line


@pytest.mark.parametrize(
    ("port", "expected"),
    [("70000", "--port 70000 is not a port; give 0..65535"), ("-1", "--port")],
)
def test_a_port_that_is_no_port_is_exit_2(port: str, expected: str) -> None:
    """Out of 0..65535, or not a number."""
    assert expected in one_line_error(hvdr("explore", f"--port={port}"))
