"""The primary's side of the network transport: the replica interface over HTTP(S).

:class:`HttpReplica` implements :class:`~engine.transport.interface.ReplicaTarget`
against a replica server (``server.py``), with the same calls, arguments, results and
error types as the in-process replica, so nothing above the seam changes.

- **Uploads resume.** An initial copy's disk image and a cycle's logs travel in chunks
  (:data:`~engine.transport.http.wire.CHUNK_BYTES_DEFAULT`), each with its CRC32C; the
  server acknowledges a chunk once it is durable. After a cut connection the client
  asks where the upload stands and goes on from there, never from byte 0. Holes of a
  sparse image travel as their length only.
- **Retries with backoff, bounded.** A request that fails in transport (refused or cut
  connection, timeout) is sent again after a delay that doubles up to
  :attr:`RetryPolicy.max_delay`, at most :attr:`RetryPolicy.attempts` times and never
  past :attr:`RetryPolicy.deadline` seconds; every call of the interface is idempotent
  on the server (a cycle is applied once however often it is sent), so a retry after a
  lost answer is safe. Then :class:`~engine.errors.TransportError` names the server,
  the attempts and the last error.
- **Refusals are not retried.** A refusal keeps its type across the wire
  (``wire.ERRORS``); a TLS handshake that fails on a certificate is
  :class:`~engine.errors.AuthenticationFailed`, not a network fault.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

import google_crc32c
import httpx

from engine.errors import (
    AuthenticationFailed,
    InvalidConfiguration,
    ReplicationError,
    TransportError,
)
from engine.names import validate_disk_name, validate_site_name, validate_vm_name
from engine.replica.recovery_point import RecoveryPoint
from engine.storage.block_set import BlockSet
from engine.storage.digests import DIGEST_BYTES
from engine.storage.disk import validate_block_bytes
from engine.storage.sparse_copy import data_extents
from engine.transport.http import wire
from engine.transport.http.uploads import initial_key, log_key
from engine.transport.interface import (
    CycleShipment,
    DiskReader,
    Progress,
    ReplicaStatus,
    TestVmDisks,
)

HEALTH_TIMEOUT_SECONDS: Final = 3.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and for how long, a request failing in transport is sent again."""

    attempts: int = 6
    first_delay: float = 0.2
    max_delay: float = 5.0
    deadline: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            msg = f"attempts={self.attempts!r} must be an int >= 1"
            raise InvalidConfiguration(msg)
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < 0:
            msg = f"{self!r}: attempts must be >= 1 and the delays >= 0"
            raise InvalidConfiguration(msg)


@dataclass(frozen=True, slots=True)
class Health:
    """What a replica server says of itself (``GET /v1/health``)."""

    status: str  # "ready" or "warning"
    reasons: tuple[str, ...]
    free_bytes: int
    site: str
    caller: str
    location: str  # the caller's storage location at the server
    max_request_bytes: int | None = None  # the largest request body it accepts


class HttpReplica:
    """The replicas held at a target site's replica server, reached over HTTP(S)."""

    def __init__(
        self,
        url: str,
        *,
        site_name: str,
        ssl_context: ssl.SSLContext | None = None,
        auth: httpx.Auth | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        chunk_bytes: int = wire.CHUNK_BYTES_DEFAULT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``url`` is the server's base (``https://replica.example:8443``)."""
        self._site = validate_site_name(site_name)
        parsed = httpx.URL(url)
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            msg = f"url={url!r} must be http://HOST:PORT or https://HOST:PORT"
            raise InvalidConfiguration(msg)
        if parsed.scheme == "https" and ssl_context is None:
            msg = f"url={url!r} is HTTPS: give the ssl_context holding this primary's "
            msg += "certificate and the CA (engine.transport.http.tls.client_context)"
            raise InvalidConfiguration(msg)
        if chunk_bytes < 4096:
            msg = f"chunk_bytes={chunk_bytes!r} must be at least 4096"
            raise InvalidConfiguration(msg)
        self.url = str(parsed).rstrip("/")
        self._retry = retry or RetryPolicy()
        self._chunk = chunk_bytes
        self._sleep = sleep
        self.link_up = True  # the engine's link switch: False refuses every transfer
        self._client = httpx.Client(
            base_url=self.url,
            verify=ssl_context if ssl_context is not None else True,
            auth=auth,
            timeout=timeout,
            trust_env=False,
        )
        self.retries = 0  # requests sent again after a transport failure
        self.requests = 0  # requests answered by the server
        self._expected_location: Path | None = None  # expect_location
        self._server_limit: int | None = None  # max_request_bytes, once asked
        # memoised(): the blocks open per thread, and what they learnt (shared; any
        # request that changes something, or fails, forgets it all).
        self._blocks = threading.local()
        self._memo_lock = threading.Lock()
        self._changes = 0  # requests that may have changed something, begun
        self._statuses: dict[str, ReplicaStatus] = {}
        self._answered = False  # the server answered a request in an open block
        self._location_checked = True

    @property
    def site_name(self) -> str:
        """The target site."""
        return self._site

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def reachable(self) -> bool:
        """Whether the server answers an authenticated health check now (in a
        :meth:`memoised` block: or answered an authenticated request in it since
        the last failure)."""
        if not self.link_up:
            return False
        if self._in_block() and self._answered:
            return True
        try:
            self.health(timeout=HEALTH_TIMEOUT_SECONDS)
        except ReplicationError:
            return False
        return True

    @contextlib.contextmanager
    def memoised(self) -> Iterator[None]:
        """Within the block, a VM's status is asked once and reused, and an answer
        to any request stands for the health check :meth:`reachable` would send,
        until a request that may change something (anything but a GET) or one that
        fails: an engine operation reads both several times. Outside every block
        (any thread's), nothing is reused."""
        depth = getattr(self._blocks, "depth", 0)
        self._blocks.depth = depth + 1
        try:
            yield
        finally:
            self._blocks.depth = depth
            if depth == 0:
                self._forget()

    def _in_block(self) -> bool:
        return bool(getattr(self._blocks, "depth", 0))

    def _forget(self, *, changed: bool = False, failed: bool = False) -> None:
        with self._memo_lock:
            if changed:
                self._changes += 1
            self._statuses.clear()
            if failed or not changed:
                self._answered = False

    def health(
        self, *, timeout: float | None = None, attempts: int | None = 1
    ) -> Health:
        """The server's health as it reports it (one attempt by default;
        ``attempts=None``: the retry policy's)."""
        response = self._send(
            "GET", wire.API + "/health", attempts=attempts, timeout=timeout
        )
        body = _json_or_none(response)
        problem = "not a JSON object"
        if isinstance(body, Mapping):
            try:
                return Health(
                    status=str(body["status"]),
                    reasons=tuple(str(reason) for reason in body["reasons"]),
                    free_bytes=int(body["free_bytes"]),
                    site=str(body["site"]),
                    caller=str(body["caller"]),
                    location=str(body["location"]),
                    max_request_bytes=_optional_int(body.get("max_request_bytes")),
                )
            except (KeyError, TypeError, ValueError) as error:
                problem = repr(error)
        msg = f"replica server {self.url}: its health answer is not one ({problem})"
        raise TransportError(msg)

    def storage_location(self) -> str:
        """The folder the server keeps this primary's replicas in (its health says)."""
        return self.health().location

    def expect_location(self, folder: Path) -> None:
        """Send nothing to a server that keeps this primary's replicas elsewhere than
        ``folder``: checked now when the server answers, else before the first
        request that reaches it (an engine opens while its replica server is down)."""
        self._expected_location = Path(folder).resolve()
        self._location_checked = False
        with contextlib.suppress(TransportError):  # unreachable now: checked before
            self._check_location(attempts=1)  # the first request that goes

    def _check_location(self, attempts: int | None = None) -> None:
        if self._location_checked or self._expected_location is None:
            return
        self._location_checked = True  # the health request itself goes unchecked
        try:
            served = Path(self.health(attempts=attempts).location).resolve()
        except BaseException:
            self._location_checked = False
            raise
        if served != self._expected_location:
            self._location_checked = False  # every request refused the same way
            msg = f"the replica server {self.url} of site {self._site!r} serves "
            msg += f"{str(served)!r}, but the site's storage root is "
            msg += f"{str(self._expected_location)!r}: a site's replica server and "
            msg += "its engine share one storage root (docs/network.md)"
            raise InvalidConfiguration(msg)

    # -- the replica interface ---------------------------------------------------------

    def create_replica(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """Create an empty replica store for ``vm_name`` (replacing any earlier one)."""
        body = {"disks": dict(disks), "retention_count": retention_count}
        self._send("PUT", _vm(vm_name), json=body)

    def remove_replica(self, vm_name: str) -> None:
        """Delete the replica of ``vm_name`` and everything delivered for it."""
        self._send("DELETE", _vm(vm_name))

    def send_disk_image(
        self,
        vm_name: str,
        disk: str,
        image: Path,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Upload one disk image (resuming where a cut upload stopped), then hand it
        to the replica's inbox whole."""
        self._check_link(f"disk {disk!r} of VM {vm_name!r}")
        size = self._upload(vm_name, initial_key(disk), Path(image), progress)
        path = f"{_vm(vm_name)}/initial/{validate_disk_name(disk)}"
        self._send("POST", path, json={"size": size})

    def install_initial_copy(self, vm_name: str) -> None:
        """Swap the delivered images in (before any recovery point); idempotent."""
        self._send("POST", f"{_vm(vm_name)}/initial-copy")

    def apply_cycle(self, vm_name: str, shipment: CycleShipment) -> RecoveryPoint:
        """Upload the cycle's sealed logs as they lie on disk, then have the server
        verify every record and apply the cycle to all disks or none."""
        self._check_link(f"cycle {shipment.cycle_id} of VM {vm_name!r}")
        sizes = {
            disk: self._upload(vm_name, log_key(shipment.cycle_id, disk), path, None)
            for disk, path in shipment.logs.items()
        }
        body = {
            "epoch": shipment.epoch,
            "app_consistent": shipment.app_consistent,
            "last_sequences": dict(shipment.last_sequences),
            "resync": shipment.resync,
            "sizes": sizes,
        }
        path = f"{_vm(vm_name)}/cycles/{shipment.cycle_id}"
        answer = self._send("POST", path, json=body).json()
        point = wire.point_from_json(answer)
        if isinstance(answer, Mapping) and "status" in answer:
            self._learnt(vm_name, wire.status_from_json(answer["status"]))
        return point

    def block_digests(
        self,
        vm_name: str,
        disk: str,
        block_bytes: int,
        *,
        blocks: Sequence[int] | None = None,
    ) -> list[bytes]:
        """One digest per block of the replica of ``disk``, or per listed block:
        asked in parts of at most ``wire.DIGESTS_PER_REQUEST_MAX`` blocks."""
        self._check_link(f"digests of disk {disk!r} of VM {vm_name!r}")
        part = wire.DIGESTS_PER_REQUEST_MAX
        asks: list[tuple[dict[str, object], int]] = []  # (body part, digests due)
        if blocks is not None:
            listed = list(blocks)
            for at in range(0, len(listed), part):
                some = listed[at : at + part]
                asks.append(({"blocks": some}, len(some)))
        else:
            size = self.status(vm_name).disks.get(disk, 0)
            total = size // validate_block_bytes(block_bytes)
            for at in range(0, total, part):
                count = min(part, total - at)
                asks.append(({"start_block": at, "block_count": count}, count))
        if not asks:  # no block, or a disk the server refuses: its answer decides
            asks.append(({"start_block": 0, "block_count": 0}, 0))
        digests: list[bytes] = []
        for ask, due in asks:
            body = {"disk": disk, "block_bytes": block_bytes, **ask}
            raw = self._send("POST", f"{_vm(vm_name)}/digests", json=body).content
            if len(raw) != due * DIGEST_BYTES:
                msg = f"replica server {self.url}: {len(raw)} bytes of digests, not "
                msg += f"{due} digests of {DIGEST_BYTES} bytes"
                raise TransportError(msg)
            digests += (
                raw[at : at + DIGEST_BYTES] for at in range(0, len(raw), DIGEST_BYTES)
            )
        return digests

    def status(self, vm_name: str, *, quick: bool = False) -> ReplicaStatus:
        """The replica of ``vm_name`` as the server knows it (no side effects;
        ``quick``: one attempt, the health check's timeout)."""
        options: dict[str, Any] = (
            {"attempts": 1, "timeout": HEALTH_TIMEOUT_SECONDS} if quick else {}
        )

        def fetch() -> ReplicaStatus:
            return wire.status_from_json(
                self._send("GET", _vm(vm_name), **options).json()
            )

        if not self._in_block():
            return fetch()
        with self._memo_lock:
            known = self._statuses.get(vm_name)
            changes = self._changes
        if known is not None:
            return known
        found = fetch()
        self._learnt(vm_name, found, changes)
        return found

    def _learnt(
        self, vm_name: str, status: ReplicaStatus, changes: int | None = None
    ) -> None:
        """Keep ``status`` for the open blocks, unless a request that may change it
        began since it was read (``changes``: the count then; None: just now)."""
        if not self._in_block():
            return
        with self._memo_lock:
            if changes is None or self._changes == changes:
                self._statuses[vm_name] = status

    def start_test_failover(self, vm_name: str, recovery_point_id: int) -> None:
        """Pin the point and start a test VM from it at the server; idempotent."""
        body = {"recovery_point_id": recovery_point_id}
        self._send("POST", f"{_vm(vm_name)}/drill", json=body)

    def test_vm(self, vm_name: str) -> TestVmDisks:
        """The open drill's test VM, read and written over the network."""
        return _RemoteTestVm(self, f"{_vm(vm_name)}/drill")

    def cleanup_test_failover(self, vm_name: str) -> None:
        """Delete the test VM and its overlay, unpin the point; idempotent."""
        self._send("DELETE", f"{_vm(vm_name)}/drill")

    def point_reader(self, vm_name: str, recovery_point_id: int) -> DiskReader:
        """A reader of the VM's disks at ``recovery_point_id`` (no copy made)."""
        if isinstance(recovery_point_id, bool) or not isinstance(
            recovery_point_id, int
        ):
            msg = f"recovery_point_id={recovery_point_id!r} must be an int"
            raise InvalidConfiguration(msg)
        return _RemoteReader(self, f"{_vm(vm_name)}/points/{recovery_point_id}")

    def promote_replica(
        self, vm_name: str, recovery_point_id: int, block_bytes: int
    ) -> Mapping[str, BlockSet]:
        """Make the point the VM's disks at the server's site; the store goes."""
        body = {"recovery_point_id": recovery_point_id, "block_bytes": block_bytes}
        found = self._send("POST", f"{_vm(vm_name)}/promote", json=body).json()
        return wire.blocks_from_json(found)

    def adopt_copy(
        self, vm_name: str, disks: Mapping[str, int], retention_count: int
    ) -> None:
        """Make the VM's disks at the server's site its replica (no point yet)."""
        body = {"disks": dict(disks), "retention_count": retention_count}
        self._send("POST", f"{_vm(vm_name)}/adopt", json=body)

    # -- uploads -----------------------------------------------------------------------

    def _upload(
        self, vm_name: str, key: str, path: Path, progress: Progress | None
    ) -> int:
        """Upload ``path`` under ``key`` from where the server stands; its size."""
        upload = f"{_vm(vm_name)}/uploads/{key}"
        try:
            source = path.open("rb")
        except OSError as error:
            msg = f"cannot read {str(path)!r} to send it: {error.strerror}"
            raise InvalidConfiguration(msg) from error
        with source, _Pieces(source.fileno(), self._chunk_bytes()) as pieces:
            size = pieces.size
            # One chunk or less (a cycle's log, as a rule): sent from byte 0 at
            # once; the server answers a resumed upload's position instead (409).
            offset = 0
            if size > self._chunk_bytes():
                offset = int(self._send("GET", upload).json()["received"])
            while offset < size:
                if progress is not None:
                    progress(offset, size)
                hole, data, crc = pieces.at(offset)
                params = {"offset": str(offset)}
                headers = {}
                if hole:
                    params["hole"] = str(hole)
                if data:
                    headers[wire.CRC_HEADER] = f"{crc:08x}"
                try:
                    response = self._send(
                        "PUT", upload, params=params, content=data, headers=headers,
                        resumable=True,
                    )  # fmt: skip
                except RequestTooLarge:
                    # The server takes less than when its limit was learnt (it was
                    # restarted with another): learn it again; refused if no less.
                    known, self._server_limit = self._server_limit, None
                    if self._chunk_bytes() >= len(data) or known == self._server_limit:
                        raise
                    pieces.resize(self._chunk_bytes())
                    continue
                offset = int(response.json()["received"])
                if offset > size:
                    msg = f"replica server {self.url}: upload {key!r} of VM "
                    msg += f"{vm_name!r} stands at byte {offset}, past the "
                    msg += f"{size} bytes of {str(path)!r}"
                    raise TransportError(msg)
        if progress is not None:
            progress(size, size)
        return size

    def _chunk_bytes(self) -> int:
        """The chunk size: the configured one, or less when the server accepts
        less per request (its health says, asked once)."""
        if self._server_limit is None:
            self._server_limit = self.health(attempts=None).max_request_bytes or 0
        if self._server_limit:
            return max(4096, min(self._chunk, self._server_limit))
        return self._chunk

    # -- requests ----------------------------------------------------------------------

    def _check_link(self, what: str) -> None:
        if not self.link_up:
            msg = f"link to site {self._site!r} ({self.url}) is down: {what} was not "
            msg += "sent; retry when it is up"
            raise TransportError(msg)

    def _send(
        self,
        method: str,
        path: str,
        *,
        attempts: int | None = None,
        timeout: float | None = None,
        resumable: bool = False,
        **options: Any,
    ) -> httpx.Response:
        """Send one request, again after transport failures (bounded); a refusal is
        raised as its own error type. ``resumable``: a 409 naming ``received`` is an
        upload's position, returned to the caller, not an error."""
        self._check_link(f"{method} {path}")
        self._check_location(attempts)  # as many tries as the request itself
        limit = attempts or self._retry.attempts
        if timeout is not None:
            options["timeout"] = timeout
        changes = method != "GET"
        if changes:
            self._forget(changed=True)
        try:
            response = self._attempts(method, path, limit, resumable, options)
        except BaseException:
            self._forget(changed=changes, failed=True)
            raise
        if changes:
            self._forget(changed=True)  # what was read while it ran may be stale
        if self._in_block():
            self._answered = True
        return response

    def _attempts(
        self,
        method: str,
        path: str,
        limit: int,
        resumable: bool,  # noqa: FBT001
        options: dict[str, Any],
    ) -> httpx.Response:
        policy = self._retry
        started = time.monotonic()
        delay = policy.first_delay
        last: Exception | None = None
        for attempt in range(1, limit + 1):
            try:
                response = self._client.request(method, path, **options)
            except httpx.TransportError as error:
                _refuse_certificate_errors(self.url, error)
                last = error
            else:
                self.requests += 1
                if response.status_code < 400:
                    return response
                body = _json_or_none(response)
                if resumable and response.status_code == 409 and _has_received(body):
                    return response
                refused = wire.error_from(
                    body, server=self.url, status=response.status_code
                )
                if response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                    raise RequestTooLarge(str(refused)) from refused
                if response.status_code not in _AGAIN:
                    raise refused
                last = refused  # stopping, or the body came too slowly: send again
            if attempt == limit or time.monotonic() - started + delay > policy.deadline:
                break
            self.retries += 1
            self._sleep(delay)
            delay = min(delay * 2, policy.max_delay)
        elapsed = time.monotonic() - started
        msg = f"replica server {self.url} (site {self._site!r}) is unreachable: "
        msg += f"{method} {path} failed {attempt} time(s) over {elapsed:.1f} s; last "
        msg += f"error: {_describe(last)}. Nothing more was sent; retry when it is up"
        raise TransportError(msg) from last


class RequestTooLarge(InvalidConfiguration):
    """The server refused a request body as over its ``max_request_bytes`` (413)."""


_AGAIN: Final = (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.REQUEST_TIMEOUT)
"""Answers after which a request is sent again, as after a failed connection."""


class _RemoteReader:
    """Reads a recovery point's disks at the server, in parts of at most
    :data:`~engine.transport.http.wire.READ_BYTES_MAX`."""

    def __init__(self, replica: HttpReplica, base: str) -> None:
        self._replica = replica
        self._base = base

    def read(self, disk: str, offset: int, length: int) -> bytes:
        parts = []
        for at, count in _parts(offset, length):
            response = self._replica._send(
                "GET",
                f"{self._base}/disks/{validate_disk_name(disk)}",
                params={"offset": str(at), "length": str(count)},
            )
            parts.append(response.content)
        return b"".join(parts)


class _RemoteTestVm(_RemoteReader):
    """A drill's test VM at the server: reads and writes over the network."""

    def write(self, disk: str, offset: int, data: bytes) -> None:
        view = memoryview(data)
        for at, count in _parts(offset, len(data)):
            self._replica._send(
                "PUT",
                f"{self._base}/disks/{validate_disk_name(disk)}",
                params={"offset": str(at)},
                content=bytes(view[at - offset : at - offset + count]),
            )

    def flush(self) -> None:
        self._replica._send("POST", f"{self._base}/flush")


def _vm(vm_name: str) -> str:
    return f"{wire.API}/vms/{validate_vm_name(vm_name)}"


def _parts(offset: object, length: object) -> Iterator[tuple[int, int]]:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        msg = f"offset={offset!r} must be an int >= 0"
        raise InvalidConfiguration(msg)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        msg = f"length={length!r} must be an int >= 0"
        raise InvalidConfiguration(msg)
    end = offset + length
    at = offset
    while at < end or (length == 0 and at == offset):
        count = min(wire.READ_BYTES_MAX, end - at)
        yield at, count
        if count == 0:
            return
        at += count


class _Pieces:
    """The pieces of an upload: from any offset, the hole before the next data, and
    up to ``chunk`` bytes of that data (one extent at most) with their CRC32C. The
    extents are found once (``SEEK_DATA``) and searched for each offset (an upload
    may go back: a restarted server stands at its durable length). The piece after
    the one handed out is read (and its CRC32C computed) in a thread meanwhile,
    while the first travels: reading the disk and sending overlap instead of taking
    turns. Reading a piece changes nothing shared, so the two threads never race."""

    def __init__(self, descriptor: int, chunk: int) -> None:
        self._descriptor = descriptor
        self.size = os.fstat(descriptor).st_size
        self._chunk = chunk
        self._extents = list(data_extents(descriptor, self.size))
        self._ends = [end for _start, end in self._extents]
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="hvdr-upload-read")
        self._ahead: tuple[int, Future[tuple[int, bytes, int]]] | None = None

    def __enter__(self) -> _Pieces:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)

    def resize(self, chunk: int) -> None:
        """Pieces of at most ``chunk`` bytes from now on (what was read ahead goes)."""
        self._chunk = chunk
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    def at(self, offset: int) -> tuple[int, bytes, int]:
        """(zero bytes of hole from ``offset``, the bytes that follow, their
        CRC32C)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == offset:
            found = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()
            found = self._read(offset)
        hole, data, _crc = found
        after = offset + hole + len(data)
        if data and after < self.size:
            self._ahead = (after, self._reader.submit(self._read, after))
        return found

    def _read(self, offset: int) -> tuple[int, bytes, int]:
        index = bisect.bisect_right(self._ends, offset)  # the first ending after it
        if index == len(self._extents):
            return self.size - offset, b"", 0
        start, end = self._extents[index]
        hole = max(0, start - offset)
        at = offset + hole
        count = min(self._chunk, end - at)
        data = os.pread(self._descriptor, count, at)
        if len(data) != count:
            msg = f"the file being sent shrank at byte {at + len(data)}"
            raise InvalidConfiguration(msg)
        return hole, data, google_crc32c.value(data)


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"max_request_bytes={value!r} is not a whole number > 0"
        raise ValueError(msg)
    return value


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _has_received(body: object) -> bool:
    return isinstance(body, Mapping) and isinstance(body.get("received"), int)


def _ssl_error(error: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _refuse_certificate_errors(url: str, error: httpx.TransportError) -> None:
    """A TLS handshake refused over a certificate is not a network fault: say so."""
    found = _ssl_error(error)
    text = str(found or error)
    if found is None and "CERTIFICATE" not in text.upper():
        return
    if isinstance(found, ssl.SSLCertVerificationError) or "VERIFY_FAILED" in text:
        msg = f"the certificate of replica server {url} was refused: {text}. Check "
        msg += "that it is signed by the CA this primary trusts and names the host"
        raise AuthenticationFailed(msg) from error
    if "ALERT" in text.upper() or "CERTIFICATE" in text.upper():
        msg = f"replica server {url} refused this primary's certificate during the "
        msg += f"TLS handshake: {text}. {_alert_advice(text)}"
        raise AuthenticationFailed(msg) from error


def _alert_advice(text: str) -> str:
    """What a server's TLS alert (OpenSSL's reason name in ``text``) says of this
    primary's certificate, and what to do."""
    upper = text.upper()
    if "CERTIFICATE_REQUIRED" in upper:
        return (
            "This primary sent no client certificate: give its ssl_context the "
            "primary's certificate and key"
        )
    if "UNKNOWN_CA" in upper:
        return (
            "The server does not trust the CA that signed this primary's "
            "certificate: use one signed by the server's CA"
        )
    if "CERTIFICATE_EXPIRED" in upper:
        return (
            "The server found this primary's certificate expired: renew it "
            "(and check both clocks)"
        )
    return (
        "Check that it is signed by the CA the server trusts and is within its "
        "validity (not expired, not yet valid: check both clocks)"
    )


def _describe(error: Exception | None) -> str:
    if error is None:
        return "none"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"
