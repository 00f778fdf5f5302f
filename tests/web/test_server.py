"""The HTTP server's limits, against a real uvicorn on loopback: slow and vanishing
clients cost a bounded time and one log line."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from drip.web import create_app, server
from drip.web import deps as web_deps
from drip.web.server import BoundedHttp
from tests.fixtures import make_settings


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """drip's app on uvicorn with BoundedHttp, header and body limits cut to half a
    second; yields the port."""
    monkeypatch.setattr(server, "HEADER_SECONDS", 0.5)
    monkeypatch.setattr(web_deps, "BODY_SECONDS", 0.5)
    listener = server.listen("127.0.0.1", 0)
    config = uvicorn.Config(
        create_app(make_settings(tmp_path)), http=BoundedHttp, log_level="info", lifespan="on"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield listener.getsockname()[1]
    instance.should_exit = True
    thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing; fails if it keeps the connection open."""
    sock.settimeout(seconds)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_a_client_sending_headers_slowly_is_cut_off(running: int) -> None:
    """Request headers that never finish: the connection is closed after the header
    bound, freeing its file descriptor."""
    with socket.create_connection(("127.0.0.1", running)) as sock:
        sock.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert _closed_within(sock, 5) == b""
        assert time.monotonic() - started < 3


def test_a_body_that_never_arrives_gets_408(running: int) -> None:
    """Headers promising 100 bytes, then 10: a 408 after the body bound, nothing stored."""
    with socket.create_connection(("127.0.0.1", running)) as sock:
        sock.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"email": '
        )
        sock.settimeout(5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_client_leaving_mid_body_is_one_log_line(
    running: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects half-way through its body is logged as one line, not a
    traceback, and the server carries on."""
    caplog.set_level(logging.INFO, logger="drip")
    with socket.create_connection(("127.0.0.1", running)) as sock:
        sock.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"email": '
        )
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while "client-disconnected" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "Traceback" not in caplog.text
    with socket.create_connection(("127.0.0.1", running)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _closed_within(sock, 5).startswith(b"HTTP/1.1 200")


def test_serving_starts_with_what_start_up_made_set_aside_from_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`drip serve` leaves the objects start-up made out of full collections (each one
    otherwise walks them all while requests wait): by the time uvicorn serves, they are
    frozen."""
    import gc

    frozen_when_serving: list[int] = []
    # (this process's logging and file limit stay as they are)
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda self: None)
    monkeypatch.setattr(server, "raise_file_limit", lambda: None)
    monkeypatch.setattr(
        uvicorn.Server,
        "run",
        lambda self, sockets: frozen_when_serving.append(gc.get_freeze_count()),
    )
    listener = server.listen("127.0.0.1", 0)
    try:
        server.run(create_app(make_settings(tmp_path)), listener, access_log=False, json_logs=False)
    finally:
        gc.unfreeze()  # (the test process goes on collecting as before)
        listener.close()
    [frozen] = frozen_when_serving
    assert frozen > 10_000
