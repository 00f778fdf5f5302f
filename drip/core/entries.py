"""What a person gives drip about themselves (an address, a name, a time zone), checked
and cleaned the same way at every door: the form, ``subscribers add`` and ``import``,
test sends.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from drip.core import addresses
from drip.core.courses import is_timezone
from drip.core.exceptions import InvalidSubscriber

MAX_NAME = 100


def normalize_email(raw: str) -> str:
    """The canonical form of an address, lower-cased so one person is one subscriber.

    Local parts are case-sensitive in theory, never in practice; no DNS look-up is made.
    """
    raw = (raw or "").strip()
    if not raw:
        raise InvalidSubscriber("email is required", field="email")
    if len(raw) > 320 or "\r" in raw or "\n" in raw or "\0" in raw:
        raise InvalidSubscriber("email is not a valid address", field="email")
    try:
        return addresses.normalized(raw).lower()
    except addresses.AddressError as error:
        raise InvalidSubscriber(f"email is not a valid address: {error}", field="email") from None


def clean_name(raw: str | None) -> str:
    """A display name safe for headers and pages: no control characters, bounded length."""
    if not raw:
        return ""
    if not raw.isprintable():  # (a printable string has no control character at all)
        raw = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in raw)
    return " ".join(raw.split())[:MAX_NAME]


def clean_timezone(raw: str | None) -> str | None:
    """An IANA zone name, or None when missing or unknown (the course default applies)."""
    raw = (raw or "").strip()
    return raw if raw and len(raw) <= 64 and is_timezone(raw) else None


@dataclass(frozen=True)
class Entry:
    """One person's signup details, checked and cleaned."""

    email: str
    name: str = ""
    timezone: str | None = None

    @classmethod
    def clean(cls, *, email: str, name: str | None = None, timezone: str | None = None) -> Entry:
        """Normalise the address (``InvalidSubscriber`` names what is wrong), clean the
        name; an unknown time zone becomes None (the course default)."""
        return cls(normalize_email(email), clean_name(name), clean_timezone(timezone))
