"""A refusal tells the primary what was wrong, never where the server keeps its
files: a storage location's path reads ``<storage location>`` in the answer, and
only the server's own log line has it (found by the outside review)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trustme
from server_thread import client_context, server_context, serving

from engine.errors import DamagedState
from engine.testing import ManualClock
from engine.transport.http.auth import CertificateAuthenticator
from engine.transport.http.client import HttpReplica
from engine.transport.http.server import ReplicaServer
from engine.transport.http.server_config import Authorization


@pytest.mark.parametrize("folder", ["location", 'quote\\d"back'])
def test_a_damaged_store_is_refused_without_the_servers_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, folder: str
) -> None:
    """Also a folder whose name a message's repr() escapes (found by the outside
    review: a backslash in the path left it in the answer)."""
    caplog.set_level(logging.INFO, logger="hvdr.serve")
    root = tmp_path / folder
    ca = trustme.CA()

    def server() -> ReplicaServer:
        return ReplicaServer(
            "secondary", "primary", Authorization.any_caller(root),
            CertificateAuthenticator(), ManualClock(),
        )  # fmt: skip

    def client(url: str) -> HttpReplica:
        return HttpReplica(
            url.replace("127.0.0.1", "localhost"), site_name="secondary",
            ssl_context=client_context(ca, "primary-host"),
        )  # fmt: skip

    with serving(server(), server_context(ca)) as url:
        first = client(url)
        first.create_replica("web", {"os": 65536}, 2)
        first.close()
    (root / "replicas" / "web" / "store.json").write_text("{not json")
    with serving(server(), server_context(ca)) as url:  # it opens the damaged store
        second = client(url)
        try:
            with pytest.raises(DamagedState) as refused:
                second.status("web")
        finally:
            second.close()
    told = str(refused.value)
    assert "<storage location>/replicas/web/store.json" in told
    assert str(tmp_path) not in told
    [line] = [
        json.loads(record.getMessage())
        for record in caplog.records
        if '"refused"' in record.getMessage()
    ]
    assert repr(str(root / "replicas" / "web" / "store.json"))[1:-1] in line["message"]
