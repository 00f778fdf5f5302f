"""Reading returned mail from a mailbox: ``drip inbound --imap URL`` (imap-tools).

Each unread email is handed to ``drip.feedback.inbound`` in its own transaction. What was handled
(a bounce, a complaint, an unsubscribe) is deleted; what was ignored stays, marked read,
for a person to look at, and is not read again. If handling fails (the database is
busy), the emails not yet handled are marked unread again, for the next run.

URLs: ``imaps://user:password@host[:993]/FOLDER`` (TLS from the first byte), or
``imap://user:password@host[:143]/FOLDER``, which upgrades with STARTTLS; ``?starttls=off``
logs in unencrypted, allowed on loopback only. FOLDER defaults to INBOX.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from drip.core.config import is_loopback_host
from drip.core.exceptions import ConfigError
from drip.feedback.inbound import Handled


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    username: str
    password: str
    folder: str
    #: ``ssl`` (imaps), ``starttls`` or ``off`` (loopback only)
    security: str

    @classmethod
    def from_url(cls, url: str) -> ImapConfig:
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if parts.scheme not in ("imap", "imaps") or not parts.hostname:
            raise ConfigError("--imap: expected imaps://user:password@host/FOLDER")
        if not parts.username or not parts.password:
            raise ConfigError("--imap: the URL needs the mailbox's user and password")
        security = "ssl" if parts.scheme == "imaps" else "starttls"
        if query.get("starttls") == "off" and security == "starttls":
            security = "off"
        try:
            port = parts.port or (993 if security == "ssl" else 143)
        except ValueError as error:
            raise ConfigError(f"--imap: {error}") from None
        config = cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username),
            password=unquote(parts.password),
            folder=unquote(parts.path.strip("/")) or "INBOX",
            security=security,
        )
        if security == "off" and not config.is_loopback:
            raise ConfigError(
                "--imap: refusing to send the mailbox password unencrypted off loopback "
                "(use imaps:// or STARTTLS)"
            )
        return config

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def poll(
    config: ImapConfig, handle: Callable[[bytes], Handled], *, timeout: float = 30
) -> list[Handled]:
    """Handle every unread email in the folder; delete those handled. Returns what was
    done with each, in order."""
    from imap_tools import AND, MailBox, MailBoxStartTls, MailBoxUnencrypted

    mailbox: Any
    if config.security == "ssl":
        context = ssl.create_default_context()
        mailbox = MailBox(config.host, config.port, timeout=timeout, ssl_context=context)
    elif config.security == "starttls":
        context = ssl.create_default_context()
        mailbox = MailBoxStartTls(config.host, config.port, timeout=timeout, ssl_context=context)
    else:
        mailbox = MailBoxUnencrypted(config.host, config.port, timeout=timeout)
    results: list[Handled] = []
    read: list[str] = []
    with mailbox.login(config.username, config.password, initial_folder=config.folder):
        unread = [m.uid for m in mailbox.fetch(AND(seen=False), headers_only=True, mark_seen=False)]
        try:
            for uid in unread:
                (message,) = mailbox.fetch(AND(uid=uid), mark_seen=True)
                results.append(handle(message.obj.as_bytes()))
                read.append(uid)
        except BaseException:
            if left := [uid for uid in unread if uid not in read]:
                mailbox.flag(left, "\\Seen", False)
            raise
        finally:
            handled = [
                uid for uid, result in zip(read, results, strict=True) if result.what != "ignored"
            ]
            if handled:
                mailbox.delete(handled)
    return results
