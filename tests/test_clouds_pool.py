"""The OpenStack HTTP session keeps enough connections for a drift check's threads: with
requests' default (10 per host) a burst of concurrent reads makes connections that are then
thrown away ("Connection pool is full"); after `clouds._widen_pool` they are all kept."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from keystoneauth1 import session as ks_session

from hybridgrid.blocks.loading import HTTP_POOL_SIZE, _widen_pool


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as an OpenStack API

    def do_GET(self):
        time.sleep(0.2)  # long enough for the burst to overlap
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/"
    finally:
        srv.shutdown()
        thread.join(timeout=5)


def _burst(session, url: str, n: int = 24) -> list[int]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: session.get(url).status_code, range(n)))


@pytest.mark.parametrize("widened", [False, True])
def test_a_burst_of_reads_keeps_its_connections(server, caplog, widened):
    ks = ks_session.Session()  # keystoneauth's session, as openstacksdk builds it
    if widened:
        _widen_pool(ks.session)
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        codes = _burst(ks.session, server)
    assert codes == [200] * 24
    full = [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
    if widened:
        assert not full and HTTP_POOL_SIZE >= 24
    else:
        assert full  # the default pool drops connections: what the widening is for
