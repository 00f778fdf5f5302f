"""Postmark's bounce and spam-complaint webhooks: one record per request, proved by HTTP
basic auth on the webhook URL (any user, ``DRIP_BOUNCE_WEBHOOK_SECRET`` as the password)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from drip.core.config import Settings
from drip.core.signatures import same
from drip.core.states import MailEventKind
from drip.feedback.providers.base import Forged, Malformed, Report, parse_json

NAME = "postmark"
_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
#: Blocked is often about the sender's reputation, not the address
_SOFT = {"SoftBounce", "Transient", "DnsError", "Blocked"}


def secret(settings: Settings) -> str | None:
    key = settings.bounce_webhook_secret
    return key.get_secret_value() if key is not None else None


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> Any:
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    try:
        _, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
        raise Forged from None
    if scheme.lower() != "basic" or not same(password, secret):
        raise Forged
    return parse_json(body)


def parse(payload: Any) -> list[Report]:
    if not isinstance(payload, dict) or not isinstance(payload.get("Email"), str):
        raise Malformed("not a Postmark bounce or spam complaint record")
    record, kind = payload.get("RecordType"), payload.get("Type")
    if record == "SpamComplaint" or kind == "SpamComplaint":
        event = MailEventKind.COMPLAINT
    elif record == "Bounce" and kind in _HARD:
        event = MailEventKind.HARD
    elif record == "Bounce" and kind in _SOFT:
        event = MailEventKind.SOFT
    else:
        return []  # auto-responders, subscribe/unsubscribe notices …: not bounces
    diagnostic = f"{kind}: {payload.get('Description') or payload.get('Details') or ''}"
    event_id = payload.get("ID")
    return [
        Report(
            payload["Email"],
            event,
            diagnostic.strip(),
            event_id=None if event_id is None else f"{record}:{event_id}",
        )
    ]
