"""Values the installation keeps about itself, in the ``Setting`` table: the signing key's
fingerprint (``drip.store.keys``), the dashboard's password hash (``drip.store.passwords``)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select
from sqlmodel import col

from drip.core.models import Setting
from drip.store.statements import insert_for


def read(connection: Connection, name: str, *, lock: bool = False) -> str | None:
    """The value of ``name``; with ``lock``, held until the transaction ends (PostgreSQL;
    SQLite has one writer), for a read-modify-write."""
    query = select(col(Setting.value)).where(col(Setting.name) == name)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).scalar_one_or_none()


def write(connection: Connection, name: str, value: str) -> None:
    """Set ``name`` to ``value``, whether or not it was set before."""
    connection.execute(
        insert_for(connection.dialect)(Setting)
        .values(name=name, value=value)
        .on_conflict_do_update(index_elements=["name"], set_={"value": value})
    )


def forget(connection: Connection, name: str) -> bool:
    """Unset ``name``; True if it was set."""
    return connection.execute(delete(Setting).where(col(Setting.name) == name)).rowcount > 0
