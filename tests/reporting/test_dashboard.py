"""drip.reporting.dashboard on each database: search, signups per day, recent failures, and which
course's goodbye an unsubscribe queues."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, update
from sqlmodel import Session, col, select

from drip.core.courses import Catalog, Course
from drip.core.models import Delivery, Enrollment, Subscriber
from drip.core.states import DeliveryStatus, EmailKind, SubscriberStatus
from drip.lifecycle import actions
from drip.reporting import dashboard
from drip.store import tallies
from tests.fixtures import enrol, enrol_many

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_search_matches_part_of_an_address_in_any_case(any_engine: Engine, course: Course) -> None:
    """A query matches anywhere in the address, typed in any case; `%` and `_` match only
    themselves; the newest come first, at most ``limit``."""
    people = ["ana@example.org", "joanna@elsewhere.net", "bob@example.org"]
    enrol_many(any_engine, course, people, now=NOW, confirmed=False)
    enrol_many(any_engine, course, ["under_score@example.org"], now=NOW, confirmed=False)
    with any_engine.connect() as connection:

        def emails(query: str, limit: int = 50) -> list[str]:
            found = dashboard.search(connection, query=query, limit=limit)
            return [s.email for s in found]

        assert emails("AN") == ["joanna@elsewhere.net", "ana@example.org"]
        assert emails("%") == []
        assert emails("a_a") == []  # not "any one character": joanna's "ana" stays out
        assert emails("_") == ["under_score@example.org"]
        # (a batch is written in address order: joanna last)
        assert emails("", limit=2) == ["under_score@example.org", "joanna@elsewhere.net"]


def test_signups_per_day_counts_enrollments_by_utc_day(any_engine: Engine, course: Course) -> None:
    """Each UTC day of the window gets its count, zeros included, whatever the time zone
    of the database session that wrote them."""
    if any_engine.dialect.name == "postgresql":
        any_engine.dispose()

        @event.listens_for(any_engine, "connect")
        def far_east(dbapi_connection: Any, _: object) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET TIME ZONE 'Pacific/Auckland'")

    for email, at in (
        ("late@example.org", datetime(2026, 11, 20, 23, 30, tzinfo=UTC)),
        ("early@example.org", datetime(2026, 11, 21, 0, 30, tzinfo=UTC)),
        ("old@example.org", datetime(2026, 11, 1, tzinfo=UTC)),
    ):
        enrol_many(any_engine, course, [email], now=at, confirmed=False)
    with any_engine.connect() as connection:
        counts = dashboard.signups_per_day(tallies.totals(connection), now=NOW, days=3)
    assert counts == [(date(2026, 11, 19), 0), (date(2026, 11, 20), 1), (date(2026, 11, 21), 1)]


def test_recent_failures_are_the_failed_deliveries_newest_first(
    any_engine: Engine, course: Course
) -> None:
    """Only failed emails are listed, the most recent failure first, with their error."""
    for name in ("ana", "ben", "cat"):
        enrol(any_engine, course, f"{name}@example.org", now=NOW)
    with any_engine.begin() as connection:
        for minutes, name in ((1, "ana"), (2, "ben")):
            enrollment_id = (
                select(col(Enrollment.id))
                .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
                .where(col(Subscriber.email) == f"{name}@example.org")
            )
            connection.execute(
                update(Delivery)
                .where(col(Delivery.enrollment_id) == enrollment_id.scalar_subquery())
                .values(
                    status=DeliveryStatus.FAILED,
                    failed_at=NOW + timedelta(minutes=minutes),
                    last_error=f"550 refused {name}",
                )
            )
        failures = dashboard.recent_failures(connection)
    assert [(f.email, f.error) for f in failures] == [
        ("ben@example.org", "550 refused ben"),
        ("ana@example.org", "550 refused ana"),
    ]


def test_unsubscribe_queues_the_goodbye_of_the_latest_course(
    any_engine: Engine, course: Course
) -> None:
    """On two courses, a subscriber is stopped on both and gets the goodbye of the course
    they joined last; a second unsubscribe changes nothing."""
    data = course.model_dump(by_alias=True, mode="json")
    first = Course.model_validate({**data, "goodbye_email": True})
    second = Course.model_validate({**data, "slug": "zz-second", "goodbye_email": True})
    catalog = Catalog({first.slug: first, second.slug: second})
    enrol(any_engine, first, "ana@example.org", now=NOW)
    enrol(any_engine, second, "ana@example.org", now=NOW)
    with Session(any_engine) as session:
        uid = session.exec(select(Subscriber.uid)).one()
    with any_engine.begin() as connection:
        ana = actions.find(connection, uid=uid)
        assert actions.unsubscribe(connection, subscriber=ana, catalog=catalog, now=NOW)
        assert not actions.unsubscribe(connection, subscriber=ana, catalog=catalog, now=NOW)
    with Session(any_engine) as session:
        goodbyes = session.exec(
            select(Enrollment.course_slug)
            .join(Delivery, col(Delivery.enrollment_id) == Enrollment.id)
            .where(Delivery.kind == EmailKind.GOODBYE)
        ).all()
        status = session.exec(select(Subscriber.status)).one()
    assert (goodbyes, status) == (["zz-second"], SubscriberStatus.UNSUBSCRIBED)
