"""``drip doctor``: check an installation end to end and say what to fix, one line each.

Each check returns ``Finding``s: ``ok``, a ``warning`` (works, but probably not what you
want) or a ``problem`` (drip will not work as it should). Checks run in order and a
failed one does not stop the others, so one run lists everything to fix.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from drip.core.config import is_loopback_host
from drip.core.exceptions import DripError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from drip.core.config import Settings


class Level(StrEnum):
    OK = "ok"  #: nothing to do
    WARNING = "warning"  #: works, but probably not what you want
    PROBLEM = "problem"  #: drip will not work as it should: fix it


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


def examine(
    settings: Settings, *, dns: Callable[[str], bytes | None] | None = None
) -> list[Finding]:
    """Every check's findings; ``dns`` looks up a TXT record (for tests; default: DNS)."""
    findings: list[Finding] = []
    for check in (_database, _courses, _links, _smtp):
        try:
            findings.extend(check(settings))
        except DripError as error:
            findings.append(Finding(Level.PROBLEM, f"{check.__name__.strip('_')}: {error}"))
    findings.extend(_dkim(settings, dns or _txt_record))
    return findings


def _database(settings: Settings) -> Iterator[Finding]:
    from drip.store.engine import engine_for
    from drip.store.keys import check_key
    from drip.store.schema import current_revision, head_revision

    engine = engine_for(settings, migrate=False, create=False)
    current, head = current_revision(engine), head_revision()
    if current != head:
        yield Finding(
            Level.PROBLEM,
            f"the database schema is at {current or 'nothing'}, this drip needs {head}: "
            "run `drip db upgrade`",
        )
        return
    yield Finding(Level.OK, f"database {engine.url.render_as_string()} at schema {head}")
    check_key(engine, settings.secret_keys())
    yield Finding(Level.OK, "the signing key verifies the links already sent")
    yield from _webhooks(engine)


def _webhooks(engine: Engine) -> Iterator[Finding]:
    """Each webhook endpoint drip turned off, or that has been failing."""
    from drip.reporting.webhooks import endpoint_views

    with engine.connect() as connection:
        views = endpoint_views(connection)
    for view in views:
        e = view.endpoint
        if e.disabled_at is not None:
            yield Finding(
                Level.PROBLEM,
                f"webhook endpoint {e.id} ({e.url}) is off: {e.disabled_reason}; fix the "
                f"receiver, then `drip webhooks enable {e.id}`",
            )
        elif e.failing_since is not None:
            yield Finding(
                Level.WARNING,
                f"webhook endpoint {e.id} ({e.url}) has been failing since "
                f"{e.failing_since:%Y-%m-%d %H:%M} UTC: it is turned off after 3 days",
            )
    healthy = all(v.endpoint.disabled_at is None and not v.endpoint.failing_since for v in views)
    if views and healthy:
        yield Finding(Level.OK, f"{len(views)} webhook endpoint(s) answering")


def _courses(settings: Settings) -> Iterator[Finding]:
    from drip.core.courses import Catalog, course_warnings

    catalog = Catalog.from_dir(settings.courses_dir, strict=False)
    for problem in catalog.problems:
        yield Finding(Level.PROBLEM, problem)
    for course in catalog:
        yield Finding(Level.OK, f"course {course.slug}: {len(course.days)} days")
        for warning in course_warnings(catalog.paths[course.slug]):
            yield Finding(Level.WARNING, warning.replace(": warning: ", ": ", 1))
    if not len(catalog):
        yield Finding(Level.PROBLEM, f"no course in {settings.courses_dir} (DRIP_COURSES_DIR)")


def _links(settings: Settings) -> Iterator[Finding]:
    parts = urlsplit(settings.base_url)
    host = parts.hostname or ""
    if "base_url" not in settings.model_fields_set:
        yield Finding(
            Level.WARNING,
            f"DRIP_BASE_URL is not set: links in emails point at {settings.base_url}, "
            "which only this machine can open",
        )
    elif parts.scheme != "https" and not is_loopback_host(host):
        yield Finding(
            Level.WARNING,
            f"DRIP_BASE_URL {settings.base_url} is not https: links in emails travel in clear",
        )
    else:
        yield Finding(Level.OK, f"links in emails point at {settings.base_url}")


def _smtp(settings: Settings) -> Iterator[Finding]:
    from drip.sending.mailer import transport_for

    url = settings.smtp_url.get_secret_value()
    transport = transport_for(url, timeout=settings.smtp_timeout)  # as send-due reads it
    if transport.directory is not None:
        yield Finding(Level.WARNING, f"emails are written to files ({url}), not sent")
        return
    if transport.smtp is None:
        yield Finding(Level.WARNING, f"emails go to {transport.scheme}://, not to anyone's inbox")
        return
    from drip.sending.mailer.smtp import SmtpMailer

    config = transport.smtp
    mailer = SmtpMailer(config)
    try:
        described = mailer.check()
    finally:
        mailer.close()
    yield Finding(Level.OK, f"SMTP {config.host}:{config.port}: {described}")


def _dkim(settings: Settings, dns: Callable[[str], bytes | None]) -> Iterator[Finding]:
    if not (settings.dkim_selector and settings.dkim_private_key_file):
        yield Finding(
            Level.WARNING,
            "DKIM is not set up (DRIP_DKIM_SELECTOR, DRIP_DKIM_PRIVATE_KEY_FILE): receivers "
            "trust signed mail more",
        )
        return
    import dkim.crypto

    try:
        private = dkim.crypto.parse_pem_private_key(settings.dkim_private_key_file.read_bytes())
    except (OSError, dkim.crypto.UnparsableKeyError) as error:
        yield Finding(Level.PROBLEM, f"DKIM key {settings.dkim_private_key_file}: {error}")
        return
    from drip.core.courses import Catalog

    domains = {
        course.sender.address.rpartition("@")[2].lower()
        for course in Catalog.from_dir(settings.courses_dir, strict=False)
    }
    for domain in sorted(domains):
        name = f"{settings.dkim_selector}._domainkey.{domain}"
        try:
            record = dns(name)
        except DripError as error:
            yield Finding(Level.WARNING, f"DKIM: could not look up {name} ({error}): check it")
            continue
        if record is None:
            yield Finding(Level.PROBLEM, f"DKIM: no TXT record at {name}: publish the public key")
            continue
        tags = dict(
            part.strip().partition("=")[::2]
            for part in record.decode("ascii", "replace").split(";")
        )
        try:
            public = dkim.crypto.parse_public_key(base64.b64decode(tags.get("p", "")))
        except (ValueError, dkim.crypto.UnparsableKeyError):
            yield Finding(Level.PROBLEM, f"DKIM: the record at {name} holds no usable key")
            continue
        if public["modulus"] != private["modulus"]:
            yield Finding(
                Level.PROBLEM,
                f"DKIM: the key published at {name} does not match "
                f"{settings.dkim_private_key_file}",
            )
        else:
            yield Finding(Level.OK, f"DKIM: {name} matches the signing key")


def _txt_record(name: str) -> bytes | None:
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=5)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as error:
        raise DripError(str(error) or type(error).__name__) from None
    return b"".join(b"".join(record.strings) for record in answer)
