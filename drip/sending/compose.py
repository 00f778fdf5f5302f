"""What each email says: lessons, the confirmation, the welcome and the goodbye.

``Composer`` turns a course, a day and a recipient into an ``Outgoing`` message. The
parts of a lesson shared by everyone (headers, Markdown body, context) are prepared
once per (course, day) and cached; per recipient it renders the cached templates with
the name and unsubscribe link, and assembles the message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from markupsafe import escape

from drip.core.config import Settings
from drip.core.courses import Course, Day
from drip.core.exceptions import DripError, UnknownCourse
from drip.core.links import Links
from drip.core.states import DeliveryStatus, EmailKind
from drip.core.tokens import Purpose, Tokens
from drip.outbox.kinds import KINDS, Kind
from drip.sending.message import DkimSigner, Outgoing, Prototype, SplicedBody, quoted_printable
from drip.sending.render import Renderer, markdown_html, markdown_text


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    #: the enrollment's public uid: in links and Message-IDs
    uid: str
    timezone: str


@dataclass(frozen=True)
class _Prepared:
    """One email of a course (a day, or the confirmation …) as far as it is the same for
    everyone: rendered and encoded once, then finished per recipient."""

    prototype: Prototype
    template: str
    context: dict[str, Any]
    #: the values that differ per recipient
    slots: tuple[str, ...]
    #: (text, html) pre-encoded around the slots; None when the template uses those
    #: values in a way splicing cannot reproduce (then every copy is rendered in full)
    spliced: tuple[SplicedBody, SplicedBody] | None


#: (subject, template, context shared by every recipient, per-recipient value names)
_Parts = tuple[str, str, dict[str, Any], tuple[str, ...]]
#: per-recipient values, each kind of email using some of them
SLOTS = (
    "name",
    "greeting_name",
    "unsubscribe_url",
    "confirm_url",
    "resume",
    "timezone",
    "class_url",
    "view_url",
    "me_url",
)
_MARKERS = {slot: f"\x00drip:{slot}\x00" for slot in SLOTS}
#: recipients whose full render must equal the spliced one before splicing is trusted
_SPLICE_SAMPLES = (
    {
        "name": "",
        "greeting_name": "there",
        "unsubscribe_url": "https://drip.invalid/unsubscribe/a.b",
        "confirm_url": "https://drip.invalid/confirm/a.b",
        "resume": "Day 2 is next.",
        "timezone": "Europe/London",
        "class_url": "https://drip.invalid/c/a.b",
        "view_url": "https://drip.invalid/lessons/a.b.c",
        "me_url": "https://drip.invalid/me/a.b",
    },
    {
        "name": 'Zoë & "Co" <b>',
        "greeting_name": 'Zoë & "Co" <b>',
        "unsubscribe_url": "https://drip.invalid/unsubscribe/c.d?x=1&y=<2>",
        "confirm_url": "https://drip.invalid/confirm/c.d?x=1&y=<2>",
        "resume": 'Welcome back: "day 3" & more <soon>.',
        "timezone": "America/Argentina/Buenos_Aires",
        "class_url": "https://drip.invalid/c/c.d?x=1&y=<2>",
        "view_url": "https://drip.invalid/lessons/c.d.e?x=1&y=<2>",
        "me_url": "https://drip.invalid/me/c.d?x=1&y=<2>",
    },
)


class Composer:
    def __init__(
        self,
        *,
        settings: Settings,
        renderer: Renderer | None = None,
        tokens: Tokens | None = None,
        test: bool = False,
    ) -> None:
        #: a composer of test sends: "[Test]" before every subject, and an X-Drip-Test header
        self.test = test
        self.bounce_address = settings.bounce_address
        self.renderer = renderer or Renderer(settings.templates_dir)
        self.tokens = tokens or Tokens.from_settings(settings)
        self.links = Links(settings.base_url, self.tokens)
        self.signer = (
            DkimSigner(
                selector=settings.dkim_selector, private_key_file=settings.dkim_private_key_file
            )
            if settings.dkim_selector and settings.dkim_private_key_file
            else None
        )
        self._prepared: dict[tuple[str, str], _Prepared] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop every prepared email (the course files changed)."""
        with self._lock:
            self._prepared.clear()

    # -- emails --------------------------------------------------------------------------
    def lesson(
        self,
        *,
        course: Course,
        day: Day,
        recipient: Recipient,
        now: datetime,
        key: str | None = None,
    ) -> Outgoing:
        """The lesson for ``day``; its Message-ID, made from its outbox ``key`` (the day id
        by default; ``DAY.RUN`` after a restart), is the same on every retry."""
        prepared = self._prepare(course, day.id, lambda: self._lesson_parts(course, day))
        unsubscribe_url = self.links.unsubscribe(recipient.uid)
        values = {
            "unsubscribe_url": unsubscribe_url,
            "view_url": self.links.lesson(recipient.uid, day.id),
            "me_url": self.links.me(recipient.uid),
        }
        if course.track_clicks:
            values["class_url"] = self.links.tracked_class(recipient.uid, course, day)
        return self._finish(
            prepared,
            recipient,
            key=key or day.id,
            now=now,
            values=values,
            headers=self._list_headers(recipient, unsubscribe_url),
        )

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
        prepared = self._prepare(course, kind, lambda: self._transactional_parts(course, spec))
        values: dict[str, str] = {
            "timezone": recipient.timezone,
            "me_url": self.links.me(recipient.uid),
        }
        headers: list[tuple[str, str]] = []
        if spec.unsubscribe:
            values["unsubscribe_url"] = self.links.unsubscribe(recipient.uid)
            headers = self._list_headers(recipient, values["unsubscribe_url"])
        if kind == EmailKind.CONFIRM:
            if signup_uid is None:
                raise ValueError("a confirmation email needs its signup")
            values["confirm_url"] = self.links.confirm(signup_uid)
            values["resume"] = resume_note(course, history or {})
        return self._finish(prepared, recipient, key=key, now=now, values=values, headers=headers)

    def _finish(
        self,
        prepared: _Prepared,
        recipient: Recipient,
        *,
        key: str,
        now: datetime,
        values: dict[str, str],
        headers: list[tuple[str, str]],
    ) -> Outgoing:
        values = {"name": recipient.name, "greeting_name": recipient.name or "there", **values}
        mine = {slot: values[slot] for slot in prepared.slots}
        if prepared.spliced is not None:
            text_body, html_body = prepared.spliced
            text = text_body.encode(mine)
            html = html_body.encode({k: str(escape(v)) for k, v in mine.items()})
        else:
            rendered = self.renderer.render(prepared.template, {**prepared.context, **mine})
            text, html = quoted_printable(rendered.text), quoted_printable(rendered.html)
        outgoing = prepared.prototype.build(
            to_name=recipient.name,
            to_address=recipient.email,
            message_id=message_id(recipient.uid, key, prepared.prototype.domain),
            date=now,
            text=text,
            html=html,
            headers=headers,
        )
        if self.bounce_address is None:
            return outgoing
        # VERP: bounces come back to an address that names this enrollment
        verp = self.tokens.return_address(self.bounce_address, Purpose.BOUNCE, recipient.uid)
        return replace(outgoing, envelope_from=verp)

    def _prepare(self, course: Course, key: str, parts: Callable[[], _Parts]) -> _Prepared:
        """The cached ``_Prepared`` for (course, key), made from ``parts()`` once."""
        prepared = self._prepared.get((course.slug, key))
        if prepared is None:
            with self._lock:
                prepared = self._prepared.get((course.slug, key))
                if prepared is None:
                    subject, template, context, slots = parts()
                    prepared = _Prepared(
                        self._prototype(course, subject),
                        template,
                        context,
                        slots,
                        self._splice(template, context, slots),
                    )
                    self._prepared[(course.slug, key)] = prepared
        return prepared

    def _lesson_parts(self, course: Course, day: Day) -> _Parts:
        context = {
            **_course_context(course),
            "subject": day.subject,
            "preheader": day.preheader,
            "theme": day.theme,
            "day_number": course.day_number(day.id),
            "class_title": day.class_.title,
            "duration_minutes": day.class_.duration_minutes,
            "thumbnail_url": day.class_.thumbnail,
            "body_html": markdown_html(day.body),
            "body_text": markdown_text(day.body),
        }
        slots: tuple[str, ...] = (
            "name",
            "greeting_name",
            "unsubscribe_url",
            "view_url",
            "me_url",
        )
        if course.track_clicks:
            slots += ("class_url",)
        else:
            context["class_url"] = day.class_.url
        return day.subject, day.template, context, slots

    def _transactional_parts(self, course: Course, spec: Kind) -> _Parts:
        subject = spec.subject.format(title=course.title)
        context = {**_course_context(course), "subject": subject, "preheader": spec.preheader}
        if spec.template == "after_course":
            after = course.after_course
            if after is None:
                raise UnknownCourse(f"{course.slug} has no after_course email")
            subject = context["subject"] = after.subject
            context |= {
                "preheader": after.preheader,
                "body_html": markdown_html(after.body),
                "body_text": markdown_text(after.body),
            }
        slots = ["name", "greeting_name", "timezone"]
        if spec.template == "after_course":  # what comes next: pause, restart, another hour
            slots.append("me_url")
        else:
            context["me_url"] = None
        if spec.unsubscribe:
            slots.append("unsubscribe_url")
        else:
            context["unsubscribe_url"] = None
        if spec.template == "confirm":
            slots += ["confirm_url", "resume"]
        return subject, spec.template, context, tuple(slots)

    def _splice(
        self, template: str, context: dict[str, Any], slots: tuple[str, ...]
    ) -> tuple[SplicedBody, SplicedBody] | None:
        markers = {slot: _MARKERS[slot] for slot in slots}
        marked = self.renderer.render(template, {**context, **markers})
        text_body, html_body = SplicedBody(marked.text, markers), SplicedBody(marked.html, markers)
        for sample in _SPLICE_SAMPLES:
            values = {slot: sample[slot] for slot in slots}
            real = self.renderer.render(template, {**context, **values})
            escaped = {k: str(escape(v)) for k, v in values.items()}
            if text_body.text(values) != real.text or html_body.text(escaped) != real.html:
                return None
        return text_body, html_body

    def _prototype(self, course: Course, subject: str) -> Prototype:
        headers = [
            ("List-Id", f"{course.title} <{course.slug}.{_domain(course.sender.address)}>"),
            # Asks auto-responders (vacation replies) not to answer a drip lesson.
            ("Auto-Submitted", "auto-generated"),
            ("X-Auto-Response-Suppress", "OOF, AutoReply"),
        ]
        if self.test:
            subject = f"[Test] {subject}"
            headers.append(("X-Drip-Test", "yes"))
        return Prototype(
            from_name=course.sender.name,
            from_address=course.sender.address,
            reply_to=course.sender.reply_to,
            subject=subject,
            headers=headers,
            signer=self.signer,
        )

    def _list_headers(self, recipient: Recipient, unsubscribe_url: str) -> list[tuple[str, str]]:
        """The one-click HTTPS link (RFC 8058), and a mailto only where drip reads the mail
        (``DRIP_BOUNCE_ADDRESS``): elsewhere it would land in the teacher's inbox."""
        links = f"<{unsubscribe_url}>"
        if self.bounce_address is not None:
            mailto = self.tokens.return_address(
                self.bounce_address, Purpose.MAILTO_UNSUBSCRIBE, recipient.uid
            )
            links += f", <mailto:{mailto}?subject=unsubscribe>"
        return [
            ("List-Unsubscribe", links),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]


def message_id(uid: str, key: str, domain: str) -> str:
    """Deterministic per outbox row (enrollment uid, key: a lesson's day id or
    ``kind:uid``): a retried send carries the same Message-ID."""
    return f"{uid}.{key.replace(':', '.')}@{domain}"


def resume_note(course: Course, history: Mapping[str, str]) -> str:
    """What confirming starts: day 1 at once, or, for someone who took part before,
    where the course picks up again."""
    done = {day for day, status in history.items() if status != DeliveryStatus.CANCELLED}
    if not done:
        return "Your first lesson arrives as soon as you do."
    remaining = [day for day in course.days if day.id not in done]
    if not remaining:
        return f"You have already received all {len(course.days)} lessons of this course."
    number = course.day_number(remaining[0].id)
    return (
        f"Welcome back: confirming picks up where you left off, with day {number} of "
        f"{len(course.days)}. It arrives at once, or at {course.send_at:%H:%M} tomorrow "
        "if a lesson already reached you today."
    )


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
#: every kind of email but the lesson, by name (what previews and test sends accept)
LIFECYCLE = tuple(kind.value for kind in KINDS if kind != EmailKind.LESSON)


def emails_of(course: Course) -> tuple[str, ...]:
    """Every email ``course`` can send: its day ids, then the other kinds it has."""
    others = (k for k in LIFECYCLE if k != EmailKind.AFTER_COURSE or course.after_course)
    return (*(day.id for day in course.days), *others)


def preview(
    *,
    composer: Composer,
    course: Course,
    which: str,
    now: datetime,
    recipient: Recipient = SAMPLE,
) -> Outgoing:
    """The email ``recipient`` (by default a sample subscriber) would get: a day (number
    or id) or confirm, welcome or goodbye."""
    if which in LIFECYCLE:
        kind = EmailKind(which)
        return composer.transactional(
            kind,
            course=course,
            recipient=recipient,
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
    return composer.lesson(course=course, day=day, recipient=recipient, now=now)


def render_problems(*, composer: Composer, course: Course, label: str, now: datetime) -> list[str]:
    """Render every email of ``course`` once; one line per template that fails."""
    problems = []
    for which in emails_of(course):
        try:
            preview(composer=composer, course=course, which=which, now=now)
        except DripError as error:
            problems.append(f"{label}: {which}: {error}")
    return problems
