"""Running the app on uvicorn, with the limits a public endpoint needs.

uvicorn bounds idle keep-alive connections but not a client that sends its request
headers slowly: such a client would hold its connection (a file descriptor) for ever.
``BoundedHttp`` closes a connection whose request line and headers have not all arrived
within ``HEADER_SECONDS`` (nginx's ``client_header_timeout`` is 60 s); the body has its
own bound in the routes that read one. Behind a reverse proxy (recommended on the public
internet), the proxy applies its own limits first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from drip.core import memory

logger = logging.getLogger("drip.web")
HEADER_SECONDS = 30.0


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing connections whose headers arrive too slowly."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(HEADER_SECONDS, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        logger.info("event=slow-client-closed client=%s", (self.client or ("?",))[0])
        self.transport.close()


def raise_file_limit() -> None:
    """Use every file descriptor the system allows this process (each connection is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # some systems refuse RLIM_INFINITY: keep the default
            pass


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before anything else starts (a busy port fails first)."""
    from drip.core.exceptions import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    listener.listen(2048)
    return listener


#: the exit status of a second SIGINT or SIGTERM, which does not wait (128 + SIGINT)
INTERRUPTED = 130


def run(app: Any, listener: socket.socket, *, access_log: bool, json_logs: bool) -> None:
    """Serve ``app`` on ``listener`` until SIGINT or SIGTERM. The first stops the senders
    claiming (``WebState.stop_sending``: what is in flight is settled and recorded) while
    uvicorn finishes the requests in progress; a second exits at once."""
    import uvicorn

    from drip.core.logs import configure

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                os._exit(INTERRUPTED)
            app.state.drip.stop_sending()
            super().handle_exit(sig, frame)

    raise_file_limit()
    server = Server(
        uvicorn.Config(
            app,
            http=BoundedHttp,
            log_level="info",
            access_log=access_log,
            proxy_headers=False,  # DRIP_TRUST_FORWARDED_FOR decides, in drip.web.deps
            timeout_keep_alive=5,
            timeout_graceful_shutdown=30,
            log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        )
    )
    if json_logs:
        configure("INFO", json_lines=True)  # after uvicorn's Config, which sets up its own
    # what start-up made lives as long as the process: out of the collector's full
    # collections, which under load walked every object every few seconds (60–130 ms
    # with every request waiting, the slowest 1 % of signups at 32 connections)
    memory.set_aside()
    server.run(sockets=[listener])
