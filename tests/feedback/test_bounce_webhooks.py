"""``POST /webhooks/bounces/{provider}``: each provider's payload (shaped as its docs show)
and signature scheme; forged, stale and replayed requests change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from drip.core.courses import Catalog, Course
from drip.core.models import Delivery, Enrollment, MailEvent, Subscriber
from drip.core.signatures import drip_signature
from drip.runner import make_sender
from drip.sending.mailer import memory
from drip.web import create_app
from tests.fixtures import enrol, make_settings

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)  # days before any run of these tests
SECRET = "webhook-secret-for-bounces"
MAILGUN_KEY = "mailgun-signing-key-for-tests"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
PEOPLE = ("ana", "ben", "cat", "dan", "eve")
#: the only lesson sent: events naming no email are put down to it
DAY_1 = "upper-back-shoulders"
DAY_2 = "hips"


@pytest.fixture
def client(tmp_path: Path, course: Course) -> Iterator[TestClient]:
    memory.outbox.clear()
    settings = make_settings(
        tmp_path,
        bounce_webhook_secret=SECRET,
        mailgun_signing_key=MAILGUN_KEY,
        sendgrid_verification_key=SENDGRID_PUBLIC,
    )
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        engine = test_client.app.state.drip.engine  # type: ignore[attr-defined]
        for name in PEOPLE:
            enrol(engine, course, f"{name}@example.org", now=NOW)
        make_sender(
            engine=engine, settings=settings, catalog=Catalog({course.slug: course})
        ).send_due(now=NOW)
        yield test_client
    memory.outbox.clear()


@pytest.fixture
def db(client: TestClient) -> Engine:
    return client.app.state.drip.engine  # type: ignore[attr-defined]


def _message_id(name: str) -> str:
    (sent,) = [m for m in memory.outbox if m.recipient == f"{name}@example.org"]
    return sent.message_id


def _state(db: Engine) -> dict[str, str]:
    with Session(db) as session:
        return {s.email.split("@")[0]: s.status for s in session.exec(select(Subscriber))}


def _events(db: Engine) -> list[tuple[str, str, str, str | None]]:
    with Session(db) as session:
        rows = session.exec(
            select(Subscriber.email, MailEvent.kind, MailEvent.source, Delivery.key)
            .join(Subscriber, Subscriber.id == MailEvent.subscriber_id)
            .join(Delivery, isouter=True)
            .order_by(MailEvent.id)
        )
        return [(e.split("@")[0], k, s, d) for e, k, s, d in rows]


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"drip:{password}".encode()).decode()}


POSTMARK_BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user).",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": "ana@example.org",
    "From": "hello@example.com",
    "BouncedAt": "2026-11-25T07:05:00Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Day 1",
}
POSTMARK_COMPLAINT = {
    **POSTMARK_BOUNCE,
    "RecordType": "SpamComplaint",
    "ID": 42,
    "Type": "SpamComplaint",
    "TypeCode": 512,
    "Name": "Spam complaint",
    "Email": "ben@example.org",
}


def test_postmark_with_its_basic_auth(client: TestClient, db: Engine) -> None:
    url = "/webhooks/bounces/postmark"
    for headers in ({}, _basic("wrong"), {"Authorization": "Basic !!!"}):
        assert client.post(url, json=POSTMARK_BOUNCE, headers=headers).status_code == 401
    assert _events(db) == []
    answer = client.post(url, json=POSTMARK_BOUNCE, headers=_basic(SECRET))
    assert (answer.status_code, answer.json()) == (200, {"handled": 1, "ignored": 0})
    answer = client.post(url, json=POSTMARK_COMPLAINT, headers=_basic(SECRET))
    assert answer.json() == {"handled": 1, "ignored": 0}
    # Postmark retries: the same record again is not counted twice
    assert client.post(url, json=POSTMARK_COMPLAINT, headers=_basic(SECRET)).json() == {
        "handled": 0,
        "ignored": 1,
    }
    assert _state(db) == {
        **dict.fromkeys(PEOPLE, "active"),
        "ana": "suppressed",
        "ben": "suppressed",
    }
    assert _events(db) == [
        ("ana", "hard", "postmark", DAY_1),
        ("ben", "complaint", "postmark", DAY_1),
    ]


def _mailgun(event: dict[str, Any], *, at: float | None = None, key: str = MAILGUN_KEY) -> dict:  # type: ignore[type-arg]
    stamp = str(int(at if at is not None else time.time()))
    token = hashlib.sha256(json.dumps(event).encode() + stamp.encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": event,
    }


def test_mailgun_with_its_signature_in_the_body(client: TestClient, db: Engine) -> None:
    failed = {
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "timestamp": 1764054300.0,
        "recipient": "cat@example.org",
        "delivery-status": {
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist.",
            "description": "",
        },
        "message": {"headers": {"message-id": _message_id("cat").strip("<>")}},
    }
    url = "/webhooks/bounces/mailgun"
    for forged in (
        _mailgun(failed, key="not-the-key"),
        _mailgun(failed, at=time.time() - 600),
        {"event-data": failed},
    ):
        assert client.post(url, json=forged).status_code == 401
    signed = _mailgun(failed)
    assert client.post(url, json=signed).json() == {"handled": 1, "ignored": 0}
    # the same event again (a retry, or a replay within the five minutes): not counted
    assert client.post(url, json=signed).json() == {"handled": 0, "ignored": 1}
    complained = _mailgun(
        {**failed, "id": "other", "event": "complained", "recipient": "dan@example.org"}
    )
    assert client.post(url, json=complained).json() == {"handled": 1, "ignored": 0}
    # a temporary failure is one of Mailgun's retries: it is still trying
    temporary = _mailgun({**failed, "id": "third", "severity": "temporary"})
    assert client.post(url, json=temporary).json() == {"handled": 0, "ignored": 0}
    assert _state(db)["cat"] == _state(db)["dan"] == "suppressed"
    assert _events(db) == [
        ("cat", "hard", "mailgun", DAY_1),
        ("dan", "complaint", "mailgun", DAY_1),
    ]


def _sendgrid_headers(body: bytes, *, at: float | None = None, key: Any = SENDGRID_KEY) -> dict:  # type: ignore[type-arg]
    stamp = str(int(at if at is not None else time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def test_sendgrid_with_its_ecdsa_signature(client: TestClient, db: Engine) -> None:
    events = [
        {
            "email": "eve@example.org",
            "event": "delivered",
            "sg_event_id": "ZGVsaXZlcmVk",
            "smtp-id": _message_id("eve"),
            "timestamp": 1764054300,
        },
        {
            "email": "eve@example.org",
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "sg_event_id": "Ym91bmNl",
            "smtp-id": _message_id("eve"),
            "timestamp": 1764054301,
        },
        {
            "email": "dan@example.org",
            "event": "spamreport",
            "sg_event_id": "c3BhbXJlcG9ydA",
            "timestamp": 1764054302,
        },
        {"email": "nobody@example.org", "event": "spamreport", "sg_event_id": "bm9ib2R5"},
    ]
    body = json.dumps(events).encode()
    url = "/webhooks/bounces/sendgrid"
    other = ec.generate_private_key(ec.SECP256R1())
    for headers in (
        _sendgrid_headers(body, key=other),
        _sendgrid_headers(body, at=time.time() - 600),
        _sendgrid_headers(body + b" "),
        {"Content-Type": "application/json"},
    ):
        assert client.post(url, content=body, headers=headers).status_code == 401
    # day 2 goes out before the events arrive: eve's names day 1 by its Message-ID, dan's
    # names no email and counts for the last one sent
    state = client.app.state.drip  # type: ignore[attr-defined]
    make_sender(engine=db, settings=state.settings, catalog=state.catalog).send_due(
        now=NOW + timedelta(days=1)
    )
    answer = client.post(url, content=body, headers=_sendgrid_headers(body))
    assert answer.json() == {"handled": 2, "ignored": 1}
    assert _events(db) == [
        ("eve", "hard", "sendgrid", DAY_1),
        ("dan", "complaint", "sendgrid", DAY_2),
    ]
    # SendGrid retries a batch: what was handled is not counted again, the rest is
    retried = json.dumps(
        [events[1], {"email": "ana@example.org", "event": "spamreport", "sg_event_id": "YW5h"}]
    ).encode()
    answer = client.post(url, content=retried, headers=_sendgrid_headers(retried))
    assert answer.json() == {"handled": 1, "ignored": 1}


def test_the_generic_form_signed_like_a_signup(client: TestClient, db: Engine) -> None:
    url = "/webhooks/bounces/generic"
    body = json.dumps(
        [{"email": "ANA@example.org", "type": "soft", "diagnostic": "mailbox full"}]
    ).encode()
    signed = {"X-Drip-Signature": drip_signature(body, SECRET, now=time.time())}
    assert client.post(url, content=body).status_code == 401
    stale = {"X-Drip-Signature": drip_signature(body, SECRET, now=time.time() - 600)}
    assert client.post(url, content=body, headers=stale).status_code == 401
    assert client.post(url, content=body, headers=signed).json() == {"handled": 1, "ignored": 0}
    bad = json.dumps({"email": "ana@example.org", "type": "bounced"}).encode()
    answer = client.post(
        url, content=bad, headers={"X-Drip-Signature": drip_signature(bad, SECRET, now=time.time())}
    )
    assert (answer.status_code, answer.json()) == (
        422,
        {"detail": "type must be hard, soft or complaint"},
    )
    assert _events(db) == [("ana", "soft", "generic", DAY_1)]
    assert _state(db)["ana"] == "active"  # one soft bounce is under the limit


def test_unknown_or_unconfigured_providers_do_not_exist(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as bare:
        for provider in ("postmark", "mailgun", "sendgrid", "generic", "ses", "..%2Fsubscribe"):
            assert bare.post(f"/webhooks/bounces/{provider}", json={}).status_code == 404


# -- Amazon SES through SNS: AWS cannot run here, so the certificate download is the one
# -- part replaced (by a certificate made for the test); everything else is as in production
TOPIC = "arn:aws:sns:eu-west-1:123456789012:drip-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789.pem"
SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def sns_fetches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """SNS's side: serves the signing certificate, records the URLs drip fetched."""
    from drip.feedback.providers import ses

    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        assert ses.is_sns_url(url), url
        fetched.append(url)
        return _certificate(SNS_KEY) if url == CERT_URL else b"<ConfirmSubscriptionResponse/>"

    ses._certificates.clear()
    monkeypatch.setattr(ses, "fetch_sns", fetch)
    yield fetched
    ses._certificates.clear()


def _sns(kind: str, fields: dict[str, str], *, version: str = "2", key: Any = SNS_KEY) -> dict:  # type: ignore[type-arg]
    message = {
        "Type": kind,
        "MessageId": fields.pop("MessageId", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"),
        "TopicArn": TOPIC,
        "Timestamp": "2026-11-25T07:05:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        **fields,
    }
    order = (
        "Message",
        "MessageId",
        "Subject",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    )
    text = "".join(f"{k}\n{message[k]}\n" for k in order if k in message)
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    message["Signature"] = base64.b64encode(
        key.sign(text.encode(), padding.PKCS1v15(), digest)
    ).decode()
    return message


def _ses_bounce(email: str, message_id: str, bounce_type: str = "Permanent") -> str:
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": email,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": "2026-11-25T07:04:59.000Z",
                "feedbackId": "0100017c-bounce",
                "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
            },
            "mail": {
                "timestamp": "2026-11-25T07:00:00.000Z",
                "source": "hello@example.com",
                "messageId": "0100017c-ses-id",
                "destination": [email],
                "commonHeaders": {"to": [email], "messageId": message_id, "subject": "Day 1"},
            },
        }
    )


def test_ses_through_sns_with_its_signature(
    tmp_path: Path, course: Course, sns_fetches: list[str]
) -> None:
    settings = make_settings(tmp_path, ses_topic_arn=TOPIC)
    memory.outbox.clear()
    with TestClient(create_app(settings)) as client:
        db = client.app.state.drip.engine  # type: ignore[attr-defined]
        for name in PEOPLE:
            enrol(db, course, f"{name}@example.org", now=NOW)
        make_sender(engine=db, settings=settings, catalog=Catalog({course.slug: course})).send_due(
            now=NOW
        )
        url = "/webhooks/bounces/ses"
        confirm = _sns(
            "SubscriptionConfirmation",
            {
                "Message": "You have chosen to subscribe to the topic.",
                "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc",
                "Token": "abc",
            },
        )
        assert client.post(url, json=confirm).json() == {"handled": 0, "ignored": 0}
        assert sns_fetches == [CERT_URL, confirm["SubscribeURL"]]
        bounce = _sns(
            "Notification", {"Message": _ses_bounce("ana@example.org", _message_id("ana"))}
        )
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for forged in (
            {**bounce, "TopicArn": "arn:aws:sns:eu-west-1:999999999999:elsewhere"},
            {**bounce, "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem"},
            {**bounce, "SigningCertURL": "http://sns.eu-west-1.amazonaws.com/c.pem"},
            {**bounce, "Message": _ses_bounce("ben@example.org", _message_id("ben"))},
            _sns("Notification", {"Message": _ses_bounce("ana@example.org", "x")}, key=other_key),
            {**bounce, "SignatureVersion": "3"},
        ):
            assert client.post(url, json=forged).status_code == 401
        assert sns_fetches == [CERT_URL, confirm["SubscribeURL"]]  # nothing fetched elsewhere
        assert client.post(url, json=bounce).json() == {"handled": 1, "ignored": 0}
        assert client.post(url, json=bounce).json() == {"handled": 0, "ignored": 1}  # a retry
        complaint = _sns(
            "Notification",
            {
                "MessageId": "second",
                "Message": json.dumps(
                    {
                        "notificationType": "Complaint",
                        "complaint": {
                            "complainedRecipients": [{"emailAddress": "ben@example.org"}],
                            "complaintFeedbackType": "abuse",
                        },
                        "mail": {"commonHeaders": {"messageId": _message_id("ben")}},
                    }
                ),
            },
            version="1",
        )
        assert client.post(url, json=complaint).json() == {"handled": 1, "ignored": 0}
        assert _events(db) == [("ana", "hard", "ses", DAY_1), ("ben", "complaint", "ses", DAY_1)]
        assert _state(db)["ana"] == _state(db)["ben"] == "suppressed"
    memory.outbox.clear()


def test_malformed_or_hostile_requests_are_refused_without_a_500(
    tmp_path: Path, sns_fetches: list[str]
) -> None:
    """What a stranger can send (odd digits, bad base64, odd types, look-alike hosts,
    blank keys) gets a 4xx and changes nothing; no certificate is fetched for it."""
    settings = make_settings(
        tmp_path,
        bounce_webhook_secret=SECRET,
        webhook_secret=SECRET,
        mailgun_signing_key=MAILGUN_KEY,
        sendgrid_verification_key=SENDGRID_PUBLIC,
        ses_topic_arn=TOPIC,
    )
    long_stamp = "9" * 5000
    with TestClient(create_app(settings)) as client:
        mailgun = _mailgun({"event": "failed", "recipient": "a@example.org"})
        for stamp in ("²", long_stamp, "-1"):
            forged = {**mailgun, "signature": {**mailgun["signature"], "timestamp": stamp}}
            assert client.post("/webhooks/bounces/mailgun", json=forged).status_code == 401
        body = b'{"email": "a@example.org", "type": "hard"}'
        for header in (f"t={long_stamp},sha256=00", "t=²,sha256=00"):
            for path in ("/webhooks/bounces/generic", "/subscribe"):
                signed = {"X-Drip-Signature": header.encode()}  # bytes: may be non-ASCII
                answer = client.post(path, content=body, headers=signed)  # type: ignore[arg-type]
                assert answer.status_code == 401, (path, header)
        for auth in (
            "Basic é",
            "Basic !!",
            "Bearer x",
            "Basic " + base64.b64encode(b"\xff").decode(),
        ):
            answer = client.post(
                "/webhooks/bounces/postmark",
                json=POSTMARK_BOUNCE,
                headers={"Authorization": auth.encode()},  # type: ignore[dict-item]
            )
            assert answer.status_code == 401, auth
        odd = {**POSTMARK_BOUNCE, "Email": ["a@example.org"]}
        answer = client.post("/webhooks/bounces/postmark", json=odd, headers=_basic(SECRET))
        assert answer.status_code == 422
        bounce = _sns("Notification", {"Message": _ses_bounce("a@example.org", "<x@y>")})
        for forged in (
            {**bounce, "Type": []},
            {**bounce, "Message": {"not": "a string"}},
            {**bounce, "SigningCertURL": "https://sns.eu-west-1.amazonaws.com:xx/c.pem"},
            {**bounce, "SigningCertURL": "https://[sns"},
            {**bounce, "SigningCertURL": "https://sns.s3.amazonaws.com/c.pem"},
            {**bounce, "SigningCertURL": CERT_URL + "?x=1"},
            {**bounce, "SigningCertURL": CERT_URL.replace(".pem", ".txt")},
            {**bounce, "SigningCertURL": 12},
        ):
            assert client.post("/webhooks/bounces/ses", json=forged).status_code == 401
        assert sns_fetches == []
    blank = make_settings(tmp_path, bounce_webhook_secret="", mailgun_signing_key=" ")
    with TestClient(create_app(blank)) as client:
        for provider in ("postmark", "generic", "mailgun"):
            answer = client.post(f"/webhooks/bounces/{provider}", json={}, headers=_basic(""))
            assert answer.status_code == 404, provider


def test_sns_certificates_must_name_sns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate served from an SNS address but issued to anyone else is refused."""
    from drip.feedback.providers import ses

    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(impostor.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(impostor, hashes.SHA256())
    )
    ses._certificates.clear()
    monkeypatch.setattr(
        ses, "fetch_sns", lambda url: certificate.public_bytes(serialization.Encoding.PEM)
    )
    bounce = _sns("Notification", {"Message": "{}"}, key=impostor)
    with pytest.raises(ses.Forged):
        ses.check_sns(bounce, TOPIC)
    assert ses._certificates == {}


def test_a_mailgun_signature_is_accepted_once(client: TestClient, db: Engine) -> None:
    """Mailgun's signature covers its timestamp and token, not the event: a signed request
    posted again with another event in it (by anyone who saw it) changes nothing."""
    url = "/webhooks/bounces/mailgun"
    genuine = _mailgun(
        {"id": "first", "event": "failed", "severity": "permanent", "recipient": "cat@example.org"}
    )
    assert client.post(url, json=genuine).json() == {"handled": 1, "ignored": 0}
    reused = {
        **genuine,
        "event-data": {"id": "new", "event": "complained", "recipient": "dan@example.org"},
    }
    assert client.post(url, json=reused).json() == {"handled": 0, "ignored": 1}
    assert _state(db)["dan"] == "active"
    assert _events(db) == [("cat", "hard", "mailgun", DAY_1)]


def test_nested_json_and_odd_certificate_urls_get_a_4xx_before_any_proof(
    tmp_path: Path, sns_fetches: list[str]
) -> None:
    """A body nested 100,000 deep (to every provider, signed or not) and an SNS
    certificate URL with empty user info get a 4xx, never a 500; nothing is fetched."""
    settings = make_settings(
        tmp_path,
        bounce_webhook_secret=SECRET,
        mailgun_signing_key=MAILGUN_KEY,
        sendgrid_verification_key=SENDGRID_PUBLIC,
        ses_topic_arn=TOPIC,
    )
    deep = b"[" * 100_000
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for provider in ("mailgun", "ses", "postmark", "sendgrid"):
            answer = client.post(
                f"/webhooks/bounces/{provider}", content=deep, headers=_basic(SECRET)
            )
            assert 400 <= answer.status_code < 500, (provider, answer.status_code)
        signed = {"X-Drip-Signature": drip_signature(deep, SECRET, now=time.time())}
        answer = client.post("/webhooks/bounces/generic", content=deep, headers=signed)
        assert answer.status_code == 422
        bounce = _sns("Notification", {"Message": _ses_bounce("a@example.org", "<x@y>")})
        for url in (
            "https://:x@sns.us-east-1.amazonaws.com/x.pem",
            "https://@sns.us-east-1.amazonaws.com/x.pem",
        ):
            answer = client.post("/webhooks/bounces/ses", json={**bounce, "SigningCertURL": url})
            assert answer.status_code == 401, url
    assert sns_fetches == []


def test_a_notification_signed_for_another_topic_is_refused(
    tmp_path: Path, course: Course, sns_fetches: list[str]
) -> None:
    """A genuine SNS notification, correctly signed by Amazon, but from a topic that is not
    DRIP_SES_TOPIC_ARN (another account's SES, say) is refused and changes nothing."""
    settings = make_settings(tmp_path, ses_topic_arn=TOPIC)
    with TestClient(create_app(settings)) as client:
        db = client.app.state.drip.engine  # type: ignore[attr-defined]
        enrol(db, course, "ana@example.org", now=NOW)
        elsewhere = _sns(
            "Notification",
            {
                "TopicArn": "arn:aws:sns:eu-west-1:999999999999:someone-else",
                "Message": _ses_bounce("ana@example.org", "<x@y>"),
            },
        )
        assert client.post("/webhooks/bounces/ses", json=elsewhere).status_code == 401
        assert _state(db)["ana"] == "active"


def test_the_generic_webhook_takes_only_drips_timestamped_signature(
    client: TestClient, db: Engine
) -> None:
    """A Tally or Typeform signature carries no time (it could be replayed for ever): the
    generic bounce webhook refuses it, even made with the right secret."""
    body = json.dumps({"email": "ana@example.org", "type": "hard"}).encode()
    digest = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    for header in ({"Tally-Signature": digest}, {"Typeform-Signature": f"sha256={digest}"}):
        answer = client.post("/webhooks/bounces/generic", content=body, headers=header)
        assert answer.status_code == 401, header
    assert _state(db)["ana"] == "active"


def test_an_event_for_one_person_naming_anothers_email_counts_for_their_own(
    client: TestClient, db: Engine
) -> None:
    """A provider's event for ana that carries ben's Message-ID is put down to ana's own
    last email, never to ben's: a Message-ID only names an email sent to that address."""
    postmark = {**POSTMARK_BOUNCE, "ID": 99, "Email": "ana@example.org"}
    mailgun = _mailgun(
        {
            "id": "cross",
            "event": "failed",
            "severity": "permanent",
            "recipient": "cat@example.org",
            "message": {"headers": {"message-id": _message_id("ben").strip("<>")}},
        }
    )
    answer = client.post("/webhooks/bounces/postmark", json=postmark, headers=_basic(SECRET))
    assert answer.json()["handled"] == 1
    assert client.post("/webhooks/bounces/mailgun", json=mailgun).json()["handled"] == 1
    assert _events(db) == [("ana", "hard", "postmark", DAY_1), ("cat", "hard", "mailgun", DAY_1)]
    with Session(db) as session:
        ben = session.exec(select(Subscriber).where(Subscriber.email == "ben@example.org")).one()
        cat_delivery = session.exec(
            select(MailEvent.delivery_id).where(MailEvent.source == "mailgun")
        ).one()
        bens = session.exec(
            select(Delivery.id)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)  # type: ignore[arg-type]
            .where(Enrollment.subscriber_id == ben.id)
        ).all()
    assert cat_delivery not in bens and ben.status == "active"
