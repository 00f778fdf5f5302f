"""A plain HTML form (``application/x-www-form-urlencoded``) or a JSON object with the
signup's fields; a JSON client signs with drip's own scheme (``X-Drip-Signature``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from drip.core.exceptions import InvalidSubscriber
from drip.core.signatures import DRIP_SIGNATURE, verify_drip_signature
from drip.lifecycle.forms.base import SignupRequest, from_mapping

SIGNATURE = DRIP_SIGNATURE


def verify(body: bytes, header: str, secret: str, *, now: float) -> bool:
    return verify_drip_signature(header, body, secret, now=now)


def from_form(body: bytes) -> SignupRequest:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidSubscriber("the form data is not UTF-8", field="body") from None
    return from_mapping({k: v[-1] for k, v in fields.items()}, source="form")


def from_json(data: dict[str, Any]) -> SignupRequest:
    return from_mapping(data, source="json")
