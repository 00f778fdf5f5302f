"""drip's own bounce webhook, for a provider drip does not know or a script of yours:
``{"email": …, "type": "hard" | "soft" | "complaint", "diagnostic": …}``, or a list of
them, signed with drip's timestamped ``X-Drip-Signature`` and
``DRIP_BOUNCE_WEBHOOK_SECRET``. A form service's signature (Tally's, Typeform's) carries
no time, so it could be replayed for ever: it is not accepted here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drip.core.config import Settings
from drip.core.signatures import DRIP_SIGNATURE, verify_drip_signature
from drip.core.states import MailEventKind
from drip.feedback.providers.base import Forged, Malformed, Report, parse_json

NAME = "generic"


def secret(settings: Settings) -> str | None:
    key = settings.bounce_webhook_secret
    return key.get_secret_value() if key is not None else None


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> Any:
    header = headers.get(DRIP_SIGNATURE)
    if header is None or not verify_drip_signature(header, body, secret, now=now):
        raise Forged
    return parse_json(body)


def parse(payload: Any) -> list[Report]:
    """One event or a list of them."""
    items = payload if isinstance(payload, list) else [payload]
    reports = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            raise Malformed("each event needs an email")
        try:
            kind = MailEventKind(str(item.get("type")))
        except ValueError:
            raise Malformed("type must be hard, soft or complaint") from None
        reports.append(Report(item["email"], kind, str(item.get("diagnostic") or "")))
    return reports
