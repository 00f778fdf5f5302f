"""Tally's form webhook: ``data.fields``, a list of {label, type, value}, hidden fields by
label; signed as ``Tally-Signature: base64(HMAC-SHA256(secret, body))``."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

from drip.core.signatures import hmac_sha256, same
from drip.lifecycle.forms.base import HONEYPOT, SignupRequest, event_id, from_mapping

SIGNATURE = "tally-signature"


def verify(body: bytes, header: str, secret: str, *, now: float) -> bool:
    """Tally signs the body only (no time: a replay is caught by its ``eventId``)."""
    return same(header.strip(), base64.b64encode(hmac_sha256(secret, body)).decode("ascii"))


def matches(data: dict[str, Any]) -> bool:
    return isinstance(data.get("data"), dict) and "fields" in data["data"]


def parse(data: dict[str, Any]) -> SignupRequest:
    fields = data["data"]["fields"]
    values: dict[str, Any] = {}
    for item in fields if isinstance(fields, list) else []:
        if not isinstance(item, dict):
            continue
        label = str(item.get("label") or item.get("key") or "").strip().lower()
        value = item.get("value")
        if item.get("type") == "INPUT_EMAIL" or "email" in label:
            values.setdefault("email", value)
        elif "name" in label:
            values.setdefault("name", value)
        elif label in ("timezone", "course", HONEYPOT):
            values[label] = value
    return replace(from_mapping(values, source="tally"), event_id=event_id(data.get("eventId")))
