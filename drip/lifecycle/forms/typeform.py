"""Typeform's webhook: ``form_response`` with typed answers, plus ``hidden`` fields;
signed as ``Typeform-Signature: sha256=base64(HMAC-SHA256(secret, body))``."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

from drip.core.exceptions import InvalidSubscriber
from drip.core.signatures import hmac_sha256, same
from drip.lifecycle.forms.base import SignupRequest, event_id, from_mapping

SIGNATURE = "typeform-signature"


def verify(body: bytes, header: str, secret: str, *, now: float) -> bool:
    """Typeform signs the body only (no time: a replay is caught by its ``event_id``)."""
    expected = "sha256=" + base64.b64encode(hmac_sha256(secret, body)).decode("ascii")
    return same(header.strip(), expected)


def matches(data: dict[str, Any]) -> bool:
    return "form_response" in data


def parse(data: dict[str, Any]) -> SignupRequest:
    response = data["form_response"]
    if not isinstance(response, dict):
        raise InvalidSubscriber("form_response must be an object", field="form_response")
    values: dict[str, Any] = {}
    answers = response.get("answers")
    for answer in answers if isinstance(answers, list) else []:
        if not isinstance(answer, dict):
            continue
        field = answer.get("field")
        ref = str(field.get("ref") or "").lower() if isinstance(field, dict) else ""
        if answer.get("type") == "email":
            values.setdefault("email", answer.get("email"))
        elif answer.get("type") == "text" and ("name" in ref or "name" not in values):
            values["name"] = answer.get("text")
    hidden = response.get("hidden") or {}
    if isinstance(hidden, dict):
        values.update({k: hidden[k] for k in ("timezone", "course") if k in hidden})
    return replace(from_mapping(values, source="typeform"), event_id=event_id(data.get("event_id")))
