"""Byte layout of a change log (``<disk>.hrl``), shared by its writer and its readers.

Constants only, like LevelDB's ``log_format.h``: the writer (:class:`ChangeLog`) and the
readers (reopen, :func:`read_sealed_log`, :func:`verify_sealed_log`) in
``engine/log/writer.py`` must agree on every byte, so the agreement lives in one place.
The full specification, with a worked example, is ``docs/change-log-format.md``.

A log is one header followed by zero or more records, all little-endian::

    log    := header record*
    header := magic[8] format_version:u16 disk_id_bytes:u16 epoch:u64
              first_sequence:u64 disk_id[disk_id_bytes] header_crc:u32
    record := sequence:u64 offset:u64 length:u32 record_crc:u32 payload[length]

``header_crc`` is the CRC32C (Castagnoli) of every header byte before it.
``record_crc`` is the CRC32C of ``sequence``, ``offset`` and ``length`` (the 20 bytes
before it) followed by the payload. Sequence numbers are consecutive, starting at
``first_sequence``, and keep counting across logs of the same disk (a new log starts
where the sealed one stopped).
"""

from __future__ import annotations

import struct
from typing import Final

MAGIC: Final = b"HVDR-HRL"
"""First 8 bytes of every log: tells a change log from any other file at a glance."""

FORMAT_VERSION: Final = 1
"""Bumped on an incompatible layout change; readers refuse versions unknown to them."""

LOG_SUFFIX: Final = ".hrl"
"""Appended to the disk's file name: ``vm.os.img`` logs into ``vm.os.img.hrl``."""

HEADER_FIXED: Final = struct.Struct("<8sHHQQ")
"""magic, format_version, disk_id_bytes, epoch, first_sequence (28 bytes)."""

HEADER_CRC: Final = struct.Struct("<I")
"""header_crc, after the disk id, covering every header byte before it."""

DISK_ID_BYTES_MAX: Final = 64
"""Same limit as a disk name (engine/names.py); bounds what a damaged header can ask
the reader to allocate before its CRC has been checked."""

RECORD_COVERED: Final = struct.Struct("<QQI")
"""sequence, offset, length: the record-header fields its CRC covers (20 bytes)."""

RECORD_HEADER: Final = struct.Struct("<QQII")
"""sequence, offset, length, record_crc (24 bytes); the payload follows."""

RECORD_PAYLOAD_BYTES_MAX: Final = 16 * 1024 * 1024
"""Largest payload in one record. Guest writes are at most a few MiB; a longer write is
split into several records by the writer. The limit bounds what a damaged length field
can make a reader allocate (it is also checked against the bytes left in the file)."""

RECORD_PAYLOAD_BYTES_MIN: Final = 1
"""An empty write changes nothing; a zero length marks a zero-filled (torn) tail."""

SEQUENCE_MAX: Final = 2**64 - 1
"""Sequence numbers, offsets and epochs are u64 on disk."""

OFFSET_MAX: Final = 2**64 - 1
"""Largest disk offset a record can name (u64)."""

EPOCH_MAX: Final = 2**64 - 1
"""Largest replication epoch a header can carry (u64)."""

LOG_LIMIT_DIVISOR: Final = 2
"""A log *file* (header and record framing included) that outgrows
``disk_size_bytes // LOG_LIMIT_DIVISOR`` forces resynchronisation: Hyper-V Replica does
the same at half the disk, because past that point comparing blocks costs less than
shipping the log. The file is what is stored and shipped, so it is what is measured:
many small writes cost far more than their payload (24 bytes of framing each)."""

SCAN_CHUNK_BYTES: Final = 1024 * 1024
"""Payloads are checksummed in chunks of this size when they need not be kept, so a
full verification pass holds at most one chunk in memory."""
