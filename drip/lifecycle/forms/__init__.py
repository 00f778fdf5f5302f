"""Signup payloads: a plain HTML form, JSON, and the webhooks of Tally and Typeform, one
module each with its signature scheme (``verify``) and its payload (``matches``,
``parse``).

``parse`` turns a request body into a ``SignupRequest``; ``verify`` checks the HMAC a
form service or JSON client sends when ``DRIP_WEBHOOK_SECRET`` is set, in constant time:
drip's own ``X-Drip-Signature`` (timestamped, ``drip.core.signatures``), Tally's
``Tally-Signature`` or Typeform's ``Typeform-Signature``.

Tally and Typeform sign the body only, and resend the same body when they retry, so a
replay of theirs cannot be told from a retry by time; the web tier drops a second copy
of an event id it has already seen instead (``SignupRequest.event_id``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from drip.core.exceptions import InvalidSubscriber
from drip.lifecycle.forms import plain, tally, typeform
from drip.lifecycle.forms.base import HONEYPOT, SignupRequest
from drip.lifecycle.forms.snippet import form_snippet

__all__ = ["HONEYPOT", "SignupRequest", "form_snippet", "parse", "verify"]

#: the form services whose webhooks drip reads
SERVICES = (tally, typeform)


def parse(body: bytes, content_type: str) -> SignupRequest:
    """A signup from a request body; ``InvalidSubscriber`` names what is wrong."""
    if content_type == "application/x-www-form-urlencoded":
        return plain.from_form(body)
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidSubscriber("the body is not valid JSON", field="body") from None
        if not isinstance(data, dict):
            raise InvalidSubscriber("the JSON body must be an object", field="body")
        service = next((each for each in SERVICES if each.matches(data)), None)
        return service.parse(data) if service is not None else plain.from_json(data)
    raise InvalidSubscriber(
        "send application/x-www-form-urlencoded or application/json", field="content-type"
    )


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> bool:
    """True when the first signature header present (drip's, Tally's, Typeform's) signs
    ``body`` with ``secret`` (drip's also within five minutes of ``now``)."""
    for scheme in (plain, *SERVICES):
        if scheme.SIGNATURE in headers:
            return scheme.verify(body, headers[scheme.SIGNATURE], secret, now=now)
    return False
