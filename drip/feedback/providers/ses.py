"""Amazon SES notifications through an SNS topic: a ``Bounce`` (Permanent: hard; Transient
or Undetermined: soft) or a ``Complaint``.

The proof is the SNS message signature (RSA, SHA1 or SHA256) made with Amazon's
certificate, fetched over HTTPS from an ``sns.<region>.amazonaws.com`` address only (no
redirect followed), whose subject must be ``sns.amazonaws.com``; the topic must be
``DRIP_SES_TOPIC_ARN``. The topic's first message (a ``SubscriptionConfirmation``) is
confirmed by fetching its ``SubscribeURL``, as SNS asks. SNS retries for longer than a
timestamp could allow: a message id seen before is not counted twice.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from drip.core.config import Settings
from drip.core.states import MailEventKind
from drip.feedback.providers.base import Forged, Malformed, Report, parse_json

NAME = "ses"
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


def secret(settings: Settings) -> str | None:
    return settings.ses_topic_arn


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: float) -> Any:
    """A signed SNS message for the topic ``secret``; may fetch the signing certificate."""
    payload = parse_json(body)
    check_sns(payload, secret)
    return payload


def parse(payload: Any) -> list[Report]:
    """A notification's reports; a subscription confirmation is confirmed (may fetch)."""
    if payload["Type"] == "SubscriptionConfirmation":
        confirm_subscription(payload)
    if payload["Type"] != "Notification":
        return []
    return _reports(payload)


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
        and "@" not in parts.netloc  # no user info, not even an empty one
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


def _reports(payload: Any) -> list[Report]:
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
