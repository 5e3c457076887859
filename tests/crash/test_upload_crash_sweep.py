"""A power cut or a SIGKILL at every file operation of a resumable upload.

The scenario (:func:`run_upload`) is what a replica server does with an initial copy's
disk image sent over the network: an :class:`Uploads` over one storage location
receives ``PLAN`` (chunks of random bytes, one after a hole, and a trailing hole;
sizes off page boundaries), made durable every ``DURABLE_EVERY`` bytes; the durable
length the server answers is reported as ``ack N`` through the child's channel, and
``try N`` before the chunk is sent; then ``finish``, ``accept_disk_image`` into the
inbox (``accepted``) and ``discard``, as the server's ``_initial_image`` does.

It runs once under ``CountingFileSystem``; then, for every operation, in a forked child
(``crash_sweep.run_child``, two workers: ``crash_sweep.sweep``):

- a power cut before it (``PowerLossFileSystem``): the "drop all" reboot, and the
  crash states between it and "keep all" (``engine.storage.crash_states``, the
  default budget), each checked in turn as the crash campaign does;
- a SIGKILL before it and after it (``KillingFileSystem``: the page cache is kept).

After each, with the real file system (a reboot), :func:`check_after_crash`:

1. ``received()`` is at least the last durable length the client was answered
   (unless the whole image was already handed to the inbox), at most the end of the
   chunk in flight, and the end of a chunk;
2. the part file's first ``received()`` bytes are the source's;
3. the client resuming from ``received()`` (the chunks from there), ``finish`` and
   ``accept_disk_image`` give an inbox image byte-identical to the source;
4. an image in the inbox is whole (the source), never partial; once ``accepted`` was
   reported it is there;
0. nothing raises.

One state is accepted as the server leaves it: killed (or cut) after the image was
renamed into the inbox but before ``discard`` removed the acknowledgement,
``received()`` says the upload is whole while its part file is gone, so ``finish``
refuses ("missing its data: send it again from byte 0"). The image is already whole
in the inbox, nothing acknowledged is lost, and the server accepts such a retried
finish for that reason (``ReplicaServer._initial_image``).

Run with ``-s`` to see the reports of passing sweeps.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import google_crc32c
from crash_scenario import Problem, Progress, Report, describe
from crash_sweep import (
    Point,
    format_report,
    relative_trace,
    run_child,
    scratch_directory,
    sweep,
)

from engine.storage import files
from engine.storage.crash_states import STATES_BUDGET_DEFAULT
from engine.testing import (
    CountingFileSystem,
    KillingFileSystem,
    PowerCut,
    PowerLossFileSystem,
)
from engine.transport.delivery import (
    IMAGE_SUFFIX,
    accept_disk_image,
    initial_copy_directory,
)
from engine.transport.http.uploads import (
    PART_SUFFIX,
    UPLOADS,
    OffsetMismatch,
    Uploads,
    initial_key,
)

VM: Final = "web"
DISK: Final = "os"
KEY: Final = initial_key(DISK)
DURABLE_EVERY: Final = 12_000  # chunk 2 ends a durable run; the last three do not
OPERATIONS_MIN: Final = 40  # fewer: a step of the upload is not being counted
EXPECTED_OPERATIONS: Final = frozenset(
    {"make_directory", "open", "ftruncate", "pwrite", "fdatasync", "fsync"}
    | {"fsync_directory", "rename", "unlink"}
)


@dataclass(frozen=True)
class Chunk:
    """One request of the client: ``hole`` zeros, then ``data``, at ``offset``."""

    offset: int
    data: bytes = b""
    hole: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.hole + len(self.data)


def _plan() -> tuple[Chunk, ...]:
    generator = random.Random(20_240_611)
    chunks = []
    offset = 0
    # Data; a hole of three pages and data in one chunk; data; a trailing hole:
    # sizes off page boundaries so that chunks share pages (a power cut may tear a
    # chunk at its pages).
    for hole, size in ((0, 5000), (3 * 4096, 9000), (0, 4096), (0, 2500), (4096, 0)):
        chunks.append(Chunk(offset, data=generator.randbytes(size), hole=hole))
        offset += hole + size
    return tuple(chunks)


PLAN: Final = _plan()
SOURCE: Final = b"".join(bytes(chunk.hole) + chunk.data for chunk in PLAN)
SIZE: Final = len(SOURCE)
BOUNDARIES: Final = frozenset({0} | {chunk.end for chunk in PLAN})


def _ignore(line: str) -> None:
    """A report nobody reads (the checks' own resumption)."""


def send(uploads: Uploads, chunks: Sequence[Chunk], report: Report) -> None:
    """The client's requests: each chunk, with its CRC32C as the client sends it."""
    for chunk in chunks:
        report(f"try {chunk.end}")
        crc = google_crc32c.value(chunk.data) if chunk.data else None
        position = uploads.write(
            VM, KEY, chunk.offset, chunk.data, crc32c=crc, hole=chunk.hole
        )
        report(f"ack {position.durable}")  # the client saw it durable


def run_upload(site: Path, report: Report) -> None:
    """The scenario: the whole upload, then what the server does to finish it."""
    uploads = Uploads(site, durable_every=DURABLE_EVERY)
    send(uploads, PLAN, report)
    path = uploads.finish(VM, KEY, SIZE)
    report("finished")
    accept_disk_image(site, VM, DISK, path)
    report("accepted")
    uploads.discard(VM, KEY)
    report("discarded")


# -- the properties --------------------------------------------------------------------


def _first_difference(found: bytes, expected: bytes) -> str:
    for index, (a, b) in enumerate(zip(found, expected, strict=False)):
        if a != b:
            return f"first difference at byte {index}"
    return f"{len(found)} bytes, the source has {len(expected)}"


def _image(site: Path) -> Path:
    return initial_copy_directory(site, VM) / f"{DISK}{IMAGE_SUFFIX}"


def check_after_crash(site: Path, progress: Progress) -> list[Problem]:
    """The four properties of the module's essay (and the fifth: nothing raises)."""
    try:
        return _check(site, progress)
    except Exception as error:  # a property in itself: reported, not raised
        return [("(0)", "checking after the crash raised", describe(error))]


def _check(site: Path, progress: Progress) -> list[Problem]:
    problems: list[Problem] = []
    image = _image(site)
    handed_over = image.is_file() and image.read_bytes() == SOURCE
    if image.exists() and not handed_over:
        detail = _first_difference(image.read_bytes(), SOURCE)
        problems.append(("(4)", "the inbox holds a partial or wrong image", detail))
    if "accepted" in progress.notes and not handed_over:
        problems.append(("(4)", "an accepted image is not whole in the inbox", ""))
    uploads = Uploads(site, durable_every=DURABLE_EVERY)
    received = uploads.received(VM, KEY)
    tried = [int(n.split()[1]) for n in progress.notes if n.startswith("try ")]
    reported = progress.acknowledged
    if received < reported and not handed_over:
        detail = f"received() = {received} after the client saw {reported} acknowledged"
        problems.append(("(1)", "an acknowledged chunk was lost", detail))
    if received > max(tried, default=0):
        detail = f"received() = {received}, chunks sent up to {max(tried, default=0)}"
        problems.append(("(1)", "received() exceeds the bytes written", detail))
    if received not in BOUNDARIES:
        detail = f"received() = {received}, chunks end at {sorted(BOUNDARIES)}"
        problems.append(("(1)", "received() is not the end of a chunk", detail))
        return problems  # no chunk to resume from
    part = site / UPLOADS / VM / f"{KEY}{PART_SUFFIX}"
    held = part.read_bytes() if part.is_file() else None
    if received and held is None and not handed_over:
        detail = f"received() = {received}, no {part.name}"
        problems.append(
            ("(2)", "the part file of an acknowledged upload is gone", detail)
        )
    if held is not None and held[:received] != SOURCE[:received]:
        detail = f"received() = {received}, " + _first_difference(
            held[:received], SOURCE[:received]
        )
        problems.append(
            ("(2)", "the acknowledged bytes differ from the source", detail)
        )
    return problems + _resume(site, received, handed_over=handed_over)


def _resume(site: Path, received: int, *, handed_over: bool) -> list[Problem]:
    """The client going on from ``received()``; the server finishing and accepting."""
    uploads = Uploads(site, durable_every=DURABLE_EVERY)
    send(uploads, [chunk for chunk in PLAN if chunk.offset >= received], _ignore)
    try:
        path = uploads.finish(VM, KEY, SIZE)
    except OffsetMismatch as mismatch:
        if mismatch.received != 0 or not handed_over:
            raise
        # Moved into the inbox before discard (see the module's essay): finish has
        # discarded the upload and asks for it from byte 0; the client sends it all.
        send(uploads, PLAN, _ignore)
        path = uploads.finish(VM, KEY, SIZE)
    problems: list[Problem] = []
    if path.read_bytes() != SOURCE:
        detail = _first_difference(path.read_bytes(), SOURCE)
        problems.append(("(3)", "the resumed upload differs from the source", detail))
    accept_disk_image(site, VM, DISK, path)
    uploads.discard(VM, KEY)
    found = _image(site).read_bytes()
    if found != SOURCE:
        detail = _first_difference(found, SOURCE)
        problems.append(
            ("(3)", "the resumed image in the inbox is not the source", detail)
        )
    return problems


# -- one crash point -------------------------------------------------------------------


def power_point(directory: Path, point: Point) -> list[Problem]:
    """Cut the power before operation ``point[0]``; check "drop all" (the reboot),
    then each crash state in between (``crash_states``), one after the other."""
    site = directory / "site"
    site.mkdir(parents=True)
    status, progress = run_child(_power_body(directory, point[0]))
    cut = any(note.startswith("cut ") for note in progress.notes)
    if os.waitstatus_to_exitcode(status) != 0 or not cut:
        return [("child", "the scenario did not reach the cut", str(progress.notes))]
    problems = [
        (check, what, f"drop all: {detail}")
        for check, what, detail in check_after_crash(site, progress)
    ]
    for note in progress.notes:
        if note.startswith("state "):
            number, _, name = note.removeprefix("state ").partition(" ")
            shutil.rmtree(site)
            (directory / f"state-{number}" / "site").rename(site)
            problems += [
                (check, what, f"{name}: {detail}")
                for check, what, detail in check_after_crash(site, progress)
            ]
    return problems


def _power_body(directory: Path, index: int) -> Callable[[Report], None]:
    site = directory / "site"

    def body(report: Report) -> None:
        simulation = PowerLossFileSystem([site], crash_at=index)
        try:
            with files.use(simulation):
                run_upload(site, report)
        except PowerCut as cut:
            pending = simulation.pending()
            states = pending.states(STATES_BUDGET_DEFAULT, seed=index)
            for number, state in enumerate(states[1:], start=1):  # [0]: drop all
                pending.write(state, [directory / f"state-{number}" / "site"])
                report(f"state {number} {pending.describe(state)}")
            simulation.power_cut()
            report(f"cut {cut}")

    return body


def kill_point(directory: Path, point: Point) -> list[Problem]:
    """SIGKILL before or after operation ``point[0]``; reopen, check."""
    site = directory / "site"
    site.mkdir(parents=True)
    when: Literal["before", "after"] = "before" if point[1] == "before" else "after"

    def body(report: Report) -> None:
        with files.use(KillingFileSystem(point[0], when=when)):
            run_upload(site, report)

    status, progress = run_child(body)
    if os.waitstatus_to_exitcode(status) != -signal.SIGKILL:
        return [("child", "the child was not killed", str(progress.notes))]
    return check_after_crash(site, progress)


# -- the sweeps ------------------------------------------------------------------------


def count_operations(directory: Path) -> CountingFileSystem:
    """The scenario once, counted; its end must pass the properties too."""
    site = directory / "site"
    site.mkdir(parents=True)
    counting = CountingFileSystem()
    lines: list[str] = []
    with files.use(counting):
        run_upload(site, lines.append)
    assert lines[-3:] == ["finished", "accepted", "discarded"]
    assert check_after_crash(site, Progress.parse("\n".join(lines))) == []
    return counting


def _sweep(
    title: str, kinds: Sequence[str], run: Callable[[Path, Point], list[Problem]]
) -> None:
    started = time.perf_counter()
    with scratch_directory() as directory:
        counting = count_operations(directory / "count")
        operations = {entry.operation for entry in counting.trace}
        assert operations >= EXPECTED_OPERATIONS, EXPECTED_OPERATIONS - operations
        assert counting.operations >= OPERATIONS_MIN
        points = [
            (index, kind)
            for index in range(1, counting.operations + 1)
            for kind in kinds
        ]
        results = sweep(directory, points, run)
        trace = relative_trace(counting, directory / "count" / "site")
    title += f", {counting.operations} operations, {len(points)} crash points, "
    title += f"{time.perf_counter() - started:.1f} s"
    report = format_report(title, results, trace)
    print(report)
    assert len(results) == len(points)
    failing = [point for point, problems in results.items() if problems]
    assert not failing, report


def test_power_cut_before_every_operation_of_an_upload() -> None:
    """Each cut, each crash state: acknowledged bytes stay, the upload resumes to
    the source, and the inbox never holds part of the image."""
    _sweep("upload power-loss sweep", [""], power_point)


def test_kill_before_and_after_every_operation_of_an_upload() -> None:
    """Each kill: the same properties, with the page cache kept."""
    _sweep("upload kill sweep", ["before", "after"], kill_point)
