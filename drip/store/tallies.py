"""Tallies: counts the database keeps up to date as its rows change, so that the
operator's reads (``/metrics``, the dashboard, ``drip stats``) cost what the courses and
their days cost, not what the list costs.

Each rule below (a ``Part``) says what one row of a table adds to which count; triggers
on the tables apply it in the transaction of the change itself, whichever door made it:
an insert adds the new row's parts, a delete takes the old row's away, an update does
both. Two kinds of count:

- **state** (``STATE``): what the rows hold now (subscribers by status, a course's
  enrollments, a day's lessons sent): erasing a subscriber takes their share away;
- **events** (``EVENTS``, the metrics' counters): what happened, never decremented, so a
  counter never goes down (Prometheus would read that as a reset), not even when the
  rows that counted are erased.

``recount`` counts the same parts from the rows (the reference, and what a cohort read
with ``since`` uses); tests hold the triggers to it. The triggers are installed by every
schema upgrade after the migrations (``bring_up_to_date``), from the rules of the drip
running it, which counts again when they changed: a change of the rules needs no
migration, and a migration never installs rules newer than its schema.

A row's part may read other rows (its enrollment's course); those reads must still find
them, which is why a subscriber is erased children first
(``drip.lifecycle.actions.delete``) and deletes are counted before the row goes.

SQLite has one writer at a time: its triggers, one call per row, add to ``tally`` in
place. On PostgreSQL concurrent writers would queue on (and could deadlock over) the
same few ``tally`` rows, so its triggers append to ``tallychange`` instead, once per
statement over its transition tables, and ``fold`` moves those into ``tally`` now and
then (every send run); reads add both.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, text

from drip.core.models import UTCDateTime
from drip.core.states import (
    CONDITION_NOT_MET,
    ClickLink,
    DeliveryStatus,
    EmailKind,
    EnrollmentStatus,
    MailEventKind,
    WebhookStatus,
)
from drip.store.statements import last_id

#: (name, labels) → count; labels are comma-separated values, "" for none
Tallies = Counter[tuple[str, str]]


@dataclass(frozen=True)
class Part:
    """What one row (``{r}`` in the SQL) adds to the count ``name``: ``n`` under the
    labels ``labels`` when ``where`` holds, reading ``tables`` beside it. ``{utc_day}``
    in ``labels`` is the row's ``created_at`` as a UTC date (``YYYY-MM-DD``)."""

    name: str
    labels: str = "''"
    n: str = "1"
    tables: str = ""
    where: str = "1 = 1"
    #: the alias of the enrollment the count belongs to (a course's count), if any
    enrollment: str | None = None
    #: False: only the change of another row's count, seen from this table (it never
    #: holds a count of its own, so ``recount`` skips it)
    owns: bool = True
    #: False: no update of the row can change it (it reads only columns drip never
    #: changes, and other tables), so update triggers skip it
    on_update: bool = True


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _lesson(alias: str, outcome: str) -> str:
    """Labels of a lesson's count: course, outbox key (day id and run), outcome."""
    return f"e.course_slug || ',' || {alias}.key || ',' || {outcome}"


_HARD, _COMPLAINT = _q(MailEventKind.HARD), _q(MailEventKind.COMPLAINT)
_LESSON = f"d.kind = {_q(EmailKind.LESSON)}"
_OF_DELIVERY = "d.id = {r}.delivery_id AND e.id = d.enrollment_id AND " + _LESSON


def _first(kind: str) -> str:
    """This event of ``kind`` decides its email's count: inserted, no earlier one (of
    several inserted at once, the first); deleted, no other one left (``{other}``)."""
    return (
        "NOT EXISTS (SELECT 1 FROM mailevent m WHERE m.delivery_id = {r}.delivery_id"
        f" AND m.kind = {kind} AND m.id {{other}} {{r}}.id)"
    )


def _has(kind: str) -> str:
    return f"EXISTS (SELECT 1 FROM mailevent m WHERE m.delivery_id = {{r}}.id AND m.kind = {kind})"


_COURSE = "{r}.course_slug"
_CONTROLS = [
    Part("paused", _COURSE, where="{r}.pauses > 0", enrollment="{r}"),
    Part("pauses", _COURSE, n="{r}.pauses", enrollment="{r}"),
    Part("restarted", _COURSE, where="{r}.restarts > 0", enrollment="{r}"),
    Part("restarts", _COURSE, n="{r}.restarts", enrollment="{r}"),
    Part("own_hour", _COURSE, where="{r}.send_at IS NOT NULL", enrollment="{r}"),
]
#: table → its state parts
STATE: dict[str, list[Part]] = {
    "subscriber": [
        Part("subscribers", "{r}.status"),
        Part(
            "people",
            "e.course_slug || ',' || {r}.status",
            tables="enrollment e",
            where="e.subscriber_id = {r}.id",
            enrollment="e",
            owns=False,
        ),
    ],
    "enrollment": [
        Part("enrollments", _COURSE + " || ',' || {r}.status", enrollment="{r}"),
        # new enrollments per UTC day, for the dashboard's chart of signups
        Part("enrolled_on", "{utc_day}"),
        Part(
            "people",
            _COURSE + " || ',' || s.status",
            tables="subscriber s",
            where="s.id = {r}.subscriber_id",
            enrollment="{r}",
        ),
        Part("confirmed", _COURSE, where="{r}.started_at IS NOT NULL", enrollment="{r}"),
        *_CONTROLS,
        # who left, after the last lesson they had (set when they unsubscribed)
        Part(
            "lessons",
            _COURSE + " || ',' || {r}.left_after || ',unsubscribed'",
            where=f"{{r}}.status = {_q(EnrollmentStatus.CANCELLED)}"
            " AND {r}.left_after IS NOT NULL",
            enrollment="{r}",
        ),
    ],
    "delivery": [
        Part(
            "lessons",
            _lesson("{r}", "{r}.status"),
            tables="enrollment e",
            where="e.id = {r}.enrollment_id AND {r}.kind = 'lesson' AND {r}.status IN "
            f"({_q(DeliveryStatus.SENT)}, {_q(DeliveryStatus.FAILED)})",
            enrollment="e",
        ),
        # ruled out by its day's send_if (the next day went in its slot)
        Part(
            "lessons",
            _lesson("{r}", "'skipped'"),
            tables="enrollment e",
            where=f"e.id = {{r}}.enrollment_id AND {{r}}.kind = 'lesson' AND {{r}}.status = "
            f"{_q(DeliveryStatus.SKIPPED)} AND substr({{r}}.last_error, 1, "
            f"{len(CONDITION_NOT_MET)}) = {_q(CONDITION_NOT_MET)}",
            enrollment="e",
        ),
        # a hard bounce or a complaint came back for it (counted once per lesson) …
        *(
            Part(
                "lessons",
                _lesson("{r}", _q(outcome)),
                tables="enrollment e",
                where=f"e.id = {{r}}.enrollment_id AND {{r}}.kind = 'lesson' AND {_has(kind)}",
                enrollment="e",
                on_update=False,
            )
            for outcome, kind in (("bounced", _HARD), ("complained", _COMPLAINT))
        ),
        # … and of those bounced, the ones also given up (the funnel counts them bounced)
        Part(
            "lessons",
            _lesson("{r}", "'bounced_failed'"),
            tables="enrollment e",
            where=f"e.id = {{r}}.enrollment_id AND {{r}}.kind = 'lesson' AND {{r}}.status = "
            f"{_q(DeliveryStatus.FAILED)} AND {_has(_HARD)}",
            enrollment="e",
        ),
    ],
    # the delivery's counts above, as an event's coming or going changes them
    "mailevent": [
        Part(
            "lessons",
            _lesson("d", _q(outcome)),
            tables="delivery d, enrollment e",
            where=f"{_OF_DELIVERY} AND {{r}}.kind = {kind}{also} AND {_first(kind)}",
            enrollment="e",
            owns=False,
        )
        for outcome, kind, also in (
            ("bounced", _HARD, ""),
            ("complained", _COMPLAINT, ""),
            ("bounced_failed", _HARD, f" AND d.status = {_q(DeliveryStatus.FAILED)}"),
        )
    ],
    "click": [
        Part(
            "lessons",
            _lesson("d", "'clicked'"),
            tables="delivery d, enrollment e",
            where=f"{_OF_DELIVERY} AND {{r}}.link = {_q(ClickLink.CLASS)}",
            enrollment="e",
        ),
    ],
}
#: table → its event parts (the metrics' counters)
EVENTS: dict[str, list[Part]] = {
    "signup": [
        Part("drip_signups"),
        Part("drip_confirmations", where="{r}.confirmed_at IS NOT NULL"),
    ],
    "delivery": [
        Part("drip_emails_sent", "{r}.kind", where=f"{{r}}.status = {_q(DeliveryStatus.SENT)}"),
        Part(
            "drip_emails_failed",
            # the engine writes "gave up after N attempts: …" when the attempts ran out
            "{r}.kind || ',' || CASE WHEN {r}.last_error LIKE 'gave up after %'"
            " THEN 'gave_up' ELSE 'refused' END",
            where=f"{{r}}.status = {_q(DeliveryStatus.FAILED)}",
        ),
    ],
    "mailevent": [Part("drip_bounces", "{r}.kind")],
    "webhookmessage": [
        Part("drip_webhooks_delivered", where=f"{{r}}.status = {_q(WebhookStatus.DELIVERED)}"),
        Part("drip_webhooks_given_up", where=f"{{r}}.status = {_q(WebhookStatus.FAILED)}"),
    ],
}
#: table → the columns whose change can change its parts (drip never changes a row's
#: course, email key or kind, nor what it belongs to, once written)
WATCHED: dict[str, tuple[str, ...]] = {
    "subscriber": ("status",),
    "signup": ("confirmed_at",),
    "enrollment": ("status", "started_at", "pauses", "restarts", "send_at", "left_after"),
    "delivery": ("status", "last_error"),
    "mailevent": (),
    "click": (),
    "webhookmessage": ("status",),
}


def _fill(row: str, dialect: str) -> dict[str, str]:
    if dialect == "postgresql":
        day = f"to_char({row}.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    else:  # stored as UTC text, "YYYY-MM-DD HH:MM:SS…"
        day = f"substr({row}.created_at, 1, 10)"
    return {"r": row, "utc_day": day, "other": "<>" if row == "OLD" else "<"}


def _select(part: Part, row: str, dialect: str, sign: str = "", source: str = "") -> str:
    """The part for one row (``row``: a row trigger's NEW or OLD), or, with ``source``,
    for every row of that table or transition table (aliased ``row``)."""
    fill = _fill(row, dialect)
    tables = [f"{source} {row}"] if source else []
    tables += [part.tables] if part.tables else []
    found = f" FROM {', '.join(tables)}" if tables else ""
    return (
        f"SELECT {_q(part.name)} AS name, {part.labels.format(**fill)} AS labels, "
        f"{sign}({part.n.format(**fill)}) AS n{found} WHERE {part.where.format(**fill)}"
    )


def _entered(part: Part, dialect: str) -> str:
    """An event part for the rows of an UPDATE statement that hold it now and did not
    before (a statement trigger's ``new_rows`` and ``old_rows``)."""
    now, was = _fill("r", dialect), _fill("o", dialect)
    held = (
        f"o.id = r.id AND {part.where.format(**was)}"
        f" AND {part.labels.format(**was)} = {part.labels.format(**now)}"
    )
    return (
        _select(part, "r", dialect, source="new_rows")
        + f" AND NOT EXISTS (SELECT 1 FROM old_rows o WHERE {held})"
    )


def _adding(selects: list[str], *, keep: str, dialect: str) -> str:
    """One statement adding the parts' rows up, per count, when ``keep`` holds for the
    sum."""
    union = " UNION ALL ".join(selects)
    grouped = f"SELECT name, labels, SUM(n) FROM ({union}) parts GROUP BY name, labels"
    if dialect == "postgresql":
        return f"INSERT INTO tallychange (name, labels, n) {grouped} HAVING SUM(n) {keep}"
    return (
        f"INSERT INTO tally (name, labels, n) {grouped} HAVING SUM(n) {keep}"
        " ON CONFLICT (name, labels) DO UPDATE SET n = tally.n + excluded.n"
    )


#: PostgreSQL: what a statement inserting into the table locks first, so that the counts
#: it reads from other rows are not changed under it by a transaction it cannot see yet:
#: two bounces for one email (only one is its first), an enrollment made while its
#: subscriber's status changes (the people count goes by the status it ends with)
_PG_LOCKS = {
    "mailevent": "PERFORM 1 FROM delivery WHERE id IN (SELECT delivery_id FROM new_rows)"
    " ORDER BY id FOR NO KEY UPDATE",
    "enrollment": "PERFORM 1 FROM subscriber WHERE id IN (SELECT subscriber_id FROM new_rows)"
    " ORDER BY id FOR SHARE",
}
#: (trigger name, timing and event, table, "FOR EACH …" and what follows, statements)
Trigger = tuple[str, str, str, str, list[str]]


def _triggers(dialect: str) -> list[Trigger]:
    """Every table's triggers. SQLite's fire for each row; PostgreSQL's inserts and
    updates fire once per statement, over its transition tables (a receipt for a window
    of emails is one call, not ten)."""
    found: list[Trigger] = []
    for table, columns in WATCHED.items():
        state, events = STATE.get(table, []), EVENTS.get(table, [])
        changing = [p for p in state if p.on_update]  # a state count moves; events only grow
        if dialect == "postgresql":
            inserted = [_select(p, "r", dialect, source="new_rows") for p in state + events]
            moved = [_select(p, "r", dialect, source="new_rows") for p in changing]
            moved += [_select(p, "r", dialect, "-", source="old_rows") for p in changing]
            grown = [_entered(p, dialect) for p in events]
            on_insert = "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
            on_update = "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"
            timing = "AFTER UPDATE"
        else:
            inserted = [_select(p, "NEW", dialect) for p in state + events]
            moved = [_select(p, row, dialect, sign) for p in changing for row, sign in _BOTH]
            grown = [_select(p, row, dialect, sign) for p in events for row, sign in _BOTH]
            on_insert = "FOR EACH ROW"
            # only rows where a watched column changed (a claim's lease, say, does not)
            changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
            on_update = f"FOR EACH ROW WHEN ({changed})"
            timing = f"AFTER UPDATE OF {', '.join(columns)}"
        added = [_adding(inserted, keep="<> 0", dialect=dialect)]
        if dialect == "postgresql" and table in _PG_LOCKS:
            added.insert(0, _PG_LOCKS[table])
        found.append((f"tally_{table}_insert", "AFTER INSERT", table, on_insert, added))
        if columns:
            statements = [_adding(moved, keep="<> 0", dialect=dialect)] if moved else []
            statements += [_adding(grown, keep="> 0", dialect=dialect)] if grown else []
            found.append((f"tally_{table}_update", timing, table, on_update, statements))
        if state:  # before the row goes: its parts read it and its neighbours
            taken = _adding(
                [_select(p, "OLD", dialect, "-") for p in state], keep="<> 0", dialect=dialect
            )
            found.append((f"tally_{table}_delete", "BEFORE DELETE", table, "FOR EACH ROW", [taken]))
    return found


_BOTH = (("NEW", ""), ("OLD", "-"))


#: the ``Setting`` naming the rules the installed triggers were made from
INSTALLED = "tallies"


@functools.cache
def fingerprint(dialect: str) -> str:
    """Which rules: a hash of every trigger they make for ``dialect``."""
    made = "\n".join(repr(trigger) for trigger in _triggers(dialect))
    return hashlib.sha256(made.encode()).hexdigest()[:16]


def is_current(connection: Connection) -> bool:
    """Were the installed triggers made from these rules?"""
    from drip.store import installation

    return installation.read(connection, INSTALLED) == fingerprint(connection.dialect.name)


def bring_up_to_date(connection: Connection) -> bool:
    """Install these rules' triggers if the database has others (or none), and count
    again: what rows hold, from the rows; events, never fewer than were kept (what
    erased rows had counted stays). Run by every schema upgrade; True if it changed
    anything. A change of the rules therefore needs no migration of its own."""
    from drip.store import installation

    if is_current(connection):
        return False
    # the first time, the tallies hold only what erased subscribers had counted
    first = installation.read(connection, INSTALLED) is None
    install(connection)
    count_again(connection, add_kept_events=first)
    installation.write(connection, INSTALLED, fingerprint(connection.dialect.name))
    return True


def count_again(connection: Connection, *, add_kept_events: bool = False) -> Tallies:
    """Set every count to what the rows count, but the metrics' events, which never go
    down: each the larger of what was kept and what the rows count (with
    ``add_kept_events``, their sum). ``drip db recount``, for a database that drifted
    (rows edited by hand, say); the changes, count by count."""
    fold(connection)
    kept = totals(connection)
    counts = recount(connection)
    for key, n in kept.items():
        if key[0].startswith("drip_"):  # the metrics' events
            counts[key] = counts[key] + n if add_kept_events else max(counts[key], n)
    replace(connection, counts)
    changes = Tallies(counts)
    changes.subtract(kept)
    return Tallies({key: n for key, n in changes.items() if n})


@contextmanager
def counted_at_the_end(connection: Connection, tables: Sequence[str]) -> Iterator[None]:
    """A block of bulk inserts into ``tables``, counted once at its end instead of row by
    row: for a large insert SQLite's row triggers cost more than the rows themselves.

    SQLite: in the caller's transaction, which holds the database's one write lock (no
    other connection writes meanwhile, nor sees anything before the commit), the insert
    triggers of ``tables`` are set aside; at the end the rows the block inserted are
    counted from the rows (``recount``'s parts, over the new ids) and the triggers put
    back as they were, in the same transaction. Only when the installed triggers are this
    drip's rules (another drip may have installed newer ones): else the triggers count
    as usual. The block must only insert into ``tables``: a row of theirs it updated or
    deleted would be counted wrong. PostgreSQL's triggers fire once per statement
    already: there the block runs as it is.
    """
    dialect = connection.dialect.name
    if dialect != "sqlite" or not is_current(connection):
        yield
        return
    marks = {table: last_id(connection, table) for table in tables}
    names = [f"tally_{table}_insert" for table in tables]
    installed = (
        connection.execute(
            text(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN :names"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": names},
        )
        .scalars()
        .all()
    )
    for name in names:
        connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    try:
        yield
    finally:  # put back whatever happened: the caller may still commit
        for sql in installed:
            connection.execute(text(sql))
    selects = [
        _summed_after(part, table, marks[table])
        for table in tables
        for part in [p for p in STATE.get(table, []) if p.owns] + EVENTS.get(table, [])
    ]
    if selects:
        connection.execute(text(_adding(selects, keep="<> 0", dialect=dialect)))


def _summed_after(part: Part, table: str, last: int) -> str:
    """SQLite: the part over ``table``'s rows after id ``last``, summed by labels (the
    union then groups a few rows, not one a row and part). Read by id alone: SQLite,
    without statistics, would rather walk the course index to group by course."""
    fill = _fill("r", "sqlite")
    tables = ", ".join([f"{table} r NOT INDEXED", *([part.tables] if part.tables else [])])
    return (
        f"SELECT {_q(part.name)} AS name, {part.labels.format(**fill)} AS labels, "
        f"SUM({part.n.format(**fill)}) AS n FROM {tables} "
        f"WHERE ({part.where.format(**fill)}) AND r.id > {int(last)} GROUP BY 2"
    )


def install(connection: Connection) -> None:
    """(Re)create the triggers that keep the tallies."""
    _create(connection, _triggers(connection.dialect.name))


def _create(connection: Connection, triggers: list[Trigger]) -> None:
    dialect = connection.dialect.name
    for name, when, table, each, statements in triggers:
        body = "; ".join(statements)
        on = f"{when} ON {table} {each}"
        if dialect == "postgresql":
            back = "OLD" if when.startswith("BEFORE DELETE") else "NULL"
            connection.execute(text(f"DROP FUNCTION IF EXISTS {name}() CASCADE"))
            connection.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN {body}; RETURN {back}; END $$"
                )
            )
            connection.execute(text(f"CREATE TRIGGER {name} {on} EXECUTE FUNCTION {name}()"))
        else:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
            connection.execute(text(f"CREATE TRIGGER {name} {on} BEGIN {body}; END"))


def uninstall(connection: Connection) -> None:
    dialect = connection.dialect.name
    for name, *_ in _triggers(dialect):
        if dialect == "postgresql":
            connection.execute(text(f"DROP FUNCTION IF EXISTS {name}() CASCADE"))
        else:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def recount(connection: Connection, *, since: datetime | None = None) -> Tallies:
    """Every tally counted from the rows as they are (erased rows' events are not there
    to count). With ``since``: only a course's counts, for the people who enrolled from
    then on."""
    counts = Tallies()
    owned = [(t, p) for t, parts in STATE.items() for p in parts if p.owns]
    if since is None:
        owned += [(t, p) for t, parts in EVENTS.items() for p in parts]
    for table, part in owned:
        query = _select(part, "r", connection.dialect.name, source=table)
        params: dict[str, object] = {}
        if since is not None:
            if part.enrollment is None:
                continue
            query += f" AND {part.enrollment.format(r='r')}.created_at >= :since"
            params["since"] = since
        statement = text(f"SELECT name, labels, SUM(n) FROM ({query}) parts GROUP BY name, labels")
        if since is not None:  # stored as the column stores it
            statement = statement.bindparams(bindparam("since", type_=UTCDateTime()))
        for name, labels, n in connection.execute(statement, params):
            counts[name, labels] += int(n or 0)
    return +counts


def totals(connection: Connection) -> Tallies:
    """Every tally as the triggers keep it."""
    counts = Tallies()
    for name, labels, n in connection.execute(
        text(
            "SELECT name, labels, SUM(n) FROM (SELECT name, labels, n FROM tally UNION ALL "
            "SELECT name, labels, n FROM tallychange) kept GROUP BY name, labels"
        )
    ):
        counts[name, labels] = int(n)
    return +counts


def fold(connection: Connection) -> None:
    """PostgreSQL: move the appended changes into ``tally`` (in the caller's
    transaction). A second fold at the same moment waits, then finds nothing to move;
    the rows are updated in one order, so folds never deadlock."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(
        text(
            "WITH moved AS (DELETE FROM tallychange RETURNING name, labels, n) "
            "INSERT INTO tally (name, labels, n) SELECT name, labels, SUM(n) FROM moved "
            "GROUP BY name, labels ORDER BY name, labels "
            "ON CONFLICT (name, labels) DO UPDATE SET n = tally.n + excluded.n"
        )
    )


def rebuild(connection: Connection, *, kept: Tallies | None = None) -> None:
    """Set the tallies to what the rows count, plus ``kept`` (events whose rows are gone)."""
    replace(connection, recount(connection) + (kept or Tallies()))


def replace(connection: Connection, counts: Tallies) -> None:
    """Set the tallies to ``counts``."""
    connection.execute(text("DELETE FROM tallychange"))
    connection.execute(text("DELETE FROM tally"))
    rows = [{"name": k[0], "labels": k[1], "n": n} for k, n in sorted(counts.items()) if n]
    if rows:
        connection.execute(
            text("INSERT INTO tally (name, labels, n) VALUES (:name, :labels, :n)"), rows
        )
