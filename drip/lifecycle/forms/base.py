"""What every signup payload becomes (``SignupRequest``), and the field rules the form
services share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drip.core.exceptions import InvalidSubscriber

#: the hidden field bots fill in and people never see
HONEYPOT = "website"


@dataclass(frozen=True)
class SignupRequest:
    email: str
    name: str = ""
    course: str | None = None
    timezone: str | None = None
    redirect: str | None = None
    #: the honeypot was filled: answer as usual, store nothing
    is_bot: bool = False
    #: tally, typeform, json or form
    source: str = "form"
    #: the form service's id for this delivery (Tally ``eventId``, Typeform ``event_id``)
    event_id: str | None = None


def event_id(value: Any) -> str | None:
    """A form service's delivery id, bounded; None when there is none."""
    return value[:200] if isinstance(value, str) and value else None


def text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float):
        raise InvalidSubscriber(f"{field} must be a string", field=field)
    return str(value)


def from_mapping(data: Mapping[str, Any], *, source: str) -> SignupRequest:
    """A signup from named fields (``email``, ``name``, ``course``, ``timezone``,
    ``redirect`` and the honeypot)."""
    return SignupRequest(
        email=text(data.get("email"), "email"),
        name=text(data.get("name"), "name"),
        course=text(data.get("course"), "course") or None,
        timezone=text(data.get("timezone"), "timezone") or None,
        redirect=text(data.get("redirect"), "redirect") or None,
        is_bot=bool(text(data.get(HONEYPOT), HONEYPOT).strip()),
        source=source,
    )
