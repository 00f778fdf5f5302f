"""Signup payloads: a plain HTML form, JSON, and the webhooks of Tally and Typeform.

``parse`` turns a request body into a ``SignupRequest``; ``verify_signature`` checks the
HMAC a form service sends when ``DRIP_WEBHOOK_SECRET`` is set, in constant time:

- Tally: ``Tally-Signature: base64(HMAC-SHA256(secret, body))``
- Typeform: ``Typeform-Signature: sha256=base64(HMAC-SHA256(secret, body))``
- any JSON client: ``X-Drip-Signature: t=UNIX_SECONDS,sha256=hex(HMAC-SHA256(secret,
  "UNIX_SECONDS." + body))``, refused when ``t`` is more than five minutes away from now
  (as Stripe and Slack do), so a captured request cannot be replayed later.

Tally and Typeform sign the body only, and resend the same body when they retry, so a
replay of theirs cannot be told from a retry by time; the web tier drops a second copy
of an event id it has already seen instead (``SignupRequest.event_id``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from drip.core.exceptions import InvalidSubscriber

#: the hidden field bots fill in and people never see
HONEYPOT = "website"


@dataclass(frozen=True)
class SignupRequest:
    email: str
    name: str = ""
    course: str | None = None
    timezone: str | None = None
    redirect: str | None = None
    #: the honeypot was filled: answer as usual, store nothing
    is_bot: bool = False
    #: tally, typeform, json or form
    source: str = "form"
    #: the form service's id for this delivery (Tally ``eventId``, Typeform ``event_id``)
    event_id: str | None = None


def parse(body: bytes, content_type: str) -> SignupRequest:
    """A signup from a request body; ``InvalidSubscriber`` names what is wrong."""
    if content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise InvalidSubscriber("the form data is not UTF-8", field="body") from None
        return _from_mapping({k: v[-1] for k, v in fields.items()}, source="form")
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidSubscriber("the body is not valid JSON", field="body") from None
        if not isinstance(data, dict):
            raise InvalidSubscriber("the JSON body must be an object", field="body")
        if "form_response" in data:
            return replace(_typeform(data["form_response"]), event_id=_id(data.get("event_id")))
        if isinstance(data.get("data"), dict) and "fields" in data["data"]:
            return replace(_tally(data["data"]["fields"]), event_id=_id(data.get("eventId")))
        return _from_mapping(data, source="json")
    raise InvalidSubscriber(
        "send application/x-www-form-urlencoded or application/json", field="content-type"
    )


def _id(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float):
        raise InvalidSubscriber(f"{field} must be a string", field=field)
    return str(value)


def _from_mapping(data: Mapping[str, Any], *, source: str) -> SignupRequest:
    return SignupRequest(
        email=_text(data.get("email"), "email"),
        name=_text(data.get("name"), "name"),
        course=_text(data.get("course"), "course") or None,
        timezone=_text(data.get("timezone"), "timezone") or None,
        redirect=_text(data.get("redirect"), "redirect") or None,
        is_bot=bool(_text(data.get(HONEYPOT), HONEYPOT).strip()),
        source=source,
    )


def _tally(fields: Any) -> SignupRequest:
    """Tally's ``data.fields``: a list of {label, type, value}; hidden fields by label."""
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
    return _from_mapping(values, source="tally")


def _typeform(response: Any) -> SignupRequest:
    """Typeform's ``form_response``: typed answers, plus ``hidden`` fields."""
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
    return _from_mapping(values, source="typeform")


#: how far a signed timestamp may be from now
SIGNATURE_TOLERANCE_SECONDS = 300


def verify_signature(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> bool:
    """True when one of the supported signature headers matches ``body`` (and, for
    ``X-Drip-Signature``, its timestamp is within five minutes of ``now``)."""
    key = secret.encode("utf-8")
    digest = hmac.new(key, body, hashlib.sha256).digest()
    if "x-drip-signature" in headers:
        return _timestamped(headers["x-drip-signature"], body, key, now)
    expected = {
        "tally-signature": base64.b64encode(digest).decode("ascii"),
        "typeform-signature": "sha256=" + base64.b64encode(digest).decode("ascii"),
    }
    return any(
        hmac.compare_digest(headers[name].strip().encode(), value.encode())
        for name, value in expected.items()
        if name in headers
    )


def is_timestamp(value: str) -> bool:
    """Unix seconds as ASCII digits (``str.isdigit`` also takes "²" and 5,000 digits)."""
    return re.fullmatch(r"[0-9]{1,12}", value) is not None


def _timestamped(header: str, body: bytes, key: bytes, now: float) -> bool:
    parts = dict(part.strip().partition("=")[::2] for part in header.split(","))
    stamp, given = parts.get("t", ""), parts.get("sha256", "")
    if not is_timestamp(stamp) or abs(now - int(stamp)) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.encode(), expected.encode())


def drip_signature(body: bytes, secret: str, *, now: float) -> str:
    """The ``X-Drip-Signature`` value for ``body`` (for your own clients, and tests)."""
    stamp = str(int(now))
    mac = hmac.new(secret.encode("utf-8"), stamp.encode() + b"." + body, hashlib.sha256)
    return f"t={stamp},sha256={mac.hexdigest()}"


_SNIPPET = """<!-- {title}: signup form generated by `drip form-snippet {slug}` -->
<form method="post" action="{action}" accept-charset="utf-8">
  <label for="drip-email">Email address</label>
  <input id="drip-email" name="email" type="email" required autocomplete="email">
  <label for="drip-name">First name (optional)</label>
  <input id="drip-name" name="name" type="text" autocomplete="given-name" maxlength="100">
  <input type="hidden" name="course" value="{slug}">
  <input type="hidden" name="timezone" id="drip-timezone" value="">
  <div style="position:absolute;left:-10000px" aria-hidden="true">
    <label for="drip-website">Leave this empty</label>
    <input id="drip-website" name="{honeypot}" type="text" tabindex="-1" autocomplete="off">
  </div>
  <button type="submit">Start the free course</button>
  <p><small>{privacy}</small></p>
</form>
<script>
  try {{ document.getElementById("drip-timezone").value =
    Intl.DateTimeFormat().resolvedOptions().timeZone; }} catch (e) {{}}
</script>
"""


def form_snippet(*, slug: str, title: str, privacy: str, base_url: str) -> str:
    """A copy-paste HTML signup form for the teacher's own site (values HTML-escaped)."""
    from html import escape

    return _SNIPPET.format(
        title=escape(title).replace("--", "- -"),
        slug=escape(slug),
        action=escape(f"{base_url}/subscribe"),
        honeypot=HONEYPOT,
        privacy=escape(privacy),
    )
