"""What a person gives drip about themselves (an address, a name, a time zone), checked
and cleaned the same way at every door: the form, ``subscribers add`` and ``import``,
test sends.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from drip.core.courses import is_timezone
from drip.core.exceptions import InvalidSubscriber

MAX_NAME = 100

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
#: a plain ASCII address (dot-atom local part, hostname labels, an alphabetic top-level
#: domain): the common case, decided in a microsecond; anything else goes to
#: email_validator, which accepts every address this does, in the same form
_PLAIN = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@"
    r"(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?P<tld>[a-z]{2,63}))",
    re.ASCII,
)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def normalize_email(raw: str) -> str:
    """The canonical form of an address, lower-cased so one person is one subscriber.

    Local parts are case-sensitive in theory, never in practice; no DNS look-up is made.
    """
    raw = (raw or "").strip()
    if not raw:
        raise InvalidSubscriber("email is required", field="email")
    if len(raw) > 320 or any(ch in raw for ch in "\r\n\0"):
        raise InvalidSubscriber("email is not a valid address", field="email")
    return _plain(raw) or validated(raw)


def _plain(raw: str) -> str | None:
    """A plain ASCII address, lower-cased; None for anything else."""
    if not raw.isascii() or len(raw) > 254:
        return None
    lowered = raw.lower()
    plain = _PLAIN.fullmatch(lowered)
    if (
        plain is None
        or len(plain["local"]) > 64
        or "--" in plain["domain"]  # punycode and reserved labels: the full check
        or plain["tld"] in _SPECIAL_USE
    ):
        return None
    return lowered


def validated(raw: str) -> str:
    """``normalize_email``'s full check, by email_validator."""
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise InvalidSubscriber(f"email is not a valid address: {error}", field="email") from None
    return result.normalized.lower()


def clean_name(raw: str | None) -> str:
    """A display name safe for headers and pages: no control characters, bounded length."""
    if not raw:
        return ""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in raw)
    return " ".join(text.split())[:MAX_NAME]


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
