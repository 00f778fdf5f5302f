"""Message building: headers, parts, compliance, determinism and header-injection safety."""

from __future__ import annotations

import base64
import quopri
import random
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest

from drip.core.courses import Course
from drip.core.states import EmailKind
from drip.sending.compose import Composer, Recipient, message_id
from drip.sending.message import Prototype, SplicedBody, quoted_printable
from tests.fixtures import make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
ANA = Recipient("ana@example.org", "Ana", "a1b2c3", "Europe/Lisbon")


def _parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_lesson_has_every_required_header(composer: Composer, course: Course) -> None:
    """A lesson carries From, To, Subject, Date, Message-ID, List-* and is multipart text+HTML."""
    message = _parse(
        composer.lesson(course=course, day=course.days[2], recipient=ANA, now=NOW).data
    )
    assert message["From"] == "Yin Yoga with Maya <hello@example.com>"
    assert message["Reply-To"] == "maya@example.com"
    assert message["To"] == "Ana <ana@example.org>"
    assert message["Subject"] == course.days[2].subject
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == "<a1b2c3.spine@example.com>"
    assert message["List-Id"] == "7-Day Yin Yoga Immersion <yin-immersion.example.com>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    html = message.get_body(("html",)).get_content()
    assert f'href="{composer.links.tracked_class(ANA.uid, course, course.days[2])}"' in html
    assert "Day 3 of 7" in html
    assert "physician" in html


def test_unsubscribe_url_is_the_same_in_header_and_footer(
    composer: Composer, course: Course
) -> None:
    """List-Unsubscribe has the one-click URL and no mailto nobody reads; the footers link
    the same URL."""
    message = _parse(
        composer.lesson(course=course, day=course.days[0], recipient=ANA, now=NOW).data
    )
    web = composer.links.unsubscribe(ANA.uid)
    assert message["List-Unsubscribe"].strip() == f"<{web}>"  # folded: long
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert web.startswith("http://127.0.0.1:8000/unsubscribe/")
    assert f'href="{web}"' in message.get_body(("html",)).get_content()
    assert web in message.get_body(("plain",)).get_content()


def test_message_id_is_deterministic_per_enrollment_and_day(
    composer: Composer, course: Course
) -> None:
    """Building the same lesson twice (a retry) gives the same Message-ID; another day differs."""
    first = composer.lesson(course=course, day=course.days[0], recipient=ANA, now=NOW)
    again = composer.lesson(course=course, day=course.days[0], recipient=ANA, now=NOW)
    other = composer.lesson(course=course, day=course.days[1], recipient=ANA, now=NOW)
    expected = message_id("a1b2c3", "upper-back-shoulders", "example.com")
    assert first.message_id == again.message_id == f"<{expected}>"
    assert other.message_id != first.message_id


@pytest.mark.parametrize(
    "name",
    [
        "Eve\r\nBcc: victim@example.net",
        "Eve\nContent-Type: text/html",
        "Eve\rX-Injected: yes",
        'Eve" <evil@example.net>, "x',
    ],
)
def test_names_cannot_inject_headers_or_recipients(
    composer: Composer, course: Course, name: str
) -> None:
    """CR/LF and quotes in a name never create headers or extra addresses."""
    recipient = Recipient("eve@example.org", name, "e1", "UTC")
    data = composer.lesson(course=course, day=course.days[0], recipient=recipient, now=NOW).data
    message = _parse(data)
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert message.get_content_type() == "multipart/alternative"
    assert [a.addr_spec for a in message["To"].addresses] == ["eve@example.org"]
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(line[:1] in (b" ", b"\t") or b":" in line for line in head.split(b"\r\n"))


def test_subject_with_newlines_stays_one_header() -> None:
    """Even a subject given with CR/LF to the builder stays a single Subject header."""
    prototype = Prototype(
        from_name="A", from_address="a@example.com", subject="Hello\r\nBcc: x@example.net"
    )
    data = prototype.build(
        to_name="B",
        to_address="b@example.org",
        message_id="m@example.com",
        date=NOW,
        text=quoted_printable("t"),
        html=quoted_printable("h"),
    ).data
    message = _parse(data)
    assert message["Bcc"] is None
    assert message["Subject"] == "Hello Bcc: x@example.net"


def test_non_ascii_round_trips(composer: Composer, course: Course) -> None:
    """Non-ASCII names and subjects are encoded and decode back exactly."""
    prototype = Prototype(
        from_name="Maya Sørensen",
        from_address="hello@example.com",
        subject="Día 1: respira 🧘 — ça va",
    )
    text = "Grüße, Zoë — 🧘 " + "long line " * 30
    data = prototype.build(
        to_name="Zoë Ångström",
        to_address="zoe@exämple.org",
        message_id="m@example.com",
        date=NOW,
        text=quoted_printable(text),
        html=quoted_printable("<p>Zoë</p>"),
    ).data
    data.decode("ascii")  # the wire form is 7-bit clean
    message = _parse(data)
    assert message["Subject"] == "Día 1: respira 🧘 — ça va"
    assert message["From"].addresses[0].display_name == "Maya Sørensen"
    assert message["To"].addresses[0].display_name == "Zoë Ångström"
    assert message["To"].addresses[0].domain == "xn--exmple-cua.org"
    assert message.get_body(("plain",)).get_content().rstrip("\n") == text


def test_lines_respect_smtp_and_quoted_printable_limits(composer: Composer, course: Course) -> None:
    """Every line ends in CRLF, header lines stay short, QP body lines ≤ 76 columns, and
    no line starts with a dot (the SMTP mailer then sends the bytes as they are)."""
    dotty = Recipient("ana@example.org", ".Ana", "a1b2c3", "Europe/Lisbon")
    for day in course.days:
        data = composer.lesson(course=course, day=day, recipient=dotty, now=NOW).data
        assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
        assert not data.startswith(b".") and b"\r\n." not in data
        head, body = data.split(b"\r\n\r\n", 1)
        assert max(len(line) for line in head.split(b"\r\n")) <= 100
        assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_quoted_printable_round_trips_without_leading_dots() -> None:
    """Random text full of dots, escapes, whitespace and long lines: decodes to itself,
    lines ≤ 76 columns, and a dot never starts a line."""
    for seed in range(300):
        rng = random.Random(seed)
        text = "".join(rng.choice(".....=  \tabcxyzé€\n") for _ in range(rng.randrange(1, 600)))
        encoded = quoted_printable(text)
        lines = encoded.split(b"\r\n")
        assert max(len(line) for line in lines) <= 76, seed
        assert not any(line.startswith(b".") for line in lines), seed
        assert b"\n" not in encoded.replace(b"\r\n", b""), seed
        decoded = quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode("utf-8")
        assert decoded == text, seed


def test_spliced_body_decodes_to_the_full_text() -> None:
    """Splicing values into a pre-encoded body decodes to exactly the substituted text."""
    slots = {"name": "\x00n\x00", "url": "\x00u\x00"}
    template = ("x" * 70 + " Hi \x00n\x00, ünïcode ") * 3 + "link: \x00u\x00 end "
    body = SplicedBody(template, slots)
    values = {"name": "Zoë =?", "url": "https://example.com/" + "a" * 120}
    encoded = body.encode(values)
    assert max(len(line) for line in encoded.split(b"\r\n")) <= 76
    decoded = quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode("utf-8")
    expected = template.replace("\x00n\x00", values["name"]).replace("\x00u\x00", values["url"])
    assert decoded == expected == body.text(values)


def test_confirmation_has_no_list_unsubscribe(composer: Composer, course: Course) -> None:
    """The opt-in email links to its signup's confirmation and is not a list message yet;
    its Message-ID comes from its outbox key, so a retry carries the same one."""
    build = partial(
        composer.transactional,
        EmailKind.CONFIRM,
        course=course,
        recipient=ANA,
        key="confirm:k1",
        now=NOW,
        signup_uid="s1gnup",
    )
    message = _parse(build().data)
    assert message["List-Unsubscribe"] is None
    link = re.search(r"/confirm/(\S+)", message.get_body(("plain",)).get_content())
    assert link and composer.tokens.read_confirm(link.group(1))[0] == "s1gnup"
    assert message["Subject"] == "Please confirm: 7-Day Yin Yoga Immersion"
    assert message["Message-ID"] == build().message_id == "<a1b2c3.confirm.k1@example.com>"


def test_dkim_signature_verifies(tmp_path: Path, course: Course) -> None:
    """With a DKIM key configured, lessons carry a signature that verifies with the public key."""
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    composer = Composer(
        settings=make_settings(tmp_path, dkim_selector="drip", dkim_private_key_file=key_file)
    )
    data = composer.lesson(course=course, day=course.days[0], recipient=ANA, now=NOW).data
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"drip._domainkey.example.com."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"Day 1", b"Day 9", 1), dnsfunc=dns)


def test_a_name_that_looks_encoded_is_shown_as_typed(composer: Composer, course: Course) -> None:
    """A signup named like an RFC 2047 encoded word cannot make mail clients display a
    different sender: the name is itself encoded, and decodes to the literal text."""
    from email.header import decode_header, make_header

    trick = "=?utf-8?b?QWRtaW4gPGFkbWluQGJhbmsuY29tPg==?="
    recipient = Recipient("ana@example.org", trick, "a1b2c3", "UTC")
    message = composer.lesson(course=course, day=course.days[0], recipient=recipient, now=NOW)
    to = message_from_bytes(message.data, policy=policy.compat32)["To"]
    assert str(make_header(decode_header(to))) == f"{trick} <ana@example.org>"
