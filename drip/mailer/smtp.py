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
``max_per_connection`` messages.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import parse_qs, unquote, urlsplit

from drip.exceptions import ConfigError, PermanentFailure, TemporaryFailure
from drip.mailer.base import Mailer
from drip.message import Outgoing

IDLE_CHECK_SECONDS = 10.0


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
        if self.host == "localhost":
            return True
        try:
            return ip_address(self.host).is_loopback
        except ValueError:
            return False


class SmtpMailer(Mailer):
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._connection: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._last_used = 0.0
        #: connections opened so far (tests check that batches reuse one)
        self.connections_opened = 0

    def send(self, message: Outgoing) -> str:
        """Send one message; returns the server's acceptance line (the receipt)."""
        connection = self._ready_connection()
        try:
            code, reply = connection.mail(message.envelope_from)
            if code != 250:
                self._reset(code)
                # Our own sender was refused: the server or our configuration is at fault,
                # never the recipient, so this is not a reason to suppress anyone.
                raise TemporaryFailure(
                    f"sender refused: {code} {_text(reply)}",
                    code=code,
                    response=_text(reply),
                    connection=True,
                )
            code, reply = connection.rcpt(message.recipient)
            if code not in (250, 251):
                self._reset(code)
                raise _failure(code, reply, recipient=True)
            code, reply = connection.data(message.data)
        except smtplib.SMTPResponseException as error:  # DATA refused before the body
            self._reset(error.smtp_code)
            raise _failure(error.smtp_code, error.smtp_error, recipient=False) from None
        except (smtplib.SMTPException, OSError) as error:
            self.close()
            raise TemporaryFailure(f"connection failed: {error}", connection=True) from None
        if code != 250:
            self._reset(code)
            raise _failure(code, reply, recipient=False)
        self._sent_on_connection += 1
        self._last_used = time.monotonic()
        return f"{code} {_text(reply)}"

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _reset(self, code: int) -> None:
        """After a refusal: drop the connection on 421, else RSET so it can be reused."""
        if code == 421 or self._connection is None:
            self.close()
            return
        try:
            self._connection.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def _ready_connection(self) -> smtplib.SMTP:
        config = self.config
        if self._connection is not None:
            recycle = config.max_per_connection and (
                self._sent_on_connection >= config.max_per_connection
            )
            if recycle or not self._alive():
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
        context = ssl.create_default_context(cafile=config.cafile)
        connection: smtplib.SMTP
        if config.implicit_tls:
            connection = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout, context=context
            )
        else:
            connection = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
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
                _login(connection, config.username, config.password or "")
        except BaseException:
            connection.close()
            raise
        self._last_used = time.monotonic()
        return connection


def _login(connection: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN when offered (one round trip, the norm over TLS), else smtplib's choice."""
    if "plain" in connection.esmtp_features.get("auth", "").lower().split():
        connection.user, connection.password = username, password
        code, reply = connection.auth("PLAIN", connection.auth_plain)
        if code not in (235, 503):
            raise smtplib.SMTPAuthenticationError(code, reply)
        return
    connection.login(username, password)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _failure(code: int, text: bytes | str, *, recipient: bool) -> Exception:
    response = f"{code} {_text(text)}"
    if 500 <= code < 600:
        return PermanentFailure(
            f"rejected: {response}", code=code, response=response, suppress=recipient
        )
    return TemporaryFailure(f"deferred: {response}", code=code, response=response)
