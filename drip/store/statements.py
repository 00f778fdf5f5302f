"""Statements compiled once and run straight on the driver, for the hot paths; and the
helpers every writer shares (the dialect's ``INSERT … ON CONFLICT``).

``Prepared`` is one Core statement compiled for one dialect; ``Compiled`` keeps a
module's set of them, built once per kind of database (SQLite, PostgreSQL) and shared by
every thread. The rest of drip uses SQLAlchemy Core (or the ORM where it reads better)
as usual.
"""

from __future__ import annotations

import operator
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Dialect, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

T = TypeVar("T")


class Prepared:
    """A Core statement compiled once for a dialect, run straight on the DBAPI cursor.

    For the few statements run per message or per signup, where SQLAlchemy's
    per-execution bookkeeping costs more than the database's own work. Parameters go
    through the same bind processors (type conversions) as a normal execution; rows
    come back as the driver returns them.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = str(compiled)
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        order = compiled.positiontup  # None for named paramstyles
        self._names = list(order or binds)
        self._positional = order is not None
        #: values the statement itself fixes (literals), by the caller's key
        self._fixed = {b.key: b.value for b in binds.values() if not b.required}
        keys = [binds[name].key for name in self._names]
        self._take = operator.itemgetter(*keys) if keys else (lambda params: ())
        #: (position, type as written, converter) of each value that needs converting
        self._convert = [
            (index, repr(binds[name].type), processor)
            for index, name in enumerate(self._names)
            if (processor := binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        ]
        #: times converted by recent single executions (a run's ``now``, a batch's lease:
        #: the same for every message), kept to ``_RECENT`` of them
        self._recent: dict[tuple[Any, ...], Any] = {}

    def execute(self, connection: Connection, params: dict[str, Any]) -> Any:
        """Run in ``connection``'s current transaction; returns the DBAPI cursor."""
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(self.sql, self._bound(params, self._recent))
        return cursor

    def read_alone(self, connection: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of this read, run as a statement of its own, outside any
        transaction: one round trip, no BEGIN or COMMIT (nor SQLite's write lock) for a
        single read. ``connection`` must not be in a transaction. Values as the driver
        returns them."""
        if connection.in_transaction():
            raise RuntimeError("read_alone runs outside a transaction")
        driver = connection.connection.driver_connection
        # SQLite's driver is in autocommit mode already (drip.store.sqlite); psycopg's is
        # switched for this one statement (a client-side setting: no round trip)
        switch = connection.dialect.name == "postgresql" and not driver.autocommit  # type: ignore[union-attr]
        if switch:
            driver.autocommit = True  # type: ignore[union-attr]
        try:
            cursor = driver.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(self.sql, self._bound(params, self._recent))
                return cursor.fetchone()  # type: ignore[no-any-return]
            finally:
                cursor.close()
        finally:
            if switch and not driver.closed:  # type: ignore[union-attr]
                driver.autocommit = False  # type: ignore[union-attr]

    def executemany(self, connection: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Run once per parameter set, in one driver call."""
        converted: dict[tuple[Any, ...], Any] = {}
        bound = [self._bound(params, converted) for params in rows]
        if bound:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(self.sql, bound)

    def insert_many(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """This ``INSERT … VALUES`` once per parameter set, as fast as the database takes
        many rows: SQLite's ``executemany``; on PostgreSQL one COPY, one statement for
        them all (its statement triggers fire once, not once a row). An ``ON CONFLICT``
        clause still applies: there the rows go through a temporary table. Nothing is
        returned (a ``RETURNING`` clause is left out)."""
        if connection.dialect.name != "postgresql":
            self.executemany(connection, rows)
            return
        match = _INSERT.fullmatch(self.sql)
        if match is None:
            raise ValueError(f"not an INSERT … VALUES: {self.sql}")
        table, columns, values, conflict = match.groups()
        order = _PLACEHOLDER.findall(values)
        if len(order) != len(columns.split(",")):  # a value that is no plain parameter
            raise ValueError(f"COPY takes one parameter per column: {self.sql}")
        converted: dict[tuple[Any, ...], Any] = {}
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        target = f"_drip_copy_{table}" if conflict else table
        if conflict:
            cursor.execute(
                f"CREATE TEMPORARY TABLE {target} ON COMMIT DROP AS"
                f" SELECT {columns} FROM {table} WITH NO DATA"
            )
        with cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
            for params in rows:
                bound = self._bound(params, converted)
                copy.write_row([bound[name] for name in order])
        if conflict:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {target} {conflict}"
            )
            cursor.execute(f"DROP TABLE {target}")

    def _bound(self, params: dict[str, Any], converted: dict[tuple[Any, ...], Any]) -> Any:
        if not self._names:
            return [] if self._positional else {}
        taken = self._take({**self._fixed, **params} if self._fixed else params)
        values = list(taken) if len(self._names) > 1 else [taken]
        for index, kind, process in self._convert:
            value = values[index]
            if isinstance(value, datetime):  # the same ``now`` in every row: convert once
                # (by its zone and fold too: equal datetimes can be two instants, or
                # one instant at two offsets)
                memo = (kind, value, value.tzinfo, value.fold)
                found = converted.get(memo)
                if found is None:
                    if len(converted) >= _RECENT:
                        converted.clear()
                    found = converted[memo] = process(value)
                values[index] = found
            else:
                values[index] = process(value)
        return values if self._positional else dict(zip(self._names, values, strict=True))


#: the most times a statement keeps converted (``Prepared._recent``)
_RECENT = 16
#: an INSERT … VALUES as compiled for PostgreSQL: table, columns, values, ON CONFLICT
_INSERT = re.compile(
    r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \((.*?)\)"
    r"( ON CONFLICT .*?)?(?: RETURNING [\w., ]+)?",
    re.DOTALL,
)
#: a parameter's name in psycopg's placeholders (``%(name)s``, a type cast after it)
_PLACEHOLDER = re.compile(r"%\((.+?)\)s")


class Compiled(Generic[T]):
    """A module's statements (``build(dialect)``), made once per kind of database and
    shared by every thread; ``clear`` forgets them (a test's fresh start)."""

    def __init__(self, build: Callable[[Dialect], T]) -> None:
        self._build = build
        self._made: dict[tuple[str, str], T] = {}
        self._lock = threading.Lock()

    def __call__(self, dialect: Dialect) -> T:
        key = (dialect.name, dialect.driver)
        found = self._made.get(key)
        if found is None:
            with self._lock:
                found = self._made.get(key)
                if found is None:
                    found = self._made[key] = self._build(dialect)
        return found

    def clear(self) -> None:
        with self._lock:
            self._made.clear()


def insert_for(dialect: Dialect) -> Any:
    """The dialect's own ``insert`` (PostgreSQL's or SQLite's), which knows
    ``ON CONFLICT``."""
    if dialect.name == "postgresql":  # (each imported only where it is used)
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def insert_new(
    connection: Connection, table: Any, values: dict[str, Any], *, unique: list[str]
) -> bool:
    """Insert the row unless one with the same ``unique`` columns exists; True if it was
    new. (Told by the row it returns: PostgreSQL's driver gives no row count for an
    INSERT that returns the key it made.)"""
    statement = insert_for(connection.dialect)(table).values(**values)
    statement = statement.on_conflict_do_nothing(index_elements=unique)
    key = list(sa_inspect(table).primary_key)
    return connection.execute(statement.returning(*key)).first() is not None


@contextmanager
def generic_plans(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, plan each prepared statement once for this block, not on every
    execution (``plan_cache_mode``): for a sender's statements, which find their rows by
    key, so their best plan does not depend on the values. A plan made for the values
    would cost a planning per message, and, on a table of a few batches, can prefer
    reading every row in flight to probing the ten it names."""
    if connection.dialect.name != "postgresql":
        yield
        return
    with connection.begin():
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    try:
        yield
    finally:
        try:
            with connection.begin():
                connection.exec_driver_sql("RESET plan_cache_mode")
        except Exception:  # a broken connection: never back to the pool with the setting
            connection.invalidate()


def new_ids(connection: Connection, table: str, count: int) -> list[int]:
    """``count`` ids for rows about to be inserted into ``table`` with their ids given
    (rows that refer to each other, inserted in multi-row statements): PostgreSQL's from
    the table's sequence; SQLite's after the largest, which the caller's transaction,
    holding the one write lock, keeps to itself."""
    if not count:
        return []
    if connection.dialect.name == "postgresql":
        return list(
            connection.execute(
                text(
                    f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))"
                    " FROM generate_series(1, :count)"
                ),
                {"count": count},
            ).scalars()
        )
    last = last_id(connection, table)
    return list(range(last + 1, last + 1 + count))


def analyze_if_grown(connection: Connection, table: str, *, inserted: int) -> None:
    """PostgreSQL, in a bulk insert's transaction: count ``table`` again (``ANALYZE``, as
    PostgreSQL advises after a bulk load) once the rows written since it was last counted,
    with the ``inserted`` ones, outnumber what was counted. With a table believed small
    the planner reads the whole of it for each batch (a thousand addresses looked up by a
    scan), and autovacuum comes by only once a minute: an import grew slower batch by
    batch."""
    if connection.dialect.name != "postgresql":
        return
    counted, written = connection.execute(
        text(
            "SELECT c.reltuples, coalesce(s.n_mod_since_analyze, 0) FROM pg_class c"
            " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE c.oid = CAST(:table AS regclass)"
        ),
        {"table": table},
    ).one()
    if written + inserted > max(counted, 1000):
        connection.execute(text(f"ANALYZE {table}"))


def last_id(connection: Connection, table: str) -> int:
    """The largest id in ``table`` (0 when empty)."""
    return int(connection.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one())
