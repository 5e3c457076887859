"""The floor of any transfer over TLS from Python: one file through one connection.

A peer for ``bench_network``'s initial copy: a receiver in its own process (this
module run as ``python -m benchmarks.tls_floor``) accepts one mutual-TLS connection on
127.0.0.1 with the same kind of certificates as the replica server, reads what
arrives into one reused buffer (``recv_into``) and ``pwrite``s it to a file, then
``fdatasync``s the file and answers with the byte count. The sender (:func:`send`)
``pread``s the file in 32 MiB pieces and ``sendall``s them. No HTTP, no checksum, no
acknowledgement but the last, no sparse handling: what is left is what every design
pays to move bytes through the standard library's TLS and write them durably, so a
transport's time over this one's says how much of its cost is its own.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PIECE_BYTES: Final = 32 * 1024 * 1024
RECEIVE_BYTES: Final = 1024 * 1024
ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Floor:
    """One transfer: wall seconds (connect to durable), the sender's and the
    receiver's CPU seconds (user, system)."""

    seconds: float
    sender_cpu: tuple[float, float]
    receiver_cpu: tuple[float, float]


@dataclass(frozen=True)
class Credentials:
    """PEM files: the receiver's certificate and key, the sender's, and the CA."""

    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path
    ca_certificate: Path
    server_name: str


def send(source: Path, target: Path, credentials: Credentials) -> Floor:
    """Start the receiver, then time sending ``source`` to it (written to
    ``target``, which is removed afterwards)."""
    size = source.stat().st_size
    command = [
        sys.executable, "-m", "benchmarks.tls_floor",
        "--target", str(target),
        "--certificate", str(credentials.server_certificate),
        "--key", str(credentials.server_key),
        "--ca", str(credentials.ca_certificate),
        "--size", str(size),
    ]  # fmt: skip
    receiver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        context = ssl.create_default_context(cafile=str(credentials.ca_certificate))
        context.load_cert_chain(
            str(credentials.client_certificate), str(credentials.client_key)
        )
        before = _cpu_self()
        started = time.perf_counter()
        descriptor = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                context.wrap_socket(
                    raw, server_hostname=credentials.server_name
                ) as tls,
            ):
                offset = 0
                while offset < size:
                    piece = os.pread(descriptor, PIECE_BYTES, offset)
                    tls.sendall(piece)
                    offset += len(piece)
                answer = tls.recv(64)
        finally:
            os.close(descriptor)
        seconds = time.perf_counter() - started
        after = _cpu_self()
        sender_cpu = (after[0] - before[0], after[1] - before[1])
        remaining, _ = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    if answer != f"ok {size}".encode():
        msg = f"the TLS floor's receiver answered {answer!r}, not 'ok {size}'"
        raise RuntimeError(msg)
    target.unlink()
    user, system = (float(word) for word in remaining.split()[-2:])
    return Floor(seconds, sender_cpu, (user, system))


def _cpu_self() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _receive(arguments: argparse.Namespace) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(arguments.certificate, arguments.key)
    context.load_verify_locations(arguments.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    with socket.create_server(("127.0.0.1", 0)) as listening:
        print(listening.getsockname()[1], flush=True)
        connection, _ = listening.accept()
        before = _cpu_self()
        with context.wrap_socket(connection, server_side=True) as tls:
            descriptor = os.open(
                arguments.target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            )
            try:
                buffer = memoryview(bytearray(RECEIVE_BYTES))
                received = 0
                while count := tls.recv_into(buffer):
                    done = 0
                    while done < count:
                        done += os.pwrite(
                            descriptor, buffer[done:count], received + done
                        )
                    received += count
                    if received >= arguments.size:
                        break
                os.fdatasync(descriptor)
            finally:
                os.close(descriptor)
            tls.sendall(f"ok {received}".encode())
        after = _cpu_self()
        print(f"cpu {after[0] - before[0]:.3f} {after[1] - before[1]:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--certificate", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--size", type=int, required=True)
    _receive(parser.parse_args())


if __name__ == "__main__":
    main()
