"""Mailgun's event webhook: a permanent ``failed`` or a ``complained`` event, signed in the
body with HMAC-SHA256 of timestamp + token (``DRIP_MAILGUN_SIGNING_KEY``).

The signature covers only the timestamp and the token, not the event: anyone holding one
signed request (another receiver of the same account's webhooks) could send it again
with another event. So a token is accepted once (``replay_key``), and a timestamp more
than five minutes from now is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drip.core.config import Settings
from drip.core.signatures import hmac_sha256, is_fresh, same
from drip.core.states import MailEventKind
from drip.feedback.providers.base import Forged, Malformed, Report, parse_json

NAME = "mailgun"


def secret(settings: Settings) -> str | None:
    key = settings.mailgun_signing_key
    return key.get_secret_value() if key is not None else None


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> Any:
    payload = parse_json(body)
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise Forged
    stamp, token, given = (str(signature.get(k, "")) for k in ("timestamp", "token", "signature"))
    genuine = same(given, hmac_sha256(secret, (stamp + token).encode()).hex())
    if not (is_fresh(stamp, now) and token and genuine):
        raise Forged
    return payload


def replay_key(payload: Any) -> str:
    """The signature's token: one request, once."""
    return str(payload["signature"]["token"])


def parse(payload: Any) -> list[Report]:
    """A Mailgun permanent ``failed`` or ``complained`` event (a temporary ``failed`` is
    sent for each retry, and ignored)."""
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("recipient"), str):
        raise Malformed("not a Mailgun event")
    event = data.get("event")
    if event == "complained":
        kind = MailEventKind.COMPLAINT
    elif event == "failed" and data.get("severity") == "permanent":
        kind = MailEventKind.HARD
    else:  # a temporary failure is one attempt of several: Mailgun is still trying
        return []
    status = data.get("delivery-status") or {}
    reason = status.get("description") or status.get("message") or ""
    diagnostic = f"{status.get('code', '')} {reason}"
    headers = (data.get("message") or {}).get("headers") or {}
    return [
        Report(
            data["recipient"],
            kind,
            diagnostic.strip(),
            message_id=headers.get("message-id"),
            event_id=data.get("id"),
        )
    ]
