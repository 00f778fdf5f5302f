"""Schema migrations and the constraints the delivery guarantees rest on."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from drip.core.courses import Course
from drip.core.exceptions import SchemaOutOfDate
from drip.core.models import Delivery, Enrollment, Subscriber
from drip.store.engine import make_engine
from drip.store.schema import current_revision, ensure_schema, head_revision, upgrade
from drip.store.statements import Prepared
from tests.fixtures import enrol_many

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def test_migrations_build_the_schema_from_empty(any_engine: Engine) -> None:
    """Upgrading an empty database creates every table and ends at the head revision."""
    assert current_revision(any_engine) == head_revision()
    tables = set(inspect(any_engine).get_table_names())
    assert {"subscriber", "enrollment", "delivery", "alembic_version"} <= tables
    indexes = {ix["name"] for ix in inspect(any_engine).get_indexes("delivery")}
    assert {
        "ix_delivery_scheduled",
        "ix_delivery_sending",
        "ix_delivery_signup_id",
        "ix_delivery_failed",
    } <= indexes


def test_head_revision_read_from_the_files_is_alembics() -> None:
    """The head drip reads from the migration files (without Alembic) is Alembic's own."""
    from alembic.script import ScriptDirectory

    from drip.store.schema import MIGRATIONS_DIR

    assert head_revision() == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_upgrade_twice_is_harmless(any_engine: Engine) -> None:
    """Running the migrations again changes nothing."""
    assert upgrade(any_engine) == (head_revision(), head_revision())


def _enrollment(session: Session, email: str) -> int:
    """A stored subscriber enrolled in course "c"; returns the enrollment id."""
    subscriber = Subscriber(email=email)
    session.add(subscriber)
    session.flush()
    assert subscriber.id is not None
    enrollment = Enrollment(subscriber_id=subscriber.id, course_slug="c")
    session.add(enrollment)
    session.flush()
    assert enrollment.id is not None
    return enrollment.id


def test_delivery_is_unique_per_enrollment_and_day(any_engine: Engine) -> None:
    """The database itself refuses a second delivery row for the same (enrollment, day)."""
    with Session(any_engine) as session:
        enrollment_id = _enrollment(session, "a@example.org")
        session.add(Delivery(enrollment_id=enrollment_id, key="d1", due_at=NOW))
        session.commit()
        session.add(Delivery(enrollment_id=enrollment_id, key="d1", due_at=NOW))
        with pytest.raises(IntegrityError):
            session.commit()


def test_prepared_statements_match_a_normal_execution(any_engine: Engine) -> None:
    """A Prepared statement binds values (aware datetimes included) exactly as SQLAlchemy
    does: it finds the rows a normal execution finds, and updates the same ones."""
    later = NOW + timedelta(minutes=5)
    with Session(any_engine) as session:
        enrollment_id = _enrollment(session, "p@example.org")
        for day, due in (("d1", NOW), ("d2", later)):
            session.add(Delivery(enrollment_id=enrollment_id, key=day, due_at=due))
        session.commit()
    find = select(Delivery.key).where(Delivery.due_at == bindparam("due"))
    touch = (
        update(Delivery)
        .where(Delivery.due_at == bindparam("due"), Delivery.status == "scheduled")
        .values(last_error=bindparam("note"))
    )
    prepared_find = Prepared(find, any_engine.dialect)
    prepared_touch = Prepared(touch, any_engine.dialect)
    with any_engine.begin() as connection:
        for due in (NOW, later, later.astimezone(timezone(timedelta(hours=-8)))):
            expected = connection.execute(find, {"due": due}).all()
            assert [tuple(row) for row in expected] == [
                tuple(row) for row in prepared_find.execute(connection, {"due": due}).fetchall()
            ]
        assert prepared_touch.execute(connection, {"due": later, "note": "x"}).rowcount == 1
    with Session(any_engine) as session:
        notes = {d.key: d.last_error for d in session.execute(select(Delivery)).scalars()}
    assert notes == {"d1": None, "d2": "x"}


def test_datetimes_come_back_aware_utc(any_engine: Engine) -> None:
    """Timestamps round-trip as aware UTC datetimes on every database."""
    with Session(any_engine) as session:
        session.add(Subscriber(email="tz@example.org", created_at=NOW))
        session.commit()
    with Session(any_engine) as session:
        row = session.get(Subscriber, 1)
        assert row is not None
        assert row.created_at == NOW
        assert row.created_at.tzinfo is not None


def test_sqlite_is_tuned_for_concurrency(tmp_path: Path) -> None:
    """SQLite files run in WAL mode with a busy timeout and foreign keys enforced."""
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_schema_is_upgraded_on_demand(tmp_path: Path) -> None:
    """Commands on an empty SQLite file migrate it themselves."""
    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    ensure_schema(engine)
    assert current_revision(engine) == head_revision()


def test_postgres_schema_is_never_migrated_implicitly(pg_url: str) -> None:
    """On a shared server, a command asks for `drip db upgrade` instead of migrating."""
    engine = make_engine(pg_url)
    with pytest.raises(SchemaOutOfDate, match="drip db upgrade"):
        ensure_schema(engine)
    with engine.connect() as connection:
        assert not connection.execute(text("SELECT to_regclass('subscriber')")).scalar()
    engine.dispose()


def test_the_migrations_build_what_the_models_declare(any_engine: Engine) -> None:
    """Alembic finds nothing to change between the migrated schema and the models: no
    table, column, index or constraint that one has and the other lacks."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with any_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_the_partial_indexes_have_the_models_conditions(any_engine: Engine) -> None:
    """Every partial index in the migrated database is one the models declare, with the
    condition the models give it (alembic compares neither database's conditions)."""
    from sqlmodel import SQLModel

    declared = {
        index.name: str(index.info["where"])
        for table in SQLModel.metadata.tables.values()
        for index in table.indexes
        if "where" in index.info
    }
    assert len(declared) >= 7
    with any_engine.connect() as connection:
        if any_engine.dialect.name == "sqlite":
            found = {
                name: sql.split(" WHERE ", 1)[1]
                for name, sql in connection.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                )
                if sql and " WHERE " in sql
            }
            assert found == declared
            return
        query = text(
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid), t.relname FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE i.indpred IS NOT NULL"
        )
        found = {name: (where, table) for name, where, table in connection.execute(query)}
        connection.rollback()
        assert found.keys() == declared.keys()
        for name, (where, table) in found.items():
            # PostgreSQL's own spelling of the declared condition: a scratch index, undone
            with connection.begin() as scratch:
                connection.execute(
                    text(f"CREATE INDEX scratch ON {table} (id) WHERE {declared[name]}")
                )
                expected = connection.execute(
                    text(
                        "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
                        " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'scratch'"
                    )
                ).scalar_one()
                scratch.rollback()
            assert where == expected, name


def test_signup_statements_store_times_as_every_other_write_does(tmp_path: Path) -> None:
    """The signup path's compiled statements store datetimes in the database's one text
    format (naive UTC, as SQLAlchemy's own writes do), so comparing and sorting them by
    text, which SQLite does, stays right."""
    import sqlite3

    from drip.core.courses import Catalog, load_course
    from drip.core.entries import Entry
    from drip.lifecycle.signup import Consent, process_recorded, record
    from tests.fixtures import SHIPPED_COURSE

    course = load_course(SHIPPED_COURSE)
    engine = make_engine(f"sqlite:///{tmp_path / 'drip.db'}")
    upgrade(engine)
    entry = Entry.clean(email="t@example.org")
    in_lisbon = NOW.astimezone(timezone(timedelta(hours=-3)))
    with engine.begin() as connection:
        record(connection, course=course, entry=entry, consent=Consent("t"), now=in_lisbon)
        process_recorded(
            connection, catalog=Catalog({course.slug: course}), now=NOW, resend_gap_seconds=0
        )
    with Session(engine) as session:  # an ORM write, for comparison
        session.add(Subscriber(email="orm@example.org", created_at=NOW))
        session.commit()
    engine.dispose()
    with sqlite3.connect(tmp_path / "drip.db") as raw:
        stored = raw.execute("SELECT created_at, processed_at FROM signup").fetchone()
        stored += raw.execute("SELECT created_at FROM subscriber ORDER BY id").fetchone()
        [orm] = raw.execute(
            "SELECT created_at FROM subscriber WHERE email = 'orm@example.org'"
        ).fetchone()
    assert set(stored) == {orm} == {"2026-11-25 07:00:00.000000"}


def test_a_compiled_statement_converts_each_instant_it_is_given(tmp_path: Path) -> None:
    """A statement keeps the times it converted recently (a run's lease, its ``now``);
    equal datetimes that are two instants (a wall time that comes twice, told apart by
    its fold) or one instant at two offsets are converted each as itself."""
    from zoneinfo import ZoneInfo

    from drip.core.models import UTCDateTime

    engine = make_engine(f"sqlite:///{tmp_path / 'drip.db'}")
    statement = Prepared(select(bindparam("t", type_=UTCDateTime())), engine.dialect)
    first = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))  # EDT
    again = first.replace(fold=1)  # the same wall time an hour later, in EST
    in_lisbon = NOW.astimezone(timezone(timedelta(hours=-3)))
    with engine.connect() as connection:
        stored = [
            statement.execute(connection, {"t": moment}).fetchone()[0]
            for moment in (first, again, first, NOW, in_lisbon)
        ]
    engine.dispose()
    assert stored == [
        "2026-11-01 05:30:00.000000",
        "2026-11-01 06:30:00.000000",
        "2026-11-01 05:30:00.000000",
        "2026-11-25 07:00:00.000000",
        "2026-11-25 07:00:00.000000",
    ]


def test_a_batch_stores_every_time_in_the_one_format(tmp_path: Path, course: Course) -> None:
    """An import of several people, the activation of one who was pending, and a send run
    of their first emails (multi-row statements, ``executemany``, updates) store every
    time of every row as SQLAlchemy's own writes do, naive UTC to the microsecond: a time
    given at another offset converted, never its wall-clock time. SQLite compares and sorts
    them as text."""
    import sqlite3

    from drip.core.courses import Catalog
    from drip.runner import make_sender
    from tests.fixtures import make_settings

    engine = make_engine(f"sqlite:///{tmp_path / 'drip.db'}")
    upgrade(engine)
    # an offset no lesson time falls on: 07:00 UTC is 03:43 there
    elsewhere = NOW.astimezone(timezone(-timedelta(hours=3, minutes=17)))
    enrol_many(engine, course, [f"p{i}@example.org" for i in range(3)], now=elsewhere)
    for confirmed in (False, True):  # pending first, then activated
        enrol_many(engine, course, ["late@example.org"], now=elsewhere, confirmed=confirmed)
    sender = make_sender(
        engine=engine, settings=make_settings(tmp_path), catalog=Catalog({course.slug: course})
    )
    assert sender.send_due(now=elsewhere).sent >= 4  # day 1 each; day 2 queued in one go
    engine.dispose()
    times: dict[str, set[str]] = {}
    with sqlite3.connect(tmp_path / "drip.db") as raw:
        tables = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (table,) in tables:
            for _, column, kind, *_ in raw.execute(f"PRAGMA table_info({table})").fetchall():
                if kind == "DATETIME":
                    query = f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
                    for (value,) in raw.execute(query):
                        times.setdefault(value, set()).add(f"{table}.{column}")
    assert {"delivery.due_at", "delivery.sent_at", "enrollment.started_at"} <= set().union(
        *times.values()
    )
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"
    assert {
        value: where
        for value, where in times.items()
        if not re.fullmatch(pattern, value) or value.startswith("2026-11-25 03:43")
    } == {}


def test_the_outbox_times_migration_rewrites_each_as_its_instant_in_utc(tmp_path: Path) -> None:
    """0010 → 0011 on SQLite: outbox times stored with an offset (as multi-row statements
    used to) become naive UTC to the microsecond, the instant kept; the rest is untouched."""
    import sqlite3

    from alembic import command

    from drip.store.schema import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'drip.db'}")
    command.upgrade(alembic_config(engine), "0010")
    stored = [
        ("2026-11-25 07:00:00.000000", "2026-11-25 07:00:00.000000"),
        ("2026-11-25 07:00:00+00:00", "2026-11-25 04:00:00.250000-03:00"),
        ("2026-11-26 07:30:00.123456+00:00", "2026-11-25 07:00:00"),
        ("2026-11-25T09:00:00+02:00", "not a time"),  # (no time drip wrote: left alone)
    ]
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscriber (id, uid, email, name, status, created_at)"
                " VALUES (1, 'u1', 'a@x.org', '', 'active', '2026-11-25 07:00:00.000000');"
            )
        )
        connection.execute(
            text(
                "INSERT INTO enrollment (id, uid, subscriber_id, course_slug, status, created_at)"
                " VALUES (1, 'e1', 1, 'c', 'active', '2026-11-25 07:00:00.000000')"
            )
        )
        for number, (due, created) in enumerate(stored):
            connection.execute(
                text(
                    "INSERT INTO delivery (enrollment_id, key, kind, status, due_at, attempts,"
                    " created_at) VALUES (1, :key, 'lesson', 'scheduled', :due, 0, :created)"
                ),
                {"key": f"d{number}", "due": due, "created": created},
            )
    upgrade(engine)
    engine.dispose()
    with sqlite3.connect(tmp_path / "drip.db") as raw:
        rows = raw.execute("SELECT due_at, created_at FROM delivery ORDER BY id").fetchall()
    assert rows == [
        ("2026-11-25 07:00:00.000000", "2026-11-25 07:00:00.000000"),
        ("2026-11-25 07:00:00.000000", "2026-11-25 07:00:00.250000"),
        ("2026-11-26 07:30:00.123456", "2026-11-25 07:00:00.000000"),
        ("2026-11-25 07:00:00.000000", "not a time"),
    ]


def test_a_claim_reads_only_the_rows_it_takes(any_engine: Engine) -> None:
    """The claim's reads go through the partial indexes: scheduled rows in (due_at, id)
    order, with no scan and sort of the whole backlog (every claim of a 100,000-lesson
    morning would read all of it); claims in flight (a few batches) by their own."""
    from sqlalchemy import event

    from drip.outbox import deliveries

    reads: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().startswith("SELECT delivery.id \nFROM delivery"):
            reads.append((statement, parameters))

    event.listen(any_engine, "before_cursor_execute", capture)
    with any_engine.connect() as connection:
        deliveries.claim(connection, now=NOW, limit=5, lease=timedelta(minutes=5))
    event.remove(any_engine, "before_cursor_execute", capture)
    assert len(reads) == 2  # stranded claims, then scheduled emails
    for (statement, parameters), index in zip(
        reads, ("ix_delivery_sending", "ix_delivery_scheduled"), strict=True
    ):
        plan = _plan(any_engine, statement, parameters, name=index)
        assert index in plan, plan
        if index == "ix_delivery_scheduled":
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


def test_the_dashboard_reads_the_latest_failures_from_their_own_index(
    any_engine: Engine,
) -> None:
    """The dashboard's latest failures come from the small partial index of failed
    emails, newest first, with no scan and sort of the whole outbox."""
    from sqlalchemy import event

    from drip.reporting import dashboard

    reads: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        reads.append((statement, parameters))

    event.listen(any_engine, "before_cursor_execute", capture)
    with any_engine.connect() as connection:
        dashboard.recent_failures(connection)
    event.remove(any_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = reads
    plan = _plan(any_engine, statement, parameters, name="failures")
    assert "ix_delivery_failed" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


def _plan(engine: Engine, statement: str, parameters: Any, *, name: str) -> str:
    """The plan of ``statement`` as the application runs it: on PostgreSQL the generic
    plan a prepared statement settles on, with sequential scans off (on an empty table
    any plan is cheap: this asks for the one an index would give)."""
    with engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            for command in _explain_generic(statement, parameters, name=name):
                cursor.execute(command)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        connection.rollback()
    return plan


def _explain_generic(statement: str, parameters: Any, *, name: str) -> tuple[Any, Any]:
    """PostgreSQL's EXPLAIN of the generic plan of ``statement`` (pyformat placeholders):
    the plan a prepared statement uses once its parameters no longer shape it."""
    from psycopg import sql

    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement)
    values = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in names)
    return (
        sql.SQL("PREPARE {} AS {}").format(sql.Identifier(name), sql.SQL(numbered)),  # type: ignore[arg-type]
        sql.SQL("EXPLAIN EXECUTE {}({})").format(sql.Identifier(name), values),
    )


def test_insert_new_tells_a_new_row_from_one_already_there(any_engine: Engine) -> None:
    """On every database (PostgreSQL's driver gives no row count for an INSERT that
    returns its key): a provider's event is new once, a click is first once."""
    from drip.feedback.bounces import first_time

    with any_engine.begin() as connection:
        assert first_time(connection, provider="postmark", event_id="e1", now=NOW)
        assert not first_time(connection, provider="postmark", event_id="e1", now=NOW)
        assert first_time(connection, provider="mailgun", event_id="e1", now=NOW)


def test_the_tallies_migration_counts_the_history_and_keeps_erased_counts(
    database_url: str,
) -> None:
    """0009 → 0010 on a database with history: the tallies start at what the rows count
    plus what erased subscribers had added; who had left is placed after their last
    lesson; and back down to 0009, the erased share is where it was."""
    from alembic import command

    from drip.store import tallies
    from drip.store.schema import alembic_config

    engine = make_engine(database_url)
    config = alembic_config(engine)
    command.upgrade(config, "0009")
    at = NOW.replace(tzinfo=None)
    with engine.begin() as connection:
        for statement, rows in (
            (
                "INSERT INTO subscriber (id, uid, email, name, status, created_at)"
                " VALUES (:id, :uid, :email, '', :status, :at)",
                [
                    {"id": 1, "uid": "u1", "email": "a@x.org", "status": "active", "at": at},
                    {"id": 2, "uid": "u2", "email": "b@x.org", "status": "unsubscribed", "at": at},
                ],
            ),
            (
                "INSERT INTO enrollment (id, uid, subscriber_id, course_slug, status,"
                " created_at, started_at) VALUES (:id, :uid, :id, 'c', :status, :at, :at)",
                [
                    {"id": 1, "uid": "e1", "status": "active", "at": at},
                    {"id": 2, "uid": "e2", "status": "cancelled", "at": at},
                ],
            ),
            (
                "INSERT INTO delivery (id, enrollment_id, key, kind, status, due_at, attempts,"
                " created_at) VALUES (:id, :e, :key, 'lesson', 'sent', :at, 1, :at)",
                [
                    {"id": 1, "e": 1, "key": "d1", "at": at},
                    {"id": 2, "e": 2, "key": "d1", "at": at},
                    {"id": 3, "e": 2, "key": "d2", "at": at},
                ],
            ),
            (
                "INSERT INTO erasedcount (counter, labels, count) VALUES (:c, :l, :n)",
                [{"c": "drip_emails_sent", "l": "lesson", "n": 5}],
            ),
        ):
            connection.execute(text(statement), rows)
    upgrade(engine)  # the migrations, then the triggers and the counts
    with engine.connect() as connection:
        kept = tallies.totals(connection)
        assert kept == tallies.recount(connection) + tallies.Tallies(
            {("drip_emails_sent", "lesson"): 5}
        )
    assert kept["drip_emails_sent", "lesson"] == 8
    assert kept["lessons", "c,d2,unsubscribed"] == 1 and kept["lessons", "c,d1,sent"] == 2
    command.downgrade(config, "0009")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT counter, labels, count FROM erasedcount")).all() == [
            ("drip_emails_sent", "lesson", 5)
        ]
    engine.dispose()


def test_a_signup_batch_finds_its_people_by_address_not_by_their_course(
    any_engine: Engine, course: Course
) -> None:
    """Processing a batch of signups reads its people by their addresses, however many
    others took the course: were the course's enrollments read instead (SQLite, without
    statistics, takes ``course_slug = ?`` for a selective term), every batch of an
    import would read the whole course and a large import would slow down row by row."""
    from sqlalchemy import event

    reads: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().startswith("SELECT subscriber.id"):
            reads.append((statement, parameters))

    event.listen(any_engine, "before_cursor_execute", capture)
    enrol_many(any_engine, course, [f"p{i}@example.org" for i in range(1000)], now=NOW)
    event.remove(any_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = reads
    plan = _plan(any_engine, statement, parameters, name="members")
    assert "ix_enrollment_course_slug" not in plan, plan


def test_many_emails_queued_at_once_are_each_queued_once(
    any_engine: Engine, course: Course
) -> None:
    """More emails than one statement takes (PostgreSQL: one COPY through a temporary
    table, for its statement triggers to fire once): every one is queued, the one
    already in the outbox is not queued twice, and nothing of the copy is left."""
    from drip.core.states import EmailKind
    from drip.outbox.deliveries import QUEUE_ROWS, queue_many

    enrol_many(any_engine, course, ["ana@example.org"], now=NOW)
    with any_engine.begin() as connection:
        [enrollment_id] = connection.execute(select(Enrollment.id)).scalars()
        emails = [
            {
                "enrollment_id": enrollment_id,
                "kind": EmailKind.LINK,
                "key": f"link:{i}",
                "due_at": NOW,
                "now": NOW,
            }
            for i in range(QUEUE_ROWS + 50)
        ]
        queue_many(connection, emails)
        queue_many(connection, emails[:1] + [{**emails[0], "key": "link:new"}])
    with any_engine.connect() as connection:
        keys = list(
            connection.execute(
                select(Delivery.key).where(Delivery.kind == EmailKind.LINK).order_by(Delivery.id)
            ).scalars()
        )
        tables = inspect(connection).get_table_names()
    assert keys == [f"link:{i}" for i in range(QUEUE_ROWS + 50)] + ["link:new"]
    assert not [table for table in tables if table.startswith("_drip_copy")]


def test_a_large_import_keeps_postgresqls_statistics_up_with_it(
    pg_url: str, course: Course
) -> None:
    """PostgreSQL: a batch that outgrows what the planner last counted has the tables
    counted again (else, believing them small, it scans them for every batch); a list
    imported again, or one person added now and then, does not count them every time."""
    engine = make_engine(pg_url)
    upgrade(engine)

    def add(*emails: str) -> None:
        enrol_many(engine, course, emails, now=NOW)

    def counted() -> dict[str, float]:
        with engine.connect() as connection:
            return dict(
                connection.execute(  # type: ignore[arg-type]
                    text(
                        "SELECT relname, reltuples FROM pg_class WHERE relname IN"
                        " ('subscriber', 'enrollment', 'signup', 'delivery')"
                    )
                ).all()
            )

    people = [f"p{i}@example.org" for i in range(3000)]
    add(*people)
    assert counted() == {"subscriber": 3000, "enrollment": 3000, "signup": 3000, "delivery": 3000}
    for _ in range(3):
        add(*people[:1000])
    for i in range(5):
        add(f"new{i}@example.org")
    assert counted()["subscriber"] < 3005
    engine.dispose()
