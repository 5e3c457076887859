"""Network transport: replication to a real ``hvdr serve`` over mutual TLS on loopback.

A replica server runs in its own process (``hvdr serve --config FILE.toml``,
certificate mode: HTTPS with mutual TLS, certificates from
:func:`engine.transport.http.certificates.make_certificates`, listening on
127.0.0.1). This process runs the primary's engine with ``replica_servers=
{"secondary": HttpReplica(...)}``; beside it a second engine on other folders runs the
same work with the in-process transport. Three measurements:

1. **Initial replication over the network**, against ``cp --reflink=never`` of the
   same image followed by an ``fsync`` of the copy (the peer: a local copy that ends
   as durable as ours). Timed: the whole ``enable_protection`` (the replica created,
   the image uploaded in 32 MiB chunks, each written as it arrives and synced in
   256 MiB runs, installed, the first cycle applied), which is what "initial
   replication" means to an operator.
   Two disks, both reported, because they stress different things: a **dense** disk
   (random data throughout: every byte crosses TLS, the worst case and the honest
   throughput figure) and a **half-sparse** disk (random data and holes alternating
   in 4 MiB runs, as ``bench_initial_copy``: a hole travels as its length only, so
   this shows what a typical thin-provisioned disk costs). Best of
   ``HVDR_BENCH_ROUNDS`` rounds (order rotating, everything synced before each timed
   run, page cache warm for all); between rounds protection is disabled (the replica
   deleted) and enabled again. Goal: throughput at least 0.7x cp's, on both disks.
   A second peer, the **TLS floor** (``benchmarks/tls_floor.py``: the dense image
   through one mutual-TLS socket between two processes, written with ``pwrite`` and
   ``fdatasync``ed, no HTTP), says what moving the bytes through Python's TLS costs
   here whatever the design, so the ratio to it is printed too.
   The in-process initial replication is timed too (context: what the network adds).
2. **A delta cycle after 1% of the dense disk changed**: 1% of its 4 KiB blocks,
   distinct and random, rewritten through the tracker (as ``bench_delta_cycle``), the
   same blocks and bytes in both engines, then one ``replicate()`` timed on each: over
   the network against in process. ``HVDR_BENCH_CYCLES`` rounds, the order
   alternating; the **median** of each side is compared (a delta cycle is short and
   this host is noisy; the best is printed too). Goal: at most 1.3x the in-process
   time.
3. **CPU seconds per GiB sent**, on each side: this process (``getrusage``,
   ``RUSAGE_SELF``: user + system of every thread; it runs the primary's engine as
   well as the HTTP client, so the in-process run, which does the primary's *and*
   the target's work in one process, is printed beside it) and the server process
   (``utime + stime`` of ``/proc/<pid>/stat``, in clock ticks). "Sent" is the data
   bytes that crossed the wire (a hole's bytes are not sent); cp's own CPU
   (``RUSAGE_CHILDREN``) is printed for scale. Median over the rounds.

Environment: ``HVDR_BENCH_DISK_BYTES`` (each disk's size, default 1 GiB),
``HVDR_BENCH_ROUNDS`` (initial replication rounds, default 2), ``HVDR_BENCH_CYCLES``
(delta cycles, default 5), ``HVDR_BENCH_DIR`` (where to put the sites, default the
system temporary directory). With the defaults the module takes 1.5 to 2.5
minutes on the project's 2-core machine. A server that does not start is reported
with its exit status and last output, and no figures are printed; the server is
stopped (SIGTERM, then SIGKILL) and the folders removed however the run ends.
Figures and where the time goes: docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import resource
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import peers, tls_floor
from engine.errors import ReplicationError
from engine.orchestration.engine import ReplicationEngine
from engine.transport.http.certificates import make_certificates
from engine.transport.http.client import HttpReplica
from engine.transport.http.tls import client_context
from hvdr.commands.serve_process import ServeProcess, ServerFailed, certificate_config

DISK = "data"
DENSE = "dense"
SPARSE = "sparse"
GIB = 1024**3
MIB = 1024**2
FILL_CHUNK_BYTES = 8 * MIB
RUN_BYTES = 4 * MIB  # the half-sparse disk: data and holes alternate in 4 MiB runs
BLOCK_BYTES = 4096
CHANGED_FRACTION = 0.01
GOAL_THROUGHPUT = 0.7  # initial replication: at least 0.7x cp's throughput
GOAL_DELTA = 1.3  # delta cycle: at most 1.3x the in-process time
SERVER_HOST = "127.0.0.1"
PRIMARY_NAME = "bench-primary"
ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


class ReplicaServer(ServeProcess):
    """``hvdr serve`` in a child process, with its CPU time and its last words."""

    def said(self) -> str:
        """The server's last lines of output, for a message."""
        return "; its last output: " + self.tail(5) if self.output else ""

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process so far, all threads."""
        assert self.process is not None
        try:
            text = Path(f"/proc/{self.process.pid}/stat").read_text(encoding="ascii")
        except OSError as error:
            msg = f"the replica server (pid {self.process.pid}) is gone: {error}"
            raise ServerFailed(msg + self.said()) from error
        fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 on
        return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # fields 14, 15

    def halt(self) -> int | None:
        """SIGTERM (it finishes the requests in progress; SIGKILL if it hangs), then
        its exit status (None: it was not running)."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            try:
                code = self.stop(signal.SIGTERM)
            except ServerFailed:
                code = -signal.SIGKILL
        self.close()
        return code


def write_config(path: Path, certs: Path, storage: Path) -> None:
    """Certificate mode, listening on 127.0.0.1 (any port), one listed primary."""
    path.write_text(
        certificate_config(
            site="secondary", port=0, certificate=certs / f"{SERVER_HOST}.pem",
            private_key=certs / f"{SERVER_HOST}.key", ca=certs / "ca.pem",
            primary=PRIMARY_NAME, storage=storage,
        ),
        encoding="utf-8",
    )  # fmt: skip


# -- measuring ---------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run: wall seconds, CPU seconds of this process, of the server, and
    of waited-for children (cp)."""

    seconds: float
    client_user: float
    client_system: float
    server_user: float = 0.0
    server_system: float = 0.0
    child_cpu: float = 0.0
    copied_at: float = 0.0  # seconds until the last byte was copied (initial only)

    @property
    def client_cpu(self) -> float:
        return self.client_user + self.client_system

    @property
    def server_cpu(self) -> float:
        return self.server_user + self.server_system


@contextmanager
def measured(server: ReplicaServer | None) -> Iterator[list[Sample]]:
    """Time the block and count the CPU it took on each side."""
    out: list[Sample] = []
    os.sync()  # nobody pays for the previous run's writeback
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_server = server.cpu_seconds() if server is not None else (0.0, 0.0)
    started = time.perf_counter()
    yield out
    seconds = time.perf_counter() - started
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_server = server.cpu_seconds() if server is not None else (0.0, 0.0)
    out.append(
        Sample(
            seconds=seconds,
            client_user=after_self.ru_utime - before_self.ru_utime,
            client_system=after_self.ru_stime - before_self.ru_stime,
            server_user=after_server[0] - before_server[0],
            server_system=after_server[1] - before_server[1],
            child_cpu=_cpu(after_children) - _cpu(before_children),
        )
    )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def fill(
    engines: list[ReplicationEngine], vm: str, size_bytes: int, *, sparse: bool
) -> int:
    """Write random data over the disk (or every other 4 MiB run of it), the same
    bytes into each engine's VM, before protection; return the data bytes."""
    generator = random.Random(1 if not sparse else 2)
    step = 2 * RUN_BYTES if sparse else FILL_CHUNK_BYTES
    length_max = RUN_BYTES if sparse else FILL_CHUNK_BYTES
    written = 0
    for offset in range(0, size_bytes, step):
        data = generator.randbytes(min(length_max, size_bytes - offset))
        for engine in engines:
            engine.write(vm, DISK, offset, data)
        written += len(data)
    for engine in engines:
        engine.vm(vm).flush()
    return written


def enable(engine: ReplicationEngine, vm: str, server: ReplicaServer | None) -> Sample:
    """Time ``enable_protection`` (disabled first, untimed, when protected)."""
    if engine.status(vm).phase != "unprotected":
        engine.disable(vm)
    copied = [0.0]

    def progress(disk: str, done: int, total: int) -> None:
        if done == total:
            copied[0] = time.perf_counter()

    with measured(server) as out:
        started = time.perf_counter()
        engine.enable_protection(vm, progress=progress)
    sample = out[0]
    sample.copied_at = copied[0] - started
    assert engine.status(vm).protected, engine.status(vm)
    return sample


def cp_then_fsync(source: Path, directory: Path) -> Sample:
    """Time ``cp --reflink=never`` of ``source`` plus an fsync of the copy."""
    target = directory / "cp-peer.img"
    with measured(None) as out:
        peers.cp_then_fsync(source, target)
    assert target.stat().st_size == source.stat().st_size
    target.unlink()
    return out[0]


def change_blocks(
    engines: list[ReplicationEngine], vm: str, size_bytes: int, seed: int
) -> int:
    """Rewrite 1% of the 4 KiB blocks (distinct, random), the same in each engine."""
    generator = random.Random(seed)
    blocks = size_bytes // BLOCK_BYTES
    chosen = generator.sample(range(blocks), max(1, int(blocks * CHANGED_FRACTION)))
    payloads = [generator.randbytes(BLOCK_BYTES) for _ in range(64)]
    for engine in engines:
        for index, block in enumerate(chosen):
            engine.write(vm, DISK, block * BLOCK_BYTES, payloads[index % 64])
        engine.vm(vm).flush()
    return len(chosen)


def cycle(
    engine: ReplicationEngine, vm: str, server: ReplicaServer | None, blocks: int
) -> tuple[Sample, int]:
    """Time one ``replicate()``; return the sample and the bytes shipped."""
    with measured(server) as out:
        report = engine.replicate(vm)
    assert report is not None, "the cycle fell back to a resynchronisation"
    assert report.records == blocks, (report.records, blocks)
    return out[0], report.bytes_shipped


def floor(source: Path, directory: Path, credentials: tls_floor.Credentials) -> Sample:
    """Time the TLS floor (benchmarks/tls_floor.py) sending ``source``."""
    os.sync()  # nobody pays for the previous run's writeback
    found = tls_floor.send(source, directory / "tls-floor.img", credentials)
    return Sample(
        seconds=found.seconds,
        client_user=found.sender_cpu[0],
        client_system=found.sender_cpu[1],
        server_user=found.receiver_cpu[0],
        server_system=found.receiver_cpu[1],
    )


def check_replica(engine: ReplicationEngine, vm: str, size_bytes: int) -> None:
    """The newest point equals the source at a few random places."""
    point = engine.status(vm).recovery_points[-1].recovery_point_id
    reader = engine.transport_towards("secondary").point_reader(vm, point)
    generator = random.Random(7)
    for _ in range(16):
        offset = generator.randrange(size_bytes // BLOCK_BYTES) * BLOCK_BYTES
        expected = engine.read(vm, DISK, offset, BLOCK_BYTES)
        assert reader.read(DISK, offset, BLOCK_BYTES) == expected, (vm, offset)


# -- the run -------------------------------------------------------------------------


@dataclass
class Results:
    """Everything measured, for the tables."""

    size_bytes: int
    rounds: int
    data_bytes: dict[str, int] = field(default_factory=dict)
    initial: dict[tuple[str, str], list[Sample]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    delta: dict[str, list[Sample]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    delta_blocks: int = 0
    delta_shipped: int = 0
    requests: int = 0
    retries: int = 0


NETWORK = "network"
IN_PROCESS = "in process"
CP = "cp"
TLS_FLOOR = "TLS floor"  # the dense disk only: benchmarks/tls_floor.py


def run(directory: Path, results: Results, cycles: int, console: Console) -> None:
    """Start the server and both engines, measure, then stop everything (each
    closed even when another fails to)."""
    certs = directory / "certs"
    made = make_certificates(certs, [SERVER_HOST, PRIMARY_NAME], ca_name="bench CA")
    primary = {host.host: host for host in made.hosts}[PRIMARY_NAME]
    receiver = {host.host: host for host in made.hosts}[SERVER_HOST]
    credentials = tls_floor.Credentials(
        server_certificate=receiver.certificate,
        server_key=receiver.private_key,
        client_certificate=primary.certificate,
        client_key=primary.private_key,
        ca_certificate=made.ca_certificate,
        server_name=SERVER_HOST,
    )
    served = directory / "net-secondary"
    config = directory / "server.toml"
    write_config(config, certs, served)
    # The server runs the same checkout as this process (not an installed copy).
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    server = ReplicaServer(config, environment={"PYTHONPATH": path}, cwd=ROOT)

    def stop_server() -> None:
        code = server.halt()
        if code not in (0, None):
            console.print(
                f"[red]bench_network: the replica server exited {code} when "
                f"stopped{server.said()}"
            )

    with contextlib.ExitStack() as stack:
        stack.callback(stop_server)
        server.start()
        context = client_context(
            primary.certificate, primary.private_key, made.ca_certificate
        )
        client = HttpReplica(
            f"https://{SERVER_HOST}:{server.port}", site_name="secondary",
            ssl_context=context,
        )  # fmt: skip
        stack.callback(client.close)
        network = ReplicationEngine.open(
            directory / "net-primary", served, replica_servers={"secondary": client}
        )
        stack.callback(network.close)
        local = ReplicationEngine.open(
            directory / "local-primary", directory / "local-secondary"
        )
        stack.callback(local.close)
        try:
            measure(
                directory, network, local, server, results, cycles, console,
                credentials,
            )  # fmt: skip
        except ReplicationError as error:
            alive = server.process is not None and server.process.poll() is None
            state = "running" if alive else "gone"
            error.add_note(
                f"bench_network: the replica server is {state}" + server.said()
            )
            raise
        results.requests, results.retries = client.requests, client.retries


def measure(
    directory: Path,
    network: ReplicationEngine,
    local: ReplicationEngine,
    server: ReplicaServer,
    results: Results,
    cycles: int,
    console: Console,
    credentials: tls_floor.Credentials,
) -> None:
    """The three measurements, into ``results`` (cp's copies go in ``directory``)."""
    engines = [network, local]
    size = results.size_bytes
    for vm in (SPARSE, DENSE):
        for engine in engines:
            engine.create_vm(vm, {DISK: size})
        results.data_bytes[vm] = fill(engines, vm, size, sparse=vm == SPARSE)
    image = {vm: network.primary.disk_path(vm, DISK) for vm in (SPARSE, DENSE)}
    methods: dict[str, Callable[[str], Sample]] = {
        NETWORK: lambda vm: enable(network, vm, server),
        IN_PROCESS: lambda vm: enable(local, vm, None),
        CP: lambda vm: cp_then_fsync(image[vm], directory),
        TLS_FLOOR: lambda vm: floor(image[vm], directory, credentials),
    }
    for vm in (SPARSE, DENSE):
        labels = [label for label in methods if label != TLS_FLOOR or vm == DENSE]
        for number in range(results.rounds):
            console.print(f"[dim]initial replication, {vm} disk, round {number + 1}")
            shift = number % len(labels)  # rotate who goes first
            for label in labels[shift:] + labels[:shift]:
                results.initial[vm, label].append(methods[label](vm))
        check_replica(network, vm, size)
        check_replica(local, vm, size)
    for number in range(cycles):
        console.print(f"[dim]delta cycle {number + 1}")
        blocks = change_blocks(engines, DENSE, size, seed=100 + number)
        order = [(NETWORK, network, server), (IN_PROCESS, local, None)]
        for label, engine, remote in order if number % 2 == 0 else order[::-1]:
            sample, shipped = cycle(engine, DENSE, remote, blocks)
            results.delta[label].append(sample)
            if label == NETWORK:
                results.delta_shipped = shipped
        results.delta_blocks = blocks
    check_replica(network, DENSE, size)
    check_replica(local, DENSE, size)


def main() -> None:
    """Start a replica server, measure, print the three tables and the verdicts."""
    console = Console(width=120)
    size = int(os.environ.get("HVDR_BENCH_DISK_BYTES", str(GIB)))
    size = max(2 * RUN_BYTES, size // (2 * RUN_BYTES) * (2 * RUN_BYTES))
    rounds = max(1, int(os.environ.get("HVDR_BENCH_ROUNDS", "2")))
    cycles = max(1, int(os.environ.get("HVDR_BENCH_CYCLES", "5")))
    results = Results(size_bytes=size, rounds=rounds)
    with tempfile.TemporaryDirectory(dir=os.environ.get("HVDR_BENCH_DIR")) as name:
        try:
            run(Path(name), results, cycles, console)
        except ServerFailed as error:
            console.print(f"[red]bench_network: {error}; no figures to print")
            return
    print_initial(console, results)
    print_delta(console, results)
    print_cpu(console, results)


# -- reporting -----------------------------------------------------------------------


def best(samples: list[Sample]) -> Sample:
    return min(samples, key=lambda sample: sample.seconds)


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_initial(console: Console, results: Results) -> None:
    size = results.size_bytes
    table = Table(
        title=f"initial replication of one {size / MIB:,.0f} MiB disk, best of "
        f"{results.rounds} (hvdr serve over mutual TLS on {SERVER_HOST})"
    )
    for column in ("disk", "method", "seconds", "MiB/s (logical)", "vs cp", "GOAL"):
        table.add_column(
            column, justify="left" if column in ("disk", "method") else "right"
        )
    verdicts = []
    for vm, layout in ((DENSE, "dense (random)"), (SPARSE, "half holes")):
        peer = best(results.initial[vm, CP]).seconds
        rows = [
            (NETWORK, "enable_protection over the network"),
            (IN_PROCESS, "enable_protection in process"),
            (CP, "cp --reflink=never + fsync"),
        ]
        if (vm, TLS_FLOOR) in results.initial:
            rows.append((TLS_FLOOR, "TLS floor: one socket, pwrite, fdatasync"))
        for label, text in rows:
            seconds = best(results.initial[vm, label]).seconds
            ratio = peer / seconds
            goal = "(peer)" if label == CP else "(context)"
            if label == NETWORK:
                met = ratio >= GOAL_THROUGHPUT
                goal = f">= {GOAL_THROUGHPUT}x: " + ("met" if met else "MISSED")
                floored = ""
                if (vm, TLS_FLOOR) in results.initial:
                    lowest = best(results.initial[vm, TLS_FLOOR]).seconds
                    floored = (
                        f"; the TLS floor {lowest:.3f} s ({peer / lowest:.2f}x cp's): "
                        f"{lowest / seconds:.2f}x the floor's throughput"
                    )
                verdicts.append(
                    f"{layout}: {seconds:.3f} s over the network, cp {peer:.3f} s: "
                    f"{ratio:.2f}x cp's throughput, goal >= {GOAL_THROUGHPUT}x "
                    f"({'met' if met else 'MISSED'}){floored}"
                )
            table.add_row(
                layout if label == NETWORK else "", text, f"{seconds:.3f}",
                f"{size / MIB / seconds:,.0f}", f"{ratio:.2f}x", goal,
            )  # fmt: skip
    console.print(table)
    for vm in (DENSE, SPARSE):
        sample = best(results.initial[vm, NETWORK])
        console.print(
            f"{vm}: over the network the last byte was acknowledged after "
            f"{sample.copied_at:.3f} s; installing it and the first cycle took "
            f"{sample.seconds - sample.copied_at:.3f} s"
        )
    for line in verdicts:
        console.print(f"initial replication, {line}")


def print_delta(console: Console, results: Results) -> None:
    network = results.delta[NETWORK]
    local = results.delta[IN_PROCESS]
    table = Table(
        title=f"delta cycle after 1% of the dense disk changed "
        f"({results.delta_blocks:,} random 4 KiB blocks, "
        f"{results.delta_shipped / MIB:.1f} MiB shipped)"
    )
    for column in ("round", "over the network (s)", "in process (s)", "ratio", "GOAL"):
        table.add_column(column, justify="left" if column == "round" else "right")
    for number, (ours, peer) in enumerate(zip(network, local, strict=True), 1):
        table.add_row(
            str(number), f"{ours.seconds:.3f}", f"{peer.seconds:.3f}",
            f"{ours.seconds / peer.seconds:.2f}x", "",
        )  # fmt: skip
    ours_median = median([sample.seconds for sample in network])
    peer_median = median([sample.seconds for sample in local])
    ratio = ours_median / peer_median
    met = ratio <= GOAL_DELTA
    goal = f"<= {GOAL_DELTA}x: " + ("met" if met else "MISSED")
    table.add_row(
        "median", f"{ours_median:.3f}", f"{peer_median:.3f}", f"{ratio:.2f}x", goal
    )
    ours_best, peer_best = best(network).seconds, best(local).seconds
    table.add_row(
        "best", f"{ours_best:.3f}", f"{peer_best:.3f}",
        f"{ours_best / peer_best:.2f}x", "",
    )  # fmt: skip
    console.print(table)
    verdict = "met" if met else "MISSED"
    console.print(
        f"delta cycle: median {ours_median:.3f} s over the network, "
        f"{peer_median:.3f} s in process: {ratio:.2f}x, goal <= {GOAL_DELTA}x "
        f"({verdict})"
    )


def print_cpu(console: Console, results: Results) -> None:
    table = Table(
        title="CPU seconds per GiB of data sent, median of the rounds (client: this "
        "process, the primary's engine included; in process: both sides)"
    )
    for column in (
        "transfer", "sent (MiB)", "client user/sys", "client /GiB", "server user/sys",
        "server /GiB", "both /GiB", "GOAL",
    ):  # fmt: skip
        table.add_column(
            column,
            justify="left" if column == "transfer" else "right",
            no_wrap=column == "transfer",
        )

    def row(
        text: str, sent: int, samples: list[Sample], *, child: bool = False
    ) -> None:
        gib = sent / GIB
        if child:  # cp's own CPU (RUSAGE_CHILDREN: user and system not kept apart)
            client = median([s.child_cpu for s in samples])
            split = f"{client:.2f}"
        else:
            user = median([s.client_user for s in samples])
            system = median([s.client_system for s in samples])
            client, split = user + system, f"{user:.2f}/{system:.2f}"
        remote = any(s.server_cpu for s in samples)
        server_user = median([s.server_user for s in samples])
        server_system = median([s.server_system for s in samples])
        server = server_user + server_system
        table.add_row(
            text, f"{sent / MIB:,.1f}", split, f"{client / gib:.2f}",
            f"{server_user:.2f}/{server_system:.2f}" if remote else "-",
            f"{server / gib:.2f}" if remote else "-",
            f"{(client + server) / gib:.2f}", "none",
        )  # fmt: skip

    for vm, layout in ((DENSE, "dense"), (SPARSE, "half holes")):
        sent = results.data_bytes[vm]
        row(f"initial, {layout}: network", sent, results.initial[vm, NETWORK])
        row(f"initial, {layout}: in process", sent, results.initial[vm, IN_PROCESS])
        row(f"initial, {layout}: cp's own", sent, results.initial[vm, CP], child=True)
        if (vm, TLS_FLOOR) in results.initial:
            row(f"initial, {layout}: TLS floor", sent, results.initial[vm, TLS_FLOOR])
    shipped = results.delta_shipped
    row("delta cycle: network", shipped, results.delta[NETWORK])
    row("delta cycle: in process", shipped, results.delta[IN_PROCESS])
    console.print(table)
    console.print(
        f"sent: the data bytes that crossed the wire (holes travel as their length); "
        f"{results.requests:,} requests answered, {results.retries} sent again; the "
        f"server's CPU is utime and stime of /proc/<pid>/stat ({TICKS} ticks/s)"
    )


if __name__ == "__main__":
    main()
