"""The dashboard's password: an argon2 hash, stored in the ``Setting`` table by
``drip admin set-password`` or given as ``DRIP_ADMIN_PASSWORD_HASH`` (which wins).
Without either, the dashboard does not exist. Sessions signed out before they expire are
kept here too, so a copy of a signed-out session's cookie opens nothing, whichever web
process it reaches."""

from __future__ import annotations

import json
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection

from drip.core.config import Settings
from drip.core.exceptions import InvalidPassword
from drip.store import installation

#: the ``Setting`` row holding the hash
SETTING = "admin_password_hash"
#: the ``Setting`` row holding the sessions signed out: {nonce: Unix time it expires}
SIGNED_OUT = "admin_signed_out"
MIN_LENGTH = 12

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2 hash of ``password``; ``InvalidPassword`` when it is too short."""
    if len(password) < MIN_LENGTH:
        raise InvalidPassword(
            f"the password must be at least {MIN_LENGTH} characters (got {len(password)})"
        )
    return _hasher.hash(password)


def verify(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (slow on purpose: run it in a thread)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def current_hash(settings: Settings, connection: Connection) -> str | None:
    """The hash in force: ``DRIP_ADMIN_PASSWORD_HASH``, else the stored one, else None."""
    if settings.admin_password_hash is not None:
        return settings.admin_password_hash.get_secret_value()
    return installation.read(connection, SETTING)


def store(connection: Connection, password_hash: str) -> None:
    installation.write(connection, SETTING, password_hash)


def forget(connection: Connection) -> bool:
    """Remove the stored hash (the dashboard is off again); True if one was stored."""
    return installation.forget(connection, SETTING)


def signed_out(connection: Connection, *, now: datetime) -> set[str]:
    """The nonces of sessions signed out that would still be valid at ``now``."""
    return {nonce for nonce, until in _signed_out(connection).items() if until > now.timestamp()}


def sign_out(connection: Connection, *, nonce: str, until: datetime, now: datetime) -> None:
    """Refuse the session ``nonce`` from now on (until it would have expired anyway);
    sessions whose time is up are forgotten."""
    kept = {n: t for n, t in _signed_out(connection, lock=True).items() if t > now.timestamp()}
    kept[nonce] = until.timestamp()
    installation.write(connection, SIGNED_OUT, json.dumps(kept))


def _signed_out(connection: Connection, *, lock: bool = False) -> dict[str, float]:
    stored = installation.read(connection, SIGNED_OUT, lock=lock)
    return dict(json.loads(stored)) if stored else {}
