"""``drip inbound``: one email that came back, from an MTA pipe or a mailbox.

Three kinds are handled: a bounce (a delivery status notification, RFC 3464, or any of
the formats ``flufl.bounce`` knows), a complaint (an ARF feedback report, RFC 5965) and
a mailto unsubscribe (an email to List-Unsubscribe's address). Anything else (an
auto-reply, a person writing back) is ignored and says so.

An email is attributed to a subscriber only on evidence a stranger cannot make up: the
tag of one of drip's return addresses (``drip.feedback.bounces``), or the Message-ID of drip's
email it quotes (which carries the enrollment's random uid) together with that
subscriber's address as the one that failed (a bounce) or the one it was sent to (a
complaint).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from email.utils import getaddresses

from flufl.bounce import all_failures
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from drip.core.config import Settings
from drip.core.courses import Catalog
from drip.core.exceptions import InvalidToken
from drip.core.states import MailEventKind
from drip.core.tokens import Purpose, Tokens
from drip.feedback.bounces import delivery_of, first_time, record
from drip.lifecycle.enrollment import Member, find_member, unsubscribe

logger = logging.getLogger("drip.inbound")
# its detectors' tracebacks on malformed email: drip answers "ignored" instead
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

#: the largest email read: a bounce or complaint quotes one email of drip's (some 20 KiB);
#: anything larger is ignored, saying so, and never parsed
MAX_BYTES = 1024 * 1024
#: the most MIME parts read: a bounce or a complaint has two or three
MAX_PARTS = 100
#: headers naming who an inbound email was delivered to, most reliable first
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To")


@dataclass(frozen=True)
class Handled:
    #: ``bounce``, ``complaint``, ``unsubscribe`` or ``ignored``
    what: str
    #: one line for the log: whose address and what was done, or why it was ignored
    detail: str


def handle_inbound(
    connection: Connection,
    raw: bytes,
    *,
    settings: Settings,
    tokens: Tokens,
    catalog: Catalog,
    now: datetime,
    recipients: Iterable[str] = (),
) -> Handled:
    """Handle one raw email in the caller's transaction. ``recipients``: the envelope
    recipients when the MTA passes them (they are also read from the headers). An email
    drip cannot read (malformed headers, MIME nested without end …) is ignored, never an
    error: a mailbox must not stall on one odd message. Database errors propagate."""
    try:
        return _handle(connection, raw, settings, tokens, catalog, now, recipients)
    except SQLAlchemyError:
        raise
    except Exception as error:  # noqa: BLE001 (any parsing failure of a stranger's email)
        logger.warning("event=inbound-unreadable error=%r", error)
        return Handled("ignored", "an email drip cannot read")


def _handle(
    connection: Connection,
    raw: bytes,
    settings: Settings,
    tokens: Tokens,
    catalog: Catalog,
    now: datetime,
    recipients: Iterable[str],
) -> Handled:
    if len(raw) > MAX_BYTES:
        return Handled("ignored", f"larger than {MAX_BYTES // 1024} KiB: no bounce is")
    message = message_from_bytes(raw, policy=policy.compat32)
    if sum(1 for _ in itertools.islice(message.walk(), MAX_PARTS + 1)) > MAX_PARTS:
        return Handled("ignored", f"more than {MAX_PARTS} MIME parts: no bounce has")
    tagged = _tagged(message, recipients, settings, tokens)
    if tagged is not None and tagged[0] == Purpose.MAILTO_UNSUBSCRIBE:
        member = _member(connection, tagged[1])
        if member is None:
            return Handled("ignored", "an unsubscribe for an enrollment that no longer exists")
        unsubscribe(connection, enrollment_uid=member.enrollment_uid, catalog=catalog, now=now)
        return Handled("unsubscribe", f"{member.email} unsubscribed (mailto)")
    original = _original(message)
    quoted = _quoted_member(connection, original)
    if _is_feedback_report(message):
        member = _verp_member(connection, original, settings, tokens)
        if member is None and quoted is not None and original is not None:
            sent_to = {a.lower() for _, a in getaddresses(original.get_all("To", []))}
            member = quoted if quoted.email in sent_to else None
        if member is None:
            return Handled("ignored", "a complaint about no email drip can identify")
        if not _first_time(connection, message, raw, now):
            return Handled("ignored", "a complaint already handled (the same report again)")
        diagnostic = _feedback(message)
        action = _record(
            connection, member, original, MailEventKind.COMPLAINT, diagnostic, settings, now
        )
        return Handled("complaint", f"{member.email} {action} (complaint)")
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector choking on a malformed email (flufl.bounce logs it)
        return Handled("ignored", "not a bounce drip can read")
    failed = {a.decode(errors="replace").lower() for a in temporary | permanent}
    if not failed:
        return Handled("ignored", "not a bounce, a complaint or an unsubscribe")
    if not permanent and _only_delayed(message):
        return Handled("ignored", "a delay notice: the email may still arrive")
    member = None
    if tagged is not None:
        member = _member(connection, tagged[1])
    elif quoted is not None and quoted.email in failed:
        member = quoted
    if member is None:
        return Handled("ignored", "a bounce for no subscriber drip can identify")
    if not _first_time(connection, message, raw, now):
        return Handled("ignored", "a bounce already handled (the same report again)")
    hard = member.email in {a.decode(errors="replace").lower() for a in permanent} or (
        tagged is not None and bool(permanent)
    )
    kind = MailEventKind.HARD if hard else MailEventKind.SOFT
    diagnostic = _diagnostic(message)
    action = _record(connection, member, original, kind, diagnostic, settings, now)
    return Handled("bounce", f"{member.email} {action} ({kind} bounce)")


def _record(
    connection: Connection,
    member: Member,
    original: Message | None,
    kind: MailEventKind,
    diagnostic: str,
    settings: Settings,
    now: datetime,
) -> str:
    return record(
        connection,
        subscriber_id=member.subscriber_id,
        delivery_id=delivery_of(
            connection, _header(original, "Message-ID") if original else None, member.subscriber_id
        ),
        kind=kind,
        source="inbound",
        diagnostic=diagnostic,
        now=now,
        policy=settings.bounce_policy,
    )


def _tagged(
    message: Message, recipients: Iterable[str], settings: Settings, tokens: Tokens
) -> tuple[Purpose, str] | None:
    """The purpose and enrollment uid of the return address this email was sent to."""
    if settings.bounce_address is None:
        return None
    addresses = list(recipients)
    for header in _RECIPIENT_HEADERS:
        addresses += [address for _, address in getaddresses(message.get_all(header, []))]
    for address in addresses:
        found = tokens.read_return_address(address, settings.bounce_address)
        if found is not None:
            return found
    return None


def _verp_member(
    connection: Connection, original: Message | None, settings: Settings, tokens: Tokens
) -> Member | None:
    """The subscriber named by the return address in the quoted email's Return-Path."""
    if original is None or settings.bounce_address is None:
        return None
    found = tokens.read_return_address(_header(original, "Return-Path"), settings.bounce_address)
    if found is None or found[0] != Purpose.BOUNCE:
        return None
    return _member(connection, found[1])


def _only_delayed(message: Message) -> bool:
    """A delivery status notification none of whose recipients failed (RFC 3464 Action:
    delayed, relayed, delivered or expanded): the server is still trying."""
    actions = [
        _header(block, "Action").lower()
        for part in message.walk()
        if part.get_content_type() == "message/delivery-status"
        for block in part.get_payload()
        if isinstance(block, Message) and block.get("Action")
    ]
    return bool(actions) and "failed" not in actions


def _header(message: Message, name: str) -> str:
    """A header as plain text (compat32 gives a ``Header`` for 8-bit bytes), trimmed."""
    return str(message.get(name) or "").strip()


def _is_feedback_report(message: Message) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "feedback-report"
    )


def _original(message: Message) -> Message | None:
    """The email a report quotes: a ``message/rfc822`` part, or ``text/rfc822-headers``."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind in ("text/rfc822-headers", "text/rfc822-header"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return message_from_string(text.decode(errors="replace"), policy=policy.compat32)
    return None


def _quoted_member(connection: Connection, original: Message | None) -> Member | None:
    """The subscriber whose email is quoted, by its Message-ID (``UID.KEY@domain``)."""
    if original is None:
        return None
    uid = _header(original, "Message-ID").strip("<>").partition(".")[0]
    return _member(connection, uid) if uid.isalnum() else None


def _member(connection: Connection, enrollment_uid: str) -> Member | None:
    try:
        return find_member(connection, enrollment_uid=enrollment_uid)
    except InvalidToken:
        return None


def _first_time(connection: Connection, message: Message, raw: bytes, now: datetime) -> bool:
    """Note a report as handled, by its own Message-ID (else its bytes): False when the
    same report was handled before (a mailbox provider sending it twice, a mailbox read
    again)."""
    report_id = _header(message, "Message-ID") or hashlib.sha256(raw).hexdigest()
    return first_time(connection, provider="inbound", event_id=report_id, now=now)


def _feedback(message: Message) -> str:
    """What an ARF report says of itself: its Feedback-Type and who reported it."""
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            fields = _feedback_fields(part)
            kind = fields.get("feedback-type", "unknown")
            agent = fields.get("user-agent") or fields.get("reporting-mta") or "unknown agent"
            return f"Feedback-Type: {kind}; reported by {agent}"
    return ""


def _feedback_fields(part: Message) -> dict[str, str]:
    """The ``Name: value`` fields of a ``message/feedback-report`` part, lower-case names."""
    payload = part.get_payload()
    if isinstance(payload, list):  # parsed as a message: its headers are the fields
        blocks = [block for block in payload if isinstance(block, Message)]
        items = [(name, str(value)) for block in blocks for name, value in block.items()]
    else:
        text = part.get_payload(decode=True)
        text = text if isinstance(text, bytes) else b""
        items = [
            (name, value)
            for line in text.decode(errors="replace").splitlines()
            for name, sep, value in [line.partition(":")]
            if sep
        ]
    return {name.strip().lower(): " ".join(value.split())[:200] for name, value in items}


def _diagnostic(message: Message) -> str:
    """The first Diagnostic-Code (or Status) of a delivery status notification."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            for block in part.get_payload():
                if isinstance(block, Message):
                    for name in ("Diagnostic-Code", "Status"):
                        if block.get(name):
                            return " ".join(_header(block, name).split())
    return _header(message, "Subject")
