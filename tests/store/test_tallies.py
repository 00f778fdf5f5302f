"""The counts the triggers keep (``drip.store.tallies``) where rows change together:
two transactions at once on PostgreSQL, and someone who leaves, comes back and is then
suppressed. (Every test's database is also checked against a recount at teardown.)"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlmodel import col

from drip.core.config import BouncePolicy
from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.models import Delivery, Enrollment, Signup, Subscriber
from drip.core.states import MailEventKind, SubscriberStatus
from drip.feedback import bounces
from drip.lifecycle.enrollment import confirm, unsubscribe
from drip.lifecycle.signup import Consent, sign_up
from drip.reporting.stats import funnel
from drip.runner import make_sender
from drip.store import installation, tallies
from drip.store.engine import engine_for, make_engine
from drip.store.schema import upgrade
from tests.fixtures import assert_tallies_hold, enrol, erase, lock_waited, make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
POLICY = BouncePolicy(3, 14)


def _send(engine: Engine, course: Course, tmp_path: Path, now: datetime) -> None:
    settings = make_settings(tmp_path, database_url=str(engine.url))
    make_sender(engine=engine, settings=settings, catalog=Catalog({course.slug: course})).send_due(
        now=now
    )


def test_two_bounces_for_one_lesson_at_once_count_it_once(
    pg_url: str, course: Course, tmp_path: Path
) -> None:
    """PostgreSQL: a refusal and a provider's report for the same lesson, in two
    transactions at once: the second waits for the first, so the lesson is bounced once."""
    engine = make_engine(pg_url)
    upgrade(engine)
    enrol(engine, course, "ana@example.org", now=NOW)
    _send(engine, course, tmp_path, NOW)
    with engine.connect() as connection:
        subscriber_id, delivery_id = connection.execute(
            select(col(Subscriber.id), col(Delivery.id))
            .join(Enrollment, col(Enrollment.subscriber_id) == col(Subscriber.id))
            .join(Delivery, col(Delivery.enrollment_id) == col(Enrollment.id))
            .where(col(Delivery.kind) == "lesson", col(Delivery.status) == "sent")
        ).one()

    def bounce(connection: object, source: str) -> None:
        bounces.record(
            connection,  # type: ignore[arg-type]
            subscriber_id=subscriber_id,
            delivery_id=delivery_id,
            kind=MailEventKind.HARD,
            source=source,
            diagnostic="550 5.1.1 no such user",
            now=NOW + timedelta(hours=1),
            policy=POLICY,
        )

    def second() -> None:
        with engine.begin() as connection:
            bounce(connection, "postmark")

    with engine.connect() as first:
        first.begin()
        bounce(first, "smtp")
        _commit_once_waited_on(engine, first, second)
    with engine.begin() as connection:
        tallies.fold(connection)
        kept = tallies.totals(connection)
    assert kept["lessons", f"{course.slug},{course.days[0].id},bounced"] == 1
    assert kept["drip_bounces", "hard"] == 2  # both came back: the metric counts each
    assert_tallies_hold(engine)
    engine.dispose()


def test_an_enrollment_made_while_its_subscriber_leaves_counts_by_the_status_they_end_with(
    pg_url: str, course: Course
) -> None:
    """PostgreSQL: a second course's enrollment is inserted while another transaction
    changes the subscriber's status: the people counts end as the rows are."""
    engine = make_engine(pg_url)
    upgrade(engine)
    enrol(engine, course, "ana@example.org", now=NOW)
    with engine.connect() as connection:
        subscriber_id = connection.execute(select(col(Subscriber.id))).scalar_one()

    def enrol_elsewhere() -> None:
        with engine.begin() as connection:
            connection.execute(
                insert(Enrollment).values(
                    uid="second0course0enrollment",
                    subscriber_id=subscriber_id,
                    course_slug="another-course",
                    status="pending",
                    created_at=NOW,
                )
            )

    with engine.connect() as first:
        first.begin()
        first.execute(
            update(Subscriber)
            .where(col(Subscriber.id) == subscriber_id)
            .values(status=SubscriberStatus.UNSUBSCRIBED)
        )
        _commit_once_waited_on(engine, first, enrol_elsewhere)
    with engine.connect() as connection:
        kept = tallies.totals(connection)
    assert kept["people", "another-course,unsubscribed"] == 1
    assert kept["people", "another-course,active"] == 0
    assert_tallies_hold(engine)
    engine.dispose()


def _commit_once_waited_on(engine: Engine, first: Connection, second: Callable[[], None]) -> None:
    """Run ``second`` in a thread of its own until it waits for ``first``'s locks, then
    commit ``first`` and see ``second`` finish."""
    other = threading.Thread(target=second)
    other.start()
    lock_waited(engine, unless=other)
    first.commit()
    other.join(timeout=30)
    assert not other.is_alive()


def test_someone_who_came_back_and_then_bounced_did_not_leave(
    any_engine: Engine, course: Course, tmp_path: Path
) -> None:
    """Left after day 1, came back (day 2 went out), then refused for good: suppressed,
    not counted as someone who left after day 1."""
    uid = enrol(any_engine, course, "ana@example.org", now=NOW)
    _send(any_engine, course, tmp_path, NOW)
    catalog = Catalog({course.slug: course})
    with any_engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=uid, catalog=catalog, now=NOW + timedelta(hours=1))
    with any_engine.connect() as connection:
        assert funnel(connection, course)["days"][0]["unsubscribed"] == 1
    back = NOW + timedelta(hours=2)
    with any_engine.begin() as connection:  # signs up again, and confirms
        entries = [Entry.clean(email="ana@example.org")]
        sign_up(connection, course=course, entries=entries, consent=Consent(source="t"), now=back)
        signup = connection.execute(
            select(col(Signup.uid)).order_by(col(Signup.id).desc()).limit(1)
        ).scalar_one()
        confirm(connection, signup_uid=signup, issued_at=back, catalog=catalog, now=back)
    _send(any_engine, course, tmp_path, NOW + timedelta(days=1))
    with any_engine.begin() as connection:
        subscriber_id = connection.execute(select(col(Subscriber.id))).scalar_one()
        bounces.record(
            connection,
            subscriber_id=subscriber_id,
            delivery_id=None,
            kind=MailEventKind.HARD,
            source="inbound",
            diagnostic="550 gone",
            now=NOW + timedelta(days=1, hours=1),
            policy=POLICY,
        )
    with any_engine.connect() as connection:
        days = funnel(connection, course)["days"]
        assert connection.execute(select(col(Enrollment.left_after))).scalar_one() is None
    assert [day["sent"] for day in days[:2]] == [1, 1]
    assert [day["unsubscribed"] for day in days[:2]] == [0, 0]


def test_other_rules_are_installed_and_counted_again_keeping_what_erased_rows_counted(
    tmp_path: Path, course: Course
) -> None:
    """A drip whose counting rules differ from the database's triggers (an upgrade):
    opening the database installs its own and counts again, from the rows, but for the
    metrics' events, which keep what erased subscribers had counted."""
    settings = make_settings(tmp_path)
    engine = engine_for(settings)
    for name in ("ana", "ben"):
        enrol(engine, course, f"{name}@example.org", now=NOW)
    erase(engine, "ben@example.org")
    with engine.begin() as connection:
        before = tallies.totals(connection)
        installation.write(connection, tallies.INSTALLED, "rules of another drip")
        connection.execute(text("DELETE FROM tally WHERE name = 'subscribers'"))
        connection.execute(text("DROP TRIGGER tally_subscriber_insert"))
    engine.dispose()
    engine = engine_for(settings)  # opening it brings it up to date
    with engine.connect() as connection:
        assert tallies.is_current(connection)
        assert tallies.totals(connection) == before
        assert before["drip_signups", ""] == 2 > tallies.recount(connection)["drip_signups", ""]
    enrol(engine, course, "cat@example.org", now=NOW)  # its trigger is back
    with engine.connect() as connection:
        assert tallies.totals(connection)["subscribers", "active"] == 2
    engine.dispose()


def test_rows_counted_at_the_end_of_a_bulk_insert_count_as_the_triggers_would(
    engine: Engine, course: Course
) -> None:
    """SQLite: while a bulk insert sets its tables' insert triggers aside, rows inserted
    beside it count as before; at its end the new rows are counted, and every trigger
    is back, even when the block failed (and the failure is not swallowed)."""
    enrol(engine, course, "old@example.org", now=NOW)
    installed = {t[0] for t in tallies._triggers("sqlite")}
    with engine.begin() as connection:
        with tallies.counted_at_the_end(connection, ("subscriber",)):
            assert "tally_subscriber_insert" not in _trigger_names(connection)
            connection.execute(
                insert(Subscriber),
                [
                    {"uid": f"bulk{n}", "email": f"bulk{n}@example.org", "name": "", "status": s}
                    for n, s in enumerate(["active", "pending", "active", "unsubscribed"])
                ],
            )
        assert _trigger_names(connection) == installed
        assert tallies.totals(connection) == tallies.recount(connection)
        assert tallies.totals(connection)["subscribers", "active"] == 3
        assert tallies.totals(connection)["subscribers", "pending"] == 1
        before = _trigger_sql(connection)
        with pytest.raises(RuntimeError, match="^half-way$"):
            with tallies.counted_at_the_end(connection, ("subscriber", "enrollment")):
                raise RuntimeError("half-way")
        assert _trigger_sql(connection) == before
        # rules another drip installed (newer ones, say) are neither set aside nor replaced
        installation.write(connection, tallies.INSTALLED, "another drip's rules")
        with tallies.counted_at_the_end(connection, ("subscriber",)):
            assert _trigger_sql(connection) == before


def _trigger_sql(connection: object) -> dict[str, str]:
    query = text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    return dict(connection.execute(query).all())  # type: ignore[attr-defined]


def _trigger_names(connection: object) -> set[str]:
    query = text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return set(connection.execute(query).scalars())  # type: ignore[attr-defined]
