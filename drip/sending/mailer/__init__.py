"""Mail transports, chosen by ``DRIP_SMTP_URL``: smtp, smtps, file, console, memory.

``transport_for`` is the one reading of the URL: the mailers, ``drip doctor`` and every
command that sends check it the same way, with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from drip.core.exceptions import ConfigError
from drip.sending.mailer.base import Mailer

if TYPE_CHECKING:
    from drip.sending.mailer.smtp import SmtpConfig

__all__ = ["Mailer", "Transport", "mailer_from_url", "transport_for"]

SCHEMES = ("smtp", "smtps", "file", "console", "memory")


@dataclass(frozen=True)
class Transport:
    """What ``DRIP_SMTP_URL`` names, checked: its scheme, and the server or directory."""

    scheme: str
    smtp: SmtpConfig | None = None
    directory: Path | None = None


def transport_for(url: str, *, timeout: float = 30.0) -> Transport:
    """``url`` read and checked, without connecting or creating anything; a
    ``ConfigError`` naming what is wrong."""
    scheme = urlsplit(url).scheme
    if scheme in ("smtp", "smtps"):
        from drip.sending.mailer.smtp import SmtpConfig

        return Transport(scheme, smtp=SmtpConfig.from_url(url, timeout=timeout))
    if scheme == "file":
        return Transport(scheme, directory=Path(url.removeprefix("file://") or "./outbox"))
    if scheme in ("console", "memory"):
        return Transport(scheme)
    raise ConfigError(
        f"DRIP_SMTP_URL: unsupported scheme {scheme!r} "
        "(use smtp://, smtps://, file://DIR, console:// or memory://)"
    )


def mailer_from_url(url: str, *, timeout: float = 30.0) -> Mailer:
    """A new mailer (one connection) for ``url``."""
    transport = transport_for(url, timeout=timeout)
    if transport.smtp is not None:
        from drip.sending.mailer.smtp import SmtpMailer

        return SmtpMailer(transport.smtp)
    if transport.directory is not None:
        from drip.sending.mailer.file import FileMailer

        return FileMailer(transport.directory)
    if transport.scheme == "console":
        from drip.sending.mailer.console import ConsoleMailer

        return ConsoleMailer()
    from drip.sending.mailer.memory import MemoryMailer

    return MemoryMailer()
