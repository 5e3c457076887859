"""The replica server: the replica interface of one site, served over HTTP(S).

A :class:`ReplicaServer` holds the replica stores of one site for the primaries it
serves. Every request is authenticated first (:class:`Authenticator`: the client
certificate of a mutual-TLS connection, or a Kerberos ticket), then authorised: the
caller's names (certificate subject and SAN names, or Kerberos principal) give its
**storage location** (``server_config.Authorization``), and the request can reach
nothing else. Each location is an :class:`~engine.transport.in_process.InProcessReplica`
rooted there, so a primary can only ever touch its own VMs under its own location:
VM and disk names are validated names joined under that root, never paths.

**One owner per location.** The server takes ``replica.lock`` (the site lock's
``flock``, ``owner_lock.REPLICA_LOCK_FILE``) in every location before opening it, so
a second server on the same storage, or an engine applying to it in process, is
refused naming the first; opening finishes or undoes an apply a crash interrupted
(owner-only recovery, as the in-process replica does).

**Blocking work runs in threads** (``asyncio.to_thread``): file I/O and fsyncs never
stall the event loop, and the in-process replica's lock serialises what changes a
store. A stop (SIGTERM, :func:`run`) stops accepting and waits for the requests in
progress, so an apply finishes (or the store's own rollback undoes it): nothing is
left half-applied. A SIGKILL is the store's crash recovery at the next start.

**Limits.** A request body is at most ``max_request_bytes`` (an upload chunk, a test
VM's write), a JSON body at most :data:`~engine.transport.http.wire.JSON_BYTES_MAX`,
a read at most :data:`~engine.transport.http.wire.READ_BYTES_MAX`; larger is refused
with 413 before it is read. Every request and refusal is one JSON log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Final, Protocol, TypeVar

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.clock import Clock
from engine.errors import (
    AuthenticationFailed,
    InvalidConfiguration,
    NotAuthorised,
    ReplicationError,
    StorageFull,
    TransportError,
)
from engine.names import validate_disk_name, validate_vm_name
from engine.replica.recovery_point import RecoveryPoint
from engine.storage import files as filesystem
from engine.storage.digests import DIGEST_BYTES
from engine.storage.owner_lock import REPLICA_LOCK_FILE, REPLICA_LOCK_HOLDER, SiteLock
from engine.transport import delivery
from engine.transport.http import handshake, wire
from engine.transport.http.server_config import Authorization
from engine.transport.http.uploads import (
    OffsetMismatch,
    Position,
    Uploads,
    initial_key,
    log_key,
    upload_bytes_max,
    upload_disk,
)
from engine.transport.in_process import InProcessReplica
from engine.transport.interface import CycleShipment, ReplicaStatus

LOCK_FILE: Final = REPLICA_LOCK_FILE
MAX_REQUEST_BYTES_DEFAULT: Final = 64 * 1024 * 1024
LOW_SPACE_BYTES: Final = 64 * 1024 * 1024
"""Below this much free space a location's health turns to warning."""
HEADER_BYTES_MAX: Final = 64 * 1024
"""The longest header line (a Kerberos ticket of a large Active Directory token)."""
STOP_GRACE_SECONDS: Final = 120.0
REQUEST_TIMEOUT_SECONDS: Final = 60.0
"""How long a request's headers and body may take to arrive (configurable)."""
"""How long a stop waits for requests in progress (an apply of a large cycle)."""

log = logging.getLogger("hvdr.serve")
T = TypeVar("T")


class Authenticator(Protocol):
    """Tells who sent a request, or refuses it with :class:`AuthenticationFailed`."""

    scheme: str  # "certificate" or "kerberos"

    def identify(self, request: web.Request) -> Caller:
        """The caller of ``request``."""
        ...


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the names it proved, and a header to send back."""

    names: tuple[str, ...]
    response_header: str | None = None  # WWW-Authenticate (Kerberos mutual auth)

    @property
    def name(self) -> str:
        """The first name (for log lines)."""
        return self.names[0] if self.names else "?"


CALLER: Final = web.RequestKey("caller", Caller)


class _Location:
    """One storage location: its replica stores, uploads and health."""

    def __init__(self, replica: InProcessReplica, root: Path, lock: SiteLock) -> None:
        self.replica = replica
        self.root = root
        self.uploads = Uploads(root)
        self.lock = lock
        self.full_since: float | None = None  # the last write failed for lack of room
        self.full_reason = ""


class ReplicaServer:
    """The replica stores of one site, for the primaries its authorisation lists."""

    def __init__(
        self,
        site: str,
        source_site: str,
        authorisation: Authorization,
        authenticator: Authenticator,
        clock: Clock,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES_DEFAULT,
        low_space_bytes: int = LOW_SPACE_BYTES,
        request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        """Open (and lock) every location; finish what a crash interrupted there.

        ``request_timeout_seconds`` bounds how long a request may take to arrive:
        a connection that has not sent a whole request's headers by then (idle, or
        sending them slowly) is closed, and a body still arriving is refused with
        408."""
        self.site = site
        self.request_timeout_seconds = request_timeout_seconds
        self.low_space_bytes = low_space_bytes
        self._authorisation = authorisation
        self._authenticator = authenticator
        self._clock = clock
        self.max_request_bytes = max_request_bytes
        self._locations: dict[Path, _Location] = {}
        self._upload_writers = ThreadPoolExecutor(
            UPLOAD_WRITERS, thread_name_prefix="hvdr-upload-writer"
        )
        self._receiving: set[asyncio.Task[object]] = set()
        self._stopping = False
        try:
            for root in authorisation.locations():
                self._locations[root] = _open_location(root, source_site, site, clock)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release every location's lock."""
        self._upload_writers.shutdown(wait=False, cancel_futures=True)
        for location in self._locations.values():
            location.lock.release()
        self._locations.clear()

    def recovered(self) -> dict[str, str]:
        """What opening finished or undid, per location and VM (start-up log)."""
        return {
            f"{root}:{vm}": what
            for root, location in self._locations.items()
            for vm, what in location.replica.recovered.items()
        }

    # -- the application ---------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application serving this server's routes."""
        app = web.Application(
            client_max_size=self.max_request_bytes,
            middlewares=[self._middleware],
        )
        vm = wire.API + "/vms/{vm}"
        app.add_routes(
            [
                web.get(wire.API + "/health", self._health),
                web.put(vm, self._create),
                web.delete(vm, self._remove),
                web.get(vm, self._status),
                web.get(vm + "/uploads/{key}", self._upload_state),
                web.put(vm + "/uploads/{key}", self._upload_chunk, name=_STREAMED),
                web.post(vm + "/initial/{disk}", self._initial_image),
                web.post(vm + "/initial-copy", self._install),
                web.post(vm + "/cycles/{cycle}", self._apply),
                web.post(vm + "/digests", self._digests),
                web.post(vm + "/drill", self._start_drill),
                web.delete(vm + "/drill", self._cleanup_drill),
                web.get(vm + "/drill/disks/{disk}", self._drill_read),
                web.put(vm + "/drill/disks/{disk}", self._drill_write),
                web.post(vm + "/drill/flush", self._drill_flush),
                web.get(vm + "/points/{point}/disks/{disk}", self._point_read),
                web.post(vm + "/promote", self._promote),
                web.post(vm + "/adopt", self._adopt),
            ]
        )
        return app

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        started = time.monotonic()
        caller: Caller | None = None
        try:
            # Who first (headers only), so even a refusal of the body carries the
            # server's Kerberos proof, which the client checks on every answer.
            caller = await asyncio.to_thread(self._authenticator.identify, request)
            request[CALLER] = caller
            _check_length(request, self.max_request_bytes)
            if request.match_info.route.name != _STREAMED:
                await self._receive(request)
            response = await handler(request)
        except ReplicationError as error:
            response = self._refuse(request, caller, error)
        except web.HTTPException as error:
            if error.status < HTTPStatus.BAD_REQUEST:
                raise
            response = self._refuse(request, caller, _http_error(request, error))
        except OSError as error:  # a file operation failed in a way nothing named
            log.exception("request failed: %s %s", request.method, request.path)
            failure = ReplicationError(f"the replica server failed: {error}")
            response = self._refuse(request, caller, failure, logged=True)
        if caller is not None and caller.response_header is not None:
            response.headers["WWW-Authenticate"] = caller.response_header
        _log_request(request, caller, response.status, started)
        return response

    def _refuse(
        self,
        request: web.Request,
        caller: Caller | None,
        error: ReplicationError,
        *,
        logged: bool = False,
    ) -> web.Response:
        """The refusal's answer, and its log line (unless ``logged``). The log line
        keeps the whole message; the answer names no folder of this machine: each
        storage location's path reads ``<storage location>`` (a primary learns
        where its replicas are kept from the health answer, and nothing else)."""
        if not logged:
            _log_refusal(request, caller, error)
        return _refusal(error, self._authenticator.scheme, self._redact)

    def _redact(self, message: str) -> str:
        for root in self._locations:
            plain = {str(root.resolve()), str(root)}
            quoted = {repr(path)[1:-1] for path in plain}  # as a message's !r has it
            for spelling in sorted(plain | quoted, key=len, reverse=True):
                message = message.replace(spelling, "<storage location>")
        return message

    async def _receive(
        self,
        request: web.Request,
        consume: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Read the whole body (aiohttp keeps it for the handler's ``read``; or
        ``consume`` reads it, an upload chunk streamed to its file) while this task
        is listed as receiving: a stop abandons a body still arriving
        (:meth:`abandon_receiving`) rather than wait for a client that may be slow
        or gone. Nothing of such a request was accepted, so nothing is lost: the
        client sends it again."""
        task = asyncio.current_task()
        if task is None or not request.can_read_body:
            return
        if self._stopping:
            msg = "the replica server is stopping: send this request again once it "
            msg += "is back"
            raise ServerStopping(msg)
        self._receiving.add(task)
        try:
            async with asyncio.timeout(self.request_timeout_seconds):
                await (request.read() if consume is None else consume())
        except TimeoutError:
            msg = "the request body did not arrive within "
            msg += f"{self.request_timeout_seconds:g} s (request_timeout_seconds): "
            msg += "send it again, in smaller parts over a slow link"
            raise RequestTooSlow(msg) from None
        except asyncio.CancelledError:
            caller = request.get(CALLER)
            _log_event(
                "abandoned",
                method=request.method,
                path=request.path,
                caller=None if caller is None else caller.name,
                peer=request.remote,
                reason="the server is stopping; the body had not all arrived",
            )
            raise
        finally:
            self._receiving.discard(task)

    def make_uploads_durable(self) -> int:
        """At a clean stop: every upload's received bytes made durable, so that the
        next start resumes each where it stood; how many uploads were synced."""
        locations = self._locations.values()
        return sum(location.uploads.make_durable() for location in locations)

    def abandon_receiving(self) -> int:
        """Stop reading the bodies still arriving (a stop), and refuse any body that
        starts arriving after; how many were abandoned."""
        self._stopping = True
        found = list(self._receiving)
        for task in found:
            task.cancel()
        return len(found)

    def _location(self, request: web.Request) -> _Location:
        caller = request[CALLER]
        root = self._authorisation.location_for(caller.names)
        matches = self._authorisation.listed_matches(caller.names)
        if root is None and len(matches) > 1:
            msg = f"{self._authenticator.scheme} identity {list(caller.names)} "
            msg += f"matches {len(matches)} listed primaries "
            msg += f"({', '.join(repr(found.name) for found in matches)}), each with "
            msg += "its own storage: refused rather than guess which; give each "
            msg += "primary an identity that names one listed entry"
            raise NotAuthorised(msg)
        if root is None:
            msg = f"{self._authenticator.scheme} identity {list(caller.names)} is not "
            msg += f"a primary server this replica server (site {self.site!r}) "
            msg += "accepts; it serves only the primaries listed in its configuration"
            raise NotAuthorised(msg)
        return self._locations[root]

    def _require_replica(self, location: _Location, vm: str) -> ReplicaStatus:
        """The replica's status; refused when the caller's location has none."""
        status = location.replica.status(vm)  # damaged: raised, so refused too
        if not status.exists:
            msg = f"VM {vm!r} has no replica at site {self.site!r}: create it first"
            raise InvalidConfiguration(msg)
        return status

    async def _call(
        self,
        location: _Location,
        work: Callable[[], T],
        *,
        writes: bool = True,
        streaming: bool = False,
    ) -> T:
        """Run blocking ``work`` in a thread, keeping the location's health: a write
        refused for lack of room turns it to warning until a write succeeds.
        ``streaming``: work that waits on a body arriving (an upload chunk's writer)
        runs in its own pool, so that however many slow uploads are under way,
        health checks, authentication and every other request keep their threads."""
        try:
            if streaming:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._upload_writers, work)
            else:
                result = await asyncio.to_thread(work)
        except StorageFull as error:
            location.full_since = self._clock.now()
            location.full_reason = str(error)
            raise
        if writes:
            location.full_since = None
        return result

    # -- handlers ----------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        location = self._location(request)
        free = await asyncio.to_thread(filesystem.current().free_bytes, location.root)
        reasons = []
        if location.full_since is not None:
            reasons.append(f"storage full: {self._redact(location.full_reason)}")
        elif free < self.low_space_bytes:
            reasons.append(
                f"storage low: {free} bytes free at the storage location "
                f"(warning below {self.low_space_bytes})"
            )
        return web.json_response(
            {
                "status": "warning" if reasons else "ready",
                "site": self.site,
                "reasons": reasons,
                "free_bytes": free,
                "caller": request[CALLER].name,
                "location": str(location.root.resolve()),
                "max_request_bytes": self.max_request_bytes,
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        body = await _body(request, _Create)
        disks = dict(body.disks)

        def work() -> None:
            with location.uploads.holding(vm):  # no chunk for the old one lands
                location.uploads.discard_vm(vm)
                location.replica.create_replica(vm, disks, body.retention_count)

        await self._call(location, work)
        return _done()

    async def _remove(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)

        def work() -> None:
            with location.uploads.holding(vm):
                location.replica.remove_replica(vm)
                location.uploads.discard_vm(vm)

        await self._call(location, work)
        return _done()

    async def _status(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        found = await self._call(
            location, lambda: location.replica.status(vm), writes=False
        )
        return web.json_response(wire.status_to_json(found))

    async def _upload_state(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm, key = _vm(request), _key(request)
        position = await self._call(
            location, lambda: location.uploads.position(vm, key), writes=False
        )
        return web.json_response(_position(position))

    async def _upload_chunk(self, request: web.Request) -> web.Response:
        """A chunk, written to its upload's file as it arrives (:class:`_Feed`):
        the body is never held whole in memory."""
        location = self._location(request)
        vm, key = _vm(request), _key(request)
        offset = _query_int(request, "offset")
        hole = _query_int(request, "hole", default=0)
        crc = request.headers.get(wire.CRC_HEADER)
        length = request.content_length if request.can_read_body else 0
        if length is None:
            msg = "an upload chunk needs a Content-Length header (its length is "
            msg += "checked before any byte is written)"
            raise InvalidConfiguration(msg)
        if crc is None and length:
            msg = f"an upload chunk needs its CRC32C in the {wire.CRC_HEADER} header"
            raise InvalidConfiguration(msg)
        if not length and not hole:
            msg = "an upload chunk carries bytes, or a hole of hole=N zero bytes "
            msg += "(N > 0); this one carries neither"
            raise InvalidConfiguration(msg)
        checksum = None if crc is None else _hex(crc, wire.CRC_HEADER)
        feed = _Feed()

        def work() -> Position:
            with location.uploads.holding(vm):  # the replica checked stays the one
                disks = self._require_replica(location, vm).disks
                _check_upload_end(vm, key, offset + hole + length, disks)
                return location.uploads.write_pieces(
                    vm, key, offset, feed, crc32c=checksum, hole=hole, length=length
                )

        writing = asyncio.ensure_future(self._call(location, work, streaming=True))
        writing.add_done_callback(feed.stop_waiting)
        try:
            await self._receive(request, lambda: feed.fill(request.content, writing))
        except BaseException:
            # The writer sees the body end short and undoes what it wrote: done
            # before the refusal is answered, so nothing of the chunk is kept then.
            feed.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait([writing])
            raise
        feed.close()
        return web.json_response(_position(await writing))

    async def _initial_image(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm, disk = _vm(request), _disk(request)
        body = await _body(request, _Finish)

        def work() -> None:
            key = initial_key(disk)
            delivered = delivery.initial_copy_directory(location.root, vm) / (
                f"{disk}{delivery.IMAGE_SUFFIX}"
            )
            with location.uploads.holding(vm):  # no chunk lands meanwhile
                if delivered.is_file() and delivered.stat().st_size == body.size:
                    # Taken already (a retry after a lost answer, or a crash after
                    # the move into the inbox and before the upload was forgotten).
                    location.uploads.discard(vm, key)
                    return
                path = location.uploads.finish(vm, key, body.size)
                location.replica.receive_disk_image(vm, disk, path)
                location.uploads.discard(vm, key)

        await self._call(location, work)
        return _done()

    async def _install(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        await self._call(location, lambda: location.replica.install_initial_copy(vm))
        return _done()

    async def _apply(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        cycle = _int_in_path(request, "cycle")
        body = await _body(request, _Apply)

        def work() -> dict[str, object]:
            with location.uploads.holding(vm):  # no chunk of its logs lands meanwhile
                point = apply()
                # The replica as it stands now, so that the primary need not ask.
                status = wire.status_to_json(location.replica.status(vm))
                return {**wire.point_to_json(point), "status": status}

        def apply() -> RecoveryPoint:
            for point in self._require_replica(location, vm).points:
                if point.cycle_id == cycle:  # a retry after a lost answer
                    _discard_cycle(location, vm, cycle, body.sizes)
                    return point
            logs = {
                disk: location.uploads.finish(vm, log_key(cycle, disk), size)
                for disk, size in body.sizes.items()
            }
            shipment = CycleShipment(
                cycle_id=cycle,
                epoch=body.epoch,
                app_consistent=body.app_consistent,
                logs=logs,
                last_sequences=dict(body.last_sequences),
                resync=body.resync,
            )
            try:
                point = location.replica.apply_cycle(vm, shipment, take_logs=True)
            except ReplicationError:
                if not location.replica.store(vm).pending_recovery:
                    _discard_cycle(location, vm, cycle, body.sizes)
                raise
            _discard_cycle(location, vm, cycle, body.sizes)
            return point

        return web.json_response(await self._call(location, work))

    async def _digests(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        body = await _body(request, _Digests)
        disk = validate_disk_name(body.disk)
        asked = len(body.blocks) if body.blocks is not None else body.block_count
        if asked is None or asked > wire.DIGESTS_PER_REQUEST_MAX:
            msg = f"{request.method} {request.path}: one request asks for at most "
            msg += f"{wire.DIGESTS_PER_REQUEST_MAX} digests (blocks listed, or "
            msg += f"block_count from start_block), not {asked or 'the whole disk'}: "
            msg += "ask in parts"
            raise InvalidConfiguration(msg)
        if body.blocks is not None and (
            {"start_block", "block_count"} & body.model_fields_set
        ):
            msg = f"{request.method} {request.path}: blocks, or start_block and "
            msg += "block_count, not both"
            raise InvalidConfiguration(msg)

        def work() -> list[bytes]:
            if body.blocks is not None:
                return location.replica.block_digests(
                    vm, disk, body.block_bytes, blocks=body.blocks
                )
            return location.replica.block_digests(
                vm, disk, body.block_bytes,
                start_block=body.start_block, block_count=body.block_count,
            )  # fmt: skip

        digests = await self._call(location, work, writes=False)
        return web.Response(
            body=b"".join(digests),
            content_type="application/octet-stream",
            headers={wire.DIGEST_SIZE_HEADER: str(DIGEST_BYTES)},
        )

    async def _start_drill(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        body = await _body(request, _Point)

        def work() -> None:
            location.replica.start_test_failover(vm, body.recovery_point_id)

        await self._call(location, work)
        return _done()

    async def _cleanup_drill(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        await self._call(location, lambda: location.replica.cleanup_test_failover(vm))
        return _done()

    async def _drill_read(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm, disk = _vm(request), _disk(request)
        offset, length = _range(request)

        def work() -> bytes:
            return location.replica.test_vm(vm).read(disk, offset, length)

        return _bytes(await self._call(location, work, writes=False))

    async def _drill_write(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm, disk = _vm(request), _disk(request)
        offset = _query_int(request, "offset")
        data = await request.read()

        def work() -> None:
            location.replica.test_vm(vm).write(disk, offset, data)

        await self._call(location, work)
        return _done()

    async def _drill_flush(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        await self._call(location, lambda: location.replica.test_vm(vm).flush())
        return _done()

    async def _point_read(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm, disk = _vm(request), _disk(request)
        point = _int_in_path(request, "point")
        offset, length = _range(request)

        def work() -> bytes:
            return location.replica.point_reader(vm, point).read(disk, offset, length)

        return _bytes(await self._call(location, work, writes=False))

    async def _promote(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        body = await _body(request, _Promote)

        def work() -> dict[str, object]:
            with location.uploads.holding(vm):
                blocks = location.replica.promote_replica(
                    vm, body.recovery_point_id, body.block_bytes
                )
                location.uploads.discard_vm(vm)  # the VM runs here now
            return wire.blocks_to_json(blocks)

        return web.json_response(await self._call(location, work))

    async def _adopt(self, request: web.Request) -> web.Response:
        location = self._location(request)
        vm = _vm(request)
        body = await _body(request, _Create)

        def work() -> None:
            with location.uploads.holding(vm):
                location.replica.adopt_copy(vm, dict(body.disks), body.retention_count)
                location.uploads.discard_vm(vm)  # a new replica: no earlier upload

        await self._call(location, work)
        return _done()


# -- running ---------------------------------------------------------------------------


async def run(
    server: ReplicaServer,
    host: str,
    port: int,
    *,
    ssl_context: Any = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or ``stop``), then finish the requests in
    progress and return. ``ready`` is called with the URL once the port listens;
    ``handle_signals=False`` leaves the signals alone (a server in a thread);
    ``sock``, a socket bound already, is served instead of binding ``host:port``."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    _log_refused_connections()
    runner = web.AppRunner(
        server.app(),
        access_log=None,
        shutdown_timeout=STOP_GRACE_SECONDS,
        max_field_size=HEADER_BYTES_MAX,
        # A connection with no whole request (idle, or its headers arriving slowly)
        # is closed after this: aiohttp's keep-alive timer runs from the connection.
        keepalive_timeout=server.request_timeout_seconds,
    )
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.TCPSite(runner, host, port, ssl_context=ssl_context)
            if sock is None
            else web.SockSite(runner, sock, ssl_context=ssl_context)
        )
        await site.start()
        bound = runner.addresses[0]
        scheme = "https" if ssl_context is not None else "http"
        url = f"{scheme}://{_host_for_url(bound[0])}:{bound[1]}"
        for where, outcome in sorted(server.recovered().items()):
            _log_event("recovered", vm=where, outcome=outcome, site=server.site)
        _log_event("listening", url=url, site=server.site)
        if ready is not None:
            ready(url)
        await stop.wait()
        await site.stop()  # no new connection; then no body still arriving is awaited
        await asyncio.sleep(0)
        abandoned = server.abandon_receiving()
        _log_event(
            "stopping",
            reason="signal: finishing the requests in progress",
            bodies_abandoned=abandoned,
        )
    finally:
        await runner.cleanup()  # stops accepting, waits for handlers in progress
        for signum in signals:
            loop.remove_signal_handler(signum)
    synced = await asyncio.to_thread(server.make_uploads_durable)
    _log_event("stopped", uploads_synced=synced)


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- request parts ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Create(_Strict):
    disks: dict[str, int]
    retention_count: int


WholeNumber = Annotated[int, Field(ge=0)]
ByteCount = WholeNumber
"""A file's length in bytes (an upload's size)."""


class _Finish(_Strict):
    size: ByteCount


class _Apply(_Strict):
    epoch: WholeNumber
    app_consistent: bool
    last_sequences: dict[str, int]
    resync: bool = False
    sizes: dict[str, ByteCount]


class _Digests(_Strict):
    disk: str
    block_bytes: int
    blocks: list[int] | None = None
    start_block: ByteCount = 0  # with block_count, a part of the disk
    block_count: ByteCount | None = None


class _Point(_Strict):
    recovery_point_id: int


class _Promote(_Strict):
    recovery_point_id: int
    block_bytes: int


M = TypeVar("M", bound=_Strict)


async def _body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; InvalidConfiguration names the field."""
    _check_json_length(request, request.content_length)
    raw = await request.read()
    _check_json_length(request, len(raw))  # sent without Content-Length (chunked)
    takes = f"{request.method} {request.path} takes a JSON object with "
    takes += f"{sorted(model.model_fields)}"
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        msg = f"the request body is not JSON ({error}); {takes}"
        raise InvalidConfiguration(msg) from None
    except RecursionError:  # nested deeper than the parser's stack
        msg = f"the request body is JSON nested too deeply to read; {takes}"
        raise InvalidConfiguration(msg) from None
    except ValueError:  # an integer of more digits than Python converts
        msg = "the request body holds an integer of more than "
        msg += f"{sys.get_int_max_str_digits()} digits; {takes}"
        raise InvalidConfiguration(msg) from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in found['loc']) or 'body'}: {found['msg']}"
            for found in error.errors()
        )
        msg = f"{request.method} {request.path}: {problems} (the body takes "
        msg += f"{sorted(model.model_fields)})"
        raise InvalidConfiguration(msg) from None


def _check_json_length(request: web.Request, length: int | None) -> None:
    if length is not None and length > wire.JSON_BYTES_MAX:
        msg = f"{request.method} {request.path}: the JSON body is {length} bytes; a "
        msg += f"JSON body is at most {wire.JSON_BYTES_MAX} bytes"
        raise _TooLarge(msg)


def _vm(request: web.Request) -> str:
    return validate_vm_name(request.match_info["vm"])


def _disk(request: web.Request) -> str:
    return validate_disk_name(request.match_info["disk"])


def _key(request: web.Request) -> str:
    key = request.match_info["key"]
    if key.startswith("initial."):
        return initial_key(key.removeprefix("initial."))
    head, _, disk = key.partition(".")
    if head.startswith("cycle-") and _whole_number(head.removeprefix("cycle-")):
        return log_key(_number(head.removeprefix("cycle-"), "cycle id {!r}"), disk)
    msg = f"upload key {key!r} is not 'initial.<disk>' or 'cycle-<id>.<disk>'"
    raise InvalidConfiguration(msg)


def _check_upload_end(vm: str, key: str, end: int, disks: Mapping[str, int]) -> None:
    """Refuse a chunk for a disk the VM lacks, or one ending past what an upload
    for its disk may hold, before any file is touched."""
    disk = upload_disk(key)
    if disk not in disks:
        msg = f"upload {key!r}: VM {vm!r} has no disk {disk!r} at this site; its "
        msg += f"disks: {sorted(disks)}"
        raise InvalidConfiguration(msg)
    limit = upload_bytes_max(key, disks[disk])
    if end > limit:
        msg = f"upload {key!r} of VM {vm!r} would reach byte {end}: an upload for "
        msg += f"disk {disk!r} ({disks[disk]} bytes) holds at most {limit} bytes"
        raise InvalidConfiguration(msg)


def _int_in_path(request: web.Request, name: str) -> int:
    return _number(request.match_info[name], f"{name}={{!r}} in the path")


def _query_int(request: web.Request, name: str, default: int | None = None) -> int:
    found = request.query.getall(name, [])
    if len(found) > 1:
        msg = f"query parameter {name} is given {len(found)} times; give it once"
        raise InvalidConfiguration(msg)
    text = found[0] if found else None
    if text is None:
        if default is not None:
            return default
        msg = f"{request.method} {request.path} needs the query parameter {name}"
        raise InvalidConfiguration(msg)
    return _number(text, f"query parameter {name}={{!r}}")


def _number(text: str, what: str) -> int:
    """``text`` as a whole number of at most 18 ASCII digits; else refused naming
    ``what`` (its ``{!r}`` the text)."""
    if not _whole_number(text) or len(text) > 18:
        msg = f"{what.format(text)} must be a whole number >= 0"
        raise InvalidConfiguration(msg)
    return int(text)


def _range(request: web.Request) -> tuple[int, int]:
    offset = _query_int(request, "offset")
    length = _query_int(request, "length")
    if length > wire.READ_BYTES_MAX:
        msg = f"length={length} is more than one read returns "
        msg += f"({wire.READ_BYTES_MAX} bytes): read in parts"
        raise InvalidConfiguration(msg)
    return offset, length


def _hex(text: str, header: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        msg = f"header {header}={text!r} must be a CRC32C in hexadecimal"
        raise InvalidConfiguration(msg)
    return value


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        msg = f"the request body is {length} bytes; this server takes at most {limit} "
        msg += "per request (max_request_bytes): send it in smaller parts"
        raise _TooLarge(msg)


class _TooLarge(InvalidConfiguration):
    """A body over the server's limit (answered 413)."""


class RequestTooSlow(TransportError):
    """A body that did not arrive within the request timeout (answered 408)."""


class ServerStopping(TransportError):
    """The server is stopping and reads no new body (answered 503: the client
    sends the request again, as after a cut connection)."""


def _discard_cycle(
    location: _Location, vm: str, cycle: int, sizes: Mapping[str, int]
) -> None:
    for disk in sizes:
        location.uploads.discard(vm, log_key(cycle, disk))


# -- answers and log lines -------------------------------------------------------------


UPLOAD_WRITERS: Final = 16
"""Upload chunks written at once (each writer waits on its body as it arrives); more
wait their turn, in a pool of their own (``ReplicaServer._call``)."""
_STREAMED: Final = "upload_chunk"
"""The route whose body its handler streams (every other body is read whole first)."""
FEED_PIECES_WAITING: Final = 64
"""A streamed chunk's body is handed to its writer in the pieces TLS decrypted it in
(at most 256 KiB each, asyncio's read size), at most this many waiting: the memory
one upload holds, however large its chunk."""


class _Feed:
    """A body's pieces, from the event loop to the thread that writes them."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(FEED_PIECES_WAITING)

    async def fill(self, content: StreamReader, writing: asyncio.Future[Any]) -> None:
        """Read the body; hand each piece over while the writer wants them (once it
        is done, refused early, the rest is read and dropped, so that the client
        gets the answer on a connection still in step)."""
        while piece := await content.readany():  # as decrypted: no copy joins them
            if writing.done():
                continue
            await self._room.acquire()
            if not writing.done():
                self._queue.put(piece)

    def stop_waiting(self, _writing: asyncio.Future[Any]) -> None:
        """The writer is done: a :meth:`fill` waiting for room goes on."""
        self._room.release()
        if _writing.cancelled():
            return
        _writing.exception()  # retrieved here; raised to the handler by its await

    def close(self) -> None:
        """No more pieces."""
        self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (piece := self._queue.get()) is not None:
            self._loop.call_soon_threadsafe(self._room.release)
            yield piece


def _position(position: Position) -> dict[str, int]:
    return {"received": position.received, "durable": position.durable}


def _done() -> web.Response:
    return web.json_response({"ok": True})


def _bytes(data: bytes) -> web.Response:
    return web.Response(body=data, content_type="application/octet-stream")


def _status(error: ReplicationError) -> HTTPStatus:
    if isinstance(error, _TooLarge):
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    if isinstance(error, OffsetMismatch):  # the client resumes from "received"
        return HTTPStatus.CONFLICT
    if isinstance(error, ServerStopping):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(error, RequestTooSlow):
        return HTTPStatus.REQUEST_TIMEOUT
    return wire.status_of(error)


def _refusal(
    error: ReplicationError, scheme: str, redact: Callable[[str], str]
) -> web.Response:
    body: dict[str, object] = dict(wire.error_body(error))
    body["message"] = redact(str(body["message"]))
    if isinstance(error, OffsetMismatch):
        body["received"] = error.received
    response = web.json_response(body, status=_status(error))
    if isinstance(error, AuthenticationFailed) and scheme == "kerberos":
        response.headers["WWW-Authenticate"] = "Negotiate"
    return response


def _http_error(request: web.Request, error: web.HTTPException) -> ReplicationError:
    if error.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        msg = f"the request body is larger than this server takes ({error.text})"
        return _TooLarge(msg)
    if error.status == HTTPStatus.NOT_FOUND:
        msg = f"{request.method} {request.path} is not a route of this replica server"
        return InvalidConfiguration(msg)
    if error.status == HTTPStatus.METHOD_NOT_ALLOWED:
        msg = f"{request.method} is not allowed on {request.path}"
        return InvalidConfiguration(msg)
    return InvalidConfiguration(f"{request.method} {request.path}: {error.reason}")


def _log_event(event: str, **fields: object) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


def _log_request(
    request: web.Request, caller: Caller | None, status: int, started: float
) -> None:
    _log_event(
        "request",
        method=request.method,
        path=request.path,
        status=status,
        caller=None if caller is None else caller.name,
        peer=request.remote,
        ms=round((time.monotonic() - started) * 1000, 1),
    )


def _log_refusal(
    request: web.Request, caller: Caller | None, error: ReplicationError
) -> None:
    log.warning(
        json.dumps(
            {
                "event": "refused",
                "method": request.method,
                "path": request.path,
                "caller": None if caller is None else caller.name,
                "peer": request.remote,
                "status": int(_status(error)),
                "error": wire.error_body(error)["error"],
                "message": str(error),
            }
        )
    )


class _ParseFailures(logging.Filter):
    """aiohttp answers a request it cannot parse (a request line or header over its
    8190-byte limit, a malformed header) with 400 before any handler or middleware
    runs, and logs it with a traceback: this filter makes that one refusal line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        peer = args[0] if args else None  # "Error handling request from %s"
        log.warning(
            json.dumps(
                {
                    "event": "refused",
                    "stage": "http parse",
                    "peer": None if peer is None else str(peer),
                    "error": type(error).__name__,
                    "message": f"{error.message} (HTTP {error.code})",
                }
            )
        )
        return False


def _log_refused_connections() -> None:
    """Make refusals before any handler runs one log line each: a TLS handshake
    (``handshake.py``) and a request aiohttp cannot parse."""
    handshake.install()
    aiohttp_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(found, _ParseFailures) for found in aiohttp_log.filters):
        aiohttp_log.addFilter(_ParseFailures())


def _open_location(root: Path, source_site: str, site: str, clock: Clock) -> _Location:
    root = Path(root)
    try:
        filesystem.make_directory_durably(root)
    except OSError as error:
        msg = f"storage location {str(root)!r} cannot be created: {error.strerror}"
        raise InvalidConfiguration(msg) from error
    if not root.is_dir():
        msg = f"storage location {str(root)!r} is not a folder"
        raise InvalidConfiguration(msg)
    lock = SiteLock.acquire(
        site, root, clock, file_name=LOCK_FILE, holder=REPLICA_LOCK_HOLDER
    )
    try:
        _refuse_nested(root)
        replica = InProcessReplica.open(source_site, site, root, clock)
    except BaseException:
        lock.release()
        raise
    return _Location(replica, root, lock)


def _refuse_nested(root: Path) -> None:
    """Refuse a location inside, or holding, the replica stores another process
    has locked (another server's location, an engine's site): one would delete the
    other's files as its own (a VM named ``replicas`` of the outer one is the inner
    one's stores). Locks in this process are this server's other locations, which
    the configuration already keeps apart."""
    real = root.resolve()
    candidates = [parent / LOCK_FILE for parent in real.parents]
    for folder, names, found in os.walk(real):  # never into a symlinked folder
        if LOCK_FILE in found and Path(folder) != real:
            candidates.append(Path(folder) / LOCK_FILE)
        names[:] = [name for name in names if not name.startswith(".")]
    for path in candidates:
        if path.is_file() and _held_elsewhere(path):
            msg = f"storage location {str(root)!r} and the replica stores at "
            msg += f"{str(path.parent)!r}, which another process holds, lie one "
            msg += "inside the other: give each server (and each engine) a storage "
            msg += "folder of its own, apart from every other"
            raise InvalidConfiguration(msg)


def _held_elsewhere(path: Path) -> bool:
    """Whether another open file holds the lock ``path`` now (tried, not kept)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def _whole_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²" and "１", which ``int``
    refuses or reads as another number)."""
    return text.isascii() and text.isdigit()
