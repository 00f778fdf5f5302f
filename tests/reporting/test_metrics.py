"""/metrics' figures on each database: counters as the rows count them, which erasing a
subscriber never lowers (Prometheus would read a lower counter as a reset)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event
from sqlmodel import Session

from drip.core.config import BouncePolicy
from drip.core.courses import Catalog, Course
from drip.core.states import MailEventKind
from drip.feedback import bounces
from drip.reporting.metrics import exposition
from drip.reporting.subscribers import get_by_email
from drip.runner import make_sender
from drip.store import tallies
from drip.store.engine import make_engine
from drip.store.schema import upgrade
from drip.testing import SmtpSink
from tests.fixtures import enrol, erase, lock_waited, make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def _samples(engine: Engine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(engine).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _counters(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict:  # type: ignore[type-arg]
    return {key: value for key, value in samples.items() if key[0].endswith("_total")}


def _gauges(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict:  # type: ignore[type-arg]
    return {key: value for key, value in samples.items() if key[0] == "drip_subscribers"}


def test_counters_count_sends_failures_by_reason_and_bounces_and_survive_erasure(
    any_engine: Engine, course: Course, tmp_path: Path
) -> None:
    """A lesson sent to two, refused for one (a hard bounce), given up for another after
    its attempts ran out; a complaint. Then three of them are erased: every counter stays
    where it was, the subscriber gauge drops."""
    for name in ("ana", "ben", "cat", "dan"):
        enrol(any_engine, course, f"{name}@example.org", now=NOW)
    with SmtpSink() as sink:
        sink.rcpt_replies["ben@example.org"] = "550 5.1.1 no such user"
        sink.rcpt_replies["cat@example.org"] = "451 4.3.0 try again later"
        settings = make_settings(tmp_path, smtp_url=sink.url, max_attempts=1)
        make_sender(
            engine=any_engine, settings=settings, catalog=Catalog({course.slug: course})
        ).send_due(now=NOW)
    with any_engine.begin() as connection, Session(bind=connection) as session:
        dan = get_by_email(session=session, email="dan@example.org")
        assert dan.id is not None
        bounces.record(
            connection,
            subscriber_id=dan.id,
            kind=MailEventKind.COMPLAINT,
            source="postmark",
            diagnostic="",
            now=NOW,
            policy=BouncePolicy(3, 30),
        )
    before = _samples(any_engine)
    assert {key: value for key, value in _counters(before).items() if value} == {
        ("drip_signups_total", ()): 4,
        ("drip_confirmations_total", ()): 4,
        ("drip_emails_sent_total", (("kind", "lesson"),)): 2,
        ("drip_emails_failed_total", (("kind", "lesson"), ("reason", "refused"))): 1,
        ("drip_emails_failed_total", (("kind", "lesson"), ("reason", "gave_up"))): 1,
        ("drip_bounces_total", (("kind", "hard"),)): 1,
        ("drip_bounces_total", (("kind", "complaint"),)): 1,
    }

    for name in ("ana", "ben", "dan"):  # ana and dan: the same counter, added to twice
        erase(any_engine, f"{name}@example.org")
    after = _samples(any_engine)
    assert _counters(after) == _counters(before)
    statuses = ("active", "suppressed")  # a hard bounce or a complaint suppresses
    assert [before.get(("drip_subscribers", (("status", s),)), 0) for s in statuses] == [2, 2]
    assert [after.get(("drip_subscribers", (("status", s),)), 0) for s in statuses] == [1, 0]


def test_an_erasure_racing_another_of_the_same_subscriber_counts_them_once(
    pg_url: str, course: Course
) -> None:
    """PostgreSQL, two erasures of one subscriber at once (a double click, or the CLI and
    the dashboard): the second waits for the first, then finds nobody to erase, so their
    share of the gauges and funnels is taken away once, and the counters stay."""
    engine, other = make_engine(pg_url), make_engine(pg_url)
    upgrade(engine)
    for name in ("ana", "ben"):
        enrol(engine, course, f"{name}@example.org", now=NOW)
    before = _counters(_samples(engine))
    errors: list[BaseException] = []

    def erase_ana(using: Engine) -> None:
        try:
            erase(using, "ana@example.org")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    second = threading.Thread(target=erase_ana, args=(other,))

    def start_second_once_counted(conn, cursor, statement, *_: object) -> None:  # noqa: ANN001
        if statement.startswith("DELETE FROM click") and not second.is_alive():
            second.start()
            assert lock_waited(engine), "the second erasure never waited for the first"

    event.listen(engine, "after_cursor_execute", start_second_once_counted)
    erase_ana(engine)
    event.remove(engine, "after_cursor_execute", start_second_once_counted)
    second.join(timeout=30)
    assert not errors and not second.is_alive()
    assert _counters(_samples(engine)) == before
    with engine.begin() as connection:
        tallies.fold(connection)
        kept, counted = tallies.totals(connection), tallies.recount(connection)
    assert kept["subscribers", "active"] == counted["subscribers", "active"] == 1
    assert {k: n for k, n in kept.items() if not k[0].startswith("drip_")} == {
        k: n for k, n in counted.items() if not k[0].startswith("drip_")
    }
    engine.dispose()
    other.dispose()


def test_a_scrape_during_an_erasure_reads_one_snapshot(pg_url: str, course: Course) -> None:
    """PostgreSQL: an erasure committed while a scrape is between its statements is not
    half seen: the scrape reads one snapshot, so no figure jumps now or drops at the next
    scrape."""
    engine, other = make_engine(pg_url), make_engine(pg_url)
    upgrade(engine)
    for name in ("ana", "ben"):
        enrol(engine, course, f"{name}@example.org", now=NOW)
    before = _counters(_samples(engine))

    def erase_once_rows_are_counted(conn, cursor, statement, *_: object) -> None:  # noqa: ANN001
        if "FROM tally" in statement and not erased:
            erased.append(True)
            erase(other, "ana@example.org")

    erased: list[bool] = []
    event.listen(engine, "after_cursor_execute", erase_once_rows_are_counted)
    during = _counters(_samples(engine))
    event.remove(engine, "after_cursor_execute", erase_once_rows_are_counted)
    assert erased and during == before == _counters(_samples(engine))
    assert _gauges(during) != _gauges(_samples(engine))  # ana is gone at the next scrape
    engine.dispose()
    other.dispose()
