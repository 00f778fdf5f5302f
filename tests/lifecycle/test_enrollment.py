"""The lifecycle rules on their own, against a real SQLite file: who may be sent a fresh
confirmation or unsubscribe link, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.models import Delivery, Enrollment, Signup, Subscriber
from drip.core.states import EmailKind, SubscriberStatus
from drip.lifecycle.enrollment import (
    confirm,
    find_member,
    may_resend,
    pending_members,
    resend_for_link,
    resend_for_operator,
    send_unsubscribe_link,
    stop_subscriber,
    unsubscribe,
)
from drip.lifecycle.signup import Action, Consent, SignupResult, process_recorded, record, sign_up
from drip.outbox import deliveries
from drip.runner import make_sender
from tests.fixtures import enrol, enrol_many

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def _other(course: Course) -> Course:
    data = course.model_dump(by_alias=True, mode="json")
    return Course.model_validate({**data, "slug": "other"})


def _pending(engine: Engine, course: Course, email: str, *, now: datetime) -> None:
    with engine.begin() as connection:
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email=email, name="", timezone=None)],
            consent=Consent(source="test"),
            now=now,
        )


def _links(engine: Engine) -> list[tuple[int, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(Delivery.enrollment_id, Delivery.created_at).where(
                Delivery.kind == EmailKind.LINK
            )
        )
        return [(enrollment_id, str(created)) for enrollment_id, created in rows]


def test_an_unsubscribe_link_goes_to_the_latest_enrollment_of_that_address_only(
    engine: Engine, course: Course
) -> None:
    """Typed on the lookup page: one fresh link per hour, for the address's most recent
    enrollment; other addresses, people who left and strangers get nothing."""
    # the latest enrollment is not the first in any index's order (by course slug, "other"
    # comes first): only ordering by id finds it
    enrol(engine, _other(course), "two@example.org", now=NOW)
    enrol(engine, course, "two@example.org", now=NOW)
    enrol(engine, course, "bystander@example.org", now=NOW)
    left = enrol(engine, course, "left@example.org", now=NOW)
    with engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=left, catalog=Catalog({}), now=NOW)
        for email in ("two@example.org", "two@example.org", "left@example.org", "no@example.org"):
            send_unsubscribe_link(connection, email=email, now=NOW)
        send_unsubscribe_link(connection, email="two@example.org", now=NOW + timedelta(hours=1))
    with Session(engine) as session:
        latest = session.exec(
            select(Enrollment.id)
            .join(Subscriber)
            .where(Enrollment.course_slug == course.slug, Subscriber.email == "two@example.org")
        ).one()
    assert _links(engine) == [(latest, str(NOW)), (latest, str(NOW + timedelta(hours=1)))]


def test_the_resend_gap_is_inclusive(engine: Engine, course: Course) -> None:
    """A confirmation may go again exactly ``gap`` seconds after the last, not before."""
    _pending(engine, course, "gap@example.org", now=NOW)
    with engine.connect() as connection:
        [member] = pending_members(connection, sent_before=None)
    assert member.confirmation_sent_at == NOW
    last = member.confirmation_sent_at
    assert may_resend(last, now=NOW + timedelta(seconds=600), gap_seconds=600)
    assert not may_resend(last, now=NOW + timedelta(seconds=599), gap_seconds=600)
    assert may_resend(None, now=NOW, gap_seconds=600)


def test_pending_members_are_those_still_waiting_oldest_first(
    engine: Engine, course: Course
) -> None:
    """Only pending addresses with a pending enrollment, filtered by address and by when
    their last confirmation went (strictly before ``sent_before``), in signup order."""
    _pending(engine, course, "b@example.org", now=NOW)
    _pending(engine, course, "a@example.org", now=NOW + timedelta(hours=1))
    _pending(engine, course, "gone@example.org", now=NOW)
    enrol(engine, course, "active@example.org", now=NOW)
    with engine.begin() as connection:
        connection.execute(
            update(Subscriber)
            .where(col(Subscriber.email) == "gone@example.org")
            .values(status=SubscriberStatus.SUPPRESSED)
        )
        emails = lambda **kw: [m.email for m in pending_members(connection, **kw)]  # noqa: E731
        assert emails(sent_before=None) == ["b@example.org", "a@example.org"]
        assert emails(sent_before=NOW + timedelta(hours=1)) == ["b@example.org"]
        assert emails(sent_before=NOW) == []
        assert emails(sent_before=None, email="a@example.org") == ["a@example.org"]


def test_an_operator_resends_only_to_someone_still_pending(engine: Engine, course: Course) -> None:
    """`drip subscribers resend-confirmation` queues a fresh confirmation for a pending
    address, and never for one that is active or has left."""
    _pending(engine, course, "wait@example.org", now=NOW)
    active = enrol(engine, course, "in@example.org", now=NOW)
    left = enrol(engine, course, "out@example.org", now=NOW)
    later = NOW + timedelta(days=1)
    with engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=left, catalog=Catalog({}), now=NOW)
        [waiting] = pending_members(connection, sent_before=None)
        assert resend_for_operator(connection, member=waiting, now=later)
        for uid in (active, left):
            member = find_member(connection, enrollment_uid=uid)
            assert not resend_for_operator(connection, member=member, now=later)
    with Session(engine) as session:
        confirmations = session.exec(
            select(Delivery.due_at).where(Delivery.kind == EmailKind.CONFIRM)
        ).all()
    assert sorted(confirmations) == [NOW, later]


def test_a_double_submit_is_processed_as_two_signups_and_one_confirmation(
    engine: Engine, course: Course
) -> None:
    """The same address posted twice (another in between) and processed in one go: every
    signup row is kept and processed, the address gets one confirmation (the resend gap),
    and its name is the first one's until a link is pressed."""
    with engine.begin() as connection:
        for email, name in (
            ("d@example.org", "Dee"),
            ("e@example.org", ""),
            ("d@example.org", "X"),
        ):
            entry = Entry.clean(email=email, name=name, timezone=None)
            record(connection, course=course, entry=entry, consent=Consent(source="t"), now=NOW)
        processed = process_recorded(
            connection, catalog=Catalog({course.slug: course}), now=NOW, resend_gap_seconds=600
        )
    assert processed == 3
    with Session(engine) as session:
        assert session.exec(select(Signup).where(col(Signup.processed_at).is_(None))).all() == []
        confirmations = session.exec(
            select(Subscriber.email)
            .join(Enrollment, col(Enrollment.subscriber_id) == Subscriber.id)
            .join(Delivery, col(Delivery.enrollment_id) == Enrollment.id)
            .where(Delivery.kind == EmailKind.CONFIRM)
        ).all()
        names = dict(session.exec(select(Subscriber.email, Subscriber.name)).all())
    assert sorted(confirmations) == ["d@example.org", "e@example.org"]
    assert names == {"d@example.org": "Dee", "e@example.org": ""}


def test_leaving_cancels_every_waiting_email_and_leaves_a_claimed_one_to_its_worker(
    engine: Engine, course: Course
) -> None:
    """A scheduled email becomes cancelled, stamped with the moment; one a worker has
    claimed stays the worker's (its pre-send check cancels it, or its receipt records it
    sent if it already went out: cancelling it here could resend it on a comeback)."""
    uid = enrol(engine, course, "bye@example.org", now=NOW)
    lease = NOW + timedelta(minutes=5)
    with engine.begin() as connection:
        connection.execute(update(Delivery).values(status="sending", claimed_until=lease))
        [enrollment_id] = connection.execute(select(Delivery.enrollment_id)).scalars()
        deliveries.queue_email(
            connection, enrollment_id=enrollment_id, kind=EmailKind.WELCOME, now=NOW
        )
        later = NOW + timedelta(minutes=1)
        unsubscribe(connection, enrollment_uid=uid, catalog=Catalog({}), now=later)
    with Session(engine) as session:
        rows = session.exec(
            select(Delivery.kind, Delivery.status, Delivery.cancelled_at, Delivery.claimed_until)
        )
        assert sorted(rows.all()) == [
            ("lesson", "sending", None, lease),
            ("welcome", "cancelled", later, None),
        ]


def test_a_signup_is_kept_as_posted_and_processed_later(any_engine: Engine, course: Course) -> None:
    """The web process stores the signup as posted at T0; processing at T1 creates the pending
    subscriber and enrollment (created at T1, consent from T0) and links the signup. A
    signup for a course removed meanwhile is closed without creating anyone."""
    t0, t1 = NOW, NOW + timedelta(seconds=5)
    consent = Consent(source="blog form", ip="203.0.113.9", user_agent="Firefox")
    gone = _other(course)
    with any_engine.begin() as connection:
        entry = Entry.clean(email="Ana@Example.org", name="Ana", timezone="Europe/Lisbon")
        uid = record(connection, course=course, entry=entry, consent=consent, now=t0)
        orphan = Entry.clean(email="orphan@example.org", name="", timezone=None)
        record(connection, course=gone, entry=orphan, consent=consent, now=t0)
        catalog = Catalog({course.slug: course})
        assert process_recorded(connection, catalog=catalog, now=t1, resend_gap_seconds=600) == 2
    with Session(any_engine) as session:
        signups = {s.email: s for s in session.exec(select(Signup))}
        [subscriber] = session.exec(select(Subscriber)).all()
        [enrollment] = session.exec(select(Enrollment)).all()
    ana = signups["ana@example.org"]
    assert (ana.uid, ana.course_slug, ana.name, ana.timezone) == (
        uid,
        course.slug,
        "Ana",
        "Europe/Lisbon",
    )
    assert (ana.created_at, ana.ip, ana.user_agent, ana.source) == (
        t0,
        "203.0.113.9",
        "Firefox",
        "blog form",
    )
    assert (ana.subscriber_id, ana.processed_at) == (subscriber.id, t1)
    assert (subscriber.email, subscriber.name, subscriber.timezone, subscriber.status) == (
        "ana@example.org",
        "Ana",
        "Europe/Lisbon",
        "pending",
    )
    assert len(subscriber.uid) == 24 and subscriber.created_at == t1
    assert (subscriber.consent_at, subscriber.consent_ip) == (t0, "203.0.113.9")
    assert (subscriber.consent_user_agent, subscriber.consent_source) == ("Firefox", "blog form")
    assert (enrollment.subscriber_id, enrollment.course_slug) == (subscriber.id, course.slug)
    assert (enrollment.status, enrollment.created_at, len(enrollment.uid)) == ("pending", t1, 24)
    left = signups["orphan@example.org"]
    assert (left.subscriber_id, left.processed_at) == (None, t1)


def test_an_operator_signup_is_processed_at_once_and_only_the_operator_confirms(
    any_engine: Engine, course: Course
) -> None:
    with any_engine.begin() as connection:
        entry = Entry.clean(email="op@example.org", name="Op", timezone=None)
        consent = Consent(source="import")
        sign_up(connection, course=course, entries=[entry], consent=consent, now=NOW)
        with pytest.raises(ValueError, match="^only the operator can sign people up as confirmed$"):
            sign_up(
                connection, course=course, entries=[entry], consent=consent, now=NOW, confirmed=True
            )
    with Session(any_engine) as session:
        [signup] = session.exec(select(Signup)).all()
        subscriber_id = session.exec(select(Subscriber.id)).one()
    assert (signup.created_at, signup.processed_at, signup.subscriber_id) == (
        NOW,
        NOW,
        subscriber_id,
    )
    assert (signup.name, signup.source, signup.course_slug) == ("Op", "import", course.slug)


def _goodbye_course(course: Course) -> Course:
    data = course.model_dump(by_alias=True, mode="json")
    return Course.model_validate({**data, "goodbye_email": True})


def _kinds(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(Delivery.kind, Delivery.status).order_by(col(Delivery.id)))
        return [(kind, status) for kind, status in rows]


def test_leaving_twice_keeps_the_goodbye_but_a_suppression_cancels_it(
    engine: Engine, course: Course
) -> None:
    """A second unsubscribe (one-click, then the button) leaves the queued goodbye alone;
    an address suppressed afterwards (a bounce) gets nothing, goodbye included. Only
    running enrollments are cancelled, stamped with the moment."""
    leaving = _goodbye_course(course)
    uid = enrol(engine, leaving, "twice@example.org", now=NOW)
    catalog = Catalog({leaving.slug: leaving})
    later = NOW + timedelta(minutes=3)
    with engine.begin() as connection:
        first = unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=later)
        again = unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=later)
    assert (first.course, first.changed, again.course, again.changed) == (
        leaving,
        True,
        leaving,
        False,
    )
    assert _kinds(engine) == [("lesson", "cancelled"), ("goodbye", "scheduled")]
    with Session(engine) as session:
        enrollment = session.exec(select(Enrollment)).one()
        goodbye = session.exec(select(Delivery).where(Delivery.kind == "goodbye")).one()
    assert (enrollment.status, enrollment.cancelled_at) == ("cancelled", later)
    assert (goodbye.due_at, goodbye.created_at) == (later, later)
    with engine.begin() as connection:
        member = find_member(connection, enrollment_uid=uid)
        stop_subscriber(
            connection,
            subscriber_id=member.subscriber_id,
            status=SubscriberStatus.SUPPRESSED,
            now=later,
            reason="550 gone",
        )
    assert _kinds(engine) == [("lesson", "cancelled"), ("goodbye", "cancelled")]


def test_a_finished_course_stays_completed_when_its_subscriber_leaves(
    engine: Engine, course: Course
) -> None:
    done = enrol(engine, course, "done@example.org", now=NOW)
    enrol(engine, _other(course), "done@example.org", now=NOW)
    with engine.begin() as connection:
        connection.execute(
            update(Enrollment)
            .where(col(Enrollment.uid) == done)
            .values(status="completed", completed_at=NOW)
        )
        unsubscribe(connection, enrollment_uid=done, catalog=Catalog({}), now=NOW)
    with Session(engine) as session:
        statuses = dict(session.exec(select(Enrollment.course_slug, Enrollment.status)).all())
    assert statuses == {course.slug: "completed", "other": "cancelled"}


def test_an_operator_resend_confirms_the_latest_signup(engine: Engine, course: Course) -> None:
    """The fresh link names the address's most recent signup for that course, so
    confirming applies what they posted last."""
    _pending(engine, course, "twice@example.org", now=NOW)
    _pending(engine, course, "twice@example.org", now=NOW + timedelta(hours=1))
    # later signups: theirs for another course, and someone else's for this one
    _pending(engine, _other(course), "twice@example.org", now=NOW + timedelta(hours=2))
    _pending(engine, course, "else@example.org", now=NOW + timedelta(hours=3))
    with engine.begin() as connection:
        members = pending_members(connection, sent_before=None, email="twice@example.org")
        [member] = [m for m in members if m.course_slug == course.slug]
        assert resend_for_operator(connection, member=member, now=NOW + timedelta(days=1))
    with Session(engine) as session:
        latest = session.exec(
            select(Signup.id)
            .where(Signup.course_slug == course.slug, Signup.email == "twice@example.org")
            .order_by(col(Signup.id))
        ).all()[-1]
        resent = session.exec(
            select(Delivery.signup_id).where(Delivery.due_at == NOW + timedelta(days=1))
        ).one()
    assert resent == latest


def test_confirming_applies_the_details_of_the_signup_its_link_names(
    engine: Engine, course: Course
) -> None:
    """Two signups for one address (the second by someone else, say): pressing the link of
    one makes its name, zone and proof of consent the subscriber's, on its own course
    only."""
    other = _other(course)
    catalog = Catalog({course.slug: course, other.slug: other})
    posts = [
        (course, "Ana", "Europe/Lisbon", "203.0.113.1", "blog"),
        (course, "Mallory", "Asia/Tokyo", "198.51.100.7", "api"),
        (other, "Ana", None, "203.0.113.1", "blog"),
    ]
    with engine.begin() as connection:
        for index, (on, name, zone, ip, source) in enumerate(posts):
            entry = Entry.clean(email="ana@example.org", name=name, timezone=zone)
            consent = Consent(source=source, ip=ip, user_agent=f"agent {index}")
            at = NOW + timedelta(minutes=20 * index)
            record(connection, course=on, entry=entry, consent=consent, now=at)
            process_recorded(connection, catalog=catalog, now=at, resend_gap_seconds=0)
    with Session(engine) as session:
        first, second, _ = session.exec(select(Signup.uid).order_by(col(Signup.id))).all()
    for uid, expected in ((second, posts[1]), (first, posts[0])):
        later = NOW + timedelta(hours=1)
        with engine.begin() as connection:
            done = confirm(connection, signup_uid=uid, issued_at=later, catalog=catalog, now=later)
        assert done.course == course and done.zone.key == expected[2]
        with Session(engine) as session:
            ana = session.exec(select(Subscriber)).one()
            enrollments = dict(
                session.exec(select(Enrollment.course_slug, Enrollment.status)).all()
            )
        assert (ana.name, ana.timezone, ana.consent_ip, ana.consent_source) == expected[1:]
        assert enrollments == {course.slug: "active", other.slug: "pending"}
    assert done.changed and done.next_lesson is None  # new details, no second day 1


def _confirmations(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Delivery).where(Delivery.kind == EmailKind.CONFIRM)).all())


def test_the_resend_button_sends_only_to_someone_still_waiting(
    engine: Engine, course: Course
) -> None:
    """An expired link's "send me a new one": a fresh confirmation for a pending signup
    once the gap has passed; nothing for a suppressed address, nothing within the gap."""
    _pending(engine, course, "wait@example.org", now=NOW)
    _pending(engine, course, "barred@example.org", now=NOW)
    with Session(engine) as session:
        uids = dict(session.exec(select(Signup.email, Signup.uid)).all())
        barred = session.exec(
            select(Subscriber.id).where(Subscriber.email == "barred@example.org")
        ).one()
    with engine.begin() as connection:
        stop_subscriber(
            connection, subscriber_id=barred, status=SubscriberStatus.SUPPRESSED, now=NOW
        )
    assert _confirmations(engine) == 2
    soon, later = NOW + timedelta(minutes=5), NOW + timedelta(days=8)
    for when, expected in ((soon, 2), (later, 3), (later, 3)):
        for email in ("wait@example.org", "barred@example.org"):
            with engine.begin() as connection:
                resend_for_link(connection, signup_uid=uids[email], now=when, gap_seconds=600)
        assert _confirmations(engine) == expected, when


def test_coming_back_the_day_a_lesson_went_out_resumes_the_next_morning(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Left after day 1 went out and came back the same day: day 2 is due the next
    morning, in the zone the new signup gives (day 1 went out at 20:00 in Auckland); coming
    back on a later day, at once."""
    catalog = Catalog({course.slug: course})
    morning = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)  # 07:00 in London
    next_auckland_morning = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # 07:00 NZDT
    for email, back, zone in (
        ("same@example.org", morning + timedelta(hours=2), "Pacific/Auckland"),
        ("later@example.org", morning + timedelta(days=2, hours=2), None),
    ):
        uid = enrol(engine, course, email, now=morning)
        make_sender(engine=engine, settings=settings, catalog=catalog).send_due(now=morning)
        with engine.begin() as connection:
            unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=morning)
            entry = Entry.clean(email=email, name="", timezone=zone)
            sign_up(connection, course=course, entries=[entry], consent=Consent("t"), now=back)
            signup = connection.execute(select(Signup.uid).order_by(col(Signup.id).desc()))
            done = confirm(
                connection, signup_uid=signup.scalar(), issued_at=back, catalog=catalog, now=back
            )
        assert done.next_lesson is not None
        assert done.next_lesson.day_id == course.days[1].id
        expected = next_auckland_morning if zone else back
        assert done.next_lesson.due_at == expected, email


def test_the_goodbye_and_the_fresh_unsubscribe_link_are_keyed_by_kind(
    engine: Engine, course: Course
) -> None:
    """Each email's outbox key names its kind (and, for a fresh link, the hour it was
    asked for): what makes a repeated request within the hour one email."""
    polite = _goodbye_course(course)
    uid = enrol(engine, polite, "bye@example.org", now=NOW)
    with engine.begin() as connection:
        send_unsubscribe_link(connection, email="bye@example.org", now=NOW)
        unsubscribe(connection, enrollment_uid=uid, catalog=Catalog({polite.slug: polite}), now=NOW)
    with Session(engine) as session:
        keys = sorted(
            session.exec(select(Delivery.key).where(Delivery.kind != EmailKind.LESSON)).all()
        )
    goodbye, link = keys
    assert (goodbye.partition(":")[0], link) == ("goodbye", "link:2026112509")


def _post(engine: Engine, course: Course, at: datetime, **details: str | None) -> str:
    """A signup posted on the web and processed; its uid."""
    entry = Entry.clean(
        email="ana@example.org", name=details.get("name") or "", timezone=details.get("zone")
    )
    consent = Consent(source="blog", ip=details.get("ip"), user_agent=details.get("agent"))
    with engine.begin() as connection:
        uid = record(connection, course=course, entry=entry, consent=consent, now=at)
        process_recorded(
            connection, catalog=Catalog({course.slug: course}), now=at, resend_gap_seconds=0
        )
    return uid


def test_confirming_stamps_the_subscriber_and_starts_the_course_once(
    engine: Engine, course: Course
) -> None:
    """Confirming records when and on what proof, starts the enrollment with day 1 and the
    welcome; a signup with no name or zone keeps the ones known; pressing the same link
    again changes nothing, a second signup's link applies it."""
    polite = Course.model_validate(
        {**course.model_dump(by_alias=True, mode="json"), "welcome_email": True}
    )
    catalog = Catalog({polite.slug: polite})
    first = _post(
        engine, polite, NOW, name="Ana", zone="Europe/Lisbon", ip="203.0.113.9", agent="A"
    )
    at = NOW + timedelta(hours=1)

    def press(uid: str, when: datetime) -> bool:
        with engine.begin() as connection:
            done = confirm(connection, signup_uid=uid, issued_at=when, catalog=catalog, now=when)
        return done.changed

    assert press(first, at)
    with Session(engine) as session:
        ana = session.exec(select(Subscriber)).one()
        enrollment = session.exec(select(Enrollment)).one()
        queued = session.exec(
            select(Delivery.kind, Delivery.key, Delivery.created_at).where(
                Delivery.kind != EmailKind.CONFIRM
            )
        ).all()
    assert (ana.status, ana.confirmed_at, ana.consent_at) == ("active", at, NOW)
    assert (ana.name, ana.timezone, ana.consent_ip, ana.consent_user_agent) == (
        "Ana",
        "Europe/Lisbon",
        "203.0.113.9",
        "A",
    )
    assert (enrollment.status, enrollment.started_at, enrollment.cancelled_at) == (
        "active",
        at,
        None,
    )
    assert sorted((kind, key.partition(":")[0], when) for kind, key, when in queued) == [
        ("lesson", polite.days[0].id, at),
        ("welcome", "welcome", at),
    ]
    assert not press(first, at + timedelta(minutes=1))  # the same link again
    later = NOW + timedelta(days=1)
    second = _post(engine, polite, later, name="", zone=None, ip="198.51.100.1", agent="B")
    assert press(second, later)  # already active, yet this signup's proof is now the one
    with Session(engine) as session:
        ana = session.exec(select(Subscriber)).one()
        enrollment = session.exec(select(Enrollment)).one()
    assert (ana.name, ana.timezone, ana.consent_ip, ana.consent_at) == (
        "Ana",
        "Europe/Lisbon",
        "198.51.100.1",
        later,
    )
    assert (ana.confirmed_at, enrollment.started_at) == (at, at)  # first times kept


def _add(engine: Engine, course: Course, *emails: str, at: datetime = NOW) -> list[SignupResult]:
    with engine.begin() as connection:
        return sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email=email) for email in emails],
            consent=Consent(source="test"),
            resend_gap_seconds=0,
            now=at,
        )


def test_processing_reports_each_address_as_it_was_on_this_course(
    engine: Engine, course: Course
) -> None:
    """Each outcome names the address's status before (None: new) and what was done,
    judged on this course's enrollment even when the address is on another course too."""
    other = _other(course)
    assert _add(engine, course, "ana@example.org") == [
        SignupResult("ana@example.org", Action.CONFIRM, None)
    ]
    enrol(engine, other, "ana@example.org", now=NOW)  # now active, on the other course
    enrol(engine, course, "ben@example.org", now=NOW)
    assert _add(engine, course, "ana@example.org", "ben@example.org", "new@example.org") == [
        SignupResult("ana@example.org", Action.CONFIRM, "active"),
        SignupResult("ben@example.org", Action.NOTHING, "active"),
        SignupResult("new@example.org", Action.CONFIRM, None),
    ]
    with Session(engine) as session:
        keys = session.exec(select(Delivery.key).where(Delivery.kind == EmailKind.CONFIRM))
        assert {key.partition(":")[0] for key in keys} == {"confirm"}
    with pytest.raises(ValueError, match="^each address may appear once per call$"):
        _add(engine, course, "dup@example.org", "dup@example.org")


def test_an_operator_confirmed_signup_applies_its_details_and_proof_at_once(
    engine: Engine, course: Course
) -> None:
    """``--confirmed`` (the operator holds the consent): active at once, with the name,
    zone and proof of consent given, and the signup marked confirmed."""
    at = NOW + timedelta(minutes=7)
    with engine.begin() as connection:
        [outcome] = sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email="op@example.org", name="Olu", timezone="Africa/Lagos")],
            consent=Consent(source="import:list.csv", ip="192.0.2.4", user_agent="drip cli"),
            by_operator=True,
            confirmed=True,
            now=at,
        )
    assert outcome == SignupResult("op@example.org", Action.ACTIVATE, None)
    with Session(engine) as session:
        olu = session.exec(select(Subscriber)).one()
        signup = session.exec(select(Signup)).one()
    assert (olu.status, olu.name, olu.timezone, olu.confirmed_at) == (
        "active",
        "Olu",
        "Africa/Lagos",
        at,
    )
    assert (olu.consent_at, olu.consent_source, olu.consent_ip, olu.consent_user_agent) == (
        at,
        "import:list.csv",
        "192.0.2.4",
        "drip cli",
    )
    assert signup.confirmed_at == at


def test_processing_drops_signups_for_a_removed_course_and_processes_the_rest(
    engine: Engine, course: Course
) -> None:
    """Signups recorded for a course removed since are dropped; those for courses still
    there are processed in the same pass, a blank source kept blank."""
    other = _other(course)
    with engine.begin() as connection:
        for on, email in ((other, "gone@example.org"), (course, "kept@example.org")):
            entry = Entry.clean(email=email)
            record(connection, course=on, entry=entry, consent=Consent(source=""), now=NOW)
        processed = process_recorded(
            connection, catalog=Catalog({course.slug: course}), now=NOW, resend_gap_seconds=0
        )
    assert processed == 2
    with Session(engine) as session:
        assert session.exec(select(Subscriber.email)).all() == ["kept@example.org"]
        uid = session.exec(select(Signup.uid).where(Signup.email == "kept@example.org")).one()
    with engine.begin() as connection:
        confirm(
            connection,
            signup_uid=uid,
            issued_at=NOW,
            catalog=Catalog({course.slug: course}),
            now=NOW,
        )
    with Session(engine) as session:
        assert session.exec(select(Subscriber.consent_source)).one() == ""


def test_coming_back_keeps_the_first_start_and_clears_the_leaving(
    engine: Engine, course: Course
) -> None:
    catalog = Catalog({course.slug: course})
    uid = enrol(engine, course, "back@example.org", now=NOW)
    later = NOW + timedelta(days=3)
    with engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=NOW + timedelta(hours=1))
        entry = Entry.clean(email="back@example.org")
        sign_up(connection, course=course, entries=[entry], consent=Consent("t"), now=later)
        signup = connection.execute(select(Signup.uid).order_by(col(Signup.id).desc())).scalar()
        confirm(connection, signup_uid=signup, issued_at=later, catalog=catalog, now=later)
    with Session(engine) as session:
        enrollment = session.exec(select(Enrollment)).one()
    assert (enrollment.status, enrollment.started_at, enrollment.cancelled_at) == (
        "active",
        NOW,
        None,
    )


def test_a_single_opt_in_signup_applies_its_details_to_someone_already_here(
    engine: Engine, course: Course
) -> None:
    """Ana, active on one course, joins a single opt-in course with a new name and time
    zone: processing the signup is her confirmation, so both apply, and its proof of consent
    (no source given: stored empty) replaces the operator's."""
    enrol(engine, course, "ana@example.org", now=NOW, name="Ana", timezone="Europe/Lisbon")
    single = Course.model_validate(
        {**_other(course).model_dump(by_alias=True, mode="json"), "double_opt_in": False}
    )
    later = NOW + timedelta(days=1)
    with engine.begin() as connection:
        entry = Entry.clean(email="ana@example.org", name="Ana B", timezone="Asia/Tokyo")
        consent = Consent(source=None, ip="198.51.100.7", user_agent="Agent/2")  # type: ignore[arg-type]
        record(connection, course=single, entry=entry, consent=consent, now=later)
        catalog = Catalog({course.slug: course, single.slug: single})
        process_recorded(connection, catalog=catalog, now=later, resend_gap_seconds=600)
    with Session(engine) as session:
        ana = session.exec(select(Subscriber)).one()
    assert (ana.name, ana.timezone, ana.consent_at) == ("Ana B", "Asia/Tokyo", later)
    assert (ana.consent_ip, ana.consent_user_agent, ana.consent_source) == (
        "198.51.100.7",
        "Agent/2",
        "",
    )


def test_a_signup_filed_at_once_keeps_where_it_came_from(engine: Engine, course: Course) -> None:
    """A signup stored and processed in one step (the CLI's add and import) keeps its own
    record of the consent, as one posted through the web does."""
    consent = Consent(source="import: list.csv", ip="192.0.2.4", user_agent="Importer/1")
    with engine.begin() as connection:
        entry = Entry.clean(email="ana@example.org", name="Ana", timezone="Europe/Lisbon")
        sign_up(connection, course=course, entries=[entry], consent=consent, now=NOW)
    with Session(engine) as session:
        signup = session.exec(select(Signup)).one()
    assert (signup.ip, signup.user_agent, signup.source) == (
        "192.0.2.4",
        "Importer/1",
        "import: list.csv",
    )
    assert (signup.name, signup.timezone, signup.created_at) == ("Ana", "Europe/Lisbon", NOW)


def test_queueing_many_emails_puts_each_in_once(any_engine: Engine, course: Course) -> None:
    """More emails than one statement holds: every one is queued with its own values, and
    one already in the outbox (same enrollment and key) is left as it was."""
    enrol(any_engine, course, "many@example.org", now=NOW)
    later = NOW + timedelta(days=1)
    count = 2 * deliveries.QUEUE_ROWS  # and one more below: the last statement has one row
    with any_engine.begin() as connection:
        [(enrollment_id, first_key)] = connection.execute(
            select(Delivery.enrollment_id, Delivery.key)
        ).all()
        emails = [
            {
                "enrollment_id": enrollment_id,
                "kind": EmailKind.LESSON,
                "key": f"extra-{i}",
                "due_at": later + timedelta(minutes=i),
                "now": later,
            }
            for i in range(count)
        ]
        emails.insert(count // 2, {**emails[0], "key": first_key})  # already there
        deliveries.queue_many(connection, emails)
    with Session(any_engine) as session:
        rows = session.exec(select(Delivery.key, Delivery.due_at, Delivery.created_at)).all()
    assert len(rows) == count + 1
    queued = {key: (due, created) for key, due, created in rows}
    assert queued[first_key] == (NOW, NOW)
    assert all(queued[f"extra-{i}"] == (later + timedelta(minutes=i), later) for i in range(count))


def _welcoming(course: Course, *, double_opt_in: bool = True) -> Course:
    data = course.model_dump(by_alias=True, mode="json")
    return Course.model_validate({**data, "welcome_email": True, "double_opt_in": double_opt_in})


def _people(engine: Engine, prefix: str) -> dict[str, list[dict[str, object]]]:
    """Every row stored for the addresses starting with ``prefix``, by address (without
    the prefix), as its columns say, but for ids, uids and the uid in a welcome's key."""
    found: dict[str, list[dict[str, object]]] = {}
    with Session(engine) as session:
        rows = session.exec(
            select(Subscriber, Enrollment)
            .join(Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id))
            .where(col(Subscriber.email).startswith(prefix))
        ).all()
        for subscriber, enrollment in rows:
            signups = session.exec(select(Signup).where(Signup.subscriber_id == subscriber.id))
            emails = session.exec(
                select(Delivery)
                .where(Delivery.enrollment_id == enrollment.id)
                .order_by(col(Delivery.kind))
            )
            found[subscriber.email.removeprefix(prefix)] = [
                subscriber.model_dump(exclude={"id", "uid", "email"}),
                enrollment.model_dump(exclude={"id", "uid", "subscriber_id"}),
                *(s.model_dump(exclude={"id", "uid", "subscriber_id", "email"}) for s in signups),
                *(
                    {**d.model_dump(exclude={"id", "enrollment_id"}), "key": d.key.split(":")[0]}
                    for d in emails
                ),
            ]
    return found


def test_new_people_enrolled_at_once_are_stored_as_activation_leaves_them(
    any_engine: Engine, course: Course
) -> None:
    """A list imported as confirmed writes its new people in final form, in a few
    statements (``_enrol_new``); a signup recorded and then activated (a course without
    double opt-in) goes the long way, row by row. Both leave the same rows, column by
    column, the same emails queued, and the same counts (checked at teardown)."""
    people = [
        ("ana@example.org", "Ana", "Europe/Lisbon"),
        ("ben@example.org", "", None),
        ("zoe@b\u00fccher.example", "Zoë Ø", "America/Argentina/Buenos_Aires"),
    ]
    consent = Consent(source="import:list.csv", ip="192.0.2.4", user_agent="drip cli")
    imported = _welcoming(course)
    with any_engine.begin() as connection:
        outcomes = sign_up(
            connection,
            course=imported,
            entries=[Entry.clean(email=f"a.{e}", name=n, timezone=z) for e, n, z in people],
            consent=consent,
            by_operator=True,
            confirmed=True,
            now=NOW,
        )
    assert outcomes == [SignupResult(f"a.{e}", Action.ACTIVATE, None) for e, _, _ in people]
    at_once = _welcoming(course, double_opt_in=False)
    with any_engine.begin() as connection:
        for email, name, zone in people:
            entry = Entry.clean(email=f"b.{email}", name=name, timezone=zone)
            record(connection, course=at_once, entry=entry, consent=consent, now=NOW)
        catalog = Catalog({course.slug: at_once})
        assert process_recorded(connection, catalog=catalog, now=NOW, resend_gap_seconds=0) == 3
    direct, long_way = _people(any_engine, "a."), _people(any_engine, "b.")
    assert set(direct) == {email for email, _, _ in people}
    assert direct == long_way
    kinds = [row.get("kind") for row in direct["ana@example.org"][3:]]
    assert kinds == [EmailKind.LESSON, EmailKind.WELCOME]


def test_a_known_address_in_an_imported_list_takes_the_long_way(
    any_engine: Engine, course: Course
) -> None:
    """An address drip has (or, on PostgreSQL, that another transaction adds while a list
    is imported) is not written twice: the import's insert does nothing for it, and it is
    decided as the known address it is (an operator's confirmed signup activates a
    pending subscriber) beside the new ones."""
    _pending(any_engine, course, "ana@example.org", now=NOW)
    outcomes = enrol_many(any_engine, course, ["new@example.org", "ana@example.org"], now=NOW)
    assert outcomes == [
        SignupResult("new@example.org", Action.ACTIVATE, None),
        SignupResult("ana@example.org", Action.ACTIVATE, SubscriberStatus.PENDING),
    ]
    with Session(any_engine) as session:
        statuses = session.exec(select(Subscriber.email, Subscriber.status)).all()
        lessons = session.exec(select(Delivery.key).where(Delivery.kind == EmailKind.LESSON))
        assert sorted(statuses) == [("ana@example.org", "active"), ("new@example.org", "active")]
        assert list(lessons) == [course.days[0].id] * 2


def test_a_batch_is_written_in_address_order(any_engine: Engine, course: Course) -> None:
    """Whatever order a list comes in, its people are written in the order of their
    addresses, so two imports of the same people at once (PostgreSQL) take their locks in
    one order and wait for each other instead of deadlocking; outcomes keep the list's."""
    emails = ["cat@example.org", "ana@example.org", "ben@example.org"]
    outcomes = enrol_many(any_engine, course, emails, now=NOW)
    assert [outcome.email for outcome in outcomes] == emails
    with Session(any_engine) as session:
        stored = session.exec(select(Subscriber.email).order_by(col(Subscriber.id))).all()
    assert stored == sorted(emails)
