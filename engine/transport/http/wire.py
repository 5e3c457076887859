"""What travels between the primary and a replica server: routes, bodies, errors.

The replica interface's calls map one to one onto HTTP requests (``docs/network.md``
lists them). Control values travel as JSON; bulk data travels raw
(``application/octet-stream``): a disk image's chunks, a sealed change log exactly as
it lies on disk (the log format is the wire format: the server checks every record's
CRC32C and sequence when it applies the cycle, before any replica byte changes), block
digests, and the bytes a test VM or a recovery point reads.

**Errors keep their type across the wire.** The server answers a refusal with an HTTP
status and ``{"error": <class name>, "message": <text>}``; the client raises the same
class from :data:`ERRORS` with the server's message, prefixed with the server it came
from. A name outside that table becomes :class:`ReplicationError`: the client never
builds a type the server names freely.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

from engine.errors import (
    AuthenticationFailed,
    CorruptRecord,
    DamagedState,
    DiskRangeError,
    InvalidConfiguration,
    InvalidName,
    LogMismatch,
    NotAuthorised,
    RecoveryPointNotFound,
    ReplicationError,
    StorageFull,
    TransitionNotAllowed,
    TransportError,
)
from engine.replica.recovery_point import RecoveryPoint
from engine.storage.block_set import BlockSet
from engine.transport.interface import ReplicaStatus

API: Final = "/v1"
CHUNK_BYTES_DEFAULT: Final = 32 * 1024 * 1024
"""An upload travels in chunks this large at most (less when the server's
``max_request_bytes`` is smaller); each is one request, answered once written."""
READ_BYTES_MAX: Final = 16 * 1024 * 1024
"""The most a single read request (test VM, recovery point) returns."""
JSON_BYTES_MAX: Final = 1024 * 1024
"""The largest JSON body a server reads (names, numbers, lists of blocks)."""
DIGESTS_PER_REQUEST_MAX: Final = 1 << 16
"""The most block digests one request asks for (and one answer carries): a list of
that many block numbers stays under :data:`JSON_BYTES_MAX` for any disk, and the
answer is 1 MiB of digests. A resynchronisation of more blocks asks in parts."""
CRC_HEADER: Final = "X-Hvdr-Crc32c"
"""An upload chunk's CRC32C (hex): the server refuses a chunk that does not match."""
DIGEST_SIZE_HEADER: Final = "X-Hvdr-Digest-Bytes"

# Each error class, its wire name and the status a server answers it with. Subclasses
# come before their bases (the server picks the first class an error is an instance of).
ERRORS: Final[tuple[tuple[type[ReplicationError], HTTPStatus], ...]] = (
    (AuthenticationFailed, HTTPStatus.UNAUTHORIZED),
    (NotAuthorised, HTTPStatus.FORBIDDEN),
    (InvalidName, HTTPStatus.BAD_REQUEST),
    (LogMismatch, HTTPStatus.UNPROCESSABLE_ENTITY),
    (CorruptRecord, HTTPStatus.UNPROCESSABLE_ENTITY),
    (RecoveryPointNotFound, HTTPStatus.NOT_FOUND),
    (DiskRangeError, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE),
    (StorageFull, HTTPStatus.INSUFFICIENT_STORAGE),
    (TransitionNotAllowed, HTTPStatus.CONFLICT),
    (DamagedState, HTTPStatus.INTERNAL_SERVER_ERROR),
    (TransportError, HTTPStatus.BAD_GATEWAY),
    (InvalidConfiguration, HTTPStatus.BAD_REQUEST),
    (ReplicationError, HTTPStatus.INTERNAL_SERVER_ERROR),
)
_BY_NAME: Final = {kind.__name__: kind for kind, _ in ERRORS}


def status_of(error: ReplicationError) -> HTTPStatus:
    """The HTTP status a server answers ``error`` with."""
    for kind, status in ERRORS:
        if isinstance(error, kind):
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR  # pragma: no cover (ReplicationError last)


def error_body(error: ReplicationError) -> dict[str, str]:
    """The JSON body of a refusal."""
    for kind, _ in ERRORS:
        if isinstance(error, kind):
            return {"error": kind.__name__, "message": str(error)}
    return {"error": "ReplicationError", "message": str(error)}  # pragma: no cover


def error_from(body: object, *, server: str, status: int) -> ReplicationError:
    """The error a refusal's body names, its message prefixed with the server."""
    name = "ReplicationError"
    message = f"HTTP {status} without an error body"
    if isinstance(body, Mapping):
        found = body.get("error")
        text = body.get("message")
        if isinstance(found, str) and found in _BY_NAME:
            name = found
        if isinstance(text, str):
            message = text
    return _BY_NAME[name](f"replica server {server}: {message}")


# -- values ----------------------------------------------------------------------------


def point_to_json(point: RecoveryPoint) -> dict[str, object]:
    """A recovery point as JSON (the catalogue's own form)."""
    return point.to_json()


def point_from_json(data: object) -> RecoveryPoint:
    """A recovery point from a server's JSON; damage is :class:`TransportError`."""
    try:
        return RecoveryPoint.from_json(data)
    except DamagedState as error:
        msg = f"the replica server sent a malformed recovery point: {error}"
        raise TransportError(msg) from error


def status_to_json(status: ReplicaStatus) -> dict[str, object]:
    """A replica's status as JSON."""
    return {
        "vm_name": status.vm_name,
        "exists": status.exists,
        "points": [point.to_json() for point in status.points],
        "last_cycle_id": status.last_cycle_id,
        "disks": dict(status.disks),
        "recovered": status.recovered,
    }


def status_from_json(data: object) -> ReplicaStatus:
    """A replica's status from a server's JSON."""
    if not isinstance(data, Mapping):
        msg = f"the replica server sent a malformed status: {data!r}"
        raise TransportError(msg)
    try:
        points = tuple(point_from_json(point) for point in data["points"])
        disks = {str(disk): int(size) for disk, size in dict(data["disks"]).items()}
        recovered = data["recovered"]
        return ReplicaStatus(
            str(data["vm_name"]),
            exists=bool(data["exists"]),
            points=points,
            last_cycle_id=int(data["last_cycle_id"]),
            disks=disks,
            recovered=None if recovered is None else str(recovered),
        )
    except (KeyError, TypeError, ValueError) as error:
        msg = f"the replica server sent a malformed status ({error!r}): {data!r}"
        raise TransportError(msg) from error


def blocks_to_json(blocks: Mapping[str, BlockSet]) -> dict[str, object]:
    """Per disk, a block set in its file form (base64)."""
    return {
        disk: base64.b64encode(found.to_bytes()).decode("ascii")
        for disk, found in blocks.items()
    }


def blocks_from_json(data: object) -> dict[str, BlockSet]:
    """The block sets a server sent (each checked as a saved set is)."""
    if not isinstance(data, Mapping):
        msg = f"the replica server sent malformed block sets: {data!r}"
        raise TransportError(msg)
    found: dict[str, BlockSet] = {}
    for disk, text in data.items():
        try:
            found[str(disk)] = BlockSet.from_bytes(
                base64.b64decode(str(text), validate=True), what=f"disk {disk!r}"
            )
        except (ValueError, DamagedState) as error:
            msg = f"the replica server sent a malformed block set for disk {disk!r}: "
            raise TransportError(msg + str(error)) from error
    return found
