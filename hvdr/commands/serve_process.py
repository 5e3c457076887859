"""``hvdr serve`` as a child process: its configuration, start, stop and output.

Used by ``hvdr demo --network`` (:mod:`hvdr.commands.network_sites`) and by the tests
that kill a real server. :func:`certificate_config` writes a certificate-mode
configuration listing one primary; :class:`ServeProcess` starts ``hvdr serve`` on it,
waits (bounded) for its "listening on" line to learn the port, keeps reading its
output (so a full pipe never blocks it), and stops it with a signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Final

START_SECONDS: Final = 60.0
STOP_SECONDS: Final = 60.0
LISTENING: Final = " listening on "


class ServerFailed(RuntimeError):
    """A replica server did not start, or did not stop cleanly."""


def certificate_config(
    *,
    site: str,
    port: int,
    certificate: Path,
    private_key: Path,
    ca: Path,
    primary: str,
    storage: Path,
) -> str:
    """A certificate-mode server configuration on 127.0.0.1:``port`` serving only
    ``primary``, its replicas under ``storage``."""
    return f"""\
[server]
listen = "127.0.0.1:{port}"
site = "{site}"
authentication = "certificate"

[certificate]
certificate = "{certificate}"
private_key = "{private_key}"
ca = "{ca}"

[authorization]
mode = "listed"

[[authorization.primary]]
name = "{primary}"
storage = "{storage}"
"""


class ServeProcess:
    """One ``hvdr serve --config CONFIG`` child process (started again at will)."""

    def __init__(
        self,
        config: Path,
        *,
        environment: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``environment`` is added to this process's for the child (a checkout
        that is not installed puts itself on PYTHONPATH), ``cwd`` its folder."""
        self.config = config
        self.port = 0
        self.output: list[str] = []  # every line after "listening on", both streams
        self.process: subprocess.Popen[str] | None = None
        self._environment = dict(environment or {})
        self._cwd = cwd

    def start(self) -> int:
        """Start the server; its port once it listens (ServerFailed, with its last
        lines, when it exits or says nothing within START_SECONDS)."""
        self.close()
        command = [sys.executable, "-m", "hvdr", "serve", "--config", str(self.config)]
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self._environment},
                cwd=self._cwd,
            )  # fmt: skip
        except OSError as error:
            msg = f"cannot run {' '.join(command)}: {error}"
            raise ServerFailed(msg) from error
        assert process.stdout is not None
        assert process.stderr is not None
        errors = self._drain(process.stderr)
        line = _first_line(process.stdout, START_SECONDS)
        if line is None or LISTENING not in line:
            if line == "":  # its output ended: it is exiting by itself
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
                errors.join(5)  # its last words
            if process.poll() is None:
                process.kill()
            code = process.wait()
            for stream in (process.stdout, process.stderr):
                stream.close()
            said = {None: f"no line within {START_SECONDS:g} s", "": "it exited"}
            msg = f"the replica server did not start (exit {code}): "
            msg += f"{said.get(line, repr(line))}; its last output: {self.tail()}"
            raise ServerFailed(msg)
        self.port = int(line.split(LISTENING, 1)[1].split()[0].rsplit(":", 1)[1])
        self._drain(process.stdout)
        self.process = process
        return self.port

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait (bounded) for the exit; its return code (a kill
        after STOP_SECONDS: ServerFailed)."""
        if self.process is None:
            msg = "the replica server is not running"
            raise ServerFailed(msg)
        self.process.send_signal(signum)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            msg = f"the replica server did not stop within {STOP_SECONDS:g} s of "
            msg += f"signal {signum}: killed; {self.tail()}"
            raise ServerFailed(msg) from None

    def close(self) -> None:
        """Reap the process (killed if still running) and close its pipes."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STOP_SECONDS)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self.process = None

    def tail(self, lines: int = 3) -> str:
        """The last lines of its output, for a message."""
        return " | ".join(self.output[-lines:])

    def _drain(self, stream: IO[str]) -> threading.Thread:
        def read() -> None:
            try:
                for line in stream:
                    self.output.append(line.rstrip("\n"))
            except (OSError, ValueError):  # closed by close() while reading
                return

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread


def _first_line(stream: IO[str], seconds: float) -> str | None:
    """The first line of ``stream`` within ``seconds`` (None: nothing in time; "":
    the stream ended, the process exits)."""
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        found.append(stream.readline())
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(seconds):
        return None
    return found[0].rstrip("\n")
