"""``smtp://`` and ``smtps://``: a reused SMTP connection with STARTTLS and AUTH.

URL forms::

    smtp://user:pass@host:587      STARTTLS when offered (required before AUTH off loopback)
    smtps://user:pass@host:465     TLS from the first byte
    smtp://host:25?starttls=off    plain (a local relay or catcher)
    ?starttls=require              refuse to send if the server does not offer STARTTLS
    ?cafile=/path/ca.pem           trust this CA (self-signed test servers)
    ?max_per_connection=100        reconnect after this many messages (0: never)

The connection is opened on first use and kept across messages; it is checked with
NOOP after being idle, re-opened after any error, and recycled after
``max_per_connection`` messages. With PIPELINING (RFC 2920) a message's MAIL, RCPT and
DATA go in one write and, through ``submit``, in the same write as the previous message's
content: one round trip per message, the previous message's outcome read with the next
one's envelope replies.
"""

from __future__ import annotations

import functools
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from drip.core.config import is_loopback_host
from drip.core.exceptions import (
    ConfigError,
    DripError,
    MailError,
    PermanentFailure,
    TemporaryFailure,
)
from drip.sending.mailer.base import Mailer, Settled
from drip.sending.message import Outgoing

IDLE_CHECK_SECONDS = 10.0
#: the most lines, and bytes, one SMTP reply may have (real ones have a dozen lines)
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 64 * 1024
#: what may appear between the angle brackets of MAIL FROM / RCPT TO
_WIRE_ADDRESS = re.compile(r"[!-;=?-~]+@[A-Za-z0-9.-]+")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: str  # "auto", "require" or "off"
    username: str | None
    password: str | None
    cafile: str | None
    max_per_connection: int
    timeout: float

    @classmethod
    def from_url(cls, url: str, *, timeout: float) -> SmtpConfig:
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        implicit = parts.scheme == "smtps"
        starttls = "off" if implicit else query.get("starttls", "auto")
        if starttls not in ("auto", "require", "off"):
            raise ConfigError("DRIP_SMTP_URL: starttls must be auto, require or off")
        if not parts.hostname:
            raise ConfigError("DRIP_SMTP_URL: no host (e.g. smtp://user:pass@mail.example:587)")
        try:
            port = parts.port or (465 if implicit else 587)
            per_connection = int(query.get("max_per_connection", "100"))
        except ValueError as error:
            raise ConfigError(f"DRIP_SMTP_URL: {error}") from None
        return cls(
            host=parts.hostname,
            port=port,
            implicit_tls=implicit,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            cafile=query.get("cafile"),
            max_per_connection=per_connection,
            timeout=timeout,
        )

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


class SmtpMailer(Mailer):
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._connection: smtplib.SMTP | None = None
        #: messages sent on the current connection, and when it was last used (monotonic)
        self._sent_on_connection: int
        self._last_used: float
        #: connections opened so far (tests check that batches reuse one)
        self.connections_opened = 0
        #: the message whose envelope is accepted and whose content (with its end of
        #: data) waits to go out with the next message's envelope, or with ``settle``
        self._in_flight: tuple[Outgoing, bytes] | None = None

    def send(self, message: Outgoing) -> str:
        """Send one message; returns the server's acceptance line (the receipt)."""
        if self._in_flight is not None:
            raise RuntimeError("settle() the message in flight before send()")
        return [*self.submit(message), *self.settle()][-1].result()

    def submit(self, message: Outgoing) -> list[Settled]:
        """Send ``message``. With PIPELINING, once its envelope is accepted its content
        waits to go out in one write with the next message's envelope (a server answers
        both at once), and its outcome comes with that ``submit`` or with ``settle``;
        without, at once."""
        try:
            sender = _wire_address(message.envelope_from)
            recipient = _wire_address(message.recipient)
        except PermanentFailure as error:
            return [Settled(message, error=error)]  # one in flight stays so
        content = _dot_stuffed(message.data) + b".\r\n"
        held, settled = None, []
        if self._can_follow():  # decided once: no recycling or idle check comes between
            held, self._in_flight = self._in_flight, None
            assert self._connection is not None
            connection = self._connection
        else:
            settled = self.settle()
            for each in settled:
                if _lost(each):
                    return [*settled, Settled(message, error=each.error)]  # gone: not this one
            try:
                connection = self._ready_connection()
            except DripError as error:
                return [*settled, Settled(message, error=error)]
        previous = held[0] if held else None
        pipelining = connection.has_extn("pipelining")
        commands = (f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>", "DATA")
        try:
            if pipelining:
                envelope = "".join(f"{command}\r\n" for command in commands).encode("ascii")
                connection.send(held[1] + envelope if held else envelope)
                if previous is not None:
                    outcome = self._final(previous, reset=False)
                    settled.append(outcome)
                    previous = None
                    if _lost(outcome):
                        return [*settled, Settled(message, error=outcome.error)]  # lost both
                    if self._connection is None:  # closing (421): this one starts afresh
                        return [*settled, *self.submit(message)]
                replies = []
                for _ in commands:
                    replies.append(connection.getreply())
                    if replies[-1][0] == 421:  # closing: no further replies will come
                        break
            else:
                replies = []
                for command, wanted in zip(commands, (250, 250, 354), strict=True):
                    connection.putcmd(command)
                    replies.append(connection.getreply())
                    if replies[-1][0] not in (wanted, 251):
                        break
            self._check_envelope(connection, replies)
            if not pipelining:
                connection.send(content)
        except (smtplib.SMTPException, OSError) as error:
            lost = self._connection_lost(error)
            unsettled = [previous, message] if previous is not None else [message]
            return [*settled, *(Settled(each, error=lost) for each in unsettled)]
        except MailError as error:
            return [*settled, Settled(message, error=error)]
        self._sent_on_connection += 1
        self._last_used = time.monotonic()
        if pipelining:
            self._in_flight = (message, content)
            return settled
        return [*settled, self._final(message, reset=True)]

    def settle(self) -> list[Settled]:
        """Send the content of the message in flight, if there is one, and read its
        outcome."""
        if self._in_flight is None:
            return []
        (message, content), self._in_flight = self._in_flight, None
        assert self._connection is not None
        try:
            self._connection.send(content)
        except (smtplib.SMTPException, OSError) as error:
            return [Settled(message, error=self._connection_lost(error))]
        return [self._final(message, reset=True)]

    def _final(self, message: Outgoing, *, reset: bool) -> Settled:
        """Read the reply to ``message``'s end of data. ``reset``: RSET after a refusal
        (not when the next message's commands already follow it)."""
        assert self._connection is not None
        try:
            code, reply = self._connection.getreply()
        except (smtplib.SMTPException, OSError) as error:
            return Settled(message, error=self._connection_lost(error))
        if code != 250:
            if reset or code == 421:
                self._reset(code)
            return Settled(message, error=_failure(code, reply, recipient=False))
        return Settled(message, reply=f"{code} {_text(reply)}")

    def _connection_lost(self, error: Exception) -> TemporaryFailure:
        """Close the connection that failed with ``error``; the failure to report."""
        self.close()
        return TemporaryFailure(f"connection failed: {error}", connection=True)

    def _can_follow(self) -> bool:
        """Whether the next message can follow the one in flight on its connection at
        once (no recycling or idle check due first)."""
        return (
            self._in_flight is not None
            and self._connection is not None
            and self._connection.has_extn("pipelining")
            and not self._recycle_due()
            and time.monotonic() - self._last_used < IDLE_CHECK_SECONDS
        )

    def _recycle_due(self) -> bool:
        limit = self.config.max_per_connection
        return bool(limit) and self._sent_on_connection >= limit

    def check(self) -> str:
        """Connect, secure and log in as for sending, send nothing; what was done."""
        connection = self._ready_connection()
        secured = isinstance(connection.sock, ssl.SSLSocket)
        how = "TLS" if self.config.implicit_tls else "STARTTLS" if secured else "no TLS"
        login = f"logged in as {self.config.username}" if self.config.username else "no login"
        return f"connected ({how}), {login}"

    def _check_envelope(self, connection: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> None:
        """Raise the right failure unless MAIL, RCPT and DATA were all accepted."""
        (mail_code, mail_reply), *rest = replies
        rcpt_code, rcpt_reply = rest[0] if rest else (0, b"")
        data_code = rest[1][0] if len(rest) > 1 else 0
        if mail_code == 250 and rcpt_code in (250, 251) and data_code == 354:
            return
        if data_code == 354:  # pipelined DATA accepted after a refusal: end it empty
            connection.send(".\r\n")
            connection.getreply()
        if mail_code != 250:
            self._reset(mail_code)
            # Our own sender was refused: the server or our configuration is at fault,
            # never the recipient, so this is not a reason to suppress anyone.
            raise TemporaryFailure(
                f"sender refused: {mail_code} {_text(mail_reply)}",
                code=mail_code,
                response=_text(mail_reply),
                connection=True,
            )
        if rcpt_code not in (250, 251):
            self._reset(rcpt_code)
            raise _failure(rcpt_code, rcpt_reply, recipient=True)
        data_code, data_reply = rest[1]
        self._reset(data_code)
        raise _failure(data_code, data_reply, recipient=False)

    def close(self) -> None:
        """Close the connection; a message still in flight is left unsettled (``settle``
        it first)."""
        self._in_flight = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _reset(self, code: int) -> None:
        """After a refusal: drop the connection on 421 (no QUIT: the server is closing it,
        and may already be reading what was pipelined as a message), else RSET so it can
        be reused."""
        if code == 421 or self._connection is None:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()
            return
        try:
            self._connection.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def _ready_connection(self) -> smtplib.SMTP:
        config = self.config
        if self._connection is not None and (self._recycle_due() or not self._alive()):
            self.close()
        if self._connection is None:
            try:
                self._connection = self._connect()
            except (smtplib.SMTPException, OSError) as error:
                self._connection = None
                if isinstance(error, smtplib.SMTPAuthenticationError):
                    raise ConfigError(
                        f"SMTP login refused: {error.smtp_code} {_text(error.smtp_error)}"
                    ) from None
                raise TemporaryFailure(
                    f"cannot connect to {config.host}:{config.port}: {error}", connection=True
                ) from None
            self._sent_on_connection = 0
            self.connections_opened += 1
        return self._connection

    def _alive(self) -> bool:
        if time.monotonic() - self._last_used < IDLE_CHECK_SECONDS:
            return True
        assert self._connection is not None
        try:
            return self._connection.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        context = _tls_context(config.cafile)
        connection: smtplib.SMTP
        if config.implicit_tls:
            connection = _BoundedSMTP_SSL(
                config.host,
                config.port,
                timeout=config.timeout,
                context=context,
                local_hostname=_local_hostname(),
            )
        else:
            connection = _BoundedSMTP(
                config.host, config.port, timeout=config.timeout, local_hostname=_local_hostname()
            )
        try:
            connection.ehlo()
            if not config.implicit_tls and config.starttls != "off":
                if connection.has_extn("starttls"):
                    connection.starttls(context=context)
                    connection.ehlo()
                elif config.starttls == "require":
                    raise ConfigError(
                        f"{config.host} does not offer STARTTLS (starttls=require in DRIP_SMTP_URL)"
                    )
            if config.username:
                encrypted = isinstance(connection.sock, ssl.SSLSocket)
                if not encrypted and not config.is_loopback:
                    raise ConfigError(
                        "refusing to send the SMTP password unencrypted: the "
                        "server offers no STARTTLS (use smtps:// or a TLS port)"
                    )
                connection.login(config.username, config.password or "")
        except BaseException:
            connection.close()
            raise
        self._last_used = time.monotonic()
        return connection


@functools.cache
def _tls_context(cafile: str | None) -> ssl.SSLContext:
    """One verifying TLS context per CA file: loading the system's CAs takes milliseconds,
    too long to repeat for every connection."""
    return ssl.create_default_context(cafile=cafile)


def _wire_address(address: str) -> str:
    """The address as it goes into MAIL FROM / RCPT TO; anything that could break the
    command line (CR, LF, angle brackets, spaces, non-ASCII) is refused."""
    if not _WIRE_ADDRESS.fullmatch(address):
        raise PermanentFailure(f"not a deliverable address: {address!r}")  # ours to fix
    return address


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA sends it: leading dots doubled, ending in CRLF.

    Messages drip builds have no line starting with a dot (``Outgoing``), so this is
    normally one scan instead of smtplib's regular expressions over the whole message.
    """
    if data.startswith(b".") or b"\r\n." in data:
        data = (b"." if data.startswith(b".") else b"") + data.replace(b"\r\n.", b"\r\n..")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _text(value: bytes | str) -> str:
    """A server's words as safe text: decoded, control characters (NUL, ESC …) escaped,
    so a hostile reply cannot reach a log or a terminal raw."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class _BoundedSMTP(smtplib.SMTP):
    """Reads each reply within ``timeout`` seconds in all (not per read, which a server
    dribbling one byte a second never trips), of at most ``MAX_REPLY_LINES`` lines and
    ``MAX_REPLY_BYTES`` bytes: a hostile server cannot hold a worker or fill its memory."""

    _pending = b""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        # a pipelined envelope leaves at once, not once the message before it is
        # acknowledged (Nagle's algorithm holds back a small write behind unacked data)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def getreply(self) -> tuple[int, bytes]:
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        deadline = time.monotonic() + self.timeout  # type: ignore[attr-defined]
        lines: list[bytes] = []
        size = 0
        while True:
            line = self._line(deadline)
            size += len(line)
            if len(lines) >= MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
                self.close()
                raise smtplib.SMTPResponseException(500, b"reply too long")
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                return -1, b"\n".join(lines)
            if line[3:4] != b"-":
                return code, b"\n".join(lines)

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._pending) > MAX_REPLY_BYTES:
                self.close()
                raise smtplib.SMTPServerDisconnected("the server's reply took too long")
            assert self.sock is not None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                self.close()
                raise smtplib.SMTPServerDisconnected("the server's reply took too long") from None
            except OSError as error:
                self.close()
                raise smtplib.SMTPServerDisconnected(f"connection lost: {error}") from None
            if not chunk:
                self.close()
                raise smtplib.SMTPServerDisconnected("connection unexpectedly closed")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        reply = super().starttls(*args, **kwargs)
        self._pending = b""  # bytes sent in clear after "220" must not pass for TLS ones
        return reply

    def close(self) -> None:
        self._pending = b""
        super().close()


class _BoundedSMTP_SSL(_BoundedSMTP, smtplib.SMTP_SSL):  # noqa: N801 (mirrors smtplib)
    pass


@functools.cache
def _local_hostname() -> str:
    """The name we greet with (EHLO): looked up once, not per connection."""
    return socket.getfqdn()


def _lost(settled: Settled) -> bool:
    """Whether the message was lost with its connection."""
    return isinstance(settled.error, TemporaryFailure) and settled.error.connection


def _failure(code: int, text: bytes | str, *, recipient: bool) -> MailError:
    response = f"{code} {_text(text)}"
    if 500 <= code < 600:
        return PermanentFailure(
            f"rejected: {response}", code=code, response=response, suppress=recipient
        )
    return TemporaryFailure(f"deferred: {response}", code=code, response=response)
