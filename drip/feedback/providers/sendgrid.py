"""SendGrid's Event Webhook: a batch of events, signed with ECDSA (P-256, SHA-256) over
timestamp + body in headers; ``DRIP_SENDGRID_VERIFICATION_KEY`` is the public key (base64)
as SendGrid shows it. ``bounce`` (type ``bounce``: hard, ``blocked``: soft) and
``spamreport`` are read; the rest (delivered, open, deferred …) is not a bounce."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from drip.core.config import Settings
from drip.core.signatures import is_fresh
from drip.core.states import MailEventKind
from drip.feedback.providers.base import Forged, Malformed, Report, parse_json

NAME = "sendgrid"


def secret(settings: Settings) -> str | None:
    return settings.sendgrid_verification_key


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> Any:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    stamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
    try:
        signature = base64.b64decode(
            headers.get("x-twilio-email-event-webhook-signature", ""), validate=True
        )
        key = load_der_public_key(base64.b64decode(secret))
    except (binascii.Error, ValueError):
        raise Forged from None
    if not is_fresh(stamp, now) or not isinstance(key, ec.EllipticCurvePublicKey):
        raise Forged
    try:
        key.verify(signature, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Forged from None
    return parse_json(body)


def parse(payload: Any) -> list[Report]:
    """SendGrid's batch of events: ``bounce`` (type ``bounce`` hard, ``blocked`` soft) and
    ``spamreport``; the rest (delivered, open, deferred …) is not a bounce."""
    if not isinstance(payload, list):
        raise Malformed("not a SendGrid event batch")
    reports = []
    for item in payload:
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            raise Malformed("not a SendGrid event")
        event = item.get("event")
        if event == "spamreport":
            kind = MailEventKind.COMPLAINT
        elif event == "bounce":
            kind = MailEventKind.SOFT if item.get("type") == "blocked" else MailEventKind.HARD
        else:
            continue
        reports.append(
            Report(
                item["email"],
                kind,
                f"{item.get('status', '')} {item.get('reason', '')}".strip(),
                message_id=item.get("smtp-id"),
                event_id=item.get("sg_event_id"),
            )
        )
    return reports
