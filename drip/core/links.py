"""The signed links drip puts in emails and pages, each built by one rule: the same URL
whether the composer writes it into a lesson or a page links to it."""

from __future__ import annotations

from dataclasses import dataclass

from drip.core.courses import Course, Day
from drip.core.tokens import Tokens


@dataclass(frozen=True)
class Links:
    #: ``DRIP_BASE_URL``, without a trailing slash
    base_url: str
    tokens: Tokens

    def unsubscribe(self, uid: str) -> str:
        """One-click unsubscribe for the enrollment ``uid`` (page, and RFC 8058 POST)."""
        return f"{self.base_url}/unsubscribe/{self.tokens.unsubscribe_token(uid)}"

    def confirm(self, signup_uid: str) -> str:
        """The double opt-in link of one signup."""
        return f"{self.base_url}/confirm/{self.tokens.confirm_token(signup_uid)}"

    def lesson(self, uid: str, day_id: str) -> str:
        """A lesson's "view in browser" page."""
        return f"{self.base_url}/lessons/{self.tokens.lesson_token(uid, day_id)}"

    def me(self, uid: str) -> str:
        """The subscriber's own page: pause, resume, restart, change the hour."""
        return f"{self.base_url}/me/{self.tokens.me_token(uid)}"

    def tracked_class(self, uid: str, course: Course, day: Day) -> str:
        """The day's class through drip (``/c/…``), which notes the first click."""
        return f"{self.base_url}/c/{self.tokens.click_token(uid, course.slug, day.id)}"

    def class_(self, uid: str, course: Course, day: Day) -> str:
        """The link to the day's class: through drip when the course tracks clicks, else
        the class's own URL."""
        return self.tracked_class(uid, course, day) if course.track_clicks else day.class_.url
