"""An upload that has to go back sends the bytes it passed again, never zeros.

Found by the outside review (data loss): a replica server SIGKILLed and restarted
between two chunks of an initial copy stands at its durable length, below where the
client stood; the client went back, and its piece reader, which assumed offsets only
grow, sent the data it had passed as a hole. The replica then held zeros where the
source has data, and the engine said the VM was protected.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from engine.storage.sparse_copy import data_extents
from engine.transport.http.certificates import make_certificates
from engine.transport.http.client import HttpReplica, RetryPolicy, _Pieces
from engine.transport.http.tls import client_context
from hvdr.commands.serve_process import ServeProcess, certificate_config

MIB = 1024 * 1024


def image_with_two_runs(path: Path) -> bytes:
    """8 MiB: data at [0, 1 MiB) and [2, 3 MiB), holes elsewhere; its bytes."""
    with path.open("wb") as out:
        out.truncate(8 * MIB)
        out.write(b"\x11" * MIB)
        out.seek(2 * MIB)
        out.write(b"\x22" * MIB)
        os.fsync(out.fileno())
    return path.read_bytes()


def test_the_piece_reader_goes_back_to_data_it_passed(tmp_path: Path) -> None:
    image = tmp_path / "os.img"
    image_with_two_runs(image)
    with image.open("rb") as source:
        if len(list(data_extents(source.fileno(), 8 * MIB))) != 2:
            return  # a file system without holes: nothing to go back over
        with _Pieces(source.fileno(), MIB) as pieces:
            assert pieces.at(0)[:2] == (0, b"\x11" * MIB)
            assert pieces.at(MIB)[:2] == (MIB, b"\x22" * MIB)  # read ahead too
            assert pieces.at(3 * MIB)[:2] == (5 * MIB, b"")
            hole, data, _ = pieces.at(0)  # back: a restarted server's position
            assert (hole, data) == (0, b"\x11" * MIB)
            assert pieces.at(MIB // 2)[:2] == (0, b"\x11" * (MIB // 2))


def test_a_server_killed_between_two_chunks_gets_the_same_bytes(
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs, ["localhost", "primary-host"], ca_name="test CA")
    storage = tmp_path / "s"
    config = tmp_path / "server.toml"

    def write_config(port: int) -> None:
        config.write_text(
            certificate_config(
                site="secondary", port=port, certificate=certs / "localhost.pem",
                private_key=certs / "localhost.key", ca=certs / "ca.pem",
                primary="primary-host", storage=storage,
            ),
            encoding="utf-8",
        )  # fmt: skip

    write_config(0)
    root = Path(__file__).resolve().parents[2]
    served = ServeProcess(config, environment={"PYTHONPATH": str(root)}, cwd=root)
    served.start()
    write_config(served.port)  # the restart listens on the same port
    image = tmp_path / "os.img"
    source = image_with_two_runs(image)
    context = client_context(
        certs / "primary-host.pem", certs / "primary-host.key", certs / "ca.pem"
    )
    client = HttpReplica(
        f"https://localhost:{served.port}", site_name="secondary",
        ssl_context=context, chunk_bytes=MIB,
        retry=RetryPolicy(attempts=6, first_delay=0.2, max_delay=1.0),
    )  # fmt: skip
    uploads: list[dict[str, str]] = []
    request = client._client.request

    def killing_after_the_first_chunk(method: str, path: str, **options: Any) -> Any:
        if method == "PUT" and "/uploads/" in path:
            uploads.append(dict(options.get("params", {})))
            if len(uploads) == 2:  # chunk 1 answered, not durable: the server dies
                served.stop(signal.SIGKILL)
                served.start()
        return request(method, path, **options)

    try:
        client.create_replica("web", {"os": 8 * MIB}, 2)
        client._client.request = killing_after_the_first_chunk  # type: ignore[method-assign,assignment]
        client.send_disk_image("web", "os", image)
        client.install_initial_copy("web")
        assert {"offset": "0"} in uploads[2:]  # it did go back to byte 0
        held = [
            path
            for path in (storage / "replicas" / "web").rglob("os*")
            if path.is_file() and path.stat().st_size == 8 * MIB
        ]
        assert len(held) == 1, held
        assert held[0].read_bytes() == source
    finally:
        client.close()
        served.close()
