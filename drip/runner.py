"""The send run, assembled: the engine (``drip.sending``) with the lifecycle's chores and
the bounce policy (``drip.feedback``) plugged in. ``send-due``, ``drip run`` and the web
process's prompt sender all make their sender here, so every run does the same.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine

from drip.core.config import BouncePolicy, Settings
from drip.core.courses import Catalog
from drip.core.states import MailEventKind
from drip.lifecycle import chores
from drip.outbox.deliveries import Claimed
from drip.sending.engine import Chore, Sender
from drip.store import tallies


def make_sender(
    *,
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    transactional_only: bool = False,
    **options: Any,
) -> Sender:
    """A ``Sender`` that first processes recorded signups, (unless ``transactional_only``:
    the web process's prompt sender) restarts evergreen courses, folds the tallies
    (PostgreSQL), and suppresses a recipient the mail server refuses for good. ``options`` go to
    ``Sender`` as they are (a composer, a mailer factory, a throttle, a clock)."""
    work: list[Chore] = [
        partial(
            chores.process_signups,
            engine,
            catalog=catalog,
            resend_gap_seconds=settings.confirm_resend_seconds,
        )
    ]
    if not transactional_only:
        work.append(partial(chores.restart_evergreen, engine, catalog=catalog))
    if engine.dialect.name == "postgresql":
        work.append(partial(_fold_tallies, engine))
    return Sender(
        engine=engine,
        settings=settings,
        catalog=catalog,
        refused=partial(_refused, policy=settings.bounce_policy),
        chores=work,
        transactional_only=transactional_only,
        **options,
    )


def _fold_tallies(engine: Engine, *, now: datetime, stopping: object) -> None:
    """PostgreSQL: fold the tallies' appended changes (``drip.store.tallies``)."""
    with engine.begin() as connection:
        tallies.fold(connection)


def _refused(
    connection: Connection, item: Claimed, reply: str, now: datetime, *, policy: BouncePolicy
) -> None:
    """A hard bounce at the SMTP conversation: recorded, and the address suppressed."""
    from drip.feedback import bounces  # (only here: a run with no bounce never loads it)

    bounces.record(
        connection,
        subscriber_id=item.subscriber_id,
        delivery_id=item.delivery_id,
        kind=MailEventKind.HARD,
        source="smtp",
        diagnostic=reply,
        now=now,
        policy=policy,
    )
