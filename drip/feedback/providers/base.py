"""What every email provider's webhook module offers, and what it hands back.

A provider module has a ``NAME``, and three functions, as django-anymail's webhooks do:

- ``secret(settings)``: the key that proves a request is the provider's, or None when it
  is not configured (then the provider's URL does not exist: 404);
- ``verify(body, headers, secret, now=…)``: the request's payload, once the request
  proves it is the provider's (``Forged`` otherwise); may block (SES fetches Amazon's
  certificate), so the web tier runs it in a worker thread;
- ``parse(payload)``: the bounces and complaints it reports (``Malformed`` when it is not
  the provider's payload).

A provider whose proof is a one-time value (Mailgun's token) also has
``replay_key(payload)``: a value stored when first seen, so a second request carrying it
changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from drip.core.states import MailEventKind

#: the most a provider's batch of events may weigh
MAX_BODY = 1024 * 1024


class Forged(Exception):
    """The request does not prove it comes from the provider."""


class Malformed(ValueError):
    """The body is not the provider's payload."""


@dataclass(frozen=True)
class Report:
    email: str
    kind: MailEventKind
    diagnostic: str
    #: the Message-ID of drip's email it is about, when the provider passes it on
    message_id: str | None = None
    #: the provider's id for this event, to ignore a replay
    event_id: str | None = None


def parse_json(body: bytes) -> Any:
    """The JSON body; ``Malformed`` for anything else, nesting too deep included."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Malformed("the body is not JSON") from None
