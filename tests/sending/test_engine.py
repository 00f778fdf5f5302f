"""The send engine end to end with real databases, by passing `now` (never sleeping)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, update
from sqlmodel import Session, select

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.exceptions import ConfigError, InvalidCourse
from drip.core.models import Delivery, Enrollment, MailEvent, Signup, Subscriber
from drip.core.schedule import retry_at
from drip.core.states import DeliveryStatus, EmailKind, SubscriberStatus
from drip.lifecycle.chores import SIGNUP_BATCH
from drip.lifecycle.enrollment import confirm, unsubscribe
from drip.lifecycle.signup import Consent, record, sign_up
from drip.outbox.deliveries import claim, queue
from drip.outbox.kinds import row_key
from drip.runner import make_sender
from drip.sending.compose import Composer, Recipient
from drip.sending.engine import Sender, SendOutcome, Throttle
from drip.sending.mailer import memory
from drip.sending.mailer.memory import MemoryMailer
from drip.sending.message import Outgoing
from drip.store import tallies
from drip.store.engine import engine_for
from drip.testing import Received, SmtpSink, free_port
from tests.fixtures import (
    SHIPPED_COURSE,
    WithholdingServer,
    enrol,
    enrol_many,
    make_settings,
    scripted_server,
)


@pytest.fixture(autouse=True)
def _empty_outbox() -> Iterator[None]:
    memory.outbox.clear()
    yield
    memory.outbox.clear()


def sender_for(engine: Engine, settings: Settings, course: Course, **kwargs: Any) -> Sender:
    return make_sender(
        engine=engine, settings=settings, catalog=Catalog({course.slug: course}), **kwargs
    )


def deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.exec(select(Delivery).order_by(Delivery.id)).all())


def variant(course: Course, **changes: Any) -> Course:
    """A fresh copy of the course with some keys changed (as if the YAML were edited)."""
    data = course.model_dump(by_alias=True, mode="json")
    data.update(changes)
    return Course.model_validate(data)


def walk(sender: Sender, start: datetime, days: int, step: timedelta = timedelta(hours=1)) -> None:
    now = start
    while now <= start + timedelta(days=days):
        sender.send_due(now=now)
        now += step


@pytest.mark.parametrize(
    ("zone", "start_local"),
    [
        ("Pacific/Auckland", datetime(2026, 9, 24, 20, 0)),  # DST starts 27 Sep
        ("America/Los_Angeles", datetime(2026, 10, 29, 9, 15)),  # DST ends 1 Nov
        ("Europe/London", datetime(2026, 10, 22, 6, 0)),  # DST ends 25 Oct
    ],
)
def test_seven_lessons_one_per_local_day_across_dst(
    any_engine: Engine, tmp_path: Path, course: Course, zone: str, start_local: datetime
) -> None:
    """Walking hour by hour, each subscriber gets exactly 7 lessons in order, one per local
    day, day 1 at once and the rest at 07:00 their time, through a DST change; then the
    after-course email, once, at 07:00 the day after."""
    tz = ZoneInfo(zone)
    start = start_local.replace(tzinfo=tz).astimezone(UTC).replace(minute=0)
    enrol(any_engine, course, "walker@example.org", now=start, timezone=zone)
    sender = sender_for(any_engine, make_settings(tmp_path), course)
    walk(sender, start, days=9)

    sent = [m for m in memory.outbox if m.recipient == "walker@example.org"]
    rows = [d for d in deliveries(any_engine) if d.status == DeliveryStatus.SENT]
    assert [r.key for r in rows] == [d.id for d in course.days] + ["after_course:once"]
    assert len(sent) == 8 and len({m.message_id for m in sent}) == 8
    local = [r.sent_at.astimezone(tz) for r in rows if r.sent_at]
    assert local[0] == start.astimezone(tz)
    assert [t.hour for t in local[1:]] == [7] * 7
    dates = [t.date() for t in local]
    assert all((b - a).days == 1 for a, b in zip(dates, dates[1:], strict=False))


def test_a_run_asked_to_stop_mid_window_gives_back_what_it_composed(
    tmp_path: Path, course: Course
) -> None:
    """Asked to stop after the third message of a window of ten (all ten composed before
    the first was sent): nothing more is sent, and every claim not sent is given back,
    due again at once, its attempt not counted; none is left `sending` until its lease."""
    settings = make_settings(tmp_path, smtp_connections=1, smtp_window=10)
    engine = engine_for(settings)
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    enrol_many(engine, course, [f"p{n}@example.org" for n in range(25)], now=now)
    sender = sender_for(engine, settings, course)

    def stop_after_three(outcome: SendOutcome) -> None:
        if len(memory.outbox) == 3:
            sender.stopping.set()

    report = sender.send_due(now=now, progress=stop_after_three)
    rows = deliveries(engine)
    engine.dispose()
    assert report.sent == len(memory.outbox) == 3
    assert Counter(row.status for row in rows if row.status != "scheduled") == {"sent": 3}
    unsent = [row for row in rows if row.status == "scheduled" and row.due_at <= now]
    assert unsent and all(row.attempts == 0 for row in unsent)
    assert len(unsent) == 25 - 3  # (the three sent queued their day 2, due tomorrow)


def test_subscriber_without_timezone_uses_course_default(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """No zone from the form: lessons follow the course's default_timezone (London)."""
    start = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    enrol(engine, course, "plain@example.org", now=start)
    walk(sender_for(engine, settings, course), start, days=2)
    second = deliveries(engine)[1]
    assert second.sent_at == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


def test_send_days_are_respected(engine: Engine, settings: Settings, course: Course) -> None:
    """A Monday-Friday course sends nothing at the weekend and resumes on Monday."""
    weekdays_only = variant(course, send_days=["mon", "tue", "wed", "thu", "fri"])
    start = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)  # a Thursday
    enrol(engine, weekdays_only, "weekday@example.org", now=start)
    walk(sender_for(engine, settings, weekdays_only), start, days=6)
    sent_days = [d.sent_at.strftime("%a") for d in deliveries(engine) if d.sent_at]
    assert sent_days == ["Thu", "Fri", "Mon", "Tue", "Wed"]


def test_outage_shifts_the_schedule_without_a_burst(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """After three days without runs, one lesson goes out, the next one a day later."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "outage@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, days=1)  # day 1 and day 2
    assert len(memory.outbox) == 2
    back = start + timedelta(days=4, hours=3)  # nothing ran for three days: 10:00 on day 5
    walk(sender, back, days=0.5)
    assert len(memory.outbox) == 3, "one overdue lesson, not three"
    walk(sender, back + timedelta(days=0.5, hours=1), days=2)
    assert len(memory.outbox) == 5
    sent = [d.sent_at.date() for d in deliveries(engine) if d.sent_at]
    assert len(sent) == len(set(sent)), "never two lessons on one day"


def test_unsubscribe_after_claim_is_not_sent(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """A subscriber who leaves after their lesson was claimed does not receive it."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    uid = enrol(engine, course, "leaver@example.org", now=now)

    class UnsubscribesWhileBuilding(Composer):
        def lesson(self, **kwargs: Any) -> Any:
            with engine.begin() as connection:
                unsubscribe(
                    connection,
                    enrollment_uid=uid,
                    catalog=Catalog({course.slug: course}),
                    now=now,
                )
            return super().lesson(**kwargs)

    sender = sender_for(
        engine, settings, course, composer=UnsubscribesWhileBuilding(settings=settings)
    )
    report = sender.send_due(now=now)
    assert report[SendOutcome.CANCELLED] == 1 and report.sent == 0
    assert memory.outbox == []
    assert [d.status for d in deliveries(engine)] == [DeliveryStatus.CANCELLED]
    walk(sender, now, days=3)
    assert memory.outbox == []


def test_an_unsubscribe_during_the_smtp_handover_is_honoured_and_never_resent(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Leaving while the server is accepting the lesson: it went out, so its row records it
    as sent (with the server's reply); nothing more goes out (the next day, queued with the
    receipt, is cancelled when due); coming back resumes with day 2, never day 1 again."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    uid = enrol(engine, course, "racer@example.org", now=now)
    catalog = Catalog({course.slug: course})

    class UnsubscribedMidSend(MemoryMailer):
        def send(self, message: Outgoing) -> str:
            with engine.begin() as connection:
                unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=now)
            return super().send(message)

    sender = sender_for(engine, settings, course, mailer_factory=UnsubscribedMidSend)
    assert sender.send_due(now=now).sent == 1
    day_one = deliveries(engine)[0]
    assert (day_one.status, day_one.smtp_response) == (DeliveryStatus.SENT, "250 kept in memory")
    walk(sender_for(engine, settings, course), now, days=3)
    assert len(memory.outbox) == 1
    later = now + timedelta(days=5)
    with engine.begin() as connection:  # they sign up again and press the new link
        entry = Entry.clean(email="racer@example.org", name="", timezone=None)
        sign_up(connection, course=course, entries=[entry], consent=Consent(source="t"), now=later)
        signup_uid = connection.execute(select(Signup.uid).order_by(Signup.id.desc())).scalar()
        confirm(connection, signup_uid=signup_uid, issued_at=later, catalog=catalog, now=later)
    sender_for(engine, settings, course).send_due(now=later)
    assert [m.message_id.split(".")[1].split("@")[0] for m in memory.outbox[1:]] == [
        course.days[1].id
    ]
    assert len({m.message_id for m in memory.outbox}) == len(memory.outbox)


def test_a_receipt_keeps_the_server_reply_and_message_id(
    engine: Engine, settings: Settings, course: Course
) -> None:
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "kept@example.org", now=now)
    sender_for(engine, settings, course).send_due(now=now)
    sent = [d for d in deliveries(engine) if d.status == DeliveryStatus.SENT]
    assert [(d.smtp_response, d.message_id, d.sent_at, d.claimed_until) for d in sent] == [
        ("250 kept in memory", memory.outbox[0].message_id, now, None)
    ]


def test_stranded_claim_is_retried_with_the_same_message_id(
    any_engine: Engine, tmp_path: Path, course: Course
) -> None:
    """A claim left by a crashed worker is sent after its lease, with the same Message-ID."""
    settings = make_settings(tmp_path)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(any_engine, course, "crash@example.org", now=now)
    with any_engine.connect() as connection:
        stranded = claim(connection, now=now, limit=10, lease=timedelta(minutes=5))
    assert len(stranded) == 1
    sender = sender_for(any_engine, settings, course)
    assert sender.send_due(now=now + timedelta(minutes=4)).sent == 0  # lease still held
    assert sender.send_due(now=now + timedelta(minutes=6)).sent == 1
    expected = Composer(settings=settings).lesson(
        course=course,
        day=course.days[0],
        now=now,
        recipient=Recipient("crash@example.org", "", stranded[0].uid, "UTC"),
    )
    assert memory.outbox[0].message_id == expected.message_id
    assert deliveries(any_engine)[0].attempts == 2


def test_course_edits_never_resend_and_skip_removed_days(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Inserting a day before sent ones, reordering, or removing a day never resends."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "edits@example.org", now=start)
    walk(sender_for(engine, settings, course), start, days=1)  # days 1 and 2 sent
    days = course.model_dump(by_alias=True, mode="json")["days"]
    new_day = {**days[0], "id": "breath-intro", "subject": "A new first day"}
    edited = variant(course, days=[new_day, *reversed(days[1:]), days[0]][:-1])
    # hips (sent) now last but one, upper-back (sent) removed via slicing, "breath-intro" new
    edited = variant(
        edited,
        days=[
            d
            for d in edited.model_dump(by_alias=True, mode="json")["days"]
            if d["id"] != "side-body"
        ],
    )
    walk(sender_for(engine, settings, edited), start + timedelta(days=1, hours=1), days=8)
    sent = [d.key for d in deliveries(engine) if d.status == DeliveryStatus.SENT]
    assert len(sent) == len(set(sent)), "no day sent twice"
    assert sent[:2] == ["upper-back-shoulders", "hips"]
    assert "breath-intro" in sent
    statuses = {d.key: d.status for d in deliveries(engine)}
    assert statuses.get("side-body") in (None, DeliveryStatus.SKIPPED)


# -- failures from a real SMTP server ---------------------------------------------------------


def _smtp_settings(tmp_path: Path, sink: SmtpSink, **overrides: Any) -> Settings:
    return make_settings(tmp_path, smtp_url=sink.url, smtp_connections=1, **overrides)


def test_temporary_failure_is_retried_later(
    engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink
) -> None:
    """451 defers with backoff (exit non-zero); the retry after the backoff succeeds."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "flaky@example.org", now=now)
    enrol(engine, course, "fine@example.org", now=now)
    smtp_sink.rcpt_replies["flaky@example.org"] = "451 4.3.0 try again later"
    sender = sender_for(engine, _smtp_settings(tmp_path, smtp_sink), course)
    report = sender.send_due(now=now)
    assert (report.sent, report[SendOutcome.DEFERRED], report.ok) == (1, 1, False)
    assert sender.send_due(now=now + timedelta(minutes=2)).sent == 0  # still backing off
    del smtp_sink.rcpt_replies["flaky@example.org"]
    assert sender.send_due(now=now + timedelta(minutes=6)).sent == 1
    flaky = [d for d in deliveries(engine) if d.status == DeliveryStatus.SENT]
    assert {d.attempts for d in flaky} == {1, 2}
    assert sorted(r.recipients[0] for r in smtp_sink.received) == [
        "fine@example.org",
        "flaky@example.org",
    ]


def test_too_many_temporary_failures_give_up_and_move_on(
    engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink
) -> None:
    """After max_attempts the lesson is failed and the next day is scheduled."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "busy@example.org", now=now)
    smtp_sink.rcpt_replies["busy@example.org"] = "452 4.2.2 mailbox full"
    sender = sender_for(engine, _smtp_settings(tmp_path, smtp_sink, max_attempts=2), course)
    sender.send_due(now=now)
    report = sender.send_due(now=now + timedelta(hours=1))
    assert report[SendOutcome.FAILED] == 1
    rows = deliveries(engine)
    assert [(d.key, d.status) for d in rows] == [
        ("upper-back-shoulders", DeliveryStatus.FAILED),
        ("hips", DeliveryStatus.SCHEDULED),
    ]
    assert "gave up after 2 attempts" in (rows[0].last_error or "")


def test_permanent_rejection_suppresses_the_address(
    any_engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink
) -> None:
    """550 at RCPT suppresses the subscriber: nothing more is ever sent; others carry on."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(any_engine, course, "gone@example.org", now=now)
    enrol(any_engine, course, "here@example.org", now=now)
    smtp_sink.rcpt_replies["gone@example.org"] = "550 5.1.1 user unknown"
    sender = sender_for(any_engine, _smtp_settings(tmp_path, smtp_sink), course)
    report = sender.send_due(now=now)
    assert (report.sent, report[SendOutcome.SUPPRESSED]) == (1, 1)
    walk(sender, now, days=3)
    assert {r.recipients[0] for r in smtp_sink.received} == {"here@example.org"}
    with Session(any_engine) as session:
        gone = session.exec(select(Subscriber).where(Subscriber.email == "gone@example.org")).one()
    assert gone.status == SubscriberStatus.SUPPRESSED
    assert "user unknown" in (gone.suppressed_reason or "")


@pytest.mark.parametrize("window", [1, 10])
def test_dropped_connection_stops_the_run_and_loses_nothing(
    engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink, window: int, caplog: Any
) -> None:
    """A connection dropped mid-batch ends the run early, said once in the log, whether
    the lost message is found out with the next one's envelope or at the next one's
    pre-send check (a window of 1): nothing more goes out. The next run delivers
    everything."""
    caplog.set_level("ERROR", logger="drip")
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(10):
        enrol(engine, course, f"p{n}@example.org", now=now)
    smtp_sink.drop_next = 1
    sender = sender_for(engine, _smtp_settings(tmp_path, smtp_sink, smtp_window=window), course)
    report = sender.send_due(now=now)
    assert report.stopped and not report.ok
    assert report.sent == 0
    assert [r.getMessage() for r in caplog.records] == [
        'event=smtp-unavailable error="connection failed: connection unexpectedly closed"'
    ]
    assert smtp_sink.received == []
    assert {d.status for d in deliveries(engine)} == {DeliveryStatus.SCHEDULED}
    assert sender.send_due(now=now + timedelta(minutes=1)).sent == 10
    assert len(set(smtp_sink.message_ids())) == 10


def test_smtp_down_stops_early_and_marks_nothing_sent(
    engine: Engine, tmp_path: Path, course: Course, caplog: Any
) -> None:
    """No server at all: the run stops, every lesson stays due, attempts are not used up,
    and the log says why once per connection."""
    caplog.set_level("ERROR", logger="drip")
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(5):
        enrol(engine, course, f"p{n}@example.org", now=now)
    port = free_port()
    settings = make_settings(tmp_path, smtp_url=f"smtp://127.0.0.1:{port}", smtp_connections=1)
    report = sender_for(engine, settings, course).send_due(now=now)
    assert report.stopped and "SMTP unavailable" in report.stopped
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f'event=smtp-unavailable error="cannot connect to 127.0.0.1:{port}: ')
    assert report.sent == 0
    assert {(d.status, d.attempts) for d in deliveries(engine)} == {(DeliveryStatus.SCHEDULED, 0)}


def test_limit_caps_a_run(engine: Engine, settings: Settings, course: Course) -> None:
    """--limit N sends at most N lessons; the rest wait for the next run."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(7):
        enrol(engine, course, f"p{n}@example.org", now=now)
    sender = sender_for(engine, settings, course)
    assert sender.send_due(now=now, limit=3).sent == 3
    assert sender.send_due(now=now).sent == 4


def test_a_limit_spans_several_batches(engine: Engine, tmp_path: Path, course: Course) -> None:
    """Batches of 2 under --limit 5: each full batch keeps the rest of the budget."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(7):
        enrol(engine, course, f"p{n}@example.org", now=now)
    small = make_settings(tmp_path, batch_size=2, smtp_connections=1)
    assert sender_for(engine, small, course).send_due(now=now, limit=5).sent == 5


def test_the_oldest_due_goes_first(engine: Engine, tmp_path: Path, course: Course) -> None:
    """Claims take what has waited longest, whatever order the rows were made in, and a
    batch goes out in that order."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n, minutes in enumerate((50, 10, 30, 20)):  # the rows' ids run against their due times
        enrol(engine, course, f"p{n}@example.org", now=start + timedelta(minutes=minutes))
    one = make_settings(tmp_path, smtp_connections=1)
    sender = sender_for(engine, one, course)
    assert sender.send_due(now=start + timedelta(hours=1), limit=1).sent == 1
    assert [m.recipient for m in memory.outbox] == ["p1@example.org"]
    sender.send_due(now=start + timedelta(hours=1))
    assert [m.recipient for m in memory.outbox] == [
        "p1@example.org",
        "p3@example.org",
        "p2@example.org",
        "p0@example.org",
    ]


@pytest.mark.parametrize("connections", [2, 32])
def test_many_connections_each_hold_a_database_connection(
    tmp_path: Path, course: Course, connections: int
) -> None:
    """With two SMTP connections, or the maximum of 32, all sending at once, every worker
    gets its database connection (the pool is sized from DRIP_SMTP_CONNECTIONS)."""
    settings = make_settings(tmp_path, smtp_connections=connections, batch_size=2)
    engine = engine_for(settings)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(100):
        enrol(engine, course, f"p{n}@example.org", now=now)
    everyone = threading.Barrier(connections, timeout=10)

    class Together(MemoryMailer):
        """Waits before its first message until all 32 workers are sending."""

        first = True

        def send(self, message: Outgoing) -> str:
            if self.first:
                self.first = False
                everyone.wait()
            return super().send(message)

    sender = sender_for(engine, settings, course, mailer_factory=Together)
    assert sender.send_due(now=now).sent == 100
    assert len({m.message_id for m in memory.outbox}) == 100
    engine.dispose()


def test_enrollment_completes_after_the_last_day(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """After day 7 the enrollment is completed; the after-course email goes out the next
    morning, once, and nothing more is queued. A course without one sends 7 emails."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "done@example.org", now=start)
    walk(sender_for(engine, settings, course), start, days=12)
    with Session(engine) as session:
        enrollment = session.exec(select(Enrollment)).one()
    assert enrollment.status == "completed"
    assert len(memory.outbox) == 8
    assert b"Subject: What next, after your seven days of yin" in memory.outbox[-1].data
    rows = deliveries(engine)
    last = max(d.sent_at for d in rows if d.sent_at and d.kind == EmailKind.LESSON)
    assert enrollment.completed_at == last
    after = rows[-1]
    assert (after.kind, after.status) == (EmailKind.AFTER_COURSE, DeliveryStatus.SENT)
    assert after.sent_at == last + timedelta(days=1)
    assert all(d.status == DeliveryStatus.SENT for d in rows)

    memory.outbox.clear()
    plain = variant(course, slug="plain", after_course=None)
    enrol(engine, plain, "plain@example.org", now=start)
    walk(sender_for(engine, settings, plain), start, days=10)
    assert len(memory.outbox) == 7


def test_one_subscriber_finishing_leaves_the_others_active(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Ana started a day before Ben: her last day completes her enrollment only; the
    lesson queued after a send is stamped with the time of that send."""
    short = variant(course, days=[d.model_dump(by_alias=True) for d in course.days[:2]])
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, short, "ana@example.org", now=start)
    sender = sender_for(engine, settings, short)
    sender.send_due(now=start)
    enrol(engine, short, "ben@example.org", now=start + timedelta(days=1))
    sender.send_due(now=start + timedelta(days=1))
    with Session(engine) as session:
        statuses = dict(
            session.exec(select(Subscriber.email, Enrollment.status).join(Enrollment)).all()
        )
        queued = session.exec(
            select(Delivery).where(Delivery.status == "scheduled", Delivery.kind == "lesson")
        ).one()
    assert statuses == {"ana@example.org": "completed", "ben@example.org": "active"}
    assert (queued.key, queued.created_at) == (short.days[1].id, start + timedelta(days=1))


def test_coming_back_revives_the_lesson_an_unsubscribe_cancelled(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Leaving before day 1 went out cancels it; coming back queues that same row again,
    due at once with a clean slate (no attempts, lease or error), and the course runs.
    Someone else who left at the same point stays left."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    gone = enrol(engine, course, "gone@example.org", now=start)
    with engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=gone, catalog=Catalog({}), now=start)
    uid = enrol(engine, course, "back@example.org", now=start)
    with Session(engine) as session:  # day 1 had failed twice and was being retried
        row = deliveries(engine)[-1]  # back@'s day 1
        row.attempts, row.last_error = 2, "421 try later"
        row.claimed_until = start
        session.add(row)
        session.commit()
    with engine.begin() as connection:
        catalog = Catalog({course.slug: course})
        unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=start)
    later = start + timedelta(days=3)
    with engine.begin() as connection:  # they sign up again and press the new link
        entry = Entry.clean(email="back@example.org", name="", timezone=None)
        sign_up(connection, course=course, entries=[entry], consent=Consent(source="t"), now=later)
        signup_uid = connection.execute(select(Signup.uid).order_by(Signup.id.desc())).scalar()
        confirm(connection, signup_uid=signup_uid, issued_at=later, catalog=catalog, now=later)
    lessons = [d for d in deliveries(engine) if d.kind == EmailKind.LESSON]
    [left, revived] = lessons
    assert (left.key, left.status) == (course.days[0].id, DeliveryStatus.CANCELLED)
    assert (revived.key, revived.status) == (course.days[0].id, DeliveryStatus.SCHEDULED)
    assert revived.due_at == later
    assert (revived.attempts, revived.last_error) == (0, None)
    assert (revived.claimed_until, revived.cancelled_at) == (None, None)
    walk(sender_for(engine, settings, course), later, days=8)
    lessons = [d for d in deliveries(engine) if d.kind == EmailKind.LESSON]
    assert [d.status for d in lessons] == [DeliveryStatus.CANCELLED] + [DeliveryStatus.SENT] * 7
    assert len([m for m in memory.outbox if ".after_course." not in m.message_id]) == 7


def test_a_refused_smtp_login_releases_the_claims_and_says_so(
    engine: Engine, tmp_path: Path, course: Course, caplog: Any
) -> None:
    """A configuration error (refused password) stops the run with the error, and every
    claim is released unused: due again at once, no attempt counted."""
    import ssl

    import trustme

    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(3):
        enrol(engine, course, f"p{n}@example.org", now=now)
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with SmtpSink(tls_context=context, credentials=("maya", "right")) as sink:
        url = f"smtp://maya:wrong@127.0.0.1:{sink.port}?cafile={tmp_path / 'ca.pem'}"
        settings = make_settings(tmp_path, smtp_url=url, smtp_connections=1)
        report = sender_for(engine, settings, course).send_due(now=now)
    assert report.config_error and "login refused" in report.config_error
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line == f'event=smtp-config error="{report.config_error}"'
    assert {(d.status, d.attempts, d.claimed_until) for d in deliveries(engine)} == {
        (DeliveryStatus.SCHEDULED, 0, None)
    }


def test_a_mailer_that_cannot_be_made_stops_the_run_with_its_error(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """DRIP_SMTP_URL itself is wrong (the mailer cannot be made): the run stops with that
    error as its reason, and the batch it claimed is given back unused."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(3):
        enrol(engine, course, f"p{n}@example.org", now=now)

    def broken() -> MemoryMailer:
        raise ConfigError("DRIP_SMTP_URL: starttls must be auto, require or off")

    report = sender_for(engine, settings, course, mailer_factory=broken).send_due(now=now)
    assert (
        report.stopped
        == report.config_error
        == ("DRIP_SMTP_URL: starttls must be auto, require or off")
    )
    assert not report.ok and report.sent == 0
    assert {(d.status, d.attempts, d.claimed_until) for d in deliveries(engine)} == {
        (DeliveryStatus.SCHEDULED, 0, None)
    }


def test_every_failure_is_one_log_line_naming_what_failed(
    engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink, caplog: Any
) -> None:
    """A deferral, a give-up after max attempts, a suppression: one key=value line each,
    naming the outcome, kind, address, course, day, attempt and the server's words."""
    import logging

    caplog.set_level(logging.INFO, logger="drip")
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "busy@example.org", now=now)
    enrol(engine, course, "gone@example.org", now=now)
    smtp_sink.rcpt_replies["busy@example.org"] = "452 4.2.2 mailbox full"
    smtp_sink.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"
    sender = sender_for(engine, _smtp_settings(tmp_path, smtp_sink, max_attempts=2), course)
    sender.send_due(now=now)
    sender.send_due(now=now + timedelta(hours=1))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=delivery")]
    assert lines == [
        "event=delivery outcome=deferred kind=lesson email=busy@example.org "
        'course=yin-immersion day=upper-back-shoulders attempt=1 error="deferred: 452 4.2.2 '
        'mailbox full"',
        "event=delivery outcome=failed kind=lesson email=gone@example.org course=yin-immersion "
        'day=upper-back-shoulders error="rejected: 550 5.1.1 no such user"',
        "event=delivery outcome=failed kind=lesson email=busy@example.org course=yin-immersion "
        'day=upper-back-shoulders error="gave up after 2 attempts: deferred: 452 4.2.2 mailbox '
        'full"',
    ]
    with Session(engine) as session:
        gone = session.exec(select(Subscriber).where(Subscriber.email == "gone@example.org")).one()
        failed = session.exec(select(Delivery).where(Delivery.status == "failed")).all()
    assert gone.suppressed_at == now
    assert gone.suppressed_reason == "hard bounce (smtp): 550 5.1.1 no such user"
    with Session(engine) as session:
        (event,) = session.exec(select(MailEvent)).all()
    assert (event.subscriber_id, event.kind, event.source, event.diagnostic) == (
        gone.id,
        "hard",
        "smtp",
        "550 5.1.1 no such user",
    )
    assert event.delivery_id == next(d.id for d in failed if d.attempts == 1)
    assert {d.failed_at for d in failed} == {now, now + timedelta(hours=1)}


def test_a_message_refused_after_data_fails_that_day_only(
    engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink
) -> None:
    """554 to the message itself (not the address): that lesson fails with the server's
    reply, the address stays subscribed, and the next day is queued."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "content@example.org", now=now)
    smtp_sink.data_replies.append("554 5.7.1 message refused")
    report = sender_for(engine, _smtp_settings(tmp_path, smtp_sink), course).send_due(now=now)
    assert (report[SendOutcome.FAILED], report[SendOutcome.SUPPRESSED], report.sent) == (1, 0, 0)
    rows = deliveries(engine)
    assert [(d.key, d.status) for d in rows] == [
        ("upper-back-shoulders", DeliveryStatus.FAILED),
        ("hips", DeliveryStatus.SCHEDULED),
    ]
    assert rows[0].last_error == "rejected: 554 5.7.1 message refused"
    with Session(engine) as session:
        assert session.exec(select(Subscriber.status)).one() == SubscriberStatus.ACTIVE


def test_a_queued_day_removed_from_the_course_is_skipped_and_the_next_takes_its_slot(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Day 2 is queued for the morning, then deleted from the YAML: at that morning its
    row is closed as skipped ("day removed") and day 3 goes out in its place, so the
    course neither stalls nor loses a day; the rest follow one a day."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)  # 07:00 in the course's zone
    enrol(engine, course, "edit@example.org", now=start)
    sender_for(engine, settings, course).send_due(now=start)
    removed = course.days[1].id
    edited = variant(
        course,
        days=[
            d for d in course.model_dump(by_alias=True, mode="json")["days"] if d["id"] != removed
        ],
    )
    morning = start + timedelta(days=1)
    report = sender_for(engine, settings, edited).send_due(now=morning)
    assert (report[SendOutcome.SKIPPED], report.sent) == (1, 1)  # day 3, in the same run
    rows = {d.key: d for d in deliveries(engine)}
    assert (rows[removed].status, rows[removed].last_error) == (
        DeliveryStatus.SKIPPED,
        "day removed",
    )
    assert rows[removed].claimed_until is None
    assert rows[course.days[2].id].sent_at == morning
    walk(sender_for(engine, settings, edited), morning, days=6)
    sent = sorted(
        (d for d in deliveries(engine) if d.sent_at and d.kind == EmailKind.LESSON),
        key=lambda d: d.sent_at,
    )
    assert [d.key for d in sent] == [d.id for d in course.days if d.id != removed]
    assert [d.sent_at for d in sent] == [start + timedelta(days=n) for n in range(6)]


def test_a_missing_course_or_a_broken_template_defers_and_never_gives_up(
    engine: Engine, tmp_path: Path, course: Course, caplog: Any
) -> None:
    """Neither is the recipient's fault: the email waits (backing off, attempts counted but
    never exhausted) until the course file or template is fixed, saying why each time."""
    caplog.set_level("WARNING", logger="drip")
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "broken@example.org", now=now)
    enrol(engine, variant(course, slug="gone-course"), "orphan@example.org", now=now)

    class Broken(Composer):
        def lesson(self, **kwargs: Any) -> Any:
            raise InvalidCourse("lesson template: 'teacher' is undefined")

    settings = make_settings(tmp_path, max_attempts=2)
    sender = sender_for(engine, settings, course, composer=Broken(settings=settings))
    for day in range(4):  # more runs than max_attempts
        later = now + timedelta(days=day)
        report = sender.send_due(now=later)
        assert report[SendOutcome.DEFERRED] == 2 and report.sent == 0
    errors = {d.last_error for d in deliveries(engine)}
    assert errors == {"lesson template: 'teacher' is undefined", "unknown course 'gone-course'"}
    assert {(d.status, d.attempts) for d in deliveries(engine)} == {(DeliveryStatus.SCHEDULED, 4)}
    assert {d.due_at for d in deliveries(engine)} == {retry_at(now=later, attempts=4)}
    logged = {r.getMessage().split(" error=")[1] for r in caplog.records}
    assert logged == {
        "\"lesson template: 'teacher' is undefined\"",
        "\"unknown course 'gone-course'\"",
    }
    assert memory.outbox == []


def test_the_throttle_spaces_messages_at_its_rate() -> None:
    """DRIP_SEND_RATE: each message takes the next free slot 1/rate after the last; a pause
    longer than a slot earns no burst; 0 means unthrottled."""
    clock = [100.0]
    slept: list[float] = []
    throttle = Throttle(4, clock=lambda: clock[0], sleep=slept.append)
    for _ in range(3):
        throttle.wait()
    assert slept == [0.25, 0.5]
    clock[0] = 110.0  # long after the last slot
    throttle.wait()
    throttle.wait()
    assert slept == [0.25, 0.5, 0.25]
    one = Throttle(1, clock=lambda: clock[0], sleep=slept.append)
    one.wait()
    one.wait()
    assert slept[-1] == 1.0
    free = Throttle(0, clock=lambda: clock[0], sleep=slept.append)
    for _ in range(5):
        free.wait()
    assert len(slept) == 4


def test_a_claim_taken_over_after_its_lease_cannot_change_the_row(
    engine: Engine, course: Course
) -> None:
    """A worker whose lease expired and was claimed again by another can neither defer,
    fail nor release the row: only the lease's holder can."""
    from drip.outbox.deliveries import release, update_claimed

    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "slow@example.org", now=start)
    lease = timedelta(minutes=5)
    with engine.connect() as connection:
        [stale] = claim(connection, now=start, limit=10, lease=lease)
        later = start + timedelta(minutes=6)  # the first worker hung past its lease
        [fresh] = claim(connection, now=later, limit=10, lease=lease)
        with connection.begin():
            assert not update_claimed(connection, stale, {"status": "failed"})
            assert not release(connection, stale)
    [row] = deliveries(engine)
    assert (row.status, row.claimed_until, row.attempts) == ("sending", fresh.lease, 2)
    with engine.begin() as connection:
        assert update_claimed(connection, fresh, {"status": "failed", "claimed_until": None})
    assert deliveries(engine)[0].status == "failed"


def test_someone_leaving_mid_batch_is_skipped_and_the_batch_goes_on(
    engine: Engine, tmp_path: Path, course: Course
) -> None:
    """Claimed together: Ana's send lets Ben unsubscribe; the check right before Ben's
    send sees Ben's own row, so he gets nothing and the others still get theirs. The
    mail going out and the receipts agree: sent to those who were sent it, Ben's
    cancelled."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "ana@example.org", now=now)
    ben = enrol(engine, course, "ben@example.org", now=now)
    enrol(engine, course, "cat@example.org", now=now)

    class BenLeavesDuringAnasSend(MemoryMailer):
        def send(self, message: Outgoing) -> str:
            if message.recipient == "ana@example.org":
                with engine.begin() as connection:
                    catalog = Catalog({course.slug: course})
                    unsubscribe(connection, enrollment_uid=ben, catalog=catalog, now=now)
            return super().send(message)

    one = make_settings(tmp_path, smtp_connections=1)
    report = sender_for(engine, one, course, mailer_factory=BenLeavesDuringAnasSend).send_due(
        now=now
    )
    assert [m.recipient for m in memory.outbox] == ["ana@example.org", "cat@example.org"]
    assert report.sent == 2
    with Session(engine) as session:
        rows = session.exec(
            select(Subscriber.email, Delivery.status)
            .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
            .join(Delivery, Delivery.enrollment_id == Enrollment.id)
            .order_by(Subscriber.email)
        ).all()
    assert rows == [
        ("ana@example.org", "sent"),
        ("ana@example.org", "scheduled"),
        ("ben@example.org", "cancelled"),
        ("cat@example.org", "sent"),
        ("cat@example.org", "scheduled"),
    ]


def test_each_confirmation_names_its_own_signup_and_goes_once(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Two signups of one address, a confirmation each: two emails, each linking to its
    own signup (a subscriber's other signups never multiply or swap the links)."""
    import re

    from drip.core.tokens import Tokens

    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for minutes in (0, 20):
        with engine.begin() as connection:
            sign_up(
                connection,
                course=course,
                entries=[Entry.clean(email="twice@example.org")],
                consent=Consent(source="test"),
                resend_gap_seconds=0,
                now=now + timedelta(minutes=minutes),
            )
    sender_for(engine, settings, course).send_due(now=now + timedelta(hours=1))
    tokens = Tokens.from_settings(settings)
    linked = []
    for message in memory.outbox:
        [token] = re.findall(rb"/confirm/([\w.-]+)", message.data.replace(b"=\r\n", b""))[:1]
        linked.append(tokens.read_confirm(token.decode())[0])
    with Session(engine) as session:
        signups = list(session.exec(select(Signup.uid).order_by(Signup.id)))
    assert sorted(linked) == sorted(signups) and len(memory.outbox) == 2


def test_the_smtp_timeout_setting_bounds_a_silent_server(
    engine: Engine, tmp_path: Path, course: Course
) -> None:
    """DRIP_SMTP_TIMEOUT reaches the mailer: a server that accepts and says nothing stops
    the run within it, claims released."""
    import socket
    import time

    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "p@example.org", now=now)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # accepted by the kernel, never answered
        port = listener.getsockname()[1]
        quick = make_settings(
            tmp_path, smtp_url=f"smtp://127.0.0.1:{port}?starttls=off", smtp_timeout=0.5
        )
        started = time.monotonic()
        report = sender_for(engine, quick, course).send_due(now=now)
        took = time.monotonic() - started
    assert report.stopped and took < 5
    assert {(d.status, d.attempts) for d in deliveries(engine)} == {(DeliveryStatus.SCHEDULED, 0)}


def test_an_edited_course_is_read_again_and_a_broken_one_reported(
    tmp_path: Path, caplog: Any
) -> None:
    """The teacher edits tomorrow's subject: the next run sends the new one (nothing of
    the old email is kept). A broken file is logged, one line, and its emails wait."""
    import logging
    import os

    from tests.fixtures import SHIPPED_COURSE

    folder = tmp_path / "courses"
    folder.mkdir()
    path = folder / "yin.yaml"
    path.write_text(SHIPPED_COURSE.read_text())
    settings = make_settings(tmp_path, courses_dir=folder)
    engine = engine_for(settings)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    catalog = Catalog.from_dir(folder, strict=False)
    course = catalog.get("yin-immersion")
    enrol(engine, course, "ana@example.org", now=now)
    sender = make_sender(engine=engine, settings=settings, catalog=catalog)
    assert sender.send_due(now=now).sent == 1
    old = course.days[1].subject
    path.write_text(path.read_text().replace(old, "Day 2: A new subject"))
    os.utime(path, (1, 1))  # a changed file, whatever the clock's resolution
    assert sender.send_due(now=now + timedelta(days=1)).sent == 1
    assert b"Subject: Day 2: A new subject" in memory.outbox[-1].data
    path.write_text("slug: [broken\n")
    os.utime(path, (2, 2))
    with caplog.at_level(logging.ERROR, logger="drip.engine"):
        report = sender.send_due(now=now + timedelta(days=2))
    assert report.sent == 0 and len(report.course_problems) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith('event=course-invalid problem="') and "yin.yaml:2: invalid YAML" in line


def test_each_run_logs_one_summary_line(
    engine: Engine, settings: Settings, tmp_path: Path, course: Course, caplog: Any
) -> None:
    """send-due logs what it did in one line, even when nothing was due; the web
    process's sender stays quiet when it had nothing to do. Progress is reported per
    email."""
    import logging
    import re

    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "ana@example.org", now=now)
    seen: list[SendOutcome] = []
    with caplog.at_level(logging.INFO, logger="drip.engine"):
        sender_for(engine, settings, course).send_due(now=now, progress=seen.append)
        sender_for(engine, settings, course).send_due(now=now)
        sender_for(engine, settings, course, transactional_only=True).send_due(now=now)
    lines = [r.getMessage() for r in caplog.records if r.name == "drip.engine"]
    # seconds: the run's duration, rounded to the millisecond (a run here takes well under 10 s)
    summary = r"event=send-due now=2026-11-25T07:00:00\+00:00 seconds=\d\.\d{1,3} "
    assert len(lines) == 2
    counts = "deferred=0 failed=0 suppressed=0 cancelled=0 skipped=0"
    assert re.fullmatch(summary + "sent=1 " + counts, lines[0]), lines[0]
    assert re.fullmatch(summary + "sent=0 " + counts, lines[1]), lines[1]
    assert seen == [SendOutcome.SENT]
    enrol(engine, course, "ben@example.org", now=now)  # one connection: no thread pool
    one = make_settings(tmp_path, smtp_connections=1)
    sender_for(engine, one, course).send_due(now=now, progress=seen.append)
    assert seen == [SendOutcome.SENT, SendOutcome.SENT]


def appended(course: Course, *day_ids: str, **changes: Any) -> Course:
    """The course with days added at the end (copies of day 1 under new ids)."""
    days = course.model_dump(by_alias=True, mode="json")["days"]
    extra = [{**days[0], "id": day_id, "subject": f"Bonus: {day_id}"} for day_id in day_ids]
    return variant(course, days=days + extra, **changes)


@pytest.mark.parametrize("evergreen", [True, False])
def test_days_appended_later_reach_those_who_completed_only_when_evergreen(
    any_engine: Engine, tmp_path: Path, course: Course, evergreen: bool
) -> None:
    """Ana completed the course; the teacher appends two days. Under ``evergreen`` she is
    active again and gets them at 07:00 her time, one a day, from the next morning (not
    at once, not both on one day); the after-course email is not sent twice. Without it
    she stays completed and gets nothing more. Ben, who unsubscribed after completing,
    gets nothing either way, though confirming another course made him active again."""
    settings = make_settings(tmp_path)
    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    enrol(any_engine, course, "ana@example.org", now=start, timezone="America/New_York")
    ben = enrol(any_engine, course, "ben@example.org", now=start)
    walk(sender_for(any_engine, settings, course), start, days=9)
    with any_engine.begin() as connection:
        unsubscribe(
            connection, enrollment_uid=ben, catalog=Catalog({}), now=start + timedelta(days=10)
        )
        connection.execute(  # what confirming another course does
            update(Subscriber).where(Subscriber.email == "ben@example.org").values(status="active")
        )
    assert len(memory.outbox) == 16  # 7 lessons and the after-course email each
    memory.outbox.clear()

    def completions() -> list[tuple[str, datetime | None]]:
        with Session(any_engine) as session:
            return [(e.status, e.completed_at) for e in session.exec(select(Enrollment))]

    rows_before, completed = len(deliveries(any_engine)), completions()
    later = start + timedelta(days=12)
    sender_for(any_engine, settings, variant(course, evergreen=True)).send_due(now=later)
    # evergreen, but no day added: nobody restarts
    assert (len(deliveries(any_engine)), completions()) == (rows_before, completed)

    edited = appended(course, "bonus-one", "bonus-two", evergreen=evergreen)
    edit_time = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York
    walk(sender_for(any_engine, settings, edited), edit_time, days=4)

    with Session(any_engine) as session:
        statuses = dict(
            session.exec(select(Subscriber.email, Enrollment.status).join(Enrollment)).all()
        )
    if not evergreen:
        assert memory.outbox == []
        assert statuses["ana@example.org"] == "completed"
        return
    assert [m.recipient for m in memory.outbox] == ["ana@example.org"] * 2
    bonus = [d for d in deliveries(any_engine) if d.key.startswith("bonus")]
    assert len(bonus) == 2  # nothing queued for Ben
    rows = {d.key: d for d in bonus}
    new_york = ZoneInfo("America/New_York")
    sent = [rows[day].sent_at.astimezone(new_york) for day in ("bonus-one", "bonus-two")]
    assert [(t.day, t.hour) for t in sent] == [(21, 7), (22, 7)]
    assert statuses["ana@example.org"] == "completed"  # again, after the new days


@pytest.mark.parametrize("window", [1, 4])
def test_receipts_are_written_a_window_at_a_time(
    engine: Engine, tmp_path: Path, course: Course, window: int
) -> None:
    """When a message goes to SMTP, at most ``DRIP_SMTP_WINDOW - 1`` messages sent before
    it on that connection are unrecorded (the crash window is one window); every receipt
    is written by the end of the run."""
    settings = make_settings(tmp_path, smtp_window=window, smtp_connections=1)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(10):
        enrol(engine, course, f"s{n}@example.org", now=now)
    unrecorded: list[int] = []

    class Watching(MemoryMailer):
        def send(self, message: Outgoing) -> str:
            with Session(engine) as session:
                recorded = len(
                    session.exec(select(Delivery).where(Delivery.status == "sent")).all()
                )
            unrecorded.append(len(memory.outbox) - recorded)
            return super().send(message)

    assert (
        sender_for(engine, settings, course, mailer_factory=Watching).send_due(now=now).sent == 10
    )
    assert max(unrecorded) == window - 1
    assert [d.status for d in deliveries(engine) if d.key == course.days[0].id] == ["sent"] * 10


@pytest.mark.parametrize("window", [1, 3])
def test_over_smtp_a_window_bounds_what_is_sent_and_not_recorded(
    engine: Engine, tmp_path: Path, course: Course, smtp_sink: SmtpSink, window: int
) -> None:
    """Over SMTP, with or without PIPELINING (where a message's outcome is read with the
    next message's envelope): when a message arrives at the server, at most
    ``DRIP_SMTP_WINDOW`` messages of the connection, that one included, are not recorded
    sent; with a window of 1, every receipt is written before the next message goes out.
    Every reply is kept with its own message."""
    settings = _smtp_settings(tmp_path, smtp_sink, smtp_window=window)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(10):
        enrol(engine, course, f"s{n}@example.org", now=now)
    unrecorded: list[int] = []

    class Counting(list[Received]):
        def append(self, received: Received) -> None:
            super().append(received)
            with Session(engine) as session:
                recorded = session.exec(select(Delivery).where(Delivery.status == "sent")).all()
            unrecorded.append(len(self) - len(recorded))

    smtp_sink.received = Counting()
    assert sender_for(engine, settings, course).send_due(now=now).sent == 10
    assert max(unrecorded) == window
    arrived = {r.message_id: n for n, r in enumerate(smtp_sink.received, start=1)}
    sent = [d for d in deliveries(engine) if d.key == course.days[0].id]
    assert [d.smtp_response for d in sent] == [
        f"250 2.0.0 Ok: queued as drip-sink-{arrived[d.message_id]}" for d in sent
    ]


def test_each_lesson_follows_the_one_before_without_waiting_for_its_reply(
    engine: Engine, tmp_path: Path, course: Course
) -> None:
    """Over SMTP with PIPELINING the engine hands each lesson over at once, its outcome
    read with the next lesson's envelope: of a run's replies only the last is waited for,
    and each is recorded with its own lesson."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(5):
        enrol(engine, course, f"s{n}@example.org", now=now)
    server = WithholdingServer([b"250 queued %d\r\n" % n for n in range(5)])
    with scripted_server(server.talk) as port:
        url = f"smtp://127.0.0.1:{port}?starttls=off"
        settings = make_settings(tmp_path, smtp_url=url, smtp_connections=1)
        assert sender_for(engine, settings, course).send_due(now=now).sent == 5
    assert server.waited == 1
    sent = sorted((d.smtp_response or "", d.id) for d in deliveries(engine) if d.sent_at)
    assert [reply for reply, _ in sent] == [f"250 queued {n}" for n in range(5)]
    assert [delivery_id for _, delivery_id in sent] == sorted(id for _, id in sent)


@pytest.mark.parametrize("window", [1, 5])
def test_a_run_longer_than_a_lease_keeps_its_claims(
    engine: Engine, tmp_path: Path, course: Course, window: int
) -> None:
    """A run that lasts longer than the lease (a big morning at a low DRIP_SEND_RATE):
    each batch's lease counts from its own claim, so a run started 7 minutes later
    (cron) takes none of the long run's claims and nothing is sent twice."""
    settings = make_settings(
        tmp_path, smtp_window=window, smtp_connections=1, batch_size=5, lease_seconds=300
    )
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(30):
        enrol(engine, course, f"s{n:02}@example.org", now=now)
    clock = [0.0]
    later: list[int] = []

    class ThirtySecondsEach(MemoryMailer):
        def send(self, message: Outgoing) -> str:
            clock[0] += 30
            if clock[0] >= 420 and not later:  # 7 minutes in, cron starts another run
                later.append(
                    sender_for(engine, settings, course)
                    .send_due(now=now + timedelta(minutes=7))
                    .sent
                )
            return super().send(message)

    long_run = sender_for(
        engine, settings, course, mailer_factory=ThirtySecondsEach, clock=lambda: clock[0]
    )
    sent = long_run.send_due(now=now).sent
    counts = Counter(m.message_id for m in memory.outbox)
    assert len(counts) == 30 and max(counts.values()) == 1, "a lesson was sent twice"
    assert sent + later[0] == 30


def test_an_after_course_email_removed_from_the_course_is_skipped(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """The teacher deletes ``after_course`` while some are queued: each is closed as
    skipped when due (not deferred for ever), and the run is clean."""
    start = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "ana@example.org", now=start)
    walk(sender_for(engine, settings, course), start, days=6)
    [queued] = [d for d in deliveries(engine) if d.kind == EmailKind.AFTER_COURSE]
    assert queued.status == DeliveryStatus.SCHEDULED
    memory.outbox.clear()
    report = sender_for(engine, settings, variant(course, after_course=None)).send_due(
        now=start + timedelta(days=8)
    )
    assert (report[SendOutcome.SKIPPED], report.ok, memory.outbox) == (1, True, [])
    [skipped] = [d for d in deliveries(engine) if d.kind == EmailKind.AFTER_COURSE]
    assert (skipped.status, skipped.last_error) == (DeliveryStatus.SKIPPED, "after_course removed")


@pytest.mark.parametrize("window", [1, 4])
def test_a_window_of_receipts_keeps_each_rows_own_reply_and_skips_a_claim_taken_over(
    engine: Engine, tmp_path: Path, course: Course, window: int, caplog: Any
) -> None:
    """Receipts written together (one window, or one at a time) each keep their own
    server reply and Message-ID and release the lease; a claim another worker took over
    meanwhile records nothing, and one WARNING line says which message lost its receipt."""
    caplog.set_level(logging.INFO, logger="drip")
    settings = make_settings(tmp_path, smtp_window=window, smtp_connections=1)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for name in ("ana", "ben", "cy", "di"):
        enrol(engine, course, f"{name}@example.org", now=now)
    taken_over = now + timedelta(hours=1)

    class Replies(MemoryMailer):
        def send(self, message: Outgoing) -> str:
            super().send(message)
            if message.recipient == "cy@example.org":  # a worker took cy's claim over
                with engine.begin() as connection:
                    connection.execute(
                        update(Delivery)
                        .where(Delivery.status == "sending", Delivery.key.in_([course.days[0].id]))  # type: ignore[attr-defined]
                        .where(Delivery.enrollment_id == 3)
                        .values(claimed_until=taken_over)
                    )
            return f"250 queued for {message.recipient}"

    sender_for(engine, settings, course, mailer_factory=Replies).send_due(now=now)
    by_email = {m.recipient: m.message_id for m in memory.outbox}
    with Session(engine) as session:
        rows = session.exec(
            select(Subscriber.email, Delivery)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)  # type: ignore[arg-type]
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)  # type: ignore[arg-type]
            .where(Delivery.key == course.days[0].id)
        ).all()
    for email, row in rows:
        if email == "cy@example.org":
            assert (row.status, row.claimed_until, row.smtp_response) == (
                "sending",
                taken_over,
                None,
            )
        else:
            assert (row.status, row.smtp_response, row.message_id, row.claimed_until) == (
                "sent",
                f"250 queued for {email}",
                by_email[email],
                None,
            )
    lost = [r for r in caplog.records if "event=receipt-lost" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in lost] == [
        (
            logging.WARNING,
            f"event=receipt-lost email=cy@example.org course={course.slug} "
            f"day={course.days[0].id} message_id={by_email['cy@example.org']}",
        )
    ]


def test_days_appended_before_the_after_course_email_go_first(
    engine: Engine, settings: Settings, course: Course, caplog: Any
) -> None:
    """Days appended to an evergreen course after Ana's last lesson but before her
    after-course email: the new days go out, one a morning, and the after-course email
    the morning after the last of them, once; never two emails on one morning. An email
    of hers cancelled long ago (a link she asked for, then left) stays cancelled; the
    run logs how many it restarted."""
    caplog.set_level("INFO", logger="drip.lifecycle")
    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    evergreen = variant(course, evergreen=True)
    enrol(engine, evergreen, "ana@example.org", now=start)
    with engine.begin() as connection:
        [enrollment_id] = connection.execute(select(Enrollment.id)).scalars()
        key = row_key(EmailKind.LINK, now=start)
        queue(
            connection,
            enrollment_id=enrollment_id,
            kind=EmailKind.LINK,
            key=key,
            due_at=start,
            now=start,
        )
        connection.execute(update(Delivery).where(Delivery.key == key).values(status="cancelled"))
    walk(sender_for(engine, settings, evergreen), start, days=6, step=timedelta(hours=2))
    assert len(memory.outbox) == 7  # the after-course email waits for tomorrow
    edited = appended(evergreen, "bonus-one", "bonus-two")
    walk(sender_for(engine, settings, edited), start + timedelta(days=6, hours=6), days=6)
    sent = sorted((d for d in deliveries(engine) if d.sent_at), key=lambda d: d.sent_at)
    assert [d.key for d in sent[7:]] == ["bonus-one", "bonus-two", "after_course:once"]
    days = [d.sent_at.date() for d in sent]
    assert len(days) == len(set(days)) == 10, "one email a morning"
    [link] = [d for d in deliveries(engine) if d.kind == EmailKind.LINK]
    assert link.status == DeliveryStatus.CANCELLED
    restarts = [r.getMessage() for r in caplog.records if "event=evergreen " in r.getMessage()]
    assert restarts == [f"event=evergreen course={course.slug} restarted=1"]


def test_one_run_files_every_recorded_signup_however_many_batches(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Signups are processed a batch at a time until none is left (exactly one batch's worth,
    then one more, included): all confirmations go out in the same run."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    with engine.begin() as connection:
        for n in range(SIGNUP_BATCH + 1):
            entry = Entry.clean(email=f"s{n}@example.org", name="", timezone=None)
            record(connection, course=course, entry=entry, consent=Consent(source="t"), now=now)
    assert sender_for(engine, settings, course).send_due(now=now).sent == SIGNUP_BATCH + 1


def test_a_running_sender_follows_an_edited_course_file(
    engine: Engine, tmp_path: Path, course: Course
) -> None:
    """A long-lived sender (``drip run``) notices the course file changed and builds the
    next emails from the new text, not from what it prepared before."""
    folder = tmp_path / "courses"
    folder.mkdir()
    path = folder / "course.yaml"
    path.write_text(SHIPPED_COURSE.read_text())
    settings = make_settings(tmp_path, courses_dir=folder)
    sender = make_sender(engine=engine, settings=settings, catalog=Catalog.from_dir(folder))
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "ana@example.org", now=now)
    sender.send_due(now=now)
    path.write_text(path.read_text().replace(course.days[0].subject, "Day 1: Edited"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    enrol(engine, course, "ben@example.org", now=now)
    sender.send_due(now=now)
    assert b"Subject: Day 1: Edited" in memory.outbox[-1].data


def test_each_send_due_run_logs_its_summary_and_an_idle_web_sender_stays_quiet(
    engine: Engine, settings: Settings, course: Course, caplog: Any
) -> None:
    """``send-due`` logs one summary line per run, even with nothing to do; the web
    process's prompt sender only when it sent something."""
    caplog.set_level("INFO", logger="drip.engine")
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)

    def summaries() -> int:
        found = [r for r in caplog.records if r.getMessage().startswith("event=send-due")]
        caplog.clear()
        return len(found)

    sender_for(engine, settings, course).send_due(now=now)
    assert summaries() == 1
    prompt = sender_for(engine, settings, course, transactional_only=True)
    prompt.send_due(now=now)
    assert summaries() == 0
    with engine.begin() as connection:  # a signup waiting for its confirmation email
        entry = Entry.clean(email="ana@example.org", name="", timezone=None)
        sign_up(connection, course=course, entries=[entry], consent=Consent(source="t"), now=now)
    assert prompt.send_due(now=now).sent == 1
    assert summaries() == 1


def test_a_claim_taken_over_before_its_send_is_not_sent(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """The lease of Ana's lesson passes to another worker while this one builds it: the
    check right before SMTP finds the claim is not its own any more, and sends nothing."""
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "ana@example.org", now=now)
    other = now + timedelta(hours=1)

    class TakenOverWhileBuilding(Composer):
        def lesson(self, **kwargs: Any) -> Any:
            with engine.begin() as connection:
                connection.execute(update(Delivery).values(claimed_until=other))
            return super().lesson(**kwargs)

    composer = TakenOverWhileBuilding(settings=settings)
    report = sender_for(engine, settings, course, composer=composer).send_due(now=now)
    assert (report.sent, memory.outbox) == (0, [])
    [row] = deliveries(engine)
    assert (row.status, row.claimed_until) == (DeliveryStatus.SENDING, other)


def test_the_check_before_each_message_is_a_read_outside_any_transaction(
    engine: Engine, tmp_path: Path, course: Course
) -> None:
    """Checking each claim right before SMTP opens no transaction (no BEGIN and COMMIT,
    no SQLite write lock, per message): a run of 20 lessons with a window of 5 begins a
    transaction for each claim and each window of receipts, not for each message."""
    settings = make_settings(tmp_path, smtp_window=5, smtp_connections=1, batch_size=20)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(20):
        enrol(engine, course, f"s{n:02}@example.org", now=now)
    begins: list[str] = []

    def count(connection: object) -> None:
        begins.append("begin")

    sender = sender_for(engine, settings, course)
    event.listen(engine, "begin", count)
    try:
        assert sender.send_due(now=now).sent == 20
    finally:
        event.remove(engine, "begin", count)
    # two claims (the second finds nothing), four windows, the signups and evergreen passes
    assert len(begins) <= 8, len(begins)


def test_evergreen_restarts_each_behind_enrollment_of_the_course_once_chunk_by_chunk(
    any_engine: Engine, tmp_path: Path, course: Course
) -> None:
    """``extend_evergreen`` with a chunk of one: each call restarts the next enrollment
    behind (one whose first new day is already queued does not hide the others), then 0.
    Restarted: Ana, Ben, and Cleo, who left once before completing and came back. Not
    restarted: Dan, whose address bounced since, and Eve, who completed another course.
    A restarted enrollment is active with no completion time, and its first new day is
    due at today's ``send_at`` when the restart comes before it."""
    from drip.lifecycle.enrollment import extend_evergreen

    settings = make_settings(tmp_path)
    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    for name in ("ana", "ben", "cleo", "dan", "eve"):
        enrol(any_engine, course, f"{name}@example.org", now=start)
    walk(sender_for(any_engine, settings, course), start, days=9)
    with any_engine.begin() as connection:
        for email, values in (
            ("cleo@example.org", {"unsubscribed_at": start + timedelta(days=1)}),
            ("dan@example.org", {"status": SubscriberStatus.SUPPRESSED}),
        ):
            connection.execute(update(Subscriber).where(Subscriber.email == email).values(values))
        eve = select(Subscriber.id).where(Subscriber.email == "eve@example.org")
        connection.execute(
            update(Enrollment)
            .where(Enrollment.subscriber_id == eve.scalar_subquery())
            .values(course_slug="another-course")
        )
        # an enrollment's course never changes in drip: the tallies count it again
        tallies.rebuild(connection)
    edited = appended(course, "bonus-one", evergreen=True)
    local = ZoneInfo(course.default_timezone)
    early = datetime.combine(start.date() + timedelta(days=14), course.send_at, local) - timedelta(
        hours=1
    )
    with any_engine.begin() as connection:  # not evergreen: nobody is behind
        assert extend_evergreen(connection, course=appended(course, "bonus-one"), now=early) == 0
    chunks = []
    for _ in range(4):
        with any_engine.begin() as connection:
            chunks.append(extend_evergreen(connection, course=edited, now=early, limit=1))
    assert chunks == [1, 1, 1, 0]
    with Session(any_engine) as session:
        rows = session.exec(
            select(
                Subscriber.email, Enrollment.status, Enrollment.completed_at, Enrollment.course_slug
            )
            .join(Enrollment)
            .order_by(Subscriber.email)
        ).all()
    assert [(email, status, when is None) for email, status, when, _ in rows] == [
        ("ana@example.org", "active", True),
        ("ben@example.org", "active", True),
        ("cleo@example.org", "active", True),
        ("dan@example.org", "completed", False),
        ("eve@example.org", "completed", False),
    ]
    bonus = [d for d in deliveries(any_engine) if d.key == "bonus-one"]
    assert len(bonus) == 3
    assert {(d.due_at, d.created_at) for d in bonus} == {(early + timedelta(hours=1), early)}


def test_a_senders_postgresql_connections_plan_once_and_go_back_to_the_pool_as_they_came(
    any_engine: Engine, tmp_path: Path, course: Course
) -> None:
    """While sending, each worker's PostgreSQL session plans its statements once
    (``plan_cache_mode = force_generic_plan``); after the run, the pooled connections
    that the web process shares are back at the server's default."""
    if any_engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    settings = make_settings(tmp_path, smtp_connections=2)
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    for n in range(4):
        enrol(any_engine, course, f"s{n}@example.org", now=now)
    seen: list[str] = []

    class Watching(MemoryMailer):
        def send(self, message: Outgoing) -> str:
            with any_engine.connect() as other:  # not the worker's: a separate session
                seen.append(other.exec_driver_sql("SHOW plan_cache_mode").scalar_one())
            return super().send(message)

    sender = sender_for(any_engine, settings, course, mailer_factory=Watching)
    plans: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.startswith("SELECT delivery.id"):
            plans.append(cursor.connection.execute("SHOW plan_cache_mode").fetchone()[0])

    event.listen(any_engine, "after_cursor_execute", note)
    try:
        assert sender.send_due(now=now).sent == 4
    finally:
        event.remove(any_engine, "after_cursor_execute", note)
    assert plans and set(plans) == {"force_generic_plan"}
    assert set(seen) == {"auto"}
    pooled = [any_engine.connect() for _ in range(3)]
    try:
        assert {c.exec_driver_sql("SHOW plan_cache_mode").scalar_one() for c in pooled} == {"auto"}
    finally:
        for connection in pooled:
            connection.close()


def test_a_dry_run_lists_a_claim_whose_lease_ran_out_and_not_one_still_held(
    engine: Engine, course: Course
) -> None:
    """A worker died holding a claim: once its lease has run out the email is due again
    (the next run takes it), and ``--dry-run`` lists it; while the lease holds, it is not."""
    from drip.reporting.outbox import due

    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(engine, course, "held@example.org", now=now)
    with engine.connect() as connection:
        [held] = claim(connection, now=now, limit=1, lease=timedelta(minutes=5))
    enrol(engine, course, "waiting@example.org", now=now)
    with engine.connect() as connection:
        during = due(connection, now=now + timedelta(minutes=4), limit=None)
        after = due(connection, now=now + timedelta(minutes=6), limit=None)
    assert [row["email"] for row in during] == ["waiting@example.org"]
    assert sorted(row["email"] for row in after) == [held.email, "waiting@example.org"]
    assert {row["attempts"] for row in after if row["email"] == held.email} == {1}


def test_a_database_error_while_restarting_evergreen_enrollments_is_logged_and_sending_goes_on(
    engine: Engine, settings: Settings, course: Course, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses the evergreen restart (here a trigger on SQLite): one ERROR
    line names the course and the error, and the run still sends what is due."""
    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    evergreen = variant(course, evergreen=True)
    enrol(engine, evergreen, "ana@example.org", now=start)
    walk(sender_for(engine, settings, evergreen), start, days=8)
    later = start + timedelta(days=10)
    enrol(engine, evergreen, "ben@example.org", now=later)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER no_restart BEFORE UPDATE OF status ON enrollment"
            " WHEN OLD.status = 'completed' BEGIN SELECT RAISE(ABORT, 'restart refused'); END"
        )
    memory.outbox.clear()
    caplog.set_level(logging.INFO, logger="drip")
    report = sender_for(engine, settings, appended(evergreen, "bonus-one")).send_due(now=later)
    assert [m.recipient for m in memory.outbox] == ["ben@example.org"] and report.sent == 1
    failures = [r for r in caplog.records if "event=evergreen-failed" in r.getMessage()]
    [(level, line)] = [(r.levelno, r.getMessage()) for r in failures]
    assert level == logging.ERROR and "\n" not in line, "one line"
    assert line.startswith(
        f'event=evergreen-failed course={course.slug} error="(sqlite3.IntegrityError) '
        "restart refused\\n[SQL: UPDATE enrollment"
    )


def test_leaving_and_coming_back_between_the_check_and_the_cancel_keeps_the_course_going(
    any_engine: Engine, settings: Settings, course: Course
) -> None:
    """Ana leaves after her lesson is claimed, so the check right before SMTP says no;
    before the worker cancels the row she signs up again and confirms (her lessons read
    while the row was still the worker's). The worker checks again, holding her
    enrollment, finds her wanted, and sends it: she is never left active with nothing
    queued. (PostgreSQL: on SQLite a transaction takes the file's write lock as it
    begins, so nothing can be slipped in at that moment from inside the process.)"""
    if any_engine.dialect.name == "sqlite":
        pytest.skip("the moment before the cancel can only be reached on PostgreSQL")
    engine = any_engine
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    uid = enrol(engine, course, "ana@example.org", now=now)
    catalog = Catalog({course.slug: course})

    left: list[bool] = []
    came_back: list[bool] = []

    class LeavesOnceClaimed(Throttle):
        def wait(self) -> None:  # after the claim and the composing, before the check
            if left:
                return
            with engine.begin() as connection:
                unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=now)
            left.append(True)

    def comes_back_before_the_cancel(connection: object) -> None:
        if not left or came_back:
            return
        came_back.append(True)
        with engine.connect() as other, other.begin():
            entry = Entry.clean(email="ana@example.org", name="", timezone=None)
            sign_up(other, course=course, entries=[entry], consent=Consent(source="t"), now=now)
            signup = other.execute(select(Signup.uid).order_by(Signup.id.desc())).scalar()
            confirm(other, signup_uid=signup, issued_at=now, catalog=catalog, now=now)

    sender = sender_for(engine, settings, course, throttle=LeavesOnceClaimed(0))
    # the next transaction after she left is the cancel's: she comes back just before it
    event.listen(engine, "begin", comes_back_before_the_cancel)
    try:
        sender.send_due(now=now)
    finally:
        event.remove(engine, "begin", comes_back_before_the_cancel)
    assert came_back
    lessons = [m for m in memory.outbox if f".{course.days[0].id}@" in m.message_id]
    assert [m.recipient for m in lessons] == ["ana@example.org"]
    rows = {d.key: d.status for d in deliveries(engine) if d.kind == EmailKind.LESSON}
    assert rows == {course.days[0].id: DeliveryStatus.SENT, course.days[1].id: "scheduled"}


def test_a_lesson_history_holds_the_last_send_whatever_order_its_rows_come_in(
    any_engine: Engine, course: Course
) -> None:
    """An unsent lesson read after a sent one (day ids in send order, as the unique index
    returns them) leaves the time of the last send as it was."""
    from drip.outbox.deliveries import lesson_histories

    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    enrol(any_engine, course, "ana@example.org", now=now)
    with any_engine.begin() as connection:
        [enrollment_id] = connection.execute(select(Enrollment.id)).scalars()
        connection.execute(Delivery.__table__.delete())  # type: ignore[attr-defined]
        for day_id, status, sent_at in (
            ("a-first", "sent", now),
            ("b-second", "sent", now + timedelta(days=1)),
            ("c-third", "scheduled", None),
        ):
            connection.execute(
                Delivery.__table__.insert().values(  # type: ignore[attr-defined]
                    enrollment_id=enrollment_id,
                    key=day_id,
                    kind="lesson",
                    status=status,
                    due_at=now,
                    attempts=0,
                    sent_at=sent_at,
                )
            )
        found = lesson_histories(connection, [enrollment_id])
    assert found == {
        enrollment_id: (
            {"a-first": "sent", "b-second": "sent", "c-third": "scheduled"},
            now + timedelta(days=1),
        )
    }


def test_an_evergreen_course_listed_after_a_plain_one_still_restarts(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """The restart pass skips courses that are not evergreen and goes on to the next."""
    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    evergreen = variant(course, evergreen=True)
    enrol(engine, evergreen, "ana@example.org", now=start)
    walk(sender_for(engine, settings, evergreen), start, days=8)
    plain = variant(course, slug="aaa-plain-course")
    edited = appended(evergreen, "bonus-one")
    sender = make_sender(
        engine=engine,
        settings=settings,
        catalog=Catalog({plain.slug: plain, edited.slug: edited}),
    )
    assert [c.slug for c in sender.catalog][0] == plain.slug
    sender.send_due(now=start + timedelta(days=10, hours=-1))  # before send_at: queued
    assert [(d.key, d.status) for d in deliveries(engine) if d.key == "bonus-one"] == [
        ("bonus-one", "scheduled")
    ]
