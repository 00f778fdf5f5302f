"""Test sends: one real email of a course, as a subscriber would get it, to the teacher.

It goes through the configured transport (``DRIP_SMTP_URL``) at once and outside the
outbox: it belongs to no subscriber, writes no row and is not retried. The subject starts
with "[Test]" and an ``X-Drip-Test: yes`` header marks it; its links are signed with the
real key for a made-up subscriber: the class link leads to the class, the unsubscribe
and confirmation links open their pages, and their buttons answer that the link belongs
to nobody (nothing is changed).
"""

from __future__ import annotations

from datetime import datetime

from drip.core.config import Settings
from drip.core.courses import Course
from drip.core.entries import normalize_email
from drip.core.exceptions import InvalidSubscriber
from drip.core.models import new_uid
from drip.sending.compose import SAMPLE, Composer, Recipient, preview
from drip.sending.mailer import mailer_from_url


def send_test(settings: Settings, course: Course, which: str, to: str, *, now: datetime) -> str:
    """Send email ``which`` (a day number or id, or confirm|welcome|goodbye) of ``course``
    to ``to``; the server's reply. Raises ``DripError`` with a one-line message: an
    unknown day, a bad or refused address (``InvalidSubscriber``, ``MailError``), a
    server that cannot be reached."""
    try:
        address = normalize_email(to)
    except InvalidSubscriber as error:
        raise InvalidSubscriber(f"--to: {error}", field="to") from None
    recipient = Recipient(
        email=address,
        name=SAMPLE.name,
        uid=f"test{new_uid()[:20]}",  # a new Message-ID each time: never deduplicated
        timezone=course.default_timezone,
    )
    message = preview(
        composer=Composer(settings=settings, test=True),
        course=course,
        which=which,
        now=now,
        recipient=recipient,
    )
    with mailer_from_url(
        settings.smtp_url.get_secret_value(), timeout=settings.smtp_timeout
    ) as mailer:
        return mailer.send(message)
