"""API keys for ``/api/v1``: ``drip_`` + 32 random bytes, shown once; only the SHA-256
of a key is kept (a key is as random as a hash's input needs to be, so no slow hash is
needed), looked up by that hash."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update
from sqlmodel import col

from drip.core.exceptions import InvalidApiKey
from drip.core.models import ApiKey

PREFIX = "drip_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")
#: how often a key's "last used" is written at most (a busy key writes once a minute)
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    """Who a request's key says it is."""

    key_id: int
    name: str
    read_only: bool


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(connection: Connection, *, name: str, read_only: bool, now: datetime) -> str:
    """A new key named ``name``; the key itself, which is not kept."""
    name = name.strip()
    if not NAME.fullmatch(name):
        raise InvalidApiKey(
            f"{name!r}: a key's name is 1 to 100 letters, digits, spaces, '.', '_' or '-'"
        )
    if connection.execute(select(col(ApiKey.id)).where(col(ApiKey.name) == name)).first():
        raise InvalidApiKey(f"there is already a key named {name!r}")
    key = PREFIX + secrets.token_urlsafe(32)
    connection.execute(
        insert(ApiKey).values(name=name, key_hash=_digest(key), read_only=read_only, created_at=now)
    )
    return key


def listed(connection: Connection) -> list[ApiKey]:
    rows = connection.execute(select(ApiKey).order_by(col(ApiKey.name))).all()
    return [ApiKey.model_validate(row._mapping) for row in rows]


def revoke(connection: Connection, *, name: str) -> None:
    """Delete the key named ``name``: requests with it are refused from now on."""
    if not connection.execute(delete(ApiKey).where(col(ApiKey.name) == name)).rowcount:
        raise InvalidApiKey(f"no key named {name!r} (see `drip api-keys list`)")


def find(connection: Connection, key: str) -> tuple[Caller, datetime | None] | None:
    """The caller ``key`` belongs to and when the key was last used, or None (a read)."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    row = connection.execute(
        select(
            col(ApiKey.id), col(ApiKey.name), col(ApiKey.read_only), col(ApiKey.last_used_at)
        ).where(col(ApiKey.key_hash) == _digest(key))
    ).one_or_none()
    if row is None:
        return None
    key_id, name, read_only, last_used = row
    assert key_id is not None
    return Caller(key_id, name, bool(read_only)), last_used


def stale(last_used: datetime | None, now: datetime) -> bool:
    """Is the key's "last used" worth writing again (at most every ``LAST_USED_EVERY``)?"""
    return last_used is None or now - last_used >= LAST_USED_EVERY


def touch(connection: Connection, *, key_id: int, now: datetime) -> None:
    connection.execute(update(ApiKey).where(col(ApiKey.id) == key_id).values(last_used_at=now))
