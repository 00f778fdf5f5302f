"""Mail transports, chosen by ``DRIP_SMTP_URL``: smtp, smtps, file, console, memory."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from drip.core.exceptions import ConfigError
from drip.sending.mailer.base import Mailer

__all__ = ["Mailer", "mailer_from_url"]


def mailer_from_url(url: str, *, timeout: float = 30.0) -> Mailer:
    """A new mailer (one connection) for ``url``."""
    scheme = urlsplit(url).scheme
    if scheme in ("smtp", "smtps"):
        from drip.sending.mailer.smtp import SmtpConfig, SmtpMailer

        return SmtpMailer(SmtpConfig.from_url(url, timeout=timeout))
    if scheme == "file":
        from drip.sending.mailer.file import FileMailer

        path = url.removeprefix("file://") or "./outbox"
        return FileMailer(Path(path))
    if scheme == "console":
        from drip.sending.mailer.console import ConsoleMailer

        return ConsoleMailer()
    if scheme == "memory":
        from drip.sending.mailer.memory import MemoryMailer

        return MemoryMailer()
    raise ConfigError(
        f"DRIP_SMTP_URL: unsupported scheme {scheme!r} "
        "(use smtp://, smtps://, file://DIR, console:// or memory://)"
    )
