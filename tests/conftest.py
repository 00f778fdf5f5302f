"""Shared pytest fixtures: real SQLite files, a throwaway PostgreSQL database, the shipped
course. Helpers that tests import live in ``tests.fixtures``."""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from drip.core.config import Settings
from drip.core.courses import Catalog, Course, load_course
from drip.sending.compose import Composer
from drip.store.engine import engine_for, make_engine
from drip.store.schema import upgrade
from drip.testing import SmtpSink
from tests.fixtures import COURSES_DIR, PG_URL, SHIPPED_COURSE, assert_tallies_hold, make_settings


@pytest.fixture(autouse=True)
def _no_drip_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's DRIP_* variables or .env file."""
    for name in list(os.environ):
        if name.startswith("DRIP_") and name != "DRIP_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    from drip.core.config import get_settings

    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_statement_caches() -> None:
    """Each test compiles the statements it uses, as a new process would: a test never
    depends on which test ran first (and mutation testing sees every test that uses them)."""
    from drip.lifecycle import enrollment, signup
    from drip.outbox import deliveries

    deliveries._statements.clear()
    signup._statements.clear()
    enrollment._statements.clear()


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    """What a command run in-process set aside from the garbage collector (``drip.core.
    memory``) is collected as usual again after the test."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def course() -> Course:
    return load_course(SHIPPED_COURSE)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.from_dir(COURSES_DIR)


@pytest.fixture(scope="session")
def _pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    if not PG_URL:
        pytest.skip("DRIP_TEST_POSTGRES_URL not set: PostgreSQL lane skipped")
    name = f"drip_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(_pg_server_url: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied before each test."""
    engine = create_engine(_pg_server_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield _pg_server_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database drip supports: a SQLite file, and PostgreSQL when available."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'drip.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = engine_for(settings)
    yield engine
    assert_tallies_hold(engine)  # whatever the test did, the counts kept add up
    engine.dispose()


@pytest.fixture
def any_engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on each supported database."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    assert_tallies_hold(engine)  # whatever the test did, the counts kept add up
    engine.dispose()


@pytest.fixture(params=["pipelining", "lockstep"])
def smtp_sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    """A real SMTP server on 127.0.0.1 that records messages and fails on demand, once
    advertising PIPELINING and once not, so both ways of talking to it are tested."""
    with SmtpSink(pipelining=request.param == "pipelining") as sink:
        yield sink


@pytest.fixture
def composer(settings: Settings) -> Composer:
    return Composer(settings=settings)
