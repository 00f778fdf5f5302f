"""Test helpers for drip and for projects built on it (needs the ``dev`` extra: aiosmtpd).

``SmtpSink`` is a real SMTP server on 127.0.0.1 that records what it receives and can be
told to misbehave: refuse a recipient with any code, refuse the next DATA, drop the
connection mid-message, or answer slowly. It advertises PIPELINING unless told not to.

    with SmtpSink() as sink:
        settings = Settings(smtp_url=sink.url, ...)
        ...
        assert sink.message_ids() == [...]
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any


@dataclass(frozen=True)
class Received:
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    #: the message came over TLS (STARTTLS or implicit)
    tls: bool = False

    @property
    def message_id(self) -> str:
        return str(BytesHeaderParser().parsebytes(self.data).get("Message-ID", ""))


def free_port() -> int:
    """A port nothing listens on right now: for tests of a server that is down. (A server
    of the tests' own binds port 0 instead, as ``SmtpSink`` does.)"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.sink.pipelining:  # aiosmtpd reads pipelined commands; it just never says so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        with self.sink.lock:
            self.sink.noops += 1
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.sink.lock:
            reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.sink.lock:
            self.sink.data_started += 1
            delay = self.sink.data_delay
        if delay:
            await asyncio.sleep(delay)
        with self.sink.lock:
            if self.sink.drop_next:
                self.sink.drop_next -= 1
                server.transport.close()  # vanish mid-message, like a crashed server
                return "421 gone"
            if self.sink.data_replies:
                return self.sink.data_replies.pop(0)
            self.sink.received.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    envelope.original_content,
                    tls=session.ssl is not None or self.sink.implicit_tls is not None,
                )
            )
            count = len(self.sink.received)
        return f"250 2.0.0 Ok: queued as drip-sink-{count}"


class SmtpSink:
    def __init__(
        self,
        *,
        tls_context: Any = None,
        credentials: tuple[str, str] | None = None,
        require_starttls: bool = True,
        implicit_tls: Any = None,
        port: int | None = None,
        pipelining: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        #: the address served (loopback unless a test needs a server off it)
        self.host = host
        #: the port served; with none given, the server binds a free one itself (no
        #: window in which another process could take a port chosen beforehand)
        self.port = port or 0
        #: advertise PIPELINING (RFC 2920); off, clients must wait for each reply
        self.pipelining = pipelining
        self.lock = threading.Lock()
        self.received: list[Received] = []
        #: recipient (lower case) → full SMTP reply to RCPT, e.g. "550 5.1.1 no such user"
        self.rcpt_replies: dict[str, str] = {}
        #: replies for the next DATA commands, used up in order
        self.data_replies: list[str] = []
        #: how many of the next messages to answer by dropping the connection
        self.drop_next = 0
        #: seconds to wait before answering each message's end of data (a slow server)
        self.data_delay = 0.0
        #: messages whose content arrived, answered or not yet
        self.data_started = 0
        #: NOOP commands received (a client checking an idle connection)
        self.noops = 0
        self.logins: list[str] = []
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        #: an SSLContext: TLS from the first byte (smtps://), as on port 465
        self.implicit_tls = implicit_tls
        self._credentials = credentials
        self._controller: Any = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?starttls=off"

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            login = (auth_data.login.decode(), auth_data.password.decode())
            ok = login == self._credentials
            if ok:
                self.logins.append(login[0])
            return AuthResult(success=ok, handled=False)

        options: dict[str, Any] = {"data_size_limit": 50 * 1024 * 1024}
        if self._tls_context is not None:
            options.update(tls_context=self._tls_context, require_starttls=self._require_starttls)
        if self.implicit_tls is not None:
            options.update(ssl_context=self.implicit_tls)
        if self._credentials is not None:
            # AUTH only over TLS when the sink offers TLS; a plain sink is a local relay
            secure = self._tls_context is not None or self.implicit_tls is not None
            options.update(authenticator=authenticate, auth_require_tls=secure)

        class _Controller(Controller):  # type: ignore[misc]
            def _trigger_server(self) -> None:
                if not self.port:  # bound to port 0: learn which one
                    self.port = self.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                super()._trigger_server()

        self._controller = _Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10, **options
        )
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def message_ids(self) -> list[str]:
        with self.lock:
            return [message.message_id for message in self.received]
