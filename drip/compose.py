"""What each email says: lessons, the confirmation, the welcome and the goodbye.

``Composer`` turns a course, a day and a recipient into an ``Outgoing`` message. The
parts of a lesson shared by everyone (headers, Markdown body, context) are prepared
once per (course, day) and cached; per recipient it renders the cached templates with
the name and unsubscribe link, and assembles the message.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from markupsafe import escape

from drip.config import Settings
from drip.courses import Course, Day
from drip.exceptions import DripError, UnknownCourse
from drip.message import DkimSigner, Outgoing, Prototype, SplicedBody, quoted_printable
from drip.models import DeliveryStatus, EmailKind
from drip.render import Renderer, markdown_html, markdown_text
from drip.tokens import Tokens


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    #: the enrollment's public uid: in links and Message-IDs
    uid: str
    timezone: str


@dataclass(frozen=True)
class _Lesson:
    prototype: Prototype
    context: dict[str, Any]
    template: str
    #: (text, html) pre-encoded around the per-recipient slots; None when the template
    #: uses those values in a way splicing cannot reproduce (then every copy is rendered)
    spliced: tuple[SplicedBody, SplicedBody] | None


#: per-recipient values in a lesson, and the markers standing for them in the cached render
SLOTS = {
    "name": "\x00drip:name\x00",
    "greeting_name": "\x00drip:greeting\x00",
    "unsubscribe_url": "\x00drip:unsubscribe\x00",
}
#: recipients whose full render must equal the spliced one before splicing is trusted
_SPLICE_SAMPLES = (
    {"name": "", "unsubscribe_url": "https://drip.invalid/unsubscribe/a.b"},
    {"name": 'Zoë & "Co" <b>', "unsubscribe_url": "https://drip.invalid/unsubscribe/c.d"},
)


class Composer:
    def __init__(
        self, *, settings: Settings, renderer: Renderer | None = None, tokens: Tokens | None = None
    ) -> None:
        self.base_url = settings.base_url
        self.renderer = renderer or Renderer(settings.templates_dir)
        self.tokens = tokens or Tokens(
            settings.secret_keys(), confirm_max_age_seconds=settings.confirm_max_age_days * 86400
        )
        self.signer = (
            DkimSigner(
                selector=settings.dkim_selector, private_key_file=settings.dkim_private_key_file
            )
            if settings.dkim_selector and settings.dkim_private_key_file
            else None
        )
        self._lessons: dict[tuple[str, str], _Lesson] = {}
        self._lock = threading.Lock()

    # -- links ---------------------------------------------------------------------------
    def unsubscribe_url(self, uid: str) -> str:
        return f"{self.base_url}/unsubscribe/{self.tokens.unsubscribe_token(uid)}"

    def confirm_url(self, uid: str) -> str:
        return f"{self.base_url}/confirm/{self.tokens.confirm_token(uid)}"

    # -- lessons -------------------------------------------------------------------------
    def lesson(self, *, course: Course, day: Day, recipient: Recipient, now: datetime) -> Outgoing:
        """The lesson for ``day``; its Message-ID is the same on every retry."""
        lesson = self._lesson(course, day)
        unsubscribe_url = self.unsubscribe_url(recipient.uid)
        values = _recipient_values(recipient.name, unsubscribe_url)
        if lesson.spliced is not None:
            text_body, html_body = lesson.spliced
            text = text_body.encode(values)
            html = html_body.encode({k: str(escape(v)) for k, v in values.items()})
        else:
            rendered = self.renderer.render(lesson.template, {**lesson.context, **values})
            text, html = quoted_printable(rendered.text), quoted_printable(rendered.html)
        return lesson.prototype.build(
            to_name=recipient.name,
            to_address=recipient.email,
            message_id=message_id(recipient.uid, day.id, lesson.prototype.domain),
            date=now,
            text=text,
            html=html,
            headers=self._list_headers(course, unsubscribe_url),
        )

    def _lesson(self, course: Course, day: Day) -> _Lesson:
        key = (course.slug, day.id)
        lesson = self._lessons.get(key)
        if lesson is None:
            with self._lock:
                lesson = self._lessons.get(key) or self._prepare_lesson(course, day)
                self._lessons[key] = lesson
        return lesson

    def _prepare_lesson(self, course: Course, day: Day) -> _Lesson:
        context = {
            **_course_context(course),
            "subject": day.subject,
            "preheader": day.preheader,
            "theme": day.theme,
            "day_number": course.day_number(day.id),
            "class_title": day.class_.title,
            "class_url": day.class_.url,
            "duration_minutes": day.class_.duration_minutes,
            "thumbnail_url": day.class_.thumbnail,
            "body_html": markdown_html(day.body),
            "body_text": markdown_text(day.body),
        }
        return _Lesson(
            self._prototype(course, day.subject),
            context,
            day.template,
            self._splice(day.template, context),
        )

    def _splice(
        self, template: str, context: dict[str, Any]
    ) -> tuple[SplicedBody, SplicedBody] | None:
        marked = self.renderer.render(template, {**context, **SLOTS})
        text_body, html_body = SplicedBody(marked.text, SLOTS), SplicedBody(marked.html, SLOTS)
        for sample in _SPLICE_SAMPLES:
            values = _recipient_values(sample["name"], sample["unsubscribe_url"])
            real = self.renderer.render(template, {**context, **values})
            escaped = {k: str(escape(v)) for k, v in values.items()}
            if text_body.text(values) != real.text or html_body.text(escaped) != real.html:
                return None
        return text_body, html_body

    # -- confirmation, welcome, goodbye ---------------------------------------------------
    def transactional(
        self,
        kind: EmailKind,
        *,
        course: Course,
        recipient: Recipient,
        key: str,
        now: datetime,
        signup_uid: str | None = None,
        history: Mapping[str, str] | None = None,
    ) -> Outgoing:
        """A confirmation, welcome or goodbye email (``KINDS``); ``key`` is its outbox key,
        from which the Message-ID is made. A confirmation links to ``signup_uid``'s signup
        and, from the lesson ``history``, tells a returning subscriber where they resume."""
        spec = KINDS[kind]
        subject = spec.subject.format(title=course.title)
        unsubscribe_url = self.unsubscribe_url(recipient.uid) if spec.unsubscribe else None
        context = {
            **_course_context(course),
            "subject": subject,
            "preheader": spec.preheader,
            "timezone": recipient.timezone,
            **_recipient_values(recipient.name, unsubscribe_url),
        }
        if kind == EmailKind.CONFIRM:
            if signup_uid is None:
                raise ValueError("a confirmation email needs its signup")
            context["confirm_url"] = self.confirm_url(signup_uid)
            context["resume"] = resume_note(course, history or {})
        rendered = self.renderer.render(spec.template, context)
        prototype = self._prototype(course, subject)
        return prototype.build(
            to_name=recipient.name,
            to_address=recipient.email,
            message_id=message_id(recipient.uid, key, prototype.domain),
            date=now,
            text=quoted_printable(rendered.text),
            html=quoted_printable(rendered.html),
            headers=self._list_headers(course, unsubscribe_url) if unsubscribe_url else [],
        )

    def _prototype(self, course: Course, subject: str) -> Prototype:
        return Prototype(
            from_name=course.sender.name,
            from_address=course.sender.address,
            reply_to=course.sender.reply_to,
            subject=subject,
            headers=[
                ("List-Id", f"{course.title} <{course.slug}.{_domain(course.sender.address)}>"),
                # Asks auto-responders (vacation replies) not to answer a drip lesson.
                ("Auto-Submitted", "auto-generated"),
                ("X-Auto-Response-Suppress", "OOF, AutoReply"),
            ],
            signer=self.signer,
        )

    def _list_headers(self, course: Course, unsubscribe_url: str) -> list[tuple[str, str]]:
        mailto = f"mailto:{course.sender.reply_to or course.sender.address}?subject=" + quote(
            f"unsubscribe {course.slug}"
        )
        return [
            ("List-Unsubscribe", f"<{unsubscribe_url}>, <{mailto}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]


def _recipient_values(name: str, unsubscribe_url: str | None) -> dict[str, Any]:
    return {"name": name, "greeting_name": name or "there", "unsubscribe_url": unsubscribe_url}


def message_id(uid: str, key: str, domain: str) -> str:
    """Deterministic per outbox row (enrollment uid, key: a lesson's day id or
    ``kind:uid``): a retried send carries the same Message-ID."""
    return f"{uid}.{key.replace(':', '.')}@{domain}"


def resume_note(course: Course, history: Mapping[str, str]) -> str | None:
    """For someone who took part before: where confirming picks the course up again."""
    done = {day for day, status in history.items() if status != DeliveryStatus.CANCELLED}
    if not done:
        return None
    remaining = [day for day in course.days if day.id not in done]
    if not remaining:
        return f"You have already received all {len(course.days)} lessons of this course."
    number = course.day_number(remaining[0].id)
    return (
        f"Welcome back: confirming picks up where you left off, with day {number} of "
        f"{len(course.days)}. It arrives at once, or at {course.send_at:%H:%M} tomorrow "
        "if a lesson already reached you today."
    )


@dataclass(frozen=True)
class _Kind:
    template: str
    #: ``{title}`` is the course title
    subject: str
    preheader: str
    #: carries the List-Unsubscribe headers and a footer link
    unsubscribe: bool


#: every email that is not a lesson, and what sets each apart
KINDS: dict[EmailKind, _Kind] = {
    EmailKind.CONFIRM: _Kind(
        "confirm", "Please confirm: {title}", "One click to confirm your place.", False
    ),
    EmailKind.WELCOME: _Kind(
        "welcome", "Welcome to {title}", "Your first lesson is on its way.", True
    ),
    EmailKind.GOODBYE: _Kind(
        "goodbye",
        "You are unsubscribed from {title}",
        "You will not hear from us again.",
        False,
    ),
}


def _domain(address: str) -> str:
    return address.rpartition("@")[2].encode("idna").decode("ascii")


def _course_context(course: Course) -> dict[str, Any]:
    return {
        "course_title": course.title,
        "description": course.description,
        "total_days": len(course.days),
        "send_at": course.send_at.strftime("%H:%M"),
        "disclaimer": course.footer.disclaimer,
        "privacy": course.footer.privacy,
        "postal_address": course.footer.postal_address,
        "reason": f"You are receiving this because you signed up for {course.title}.",
    }


#: the sample subscriber previews are rendered for
SAMPLE = Recipient(
    email="sample.subscriber@example.com",
    name="Alex",
    uid="preview0sample",
    timezone="Europe/London",
)
LIFECYCLE = tuple(kind.value for kind in KINDS)


def preview(*, composer: Composer, course: Course, which: str, now: datetime) -> Outgoing:
    """The email a sample subscriber would get: a day (number or id) or confirm, welcome
    or goodbye."""
    if which in LIFECYCLE:
        kind = EmailKind(which)
        return composer.transactional(
            kind,
            course=course,
            recipient=SAMPLE,
            key=f"{kind}:preview",
            now=now,
            signup_uid="preview0signup",
        )
    day = course.day(which)
    if day is None and which.isdigit() and 1 <= int(which) <= len(course.days):
        day = course.days[int(which) - 1]
    if day is None:
        ids = ", ".join(d.id for d in course.days)
        raise UnknownCourse(
            f"{course.slug} has no day {which!r}: use 1-{len(course.days)}, a day id ({ids}) "
            f"or one of {', '.join(LIFECYCLE)}"
        )
    return composer.lesson(course=course, day=day, recipient=SAMPLE, now=now)


def render_problems(*, composer: Composer, course: Course, label: str, now: datetime) -> list[str]:
    """Render every email of ``course`` once; one line per template that fails."""
    problems = []
    for which in (*(day.id for day in course.days), *LIFECYCLE):
        try:
            preview(composer=composer, course=course, which=which, now=now)
        except DripError as error:
            problems.append(f"{label}: {which}: {error}")
    return problems
