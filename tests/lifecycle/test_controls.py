"""The subscriber's own controls (pause, resume, restart, her own hour) and lessons sent
on a condition, with real SQLite files and the send engine, by passing `now`."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.exceptions import InvalidCourse
from drip.core.models import Delivery, Enrollment, Subscriber
from drip.core.states import CONDITION_NOT_MET, DeliveryStatus, EmailKind
from drip.feedback.clicks import record_click
from drip.lifecycle import actions
from drip.lifecycle.controls import Changed, Control, read_days, read_hour, read_inputs
from drip.lifecycle.enrollment import unsubscribe
from drip.reporting.stats import funnel
from drip.runner import make_sender
from drip.sending.compose import Composer
from drip.sending.engine import Sender
from drip.sending.mailer import memory
from drip.store.engine import make_engine
from drip.store.schema import upgrade
from tests.fixtures import enrol, make_settings

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(autouse=True)
def _empty_outbox() -> Iterator[None]:
    memory.outbox.clear()
    yield
    memory.outbox.clear()


def at(local: str, zone: ZoneInfo = LONDON) -> datetime:
    """A local wall time in ``zone`` as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=zone).astimezone(UTC)


def sender_for(engine: Engine, settings: Settings, course: Course, **kwargs: Any) -> Sender:
    return make_sender(
        engine=engine, settings=settings, catalog=Catalog({course.slug: course}), **kwargs
    )


def walk(sender: Sender, start: datetime, end: datetime, step: timedelta = timedelta(hours=1)):
    now = start
    while now <= end:
        sender.send_due(now=now)
        now += step


def control(
    engine: Engine, course: Course, email: str, what: str, now: datetime, **kwargs: Any
) -> Changed:
    """One control through the operator's door (the one every door calls)."""
    with engine.begin() as connection:
        return actions.control(
            connection,
            subscriber=actions.find(connection, email=email),
            catalog=Catalog({course.slug: course}),
            control=Control(what),
            now=now,
            **kwargs,
        )


def lessons(engine: Engine, email: str, status: str = DeliveryStatus.SENT) -> list[Delivery]:
    """The subscriber's lessons in ``status``, in sending order."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(Delivery)
                .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
                .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
                .where(
                    Subscriber.email == email,
                    Delivery.kind == EmailKind.LESSON,
                    Delivery.status == status,
                )
                .order_by(col(Delivery.sent_at), col(Delivery.id))
            ).all()
        )


def local_days(rows: list[Delivery], zone: ZoneInfo = LONDON) -> list[date]:
    return [r.sent_at.astimezone(zone).date() for r in rows if r.sent_at]


def variant(course: Course, **day_changes: dict[str, Any]) -> Course:
    """The course with some days' keys changed, by day id."""
    data = course.model_dump(by_alias=True, mode="json", exclude_none=True)
    for day in data["days"]:
        day.update(day_changes.get(day["id"].replace("-", "_"), {}))
    return Course.model_validate(data)


# -- pause and resume ------------------------------------------------------------------------


def test_a_pause_skips_the_next_mornings_and_the_rest_follow_one_a_day(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Paused for 3 mornings after Tuesday's lesson: nothing Wednesday to Friday, day 3 on
    Saturday at 07:00 and the rest one a day after it, never two on one morning."""
    start = at("2026-11-23T07:00")  # a Monday
    enrol(engine, course, "pia@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-11-24T12:00"))
    assert len(lessons(engine, "pia@example.org")) == 2

    changed = control(engine, course, "pia@example.org", "pause", at("2026-11-24T12:00"), days=3)
    assert changed.changed and changed.refused is None
    assert changed.next_lesson is not None
    assert changed.next_lesson.day_id == course.days[2].id
    assert changed.next_lesson.due_at == at("2026-11-28T07:00")

    walk(sender, at("2026-11-24T13:00"), at("2026-12-03T12:00"))
    sent = lessons(engine, "pia@example.org")
    assert [r.key for r in sent] == [d.id for d in course.days]
    assert local_days(sent) == [date(2026, 11, d) for d in (23, 24, 28, 29, 30)] + [
        date(2026, 12, 1),
        date(2026, 12, 2),
    ]
    assert {r.sent_at.astimezone(LONDON).time() for r in sent[1:] if r.sent_at} == {time(7)}
    with engine.connect() as connection:
        assert funnel(connection, course)["controls"]["pauses"] == 1


def test_a_pause_asked_before_todays_lesson_starts_with_today(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """At 06:00, before the 07:00 lesson, a one-morning pause skips this very morning."""
    start = at("2026-11-23T07:00")
    enrol(engine, course, "early@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-11-24T06:00"))
    changed = control(engine, course, "early@example.org", "pause", at("2026-11-24T06:00"), days=1)
    assert changed.next_lesson is not None
    assert changed.next_lesson.due_at == at("2026-11-25T07:00")
    walk(sender, at("2026-11-24T06:00"), at("2026-11-25T12:00"))
    assert local_days(lessons(engine, "early@example.org")) == [
        date(2026, 11, 23),
        date(2026, 11, 25),
    ]


def test_a_pause_asked_on_a_morning_that_already_had_its_lesson_starts_tomorrow(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Day 1 went out at 06:00 on confirming; a one-morning pause at 06:30 skips Tuesday
    (not today, which has nothing left to skip), so it changes something."""
    start = at("2026-11-23T06:00")
    enrol(engine, course, "dawn@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-11-23T06:30"), step=timedelta(minutes=30))
    changed = control(engine, course, "dawn@example.org", "pause", at("2026-11-23T06:30"), days=1)
    assert changed.next_lesson is not None
    assert changed.next_lesson.due_at == at("2026-11-25T07:00")


def test_resume_ends_a_pause_at_the_next_morning(
    engine: Engine, settings: Settings, course: Course
) -> None:
    start = at("2026-11-23T07:00")
    enrol(engine, course, "rae@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-11-24T12:00"))
    control(engine, course, "rae@example.org", "pause", at("2026-11-24T12:00"), days=14)
    walk(sender, at("2026-11-24T13:00"), at("2026-11-26T12:00"))
    assert len(lessons(engine, "rae@example.org")) == 2, "nothing while paused"

    back = control(engine, course, "rae@example.org", "resume", at("2026-11-26T12:00"))
    assert back.changed and back.next_lesson is not None
    assert back.next_lesson.due_at == at("2026-11-27T07:00")
    again = control(engine, course, "rae@example.org", "resume", at("2026-11-26T13:00"))
    assert not again.changed and again.refused is None, "no pause left to end"
    walk(sender, at("2026-11-26T13:00"), at("2026-11-27T12:00"))
    assert local_days(lessons(engine, "rae@example.org"))[-1] == date(2026, 11, 27)


# -- her own hour ------------------------------------------------------------------------------


def test_her_own_hour_holds_across_a_dst_change_and_never_doubles_a_day(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Moved to 18:30 after Thursday's 07:00 lesson: the next is Friday 18:30 (not Thursday
    evening), and 18:30 London time it stays when the clocks go back on 25 October."""
    start = at("2026-10-22T07:00")  # a Thursday; BST ends on Sunday the 25th
    enrol(engine, course, "eve@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-10-22T09:00"))
    changed = control(
        engine, course, "eve@example.org", "time", at("2026-10-22T09:00"), send_at=time(18, 30)
    )
    assert changed.changed and changed.next_lesson is not None
    assert changed.next_lesson.due_at == at("2026-10-23T18:30")
    same = control(
        engine, course, "eve@example.org", "time", at("2026-10-22T09:30"), send_at=time(18, 30)
    )
    assert not same.changed

    walk(sender, at("2026-10-22T10:00"), at("2026-10-29T00:00"), step=timedelta(minutes=30))
    sent = lessons(engine, "eve@example.org")
    assert len(sent) == 7
    assert [r.sent_at.astimezone(LONDON).time() for r in sent if r.sent_at] == [time(7)] + [
        time(18, 30)
    ] * 6
    days = local_days(sent)
    assert all((b - a).days == 1 for a, b in zip(days, days[1:], strict=False))
    with engine.connect() as connection:
        assert funnel(connection, course)["controls"]["own_hour"] == 1


# -- starting again ----------------------------------------------------------------------------


def test_a_restart_after_the_course_sends_every_day_once_more_and_the_after_course_email_never(
    engine: Engine, settings: Settings, course: Course
) -> None:
    start = at("2026-11-23T07:00")
    enrol(engine, course, "twice@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-12-01T12:00"))
    assert len(memory.outbox) == 8, "7 lessons and the after-course email"

    changed = control(engine, course, "twice@example.org", "restart", at("2026-12-01T12:00"))
    assert changed.changed and changed.next_lesson is not None
    assert changed.next_lesson.day_id == course.days[0].id
    assert changed.next_lesson.due_at == at("2026-12-02T07:00")
    walk(sender, at("2026-12-01T13:00"), at("2026-12-12T12:00"))

    sent = lessons(engine, "twice@example.org")
    ids = [d.id for d in course.days]
    assert [r.key for r in sent] == ids + [f"{i}.2" for i in ids]
    assert len(memory.outbox) == 15, "the after-course email went once"
    assert len({m.message_id for m in memory.outbox}) == 15
    days = local_days(sent[7:])
    assert days[0] == date(2026, 12, 2)
    assert all((b - a).days == 1 for a, b in zip(days, days[1:], strict=False))
    with engine.connect() as connection:
        assert funnel(connection, course)["controls"] == {
            "paused": 0,
            "pauses": 0,
            "restarted": 1,
            "restarts": 1,
            "own_hour": 0,
        }


def test_a_restart_mid_course_cancels_the_old_run_and_begins_at_day_one(
    engine: Engine, settings: Settings, course: Course
) -> None:
    start = at("2026-11-23T07:00")
    enrol(engine, course, "mid@example.org", now=start)
    sender = sender_for(engine, settings, course)
    walk(sender, start, at("2026-11-25T12:00"))
    control(engine, course, "mid@example.org", "restart", at("2026-11-25T12:00"))
    cancelled = lessons(engine, "mid@example.org", DeliveryStatus.CANCELLED)
    assert [r.key for r in cancelled] == [course.days[3].id]
    walk(sender, at("2026-11-25T13:00"), at("2026-11-27T12:00"))
    sent = lessons(engine, "mid@example.org")
    assert [r.key for r in sent][3:] == [f"{course.days[0].id}.2", f"{course.days[1].id}.2"]
    assert local_days(sent)[3] == date(2026, 11, 26)


class ControlsWhileBuilding(Composer):
    """Uses a control while the lesson ``day_id`` is being built: after its claim, before
    its receipt."""

    def __init__(self, *, engine: Engine, course: Course, day_id: str, **control: Any) -> None:
        super().__init__(settings=control.pop("settings"))
        self.engine, self.course, self.day_id, self.control = engine, course, day_id, control

    def lesson(self, **kwargs: Any) -> Any:
        if kwargs["day"].id == self.day_id and self.control:
            what = self.control.pop("what")
            email = kwargs["recipient"].email
            control(self.engine, self.course, email, what, kwargs["now"], **self.control)
            self.control = {}
        return super().lesson(**kwargs)


def test_a_pause_while_a_lesson_is_in_flight_holds_the_lesson_after_it(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Day 2 was claimed before the pause: it goes, and day 3 waits for the pause's end
    (the receipt reads her standing as it is now, not as at the claim)."""
    start = at("2026-11-23T07:00")
    enrol(engine, course, "flight@example.org", now=start)
    composer = ControlsWhileBuilding(
        engine=engine,
        course=course,
        day_id=course.days[1].id,
        settings=settings,
        what="pause",
        days=3,
    )
    sender = sender_for(engine, settings, course, composer=composer)
    walk(sender, start, at("2026-11-29T12:00"))
    days = local_days(lessons(engine, "flight@example.org"))
    assert days[:4] == [date(2026, 11, d) for d in (23, 24, 28, 29)]


def test_a_restart_while_a_lesson_is_in_flight_begins_the_new_run_once(
    engine: Engine, settings: Settings, course: Course
) -> None:
    start = at("2026-11-23T07:00")
    enrol(engine, course, "anew@example.org", now=start)
    composer = ControlsWhileBuilding(
        engine=engine, course=course, day_id=course.days[2].id, settings=settings, what="restart"
    )
    sender = sender_for(engine, settings, course, composer=composer)
    walk(sender, start, at("2026-11-27T12:00"))
    ids = [d.id for d in course.days]
    sent = lessons(engine, "anew@example.org")
    assert [r.key for r in sent] == ids[:3] + [f"{ids[0]}.2", f"{ids[1]}.2"]
    days = local_days(sent)
    assert len(set(days)) == len(days)


# -- who may use them --------------------------------------------------------------------------


def _snapshot(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as connection:
        return (
            [tuple(r) for r in connection.execute(select(Enrollment)).all()],
            [tuple(r) for r in connection.execute(select(Delivery)).all()],
        )


@pytest.mark.parametrize("how", ["unsubscribed", "suppressed"])
def test_no_control_changes_anything_for_someone_who_left_or_was_suppressed(
    engine: Engine, course: Course, how: str
) -> None:
    now = at("2026-11-23T07:00")
    uid = enrol(engine, course, "gone@example.org", now=now)
    with engine.begin() as connection:
        if how == "unsubscribed":
            unsubscribe(
                connection, enrollment_uid=uid, catalog=Catalog({course.slug: course}), now=now
            )
        else:
            actions.suppress(
                connection,
                subscriber=actions.find(connection, email="gone@example.org"),
                reason="test",
                now=now,
            )
    before = _snapshot(engine)
    for what, kwargs in [
        ("pause", {"days": 3}),
        ("resume", {}),
        ("restart", {}),
        ("time", {"send_at": time(18)}),
    ]:
        changed = control(engine, course, "gone@example.org", what, now, **kwargs)
        assert not changed.changed and changed.refused, what
        assert ("no longer receives" in changed.refused) == (how == "suppressed")
    assert _snapshot(engine) == before


def test_after_the_last_lesson_only_a_restart_applies(
    engine: Engine, settings: Settings, course: Course
) -> None:
    start = at("2026-11-23T07:00")
    enrol(engine, course, "done@example.org", now=start)
    walk(sender_for(engine, settings, course), start, at("2026-11-30T12:00"))
    paused = control(engine, course, "done@example.org", "pause", at("2026-11-30T12:00"), days=2)
    assert not paused.changed and "start it again" in (paused.refused or "")
    assert control(engine, course, "done@example.org", "restart", at("2026-11-30T12:00")).changed


def test_inputs_are_read_in_one_place_with_the_field_named() -> None:
    assert read_inputs(Control.PAUSE, {"days": " 7 "}) == (7, None)
    assert read_inputs(Control.TIME, {"send_at": "18:30"}) == (None, time(18, 30))
    assert read_inputs(Control.RESTART, {"days": "x"}) == (None, None)
    assert read_days("30") == 30 and read_days("1") == 1
    for bad in ["0", "31", "-1", "7.5", "", "seven", "²", "٣", "３", "007"]:
        with pytest.raises(ValueError, match="^days: "):
            read_days(bad)
    assert read_hour("00:00") == time(0) and read_hour("23:59") == time(23, 59)
    for bad in ["24:00", "7:00", "18:60", "18h30", "", "18:30:00"]:
        with pytest.raises(ValueError, match="^send_at: "):
            read_hour(bad)


def test_a_pause_out_of_range_is_refused_before_anything_is_written(
    engine: Engine, course: Course
) -> None:
    enrol(engine, course, "range@example.org", now=at("2026-11-23T07:00"))
    before = _snapshot(engine)
    for days in (0, 31):
        with pytest.raises(ValueError, match="1 to 30"):
            control(engine, course, "range@example.org", "pause", at("2026-11-23T08:00"), days=days)
    assert _snapshot(engine) == before


# -- lessons that adapt ----------------------------------------------------------------------


def test_send_if_not_clicked_skips_for_a_clicker_and_the_next_day_takes_the_slot(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """Day 3 only for those who did not open day 2's class: the one who did gets day 4 on
    day 3's morning (no empty morning), the other gets day 3; the funnel counts one skip."""
    second, third = course.days[1].id, course.days[2].id
    adapted = variant(course, spine={"send_if": {"not_clicked": second}})
    start = at("2026-11-23T07:00")
    clicker = enrol(engine, adapted, "clicker@example.org", now=start)
    enrol(engine, adapted, "quiet@example.org", now=start)
    sender = sender_for(engine, settings, adapted)
    walk(sender, start, at("2026-11-24T12:00"))
    with engine.begin() as connection:
        assert record_click(
            connection, enrollment_uid=clicker, day_id=second, link="class", now=start
        )
    walk(sender, at("2026-11-24T13:00"), at("2026-11-25T12:00"))

    clicked = lessons(engine, "clicker@example.org")
    assert [r.key for r in clicked] == [course.days[0].id, second, course.days[3].id]
    assert local_days(clicked)[2] == date(2026, 11, 25)
    skipped = lessons(engine, "clicker@example.org", DeliveryStatus.SKIPPED)
    assert [r.key for r in skipped] == [third]
    assert (skipped[0].last_error or "").startswith(CONDITION_NOT_MET)
    assert [r.key for r in lessons(engine, "quiet@example.org")][2] == third
    with engine.connect() as connection:
        days = {d["id"]: d for d in funnel(connection, adapted)["days"]}
    assert days[third]["skipped"] == 1 and days[third]["sent"] == 1


def test_send_if_clicked_reaches_only_those_who_clicked_up_to_the_moment_before_smtp(
    engine: Engine, settings: Settings, course: Course
) -> None:
    """The click lands while day 3 is being built (after it was claimed): it still counts,
    because the condition is decided in the check right before SMTP."""
    second, third = course.days[1].id, course.days[2].id
    adapted = variant(course, spine={"send_if": {"clicked": second}})
    start = at("2026-11-23T07:00")
    late = enrol(engine, adapted, "late@example.org", now=start)
    enrol(engine, adapted, "never@example.org", now=start)

    class ClicksWhileBuilding(Composer):
        def lesson(self, **kwargs: Any) -> Any:
            if kwargs.get("day") is not None and kwargs["day"].id == third:
                with engine.begin() as connection:
                    record_click(
                        connection, enrollment_uid=late, day_id=second, link="class", now=start
                    )
            return super().lesson(**kwargs)

    sender = sender_for(engine, settings, adapted, composer=ClicksWhileBuilding(settings=settings))
    walk(sender, start, at("2026-11-25T12:00"))
    assert third in [r.key for r in lessons(engine, "late@example.org")]
    assert third not in [r.key for r in lessons(engine, "never@example.org")]
    assert [r.key for r in lessons(engine, "never@example.org", DeliveryStatus.SKIPPED)] == [third]


def test_send_if_must_name_an_earlier_day(course: Course) -> None:
    later, first = course.days[3].id, course.days[0].id
    for condition, words in [
        ({"not_clicked": later}, "is a later day"),
        ({"clicked": "no-such-day"}, "is no day of this course"),
        ({"clicked": course.days[2].id}, "is a later day"),  # its own id
    ]:
        with pytest.raises((InvalidCourse, ValueError), match=words):
            variant(course, spine={"send_if": condition})
    with pytest.raises((InvalidCourse, ValueError)):
        variant(course, spine={"send_if": {"clicked": first, "not_clicked": first}})
    with pytest.raises((InvalidCourse, ValueError)):
        variant(course, spine={"send_if": {}})


# -- exactly once, whatever she does --------------------------------------------------------


def test_fourteen_days_of_controls_across_dst_with_overlapping_runs_send_each_day_once(
    tmp_path: Path, course: Course, database_url: str
) -> None:
    """Six subscribers, 14 days across the end of BST, two `send-due` runs at every step
    (each with its own engine, at the same moment), controls used in between: no day twice
    in one run of the course, never two lessons on one local morning, nothing to someone
    after she left, nothing inside a pause, and each message went out once."""
    settings = make_settings(tmp_path, database_url=database_url)
    engines = [make_engine(database_url), make_engine(database_url)]
    upgrade(engines[0])
    main = engines[0]
    start = at("2026-10-19T07:00")  # a Monday; the clocks go back on Sunday the 25th
    people = ["pause", "hour", "restart", "again", "leave", "plain"]
    uids = {p: enrol(main, course, f"{p}@example.org", now=start) for p in people}
    senders = [sender_for(e, settings, course) for e in engines]
    plan: dict[datetime, list[tuple[str, str, dict[str, Any]]]] = {
        at("2026-10-20T12:00"): [("pause", "pause", {"days": 3})],
        at("2026-10-21T05:00"): [("hour", "time", {"send_at": time(19)})],
        at("2026-10-22T12:00"): [("restart", "restart", {}), ("pause", "resume", {})],
        at("2026-10-23T12:00"): [("hour", "pause", {"days": 1})],
        at("2026-10-23T20:00"): [("leave", "leave", {})],
        at("2026-10-24T22:00"): [("hour", "time", {"send_at": time(6, 30)})],
        at("2026-10-26T09:00"): [("again", "restart", {}), ("restart", "pause", {"days": 2})],
        at("2026-10-27T12:00"): [("leave", "restart", {})],
        at("2026-10-29T12:00"): [("again", "time", {"send_at": time(21)})],
        at("2026-10-31T12:00"): [("restart", "restart", {})],
    }
    paused: dict[str, tuple[datetime, datetime]] = {}
    left_at: datetime | None = None
    now = start
    while now <= start + timedelta(days=14):
        for who, what, kwargs in plan.get(now, []):
            if what == "leave":
                left_at = now
                with main.begin() as connection:
                    unsubscribe(
                        connection,
                        enrollment_uid=uids[who],
                        catalog=Catalog({course.slug: course}),
                        now=now,
                    )
                continue
            changed = control(main, course, f"{who}@example.org", what, now, **kwargs)
            assert changed.changed == (who != "leave"), (who, what, changed)
            if what == "pause":
                assert changed.next_lesson is not None
                paused[who] = (now, changed.next_lesson.due_at)
            elif what in ("resume", "restart") and who in paused:  # the pause ends now
                paused[who] = (paused[who][0], min(paused[who][1], now))
        runs = [threading.Thread(target=s.send_due, kwargs={"now": now}) for s in senders]
        for run in runs:
            run.start()
        for run in runs:
            run.join()
        now += timedelta(minutes=30)

    with Session(main) as session:
        rows = session.exec(
            select(Delivery, Subscriber.email)
            .join(Enrollment, col(Enrollment.id) == col(Delivery.enrollment_id))
            .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
            .where(Delivery.status == DeliveryStatus.SENT)
        ).all()
    sent = [(d, email) for d, email in rows]
    assert len(memory.outbox) == len(sent), "every message sent has its receipt, once"
    assert len({m.message_id for m in memory.outbox}) == len(memory.outbox)
    per_key = Counter((email, d.key) for d, email in sent)
    assert max(per_key.values()) == 1, "no day twice in one run"
    mornings = Counter(
        (email, d.sent_at.astimezone(LONDON).date())
        for d, email in sent
        if d.kind == EmailKind.LESSON and d.sent_at
    )
    assert max(mornings.values()) == 1, "never two lessons on one morning"
    assert left_at is not None
    assert not [d for d, email in sent if email == "leave@example.org" and d.sent_at > left_at]
    for who, (since, until) in paused.items():
        inside = [
            d
            for d, email in sent
            if email == f"{who}@example.org" and d.sent_at and since < d.sent_at < until
        ]
        assert not inside, (who, inside)
    keys = {email: [d.key for d, e in sent if e == email] for _, email in sent}
    assert any(k.endswith(".3") for k in keys["restart@example.org"]), "a third run began"
    assert any(k.endswith(".2") for k in keys["again@example.org"])
    assert "after_course:once" in keys["plain@example.org"]
    hours = {
        d.sent_at.astimezone(LONDON).time()
        for d, email in sent
        if email == "hour@example.org" and d.kind == EmailKind.LESSON and d.sent_at
    }
    assert {time(19), time(6, 30)} <= hours
    for engine in engines:
        engine.dispose()
