"""The webhooks' outbox: endpoints, the events emitted for them, and their delivery rows.

An event is emitted in the transaction of the change it reports (``emit``), so a change
rolled back reports nothing and a change committed is never lost: one ``WebhookMessage``
row per (event, endpoint that wants it), the body frozen as it will be signed. Posting
(``drip.sending.webhooks``) claims rows with a lease as the email outbox does: the lease
value is the claim token, so a worker whose lease was taken over changes nothing, and at
most one worker holds a row at a time. A row is delivered once an endpoint answers 2xx;
otherwise it is tried again with backoff for up to ``GIVE_UP_AFTER``, then given up; an
endpoint failing for that long is turned off and its waiting rows given up with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, and_, insert, or_, select, update
from sqlmodel import col

from drip.core import schedule
from drip.core.exceptions import InvalidWebhook
from drip.core.models import Enrollment, Subscriber, WebhookEndpoint, WebhookMessage
from drip.core.states import EventType, WebhookStatus
from drip.core.webhooks import new_event_id, wants
from drip.store.statements import Compiled, Prepared

#: how long a message is retried, and an endpoint may fail, before drip gives up on it
GIVE_UP_AFTER = timedelta(days=3)


# -- endpoints -------------------------------------------------------------------------------


def _endpoint_rows(connection: Connection, *where: Any) -> list[WebhookEndpoint]:
    rows = connection.execute(
        select(WebhookEndpoint).where(*where).order_by(col(WebhookEndpoint.id))
    ).all()
    return [WebhookEndpoint.model_validate(row._mapping) for row in rows]


def endpoints(connection: Connection) -> list[WebhookEndpoint]:
    return _endpoint_rows(connection)


def endpoint(connection: Connection, endpoint_id: int) -> WebhookEndpoint:
    found = _endpoint_rows(connection, col(WebhookEndpoint.id) == endpoint_id)
    if not found:
        raise InvalidWebhook(f"no webhook endpoint {endpoint_id} (see `drip webhooks list`)")
    return found[0]


def signing_secrets(found: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a message is signed with at ``now``: the current one, and the previous
    one during a rotation."""
    if found.previous_secret and found.previous_until and found.previous_until > now:
        return [found.secret, found.previous_secret]
    return [found.secret]


# -- emitting --------------------------------------------------------------------------------


class Event(NamedTuple):
    """Something that happened to one subscriber (``subscriber_id``), or to one of their
    enrollments (``enrollment_id``), to be told to the endpoints. Its ``data`` is
    completed when emitted: ``subscriber`` (``id``, ``email``, ``name``, ``timezone``,
    ``status``), and for an enrollment ``course`` (its slug) and ``run``."""

    type: EventType
    data: Mapping[str, Any] = MappingProxyType({})
    subscriber_id: int | None = None
    enrollment_id: int | None = None


def emit(
    connection: Connection,
    event_type: EventType,
    *,
    now: datetime,
    subscriber_id: int | None = None,
    enrollment_id: int | None = None,
    **data: Any,
) -> None:
    """Tell the endpoints that want it about one event, in the caller's transaction."""
    event = Event(event_type, data, subscriber_id=subscriber_id, enrollment_id=enrollment_id)
    emit_many(connection, [event], now=now)


def emit_many(connection: Connection, events: Sequence[Event], *, now: datetime) -> None:
    """``emit`` for many events at once: with no endpoint listening, one small read."""
    if not events:
        return
    listening = _listening(connection.dialect).execute(connection, {}).fetchall()
    if not listening:
        return
    wanted = [e for e in events if any(wants(kinds, e.type) for _, kinds in listening)]
    if not wanted:
        return
    about = _about(connection, wanted)
    stamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    rows = []
    for event in wanted:
        found = about.get(_key(event))
        if found is None:  # erased in this very transaction: nobody to tell about
            continue
        subscriber_id, data = found
        body = json.dumps(
            {"type": event.type.value, "timestamp": stamp, "data": {**data, **event.data}},
            separators=(",", ":"),
            ensure_ascii=False,
            default=_json_default,
        )
        event_id = new_event_id()
        rows += [
            {
                "event_id": event_id,
                "endpoint_id": endpoint_id,
                "subscriber_id": subscriber_id,
                "type": event.type.value,
                "body": body,
                "status": WebhookStatus.SCHEDULED,
                "due_at": now,
                "attempts": 0,
                "created_at": now,
            }
            for endpoint_id, kinds in listening
            if wants(kinds, event.type)
        ]
    if rows:
        connection.execute(insert(WebhookMessage), rows)


#: the endpoints turned on, (id, event types): read for every batch of events, compiled once
_listening = Compiled(
    lambda dialect: Prepared(
        select(col(WebhookEndpoint.id), col(WebhookEndpoint.events)).where(
            col(WebhookEndpoint.disabled_at).is_(None)
        ),
        dialect,
    )
)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


_PERSON = (
    col(Subscriber.id),
    col(Subscriber.uid),
    col(Subscriber.email),
    col(Subscriber.name),
    col(Subscriber.timezone),
    col(Subscriber.status),
)


def _key(event: Event) -> tuple[int | None, int | None]:
    """(subscriber_id, None) for an event about a subscriber, (None, enrollment_id) for
    one about an enrollment."""
    if event.enrollment_id is not None:
        return None, event.enrollment_id
    return event.subscriber_id, None


def _about(
    connection: Connection, events: Sequence[Event]
) -> dict[tuple[int | None, int | None], tuple[int, dict[str, Any]]]:
    """Each event's subscriber row id and data (the subscriber, and course and run),
    keyed by ``_key``."""

    def person(row: Sequence[Any]) -> dict[str, Any]:
        _, uid, email, name, zone, status = row
        return {"id": uid, "email": email, "name": name, "timezone": zone, "status": status}

    found: dict[tuple[int | None, int | None], tuple[int, dict[str, Any]]] = {}
    people = {e.subscriber_id for e in events if e.enrollment_id is None}
    if people:
        rows: Sequence[Any] = connection.execute(
            select(*_PERSON).where(col(Subscriber.id).in_(people))
        ).all()
        for row in rows:
            found[row[0], None] = row[0], {"subscriber": person(row)}
    enrollments = {e.enrollment_id for e in events if e.enrollment_id is not None}
    if enrollments:
        rows = connection.execute(
            select(col(Enrollment.id), col(Enrollment.course_slug), col(Enrollment.run), *_PERSON)
            .join(Subscriber, col(Subscriber.id) == col(Enrollment.subscriber_id))
            .where(col(Enrollment.id).in_(enrollments))
        ).all()
        for row in rows:
            enrollment_id, course, run, *rest = cast(Sequence[Any], row)
            data: dict[str, Any] = {"subscriber": person(rest), "course": course, "run": run}
            found[None, enrollment_id] = int(rest[0]), data
    return found


# -- delivering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A message this worker holds the lease on, with what posting it needs."""

    message_id: int
    event_id: str
    body: str
    attempts: int
    created_at: datetime
    lease: datetime
    endpoint_id: int
    url: str
    secrets: list[str]


def _due(now: datetime) -> Any:
    return or_(
        and_(
            col(WebhookMessage.status) == WebhookStatus.SCHEDULED,
            col(WebhookMessage.due_at) <= now,
        ),
        and_(
            col(WebhookMessage.status) == WebhookStatus.SENDING,
            col(WebhookMessage.claimed_until) <= now,
        ),
    )


def any_due(connection: Connection, *, now: datetime) -> bool:
    """Is a message due at ``now``? A read, so an idle poll takes no write lock."""
    return (
        connection.execute(select(col(WebhookMessage.id)).where(_due(now)).limit(1)).first()
        is not None
    )


def claim(connection: Connection, *, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
    """Take up to ``limit`` messages due at ``now`` (or whose lease ran out), oldest
    first, leased until ``now + lease``. Runs in its own transaction."""
    until = now + lease
    with connection.begin():
        query = (
            select(col(WebhookMessage.id))
            .where(_due(now))
            .order_by(col(WebhookMessage.due_at), col(WebhookMessage.id))
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(connection.execute(query).scalars())
        if not ids:
            return []
        connection.execute(
            update(WebhookMessage)
            .where(col(WebhookMessage.id).in_(ids))
            .values(
                status=WebhookStatus.SENDING,
                claimed_until=until,
                attempts=col(WebhookMessage.attempts) + 1,
            )
        )
        rows: Sequence[Any] = connection.execute(
            select(
                col(WebhookMessage.id),
                col(WebhookMessage.event_id),
                col(WebhookMessage.body),
                col(WebhookMessage.attempts),
                col(WebhookMessage.created_at),
                col(WebhookMessage.endpoint_id),
            )
            .where(col(WebhookMessage.id).in_(ids))
            .order_by(col(WebhookMessage.due_at), col(WebhookMessage.id))
        ).all()
        targets = {
            row.id: row
            for row in _endpoint_rows(
                connection, col(WebhookEndpoint.id).in_({row[5] for row in rows})
            )
        }
    return [
        Claimed(
            message_id=message_id,
            event_id=event_id,
            body=body,
            attempts=attempts,
            created_at=created_at,
            lease=until,
            endpoint_id=endpoint_id,
            url=targets[endpoint_id].url,
            secrets=signing_secrets(targets[endpoint_id], now),
        )
        for message_id, event_id, body, attempts, created_at, endpoint_id in rows
    ]


@dataclass(frozen=True)
class Attempt:
    """What became of one POST: the HTTP status (None without an answer) and, when it
    was not a 2xx, why."""

    claimed: Claimed
    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def settle(connection: Connection, attempts: Sequence[Attempt], *, now: datetime) -> dict[str, int]:
    """Record each attempt, in the caller's transaction, only where this worker still
    holds the row's lease: delivered; or due again with backoff; or, three days after the
    event, given up. An endpoint whose failures have lasted three days is turned off.
    Returns how many were delivered, retried and given up."""
    counts = {"delivered": 0, "retried": 0, "given_up": 0}
    for attempt in attempts:
        item = attempt.claimed
        mine = and_(
            col(WebhookMessage.id) == item.message_id,
            col(WebhookMessage.status) == WebhookStatus.SENDING,
            col(WebhookMessage.claimed_until) == item.lease,
        )
        base: dict[str, Any] = {"last_status": attempt.status, "claimed_until": None}
        if attempt.delivered:
            values = {**base, "status": WebhookStatus.DELIVERED, "delivered_at": now}
            outcome = "delivered"
        elif now - item.created_at >= GIVE_UP_AFTER:
            values = {**base, "status": WebhookStatus.FAILED, "failed_at": now}
            values["last_error"] = attempt.error
            outcome = "given_up"
        else:
            due = schedule.retry_at(now=now, attempts=item.attempts)
            values = {**base, "status": WebhookStatus.SCHEDULED, "due_at": due}
            values["last_error"] = attempt.error
            outcome = "retried"
        if connection.execute(update(WebhookMessage).where(mine).values(**values)).rowcount:
            counts[outcome] += 1
            _endpoint_health(connection, item.endpoint_id, ok=attempt.delivered, now=now)
    return counts


def _endpoint_health(connection: Connection, endpoint_id: int, *, ok: bool, now: datetime) -> None:
    """A success clears an endpoint's failing streak; a failure starts one, and one
    lasting ``GIVE_UP_AFTER`` turns the endpoint off, its waiting messages given up."""
    where = col(WebhookEndpoint.id) == endpoint_id
    if ok:
        connection.execute(
            update(WebhookEndpoint).where(where).values(failing_since=None, last_success_at=now)
        )
        return
    connection.execute(
        update(WebhookEndpoint)
        .where(where, col(WebhookEndpoint.failing_since).is_(None))
        .values(failing_since=now)
    )
    since = connection.execute(
        select(col(WebhookEndpoint.failing_since)).where(
            where, col(WebhookEndpoint.disabled_at).is_(None)
        )
    ).scalar()
    if since is None or now - since < GIVE_UP_AFTER:
        return
    reason = f"failing since {since:%Y-%m-%d %H:%M} UTC"
    connection.execute(
        update(WebhookEndpoint).where(where).values(disabled_at=now, disabled_reason=reason)
    )
    connection.execute(
        update(WebhookMessage)
        .where(
            col(WebhookMessage.endpoint_id) == endpoint_id,
            col(WebhookMessage.status).in_([WebhookStatus.SCHEDULED, WebhookStatus.SENDING]),
        )
        .values(
            status=WebhookStatus.FAILED,
            failed_at=now,
            claimed_until=None,
            last_error=f"the endpoint was turned off: {reason}",
        )
    )


def release(connection: Connection, claimed: Sequence[Claimed]) -> None:
    """Give back claims not attempted (a stop): due again at once, the attempt uncounted."""
    for item in claimed:
        connection.execute(
            update(WebhookMessage)
            .where(
                col(WebhookMessage.id) == item.message_id,
                col(WebhookMessage.claimed_until) == item.lease,
                col(WebhookMessage.status) == WebhookStatus.SENDING,
            )
            .values(
                status=WebhookStatus.SCHEDULED,
                claimed_until=None,
                attempts=col(WebhookMessage.attempts) - 1,
            )
        )
