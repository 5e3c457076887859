"""Chunks of one upload sent at once (a client's retry racing its first attempt, two
clients): one is acknowledged, the others are refused with the offset to resume
from, and the part file holds exactly the acknowledged chunk's bytes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import google_crc32c

from engine.transport.http.uploads import OffsetMismatch, Uploads, initial_key

CHUNK = 2 * 1024 * 1024
WRITERS = 6
ROUNDS = 8


def race(uploads: Uploads, key: str, offset: int) -> dict[int, int | str]:
    """WRITERS threads send a different chunk at ``offset`` together; what each got."""
    barrier = threading.Barrier(WRITERS)
    outcomes: dict[int, int | str] = {}

    def send(writer: int) -> None:
        data = bytes([writer + 1]) * CHUNK
        barrier.wait(10)
        try:
            outcomes[writer] = uploads.write(
                "web", key, offset, data, crc32c=google_crc32c.value(data)
            )
        except OffsetMismatch as refused:
            outcomes[writer] = f"refused at {refused.received}"

    threads = [threading.Thread(target=send, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_racing_chunks_of_one_upload_leave_one_acknowledged_whole(
    tmp_path: Path,
) -> None:
    uploads = Uploads(tmp_path)
    key = initial_key("os")
    expected = bytearray()
    for round_number in range(ROUNDS):
        offset = round_number * CHUNK
        outcomes = race(uploads, key, offset)
        accepted = [w for w, got in outcomes.items() if got == offset + CHUNK]
        assert len(accepted) == 1, outcomes
        refused = {got for w, got in outcomes.items() if w not in accepted}
        assert refused <= {f"refused at {offset + CHUNK}"}, outcomes
        assert len(refused) == 1  # every other writer was told where to resume
        expected += bytes([accepted[0] + 1]) * CHUNK
        assert uploads.received("web", key) == offset + CHUNK
    part = uploads.finish("web", key, len(expected))
    assert part.read_bytes() == bytes(expected)
    assert uploads.held() == 0  # no lock is kept for an upload nobody is sending
    # The acknowledgement's temporary file never outlives a write.
    assert sorted(os.listdir(part.parent)) == sorted([part.name, f"{key}.ack"])
