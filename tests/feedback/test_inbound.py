"""What comes back after a send: bounces (RFC 3464), complaints (RFC 5965 ARF) and mailto
unsubscribes, handled by ``drip inbound``; return addresses (VERP) and the bounce policy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select
from typer.testing import CliRunner

from drip.cli import app
from drip.core.config import BouncePolicy, Settings, get_settings
from drip.core.courses import Catalog, Course
from drip.core.models import Delivery, MailEvent, Subscriber
from drip.core.states import MailEventKind, SubscriberStatus
from drip.core.tokens import Purpose, Tokens
from drip.feedback.bounces import record
from drip.feedback.inbound import Handled, handle_inbound
from drip.runner import make_sender
from drip.sending.mailer import memory
from drip.sending.message import Outgoing
from drip.store.engine import engine_for
from drip.testing import free_port
from tests.fixtures import COURSES_DIR, TEST_SECRET, enrol, make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
BOUNCES = "bounces@mail.example.com"


@pytest.fixture(autouse=True)
def _empty_outbox() -> Iterator[None]:
    memory.outbox.clear()
    yield
    memory.outbox.clear()


@pytest.fixture
def verp_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, bounce_address=BOUNCES)


def _send(engine: Engine, settings: Settings, course: Course, now: datetime) -> list[Outgoing]:
    memory.outbox.clear()
    make_sender(engine=engine, settings=settings, catalog=Catalog({course.slug: course})).send_due(
        now=now
    )
    return list(memory.outbox)


def _headers(sent: Outgoing) -> str:
    return sent.data.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")


def dsn(sent: Outgoing, *, to: str, action: str = "failed", status: str = "5.1.1") -> bytes:
    """A Postfix-style delivery status notification for ``sent``, quoting its headers."""
    code = "550" if status.startswith("5") else "452"
    return f"""\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: Wed, 25 Nov 2026 07:00:05 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{sent.recipient}>: host mail.example.org[192.0.2.25] said: {code} {status}
    <{sent.recipient}>: Recipient address rejected

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Wed, 25 Nov 2026 07:00:01 +0000

Final-Recipient: rfc822; {sent.recipient}
Original-Recipient: rfc822;{sent.recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.example.org
Diagnostic-Code: smtp; {code} {status} <{sent.recipient}>: Recipient address rejected

--B0UND
Content-Type: text/rfc822-headers

{_headers(sent)}

--B0UND--
""".replace("\n", "\r\n").encode()


def arf(sent: Outgoing, *, to: str, return_path: str | None = None) -> bytes:
    """An RFC 5965 abuse report about ``sent``, quoting it whole."""
    quoted = sent.data.decode()
    if return_path is not None:
        quoted = f"Return-Path: <{return_path}>\r\n{quoted}"
    return (
        f"""\
From: feedback@fbl.mailbox.example
To: {to}
Subject: Email Feedback Report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain

This is an email abuse report for an email message received on 25 Nov 2026.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: FBL/1.0
Version: 1
Original-Rcpt-To: {sent.recipient}
Arrival-Date: Wed, 25 Nov 2026 07:00:01 +0000

--ARF
Content-Type: message/rfc822

""".replace("\n", "\r\n")
        + quoted
        + "\r\n--ARF--\r\n"
    ).encode()


def _handle(
    engine: Engine, settings: Settings, course: Course, raw: bytes, **kw: object
) -> Handled:
    with engine.begin() as connection:
        return handle_inbound(
            connection,
            raw,
            settings=settings,
            tokens=Tokens.from_settings(settings),
            catalog=Catalog({course.slug: course}),
            now=NOW + timedelta(days=1, hours=1),
            **kw,  # type: ignore[arg-type]
        )


def _subscriber(engine: Engine, email: str) -> Subscriber:
    with Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).one()


def _events(engine: Engine) -> list[tuple[str, str, str | None]]:
    with Session(engine) as session:
        rows = session.exec(
            select(MailEvent.kind, MailEvent.source, Delivery.key)
            .join(Delivery, isouter=True)
            .order_by(MailEvent.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_emails_carry_a_return_address_naming_their_enrollment(
    tmp_path: Path, verp_settings: Settings, course: Course
) -> None:
    """With DRIP_BOUNCE_ADDRESS the envelope sender is a tagged return address and
    List-Unsubscribe gains a mailto to another; without it, neither."""
    engine = engine_for(verp_settings)
    uid = enrol(engine, course, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, verp_settings, course, NOW)
    tokens = Tokens.from_settings(verp_settings)
    assert lesson.envelope_from == tokens.return_address(BOUNCES, Purpose.BOUNCE, uid)
    assert lesson.envelope_from.startswith(f"bounces+b-{uid}-")
    assert tokens.read_return_address(lesson.envelope_from.upper(), BOUNCES) == (
        Purpose.BOUNCE,
        uid,
    )
    mailto = tokens.return_address(BOUNCES, Purpose.MAILTO_UNSUBSCRIBE, uid)
    assert f"<mailto:{mailto}?subject=unsubscribe>".encode() in lesson.data.replace(b"\r\n ", b" ")
    plain = make_settings(tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    other = engine_for(plain)
    enrol(other, course, "ana@example.org", now=NOW)
    (unmarked,) = _send(other, plain, course, NOW)
    assert unmarked.envelope_from == course.sender.address
    assert b"mailto:" not in unmarked.data


def test_a_bounce_for_a_sent_lesson_suppresses_and_nothing_more_goes_out(
    verp_settings: Settings, course: Course
) -> None:
    engine = engine_for(verp_settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    enrol(engine, course, "ben@example.org", now=NOW)
    sent = {m.recipient: m for m in _send(engine, verp_settings, course, NOW)}
    ana = sent["ana@example.org"]
    # day 2 goes out before day 1's bounce comes back: the bounce is day 1's all the same
    assert len(_send(engine, verp_settings, course, NOW + timedelta(days=1))) == 2
    handled = _handle(engine, verp_settings, course, dsn(ana, to=ana.envelope_from))
    assert handled == Handled("bounce", "ana@example.org suppressed (hard bounce)")
    subscriber = _subscriber(engine, "ana@example.org")
    assert subscriber.status == "suppressed"
    assert subscriber.suppressed_reason == (
        "hard bounce (inbound): smtp; 550 5.1.1 <ana@example.org>: Recipient address rejected"
    )
    assert _events(engine) == [("hard", "inbound", course.days[0].id)]
    later = _send(engine, verp_settings, course, NOW + timedelta(days=2))
    assert [m.recipient for m in later] == ["ben@example.org"]


def test_soft_bounces_suppress_only_past_the_limit_within_the_window(
    tmp_path: Path, course: Course
) -> None:
    """With a limit of 2 in 14 days: the same email reported twice counts once, an old
    one no longer counts, two emails within the window suppress."""
    settings = make_settings(tmp_path, soft_bounce_limit=2)
    engine = engine_for(settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    for day in range(3):
        _send(engine, settings, course, NOW + timedelta(days=day))
    with Session(engine) as session:
        lessons = [d.id for d in session.exec(select(Delivery).order_by(Delivery.id))]
    ana = _subscriber(engine, "ana@example.org").id
    assert ana is not None

    def soft(delivery: int | None, at: datetime) -> str:
        with engine.begin() as connection:
            return record(
                connection,
                subscriber_id=ana,
                delivery_id=delivery,
                kind=MailEventKind.SOFT,
                source="generic",
                diagnostic="452 4.2.2 mailbox full",
                now=at,
                policy=BouncePolicy(2, 14),
            )

    assert soft(lessons[0], NOW) == "noted"
    assert soft(lessons[0], NOW + timedelta(hours=1)) == "noted"  # the same email again
    assert soft(lessons[1], NOW + timedelta(days=15)) == "noted"  # the first is too old
    assert _subscriber(engine, "ana@example.org").status == "active"
    assert soft(lessons[2], NOW + timedelta(days=16)) == "suppressed"
    assert _subscriber(engine, "ana@example.org").suppressed_reason == (
        "2 soft bounces in 14 days (generic): 452 4.2.2 mailbox full"
    )


def test_a_delay_notice_is_not_a_bounce(verp_settings: Settings, course: Course) -> None:
    """A DSN whose recipients are only delayed (the server still tries) changes nothing."""
    engine = engine_for(verp_settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, verp_settings, course, NOW)
    delayed = dsn(lesson, to=lesson.envelope_from, action="delayed", status="4.4.1")
    for _ in range(4):
        handled = _handle(engine, verp_settings, course, delayed)
        assert handled == Handled("ignored", "a delay notice: the email may still arrive")
    assert _subscriber(engine, "ana@example.org").status == "active"
    assert _events(engine) == []


def test_an_email_drip_cannot_read_is_ignored_not_an_error(
    verp_settings: Settings, course: Course
) -> None:
    """8-bit bytes in a quoted header, MIME nested thousands deep: ignored, nothing
    stored, and the next email is handled as usual."""
    engine = engine_for(verp_settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, verp_settings, course, NOW)
    eight_bit = arf(lesson, to="fbl@mail.example.com").replace(
        b"Message-ID: <", b"Message-ID: <\xe9"
    )
    nested = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + (
        b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * 3000
    )
    for raw in (eight_bit, nested, b"\xff\xfe\x00garbage"):
        assert _handle(engine, verp_settings, course, raw).what == "ignored"
    assert _events(engine) == []
    assert _handle(engine, verp_settings, course, dsn(lesson, to=lesson.envelope_from)).what == (
        "bounce"
    )


def test_a_complaint_unsubscribes_and_suppresses_without_a_goodbye(
    verp_settings: Settings, course: Course
) -> None:
    """An ARF report quoting drip's email (its Return-Path is the tagged address)."""
    data = course.model_dump(by_alias=True, mode="json")
    polite = Course.model_validate({**data, "goodbye_email": True})
    engine = engine_for(verp_settings)
    enrol(engine, polite, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, verp_settings, polite, NOW)
    report = arf(lesson, to="fbl@mail.example.com", return_path=lesson.envelope_from)
    handled = _handle(engine, verp_settings, polite, report)
    assert handled == Handled("complaint", "ana@example.org suppressed (complaint)")
    subscriber = _subscriber(engine, "ana@example.org")
    assert subscriber.status == "suppressed" and subscriber.unsubscribed_at is not None
    assert _send(engine, verp_settings, polite, NOW + timedelta(days=1)) == []
    assert _events(engine) == [("complaint", "inbound", polite.days[0].id)]


def test_a_mail_to_the_unsubscribe_address_unsubscribes(
    verp_settings: Settings, course: Course
) -> None:
    engine = engine_for(verp_settings)
    uid = enrol(engine, course, "ana@example.org", now=NOW)
    address = Tokens.from_settings(verp_settings).return_address(
        BOUNCES, Purpose.MAILTO_UNSUBSCRIBE, uid
    )
    raw = f"From: ana@example.org\r\nTo: {address}\r\nSubject: unsubscribe\r\n\r\n\r\n".encode()
    handled = _handle(engine, verp_settings, course, raw)
    assert handled == Handled("unsubscribe", "ana@example.org unsubscribed (mailto)")
    assert _subscriber(engine, "ana@example.org").status == "unsubscribed"


def test_without_return_addresses_a_bounce_is_matched_by_the_email_it_quotes(
    settings: Settings, engine: Engine, course: Course
) -> None:
    """No DRIP_BOUNCE_ADDRESS: the quoted Message-ID names the enrollment, and the failed
    address must be that subscriber's."""
    enrol(engine, course, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, settings, course, NOW)
    handled = _handle(engine, settings, course, dsn(lesson, to="maya@example.com"))
    assert handled == Handled("bounce", "ana@example.org suppressed (hard bounce)")


def test_what_names_nobody_or_is_no_bounce_changes_nothing(
    verp_settings: Settings, course: Course
) -> None:
    """Forged tags, a bounce for another address than the quoted email's, an auto-reply,
    a complaint quoting nothing of drip's: ignored, nothing stored."""
    engine = engine_for(verp_settings)
    uid = enrol(engine, course, "ana@example.org", now=NOW)
    enrol(engine, course, "ben@example.org", now=NOW)
    sent = {m.recipient: m for m in _send(engine, verp_settings, course, NOW)}
    ana, ben = sent["ana@example.org"], sent["ben@example.org"]
    forged = f"bounces+b-{uid}-{'0' * 20}@mail.example.com"
    other_key = Tokens(["another-key-" + "y" * 30], confirm_max_age_seconds=60)
    foreign = other_key.return_address(BOUNCES, Purpose.BOUNCE, uid)
    wrong_purpose = other_key.return_address(BOUNCES, Purpose.MAILTO_UNSUBSCRIBE, uid)
    ben_as_ana = dsn(ben, to="postmaster@mail.example.com").replace(
        b"ben@example.org", b"ana@example.org"
    )
    vacation = (
        f"From: ana@example.org\r\nTo: {ana.envelope_from}\r\nSubject: Out of office\r\n"
        "Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n"
    ).encode()
    for raw, why in (
        (dsn(ana, to=forged).replace(ana.data.split(b"\r\n\r\n")[0], b"X: y"), "no subscriber"),
        (dsn(ana, to=foreign).replace(b"Message-ID", b"X-Gone"), "no subscriber"),
        (f"To: {wrong_purpose}\r\nSubject: unsubscribe\r\n\r\n".encode(), "not a bounce"),
        (ben_as_ana, "no subscriber"),
        (vacation, "not a bounce"),
        (arf(ana, to="fbl@mail.example.com").replace(b"Message-ID", b"X-Gone"), "no email"),
    ):
        handled = _handle(engine, verp_settings, course, raw)
        assert handled.what == "ignored" and why in handled.detail, (handled, raw[:200])
    with Session(engine) as session:
        assert {s.status for s in session.exec(select(Subscriber))} == {"active"}
    assert _events(engine) == []


runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The environment a command reads: SQLite, memory mail, a bounce address."""
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    monkeypatch.setenv("DRIP_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DRIP_SMTP_URL", "memory://")
    monkeypatch.setenv("DRIP_BOUNCE_ADDRESS", BOUNCES)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_command_reads_a_file_or_stdin_and_says_what_it_did(
    cli_env: None, tmp_path: Path, course: Course
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    settings = get_settings()
    engine = engine_for(settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, settings, course, NOW)
    (tmp_path / "bounce.eml").write_bytes(dsn(lesson, to="someone@mail.example.com"))
    # the envelope recipient, as Postfix's pipe passes it, names the enrollment
    result = runner.invoke(
        app, ["inbound", str(tmp_path / "bounce.eml"), "--to", lesson.envelope_from]
    )
    assert (result.exit_code, result.output) == (
        0,
        "bounce: ana@example.org suppressed (hard bounce)\n",
    )
    shown = runner.invoke(app, ["subscribers", "show", "ana@example.org"]).output
    (row,) = [line for line in shown.splitlines() if line.startswith("│ hard")]
    assert [cell.strip() for cell in row.split("│")[1:3]] == ["hard", "inbound"], row
    assert "hard bounce (inbound)" in shown
    ignored = runner.invoke(
        app, ["inbound", "-"], input=b"From: a@example.net\r\nSubject: hello\r\n\r\nhi\r\n"
    )
    assert (ignored.exit_code, ignored.output) == (
        0,
        "ignored: not a bounce, a complaint or an unsubscribe\n",
    )
    missing = runner.invoke(app, ["inbound", str(tmp_path / "nope.eml")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    assert "Traceback" not in missing.output


# -- a mailbox read over IMAP: pymap, a real IMAP server, on loopback ----------------------
@pytest.fixture
def imap_port(tmp_path: Path) -> Iterator[int]:
    """pymap cannot bind port 0 and report it: a free port is picked, and picked again
    if something else took it before pymap bound it (pymap then exits)."""
    for _ in range(5):
        port = free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "pymap"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-tls",
                "dict",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if _imap_greets(server, port):
                yield port
                return
        finally:
            server.terminate()
            server.wait(timeout=10)
    pytest.fail("pymap did not start")


def _imap_greets(server: subprocess.Popen[bytes], port: int) -> bool:
    """Whether this pymap process listens on ``port`` and greets there (False once it
    exited: another process, perhaps another test's pymap, had the port)."""
    deadline = time.monotonic() + 30
    while server.poll() is None and time.monotonic() < deadline:
        if _listens(server.pid, port):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                return probe.recv(64).startswith(b"* OK")
        time.sleep(0.1)
    return False


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (Linux's
    /proc: the listening socket's inode among the process's open files)."""
    wanted = f"0100007F:{port:04X}"
    inodes = {
        fields[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if (fields := line.split())[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
    }
    try:
        held = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:  # exited meanwhile
        return False
    return any(f"socket:[{inode}]" in held for inode in inodes)


def _mailbox(port: int) -> Any:
    from imap_tools import MailBoxUnencrypted

    return MailBoxUnencrypted("127.0.0.1", port).login("demouser", "demopass", "INBOX")


def test_a_mailbox_is_read_and_what_was_handled_deleted(
    cli_env: None, course: Course, imap_port: int
) -> None:
    """Every unread email is handled; bounces and unsubscribes are deleted, the rest stays
    (marked read) and is not read again."""
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    settings = get_settings()
    engine = engine_for(settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    ben = enrol(engine, course, "ben@example.org", now=NOW)
    sent = {m.recipient: m for m in _send(engine, settings, course, NOW)}
    ana = sent["ana@example.org"]
    leave = Tokens.from_settings(settings).return_address(BOUNCES, Purpose.MAILTO_UNSUBSCRIBE, ben)
    with _mailbox(imap_port) as mailbox:
        mailbox.append(dsn(ana, to=ana.envelope_from), "INBOX")
        mailbox.append(b"From: ana@example.org\r\nSubject: thank you!\r\n\r\nLovely.\r\n", "INBOX")
        mailbox.append(f"From: ben@example.org\r\nTo: {leave}\r\n\r\n".encode(), "INBOX")
    url = f"imap://demouser:demopass@127.0.0.1:{imap_port}/INBOX?starttls=off"
    result = runner.invoke(app, ["inbound", "--imap", url])
    assert (result.exit_code, result.output) == (
        0,
        "bounce: ana@example.org suppressed (hard bounce)\n"
        "ignored: not a bounce, a complaint or an unsubscribe\n"
        "unsubscribe: ben@example.org unsubscribed (mailto)\n"
        "3 read, 2 handled and deleted, 1 left\n",
    )
    with _mailbox(imap_port) as mailbox:
        (kept,) = mailbox.fetch(mark_seen=False)
        assert kept.subject == "thank you!" and "\\Seen" in kept.flags
    again = runner.invoke(app, ["inbound", "--imap", url])
    assert again.output == "0 read, 0 handled and deleted, 0 left\n"
    wrong = runner.invoke(app, ["inbound", "--imap", url.replace("demopass", "nope")])
    assert wrong.exit_code == 1 and "cannot read the mailbox 127.0.0.1" in wrong.output
    clear = runner.invoke(
        app, ["inbound", "--imap", "imap://u:p@mail.example.com/INBOX?starttls=off"]
    )
    assert clear.exit_code == 2 and "unencrypted off loopback" in clear.output
    assert "Traceback" not in wrong.output + clear.output


def test_a_failure_midway_leaves_the_rest_unread_for_the_next_run(imap_port: int) -> None:
    """The database busy on the second email: the first (handled) is deleted, the others
    are unread again."""
    from drip.feedback.imap import ImapConfig, poll

    with _mailbox(imap_port) as mailbox:
        for n in range(3):
            mailbox.append(f"Subject: {n}\r\n\r\n".encode(), "INBOX")
    seen: list[bytes] = []

    def handle(raw: bytes) -> Handled:
        seen.append(raw)
        if len(seen) == 2:
            raise OperationalError("database is locked", None, Exception())
        return Handled("bounce", "handled")

    url = f"imap://demouser:demopass@127.0.0.1:{imap_port}/?starttls=off"
    with pytest.raises(OperationalError):
        poll(ImapConfig.from_url(url), handle)
    with _mailbox(imap_port) as mailbox:
        left = list(mailbox.fetch(mark_seen=False))
    assert [m.subject for m in left] == ["1", "2"]
    assert all("\\Seen" not in m.flags for m in left)


@contextmanager
def _write_lock_held_by_another_process(database: Path) -> Iterator[None]:
    """A second process holding the SQLite file's write lock (``BEGIN IMMEDIATE``)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(database),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_bounce_while_the_database_is_locked_exits_75_in_both_modes(
    cli_env: None,
    tmp_path: Path,
    course: Course,
    imap_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With another process holding SQLite's write lock past DRIP_DB_WAIT_SECONDS, `drip
    inbound` exits 75 (EX_TEMPFAIL: the MTA keeps the email and retries) with one line,
    from stdin and from a mailbox alike, where the email stays unread; once the lock is
    free the same email suppresses the address."""
    monkeypatch.setenv("DRIP_DB_WAIT_SECONDS", "0.5")
    get_settings.cache_clear()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    settings = get_settings()
    engine = engine_for(settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    (lesson,) = _send(engine, settings, course, NOW)
    bounce = dsn(lesson, to=lesson.envelope_from)
    url = f"imap://demouser:demopass@127.0.0.1:{imap_port}/INBOX?starttls=off"
    with _mailbox(imap_port) as mailbox:
        mailbox.append(bounce, "INBOX")
    with _write_lock_held_by_another_process(tmp_path / "cli.db"):
        piped = runner.invoke(app, ["inbound", "-"], input=bounce)
        polled = runner.invoke(app, ["inbound", "--imap", url])
    for result in (piped, polled):
        assert result.exit_code == 75, result.output
        assert "error: the database is busy or unreachable, try again" in result.output
        assert "Traceback" not in result.output and "mailbox" not in result.output
    with _mailbox(imap_port) as mailbox:
        assert ["\\Seen" in m.flags for m in mailbox.fetch(mark_seen=False)] == [False]
    assert _subscriber(engine, "ana@example.org").status == SubscriberStatus.ACTIVE
    done = runner.invoke(app, ["inbound", "--imap", url])
    assert done.exit_code == 0 and "ana@example.org suppressed" in done.output
    assert _subscriber(engine, "ana@example.org").status == SubscriberStatus.SUPPRESSED


def test_the_same_report_twice_is_recorded_once_with_who_sent_it(
    verp_settings: Settings, course: Course
) -> None:
    """An ARF report delivered twice (or a mailbox read again) is one complaint; its
    diagnostic keeps the Feedback-Type and the reporting agent. A DSN twice is one bounce."""
    engine = engine_for(verp_settings)
    enrol(engine, course, "ana@example.org", now=NOW)
    enrol(engine, course, "ben@example.org", now=NOW)
    sent = {m.recipient: m for m in _send(engine, verp_settings, course, NOW)}
    ana, ben = sent["ana@example.org"], sent["ben@example.org"]
    report = arf(ana, to="fbl@mail.example.com", return_path=ana.envelope_from)
    first = _handle(engine, verp_settings, course, report)
    again = _handle(engine, verp_settings, course, report)
    assert first.what == "complaint" and again.what == "ignored"
    assert "already handled" in again.detail
    bounce = dsn(ben, to=ben.envelope_from)
    assert _handle(engine, verp_settings, course, bounce).what == "bounce"
    assert _handle(engine, verp_settings, course, bounce).what == "ignored"
    with Session(engine) as session:
        events = session.exec(select(MailEvent.kind, MailEvent.diagnostic)).all()
    assert sorted(kind for kind, _ in events) == ["complaint", "hard"]
    [complaint] = [diagnostic for kind, diagnostic in events if kind == "complaint"]
    assert complaint == "Feedback-Type: abuse; reported by FBL/1.0"


def test_a_complaint_quoting_ones_email_but_sent_to_another_names_nobody(
    settings: Settings, engine: Engine, course: Course
) -> None:
    """Without return addresses, a complaint is put down to the subscriber whose email it
    quotes only when the quoted To is that subscriber: A's Message-ID with B's address
    in To (a forged or mangled report) suppresses nobody."""
    enrol(engine, course, "ana@example.org", now=NOW)
    enrol(engine, course, "ben@example.org", now=NOW)
    sent = {m.recipient: m for m in _send(engine, settings, course, NOW)}
    ana = sent["ana@example.org"]
    forged = arf(ana, to="fbl@mail.example.com").replace(
        b"To: ana@example.org", b"To: ben@example.org"
    )
    assert b"To: ben@example.org" in forged
    handled = _handle(engine, settings, course, forged)
    assert handled == Handled("ignored", "a complaint about no email drip can identify")
    assert {_subscriber(engine, e).status for e in ("ana@example.org", "ben@example.org")} == {
        "active"
    }
    genuine = _handle(engine, settings, course, arf(ana, to="fbl@mail.example.com"))
    assert genuine.what == "complaint"  # the same report, unaltered, is attributed


def test_an_email_too_large_or_of_too_many_parts_is_ignored_unread(
    settings: Settings, engine: Engine, course: Course
) -> None:
    """Over 1 MiB, or over 100 MIME parts, an email is ignored with the reason, before any
    bounce detector reads it; a whole file is never read into memory by the command."""
    from drip.feedback.inbound import MAX_BYTES, MAX_PARTS

    big = b"From: MAILER-DAEMON@x\r\nSubject: failure\r\n\r\n" + b"a" * MAX_BYTES
    handled = _handle(engine, settings, course, big)
    assert handled == Handled("ignored", "larger than 1024 KiB: no bounce is")
    parts = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * MAX_PARTS
    many = (
        b"From: MAILER-DAEMON@x\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        + parts
        + b"--b--\r\n"
    )
    assert len(many) < MAX_BYTES
    handled = _handle(engine, settings, course, many)
    assert handled == Handled("ignored", "more than 100 MIME parts: no bounce has")
