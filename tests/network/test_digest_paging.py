"""Block digests over the network come in parts: a disk of more blocks than one
request may ask for (or one JSON body may list) gets the same digests as in process.

Found by the outside review: a targeted resynchronisation of more than about 130,000
blocks sent them all in one JSON body, over the server's 1 MiB limit, and a whole
disk's digests came back in one unbounded answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import trustme
from server_thread import client_context, server_context, serving

from engine.storage.digests import digest_blocks, digest_file_blocks
from engine.testing import ManualClock
from engine.transport.http import wire
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization

BLOCK = 512
PART = wire.DIGESTS_PER_REQUEST_MAX
BLOCKS = 2 * PART + 123  # three parts
DISKS = {"os": BLOCKS * BLOCK}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HttpReplica, Path, trustme.CA, str]]:
    """A replica of one disk of three parts' blocks, its image a block's number in
    every 997th block (so a digest out of order or of the wrong block shows); the
    primary's image file beside it."""
    tmp = tmp_path_factory.mktemp("paging")
    image = tmp / "os.img"
    with image.open("wb") as out:
        out.truncate(BLOCKS * BLOCK)
        for block in range(1, BLOCKS, 997):
            out.seek(block * BLOCK)
            out.write(block.to_bytes(8, "little") * (BLOCK // 8))
    ca = trustme.CA()
    server = ReplicaServer(
        "secondary", "primary", Authorization.any_caller(tmp / "site"),
        CertificateAuthenticator(), ManualClock(),
    )  # fmt: skip
    with ExitStack() as stack:
        url = stack.enter_context(serving(server, server_context(ca)))
        url = url.replace("127.0.0.1", "localhost")
        client = HttpReplica(
            url, site_name="secondary", ssl_context=client_context(ca, "primary-host")
        )
        stack.callback(client.close)
        client.create_replica("web", DISKS, 2)
        client.send_disk_image("web", "os", image)
        client.install_initial_copy("web")
        yield client, image, ca, url


def test_a_whole_disk_of_three_parts_gets_every_digest_in_three_requests(
    served: tuple[HttpReplica, Path, trustme.CA, str],
) -> None:
    client, image, _, _ = served
    before = client.requests
    digests = client.block_digests("web", "os", BLOCK)
    assert client.requests - before == 1 + 3  # its size (status), then three parts
    expected = digest_file_blocks(
        image, block_bytes=BLOCK, first_block=0, block_count=BLOCKS
    )
    assert digests == expected
    assert len(set(digests)) == 1 + len(range(1, BLOCKS, 997))  # zeros, and each


def test_a_list_of_more_blocks_than_one_body_holds_goes_in_parts(
    served: tuple[HttpReplica, Path, trustme.CA, str],
) -> None:
    client, image, _, _ = served
    listed = list(range(BLOCKS - 1, -1, -1))  # every block, last first
    before = client.requests
    digests = client.block_digests("web", "os", BLOCK, blocks=listed)
    assert client.requests - before == 3
    assert digests == digest_blocks(image, BLOCK, listed)


def test_a_request_for_more_digests_than_a_part_is_refused(
    served: tuple[HttpReplica, Path, trustme.CA, str],
) -> None:
    _, _, ca, url = served
    context = client_context(ca, "primary-host")
    with httpx.Client(base_url=url, verify=context, trust_env=False) as raw:
        for body, asked in (
            ({}, "the whole disk"),
            ({"start_block": 0, "block_count": PART + 1}, str(PART + 1)),
            ({"blocks": list(range(PART + 1))}, str(PART + 1)),
        ):
            answer = raw.post(
                "/v1/vms/web/digests", json={"disk": "os", "block_bytes": BLOCK, **body}
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["message"] == (
                f"POST /v1/vms/web/digests: one request asks for at most {PART} "
                f"digests (blocks listed, or block_count from start_block), not "
                f"{asked}: ask in parts"
            )
