"""Backups while running, and moving a database with its history: nothing lost, nothing
sent twice."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session
from typer.testing import CliRunner

from drip.cli import app
from drip.core.config import get_settings
from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.exceptions import ConfigError
from drip.core.models import Click, Delivery, Enrollment, Signup, Subscriber
from drip.core.states import ClickLink
from drip.core.tokens import Tokens
from drip.feedback.clicks import record_click
from drip.lifecycle.enrollment import unsubscribe
from drip.lifecycle.signup import Consent, sign_up
from drip.runner import make_sender
from drip.sending.mailer import memory
from drip.store import tallies
from drip.store.backup import backup_sqlite, copy_database, pg_dump_command
from drip.store.engine import engine_for, make_engine
from drip.store.schema import upgrade
from tests.fixtures import COURSES_DIR, enrol, erase, make_settings

START = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def _history(engine: Engine, course: Course, settings: object) -> None:
    """Subscribers in every state, lessons sent over two days, a confirmation queued, two
    class clicks, an erased subscriber's share of the metrics."""
    catalog = Catalog({course.slug: course})
    enrol(engine, course, "gone@example.org", now=START)
    erase(engine, "gone@example.org")
    uids = [enrol(engine, course, f"a{n}@example.org", now=START) for n in range(6)]
    with engine.begin() as connection:
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email="p@example.org", name="Pending")],
            consent=Consent(source="test"),
            by_operator=True,
            now=START,
        )
    sender = make_sender(engine=engine, settings=settings, catalog=catalog)  # type: ignore[arg-type]
    sender.send_due(now=START)
    sender.send_due(now=START + timedelta(days=1))
    with engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=uids[0], catalog=catalog, now=START)
        for uid in uids[1:3]:
            assert record_click(
                connection,
                enrollment_uid=uid,
                day_id=course.days[0].id,
                link=ClickLink.CLASS,
                now=START,
            )


def _sent_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return {m for m in session.execute(select(Delivery.message_id)).scalars() if m is not None}


def _counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            model.__tablename__: session.execute(
                select(func.count()).select_from(model)
            ).scalar_one()
            for model in (Subscriber, Signup, Enrollment, Delivery, Click)
        }


def _tallies(engine: Engine) -> tallies.Tallies:
    with engine.connect() as connection:
        return tallies.totals(connection)


def _recounted(engine: Engine) -> tallies.Tallies:
    with engine.connect() as connection:
        return tallies.recount(connection)


@pytest.fixture(autouse=True)
def _outbox() -> None:
    memory.outbox.clear()


def test_a_backup_made_while_writing_is_whole_and_restores(tmp_path: Path, course: Course) -> None:
    """The online backup of a database being written to passes SQLite's integrity check;
    put in place of the database, drip carries on from it without resending."""
    settings = make_settings(tmp_path)
    engine = engine_for(settings)
    _history(engine, course, settings)
    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            with engine.begin() as connection:
                sign_up(
                    connection,
                    course=course,
                    entries=[Entry.clean(email=f"busy{n}@example.org")],
                    consent=Consent(source="test"),
                    by_operator=True,
                    now=START,
                )
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        backup_sqlite(settings.sqlite_path(), tmp_path / "backup.db")  # type: ignore[arg-type]
    finally:
        stop.set()
        writer.join()
    assert (tmp_path / "backup.db").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        backup_sqlite(settings.sqlite_path(), tmp_path / "backup.db")  # type: ignore[arg-type]

    restored = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'backup.db'}")
    copy = engine_for(restored)
    with sqlite3.connect(tmp_path / "backup.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    before = _sent_ids(copy)
    assert len(before) == 13  # 6 day-1 and 6 day-2 lessons, 1 confirmation
    memory.outbox.clear()
    make_sender(engine=copy, settings=restored, catalog=Catalog({course.slug: course})).send_due(
        now=START + timedelta(days=2, hours=1)
    )
    assert memory.outbox and {m.message_id for m in memory.outbox}.isdisjoint(before)


def test_the_copy_knows_every_table_parents_first() -> None:
    """A table added to the schema is copied too, after the tables its foreign keys name."""
    from sqlmodel import SQLModel

    from drip.store.backup import TABLES

    tables = SQLModel.metadata.tables
    assert sorted(TABLES) == sorted(set(tables) - {"tally", "tallychange"})
    for position, name in enumerate(TABLES):
        parents = {key.column.table.name for key in tables[name].foreign_keys}
        assert parents <= set(TABLES[:position]), name


def test_copy_to_postgresql_and_back_loses_nothing_and_resends_nothing(
    tmp_path: Path, pg_url: str, course: Course
) -> None:
    """SQLite with history → PostgreSQL → SQLite: every row and id arrives; sending from
    the copy sends the next day's lessons and nothing already sent; new rows get new ids."""
    settings = make_settings(tmp_path)
    source = engine_for(settings)
    _history(source, course, settings)
    postgres = make_engine(pg_url)
    upgrade(postgres)
    copied = copy_database(source, postgres)
    assert copied["delivery"] == _counts(source)["delivery"] > 0
    assert copied["click"] == 2
    assert _counts(postgres) == _counts(source)
    # the erased subscriber's signup is still counted, though its rows are gone
    assert _tallies(postgres) == _tallies(source) != _recounted(source)
    with pytest.raises(ConfigError, match="already has"):
        copy_database(source, postgres)

    back = make_engine(f"sqlite:///{tmp_path / 'back.db'}")
    upgrade(back)
    copy_database(postgres, back)
    assert _counts(back) == _counts(source)
    assert _tallies(back) == _tallies(source)
    assert _sent_ids(back) == _sent_ids(postgres) == _sent_ids(source)

    sent_before = _sent_ids(postgres)
    memory.outbox.clear()
    pg_settings = make_settings(tmp_path, database_url=pg_url)
    sender = make_sender(
        engine=postgres, settings=pg_settings, catalog=Catalog({course.slug: course})
    )
    report = sender.send_due(now=START + timedelta(days=2, hours=1))
    assert report.sent == 5  # day 3 for the five still subscribed
    assert {m.message_id for m in memory.outbox}.isdisjoint(sent_before)
    enrol(postgres, course, "new@example.org", now=START)  # the id sequences moved on
    postgres.dispose()


def test_backup_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`db backup` copies SQLite and refuses to overwrite; for PostgreSQL it prints the
    pg_dump command (with the driver name a libpq tool understands)."""
    assert pg_dump_command("postgresql+psycopg://u:p@db:5432/drip", Path("/b/x.dump")) == (
        "pg_dump --format=custom --file=/b/x.dump postgresql://u:p@db:5432/drip"
    )
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    monkeypatch.setenv("DRIP_SECRET_KEY", "x" * 32)
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    made = runner.invoke(app, ["db", "backup", str(tmp_path / "b.db")])
    assert made.exit_code == 0 and (tmp_path / "b.db").exists()
    again = runner.invoke(app, ["db", "backup", str(tmp_path / "b.db")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_backup_restored_as_documented_keeps_its_links_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, course: Course
) -> None:
    """With the generated key, `db backup` writes the key beside the copy (0600); restored
    as docs/deployment.md says (both files into a new directory), drip starts on it and
    an unsubscribe link from before the backup still works. A dangling link where the
    backup would go is refused in one line, nothing written."""
    live, restored = tmp_path / "live", tmp_path / "restored"
    live.mkdir()
    restored.mkdir()
    monkeypatch.chdir(live)
    monkeypatch.setenv("DRIP_DATABASE_URL", "sqlite:///./drip.db")
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    monkeypatch.setenv("DRIP_SMTP_URL", "memory://")
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    uid = enrol(engine_for(get_settings()), course, "ana@example.org", now=START)
    link = Tokens.from_settings(get_settings()).unsubscribe_token(uid)
    made = runner.invoke(app, ["db", "backup", str(tmp_path / "drip-backup.db")])
    assert made.exit_code == 0, made.output
    key = tmp_path / "drip-backup.db.key"
    assert f"its signing key to {key}" in made.output
    assert key.read_text() == (live / "drip-secret.key").read_text()
    assert oct(key.stat().st_mode & 0o777) == "0o600"

    # the documented restore: cp drip-backup.db drip.db; cp drip-backup.db.key drip-secret.key
    shutil.copy(tmp_path / "drip-backup.db", restored / "drip.db")
    shutil.copy(key, restored / "drip-secret.key")
    monkeypatch.chdir(restored)
    get_settings.cache_clear()
    sent = runner.invoke(app, ["send-due", "--now", START.isoformat()])
    assert sent.exit_code == 0, sent.output  # no "the signing key changed"
    assert Tokens.from_settings(get_settings()).read_unsubscribe(link) == uid

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refused = runner.invoke(app, ["db", "backup", str(tmp_path / "dangling")])
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "nowhere").exists()
