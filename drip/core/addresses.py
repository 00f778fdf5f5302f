"""Email addresses, normalised: a plain ASCII address is decided here in a microsecond;
anything else (quoted parts, international characters, punycode, odd domains) goes to
email_validator, imported only then. The quick check accepts only what email_validator
accepts, in the same form (a property test holds the two together), so it changes
speed, never the answer. No DNS look-up is made.
"""

from __future__ import annotations

import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
#: a dot-atom local part, hostname labels, an alphabetic top-level domain
_PLAIN = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,63}))",
    re.ASCII,
)
#: email_validator's SPECIAL_USE_DOMAIN_NAMES (a test holds them equal): refused there
SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


class AddressError(ValueError):
    """Not an address email can be sent to; the message says why."""


def normalized(raw: str, *, smtputf8: bool = False) -> str:
    """The address in email_validator's normal form (the domain lower-cased);
    ``AddressError`` when it is not one. ``smtputf8``: international characters before
    the @ are allowed."""
    return _plain(raw) or _validated(raw, smtputf8=smtputf8)


def _plain(raw: str) -> str | None:
    """A plain ASCII address, normalised; None for anything else."""
    if not raw.isascii() or len(raw) > 254:
        return None
    plain = _PLAIN.fullmatch(raw)
    if (
        plain is None
        or len(plain["local"]) > 64
        or "--" in plain["domain"]  # punycode and reserved labels: the full check
        or plain["tld"].lower() in SPECIAL_USE
    ):
        return None
    return f"{plain['local']}@{plain['domain'].lower()}"


def _validated(raw: str, *, smtputf8: bool) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=smtputf8)
    except EmailNotValidError as error:
        raise AddressError(str(error)) from None
    return str(result.normalized)
