"""Bounce and complaint webhooks of email providers: each provider's signature scheme and
payload, turned into ``Report``s for the bounce policy (``drip.feedback.bounces``).

- ``postmark``: HTTP basic auth on the webhook URL (any user, ``DRIP_WEBHOOK_SECRET`` as
  the password);
- ``mailgun``: HMAC-SHA256 of timestamp + token, in the body (``DRIP_MAILGUN_SIGNING_KEY``);
- ``sendgrid``: ECDSA (P-256, SHA-256) of timestamp + body, in headers
  (``DRIP_SENDGRID_VERIFICATION_KEY``, the public key);
- ``generic``: ``X-Drip-Signature`` as for signups (``DRIP_WEBHOOK_SECRET``);
- ``ses``: Amazon SES notifications through an SNS topic: the SNS message signature
  (RSA, SHA1 or SHA256) with Amazon's certificate, fetched over HTTPS from an
  ``sns.<region>.amazonaws.com`` address only, and the topic must be
  ``DRIP_SES_TOPIC_ARN``.

Timestamps older than five minutes are refused, as is a Mailgun token seen before (SNS
retries for longer: there a message id seen before is not counted twice).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from drip.core.states import MailEventKind
from drip.lifecycle.forms import SIGNATURE_TOLERANCE_SECONDS, is_timestamp, verify_signature

#: SNS's regional hosts (sns.eu-west-1.amazonaws.com, sns.us-gov-west-1…, sns.cn-north-1…)
_SNS_HOST = re.compile(r"sns\.[a-z]{2}(-gov)?-[a-z]+-\d\.amazonaws\.com(\.cn)?")
#: the fields SNS signs, in order, per message type (Subject only when present)
_SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SNS_SIGNED["UnsubscribeConfirmation"] = _SNS_SIGNED["SubscriptionConfirmation"]
#: signing certificates' public keys by URL, a few at most
_certificates: dict[str, Any] = {}


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
    try:
        return json.loads(body)
    except ValueError:
        raise Malformed("the body is not JSON") from None


def _fresh(stamp: str, now: float) -> bool:
    return is_timestamp(stamp) and abs(now - int(stamp)) <= SIGNATURE_TOLERANCE_SECONDS


# -- proofs ------------------------------------------------------------------------------
def check_basic_auth(headers: Mapping[str, str], secret: str) -> None:
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    try:
        _, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
        raise Forged from None
    if scheme.lower() != "basic" or not hmac.compare_digest(password.encode(), secret.encode()):
        raise Forged


def check_mailgun(payload: Any, key: str, now: float) -> str:
    """The token of a correctly signed, fresh Mailgun payload."""
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise Forged
    stamp, token, given = (str(signature.get(k, "")) for k in ("timestamp", "token", "signature"))
    expected = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    genuine = hmac.compare_digest(given.encode(), expected.encode())
    if not (_fresh(stamp, now) and token and genuine):
        raise Forged
    return token


def check_sendgrid(body: bytes, headers: Mapping[str, str], public_key: str, now: float) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    stamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
    try:
        signature = base64.b64decode(
            headers.get("x-twilio-email-event-webhook-signature", ""), validate=True
        )
        key = load_der_public_key(base64.b64decode(public_key))
    except (binascii.Error, ValueError):
        raise Forged from None
    if not _fresh(stamp, now) or not isinstance(key, ec.EllipticCurvePublicKey):
        raise Forged
    try:
        key.verify(signature, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Forged from None


def is_sns_url(url: object, *, certificate: bool = False) -> bool:
    """An https URL on one of SNS's regional hosts; a ``certificate``'s is a ``.pem`` file
    with no query (subscription confirmations carry theirs in the query)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port is None
        and not parts.username
        and bool(_SNS_HOST.fullmatch(parts.hostname or ""))
        and (not certificate or (parts.path.endswith(".pem") and not parts.query))
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # SNS answers itself; a redirect elsewhere is not followed


def fetch_sns(url: str) -> bytes:
    """GET one of SNS's URLs (checked by ``is_sns_url`` first); no redirects."""
    if not is_sns_url(url):
        raise Forged
    opener = urllib.request.build_opener(_NoRedirects)
    with opener.open(url, timeout=10) as response:
        return bytes(response.read(64 * 1024))


def _sns_key(url: str) -> Any:
    """The public key of SNS's signing certificate at ``url`` (a few are kept)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if url not in _certificates:
        certificate = x509.load_pem_x509_certificate(fetch_sns(url))
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [str(name.value) for name in names] not in (
            ["sns.amazonaws.com"],
            ["sns.amazonaws.com.cn"],
        ):
            raise Forged
        if len(_certificates) >= 16:
            _certificates.pop(next(iter(_certificates)))
        _certificates[url] = certificate.public_key()
    return _certificates[url]


def confirm_subscription(payload: Any) -> None:
    """Follow a (checked) SubscriptionConfirmation's SubscribeURL, as SNS asks."""
    fetch_sns(str(payload.get("SubscribeURL", "")))


def check_sns(payload: Any, topic_arn: str) -> None:
    """An SNS message for ``topic_arn``, signed with the certificate at its SigningCertURL."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if not isinstance(payload, dict) or payload.get("TopicArn") != topic_arn:
        raise Forged
    kind, url = payload.get("Type"), payload.get("SigningCertURL")
    fields = _SNS_SIGNED.get(kind) if isinstance(kind, str) else None
    if fields is None or not is_sns_url(url, certificate=True):
        raise Forged
    if not all(isinstance(payload.get(name, ""), str) for name in fields):
        raise Forged
    text = "".join(
        f"{name}\n{payload[name]}\n"
        for name in fields
        if name in payload and (name != "Subject" or payload[name] is not None)
    )
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(payload.get("SignatureVersion")))
    try:
        signature = base64.b64decode(str(payload.get("Signature", "")), validate=True)
        key = _sns_key(str(url))
    except (ValueError, OSError):  # not base64, not a certificate, SNS unreachable
        raise Forged from None
    if digest is None or not isinstance(key, rsa.RSAPublicKey):
        raise Forged
    try:
        key.verify(signature, text.encode(), padding.PKCS1v15(), digest)
    except InvalidSignature:
        raise Forged from None


def check_generic(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> None:
    if "x-drip-signature" not in headers or not verify_signature(body, headers, secret, now=now):
        raise Forged


# -- payloads ----------------------------------------------------------------------------
_POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
#: Blocked is often about the sender's reputation, not the address
_POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError", "Blocked"}


def postmark_reports(payload: Any) -> list[Report]:
    """A Postmark bounce or spam complaint webhook (one record per request)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("Email"), str):
        raise Malformed("not a Postmark bounce or spam complaint record")
    record, kind = payload.get("RecordType"), payload.get("Type")
    if record == "SpamComplaint" or kind == "SpamComplaint":
        event = MailEventKind.COMPLAINT
    elif record == "Bounce" and kind in _POSTMARK_HARD:
        event = MailEventKind.HARD
    elif record == "Bounce" and kind in _POSTMARK_SOFT:
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


def mailgun_reports(payload: Any) -> list[Report]:
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


def sendgrid_reports(payload: Any) -> list[Report]:
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


def generic_reports(payload: Any) -> list[Report]:
    """``{"email": …, "type": "hard" | "soft" | "complaint", "diagnostic": …}``, or a list."""
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


def ses_reports(payload: Any) -> list[Report]:
    """An SNS notification carrying an SES ``Bounce`` (Permanent: hard; Transient or
    Undetermined: soft) or ``Complaint``; deliveries and the rest are not bounces."""
    try:
        message = json.loads(payload["Message"])
    except (KeyError, TypeError, ValueError):
        raise Malformed("not an SES notification") from None
    if not isinstance(message, dict):
        raise Malformed("not an SES notification")
    kind = message.get("notificationType") or message.get("eventType")
    mail = message.get("mail") or {}
    message_id = (mail.get("commonHeaders") or {}).get("messageId")
    event_id = str(payload.get("MessageId"))
    reports = []
    if kind == "Bounce":
        bounce = message.get("bounce") or {}
        hard = bounce.get("bounceType") == "Permanent"
        for who in bounce.get("bouncedRecipients") or []:
            reports.append(
                Report(
                    str(who.get("emailAddress", "")),
                    MailEventKind.HARD if hard else MailEventKind.SOFT,
                    str(who.get("diagnosticCode") or bounce.get("bounceSubType") or ""),
                    message_id=message_id,
                    event_id=f"{event_id}:{who.get('emailAddress')}",
                )
            )
    elif kind == "Complaint":
        complaint = message.get("complaint") or {}
        for who in complaint.get("complainedRecipients") or []:
            reports.append(
                Report(
                    str(who.get("emailAddress", "")),
                    MailEventKind.COMPLAINT,
                    str(complaint.get("complaintFeedbackType") or ""),
                    message_id=message_id,
                    event_id=f"{event_id}:{who.get('emailAddress')}",
                )
            )
    return reports


READERS: dict[str, Callable[[Any], list[Report]]] = {
    "postmark": postmark_reports,
    "mailgun": mailgun_reports,
    "sendgrid": sendgrid_reports,
    "generic": generic_reports,
    "ses": ses_reports,
}
