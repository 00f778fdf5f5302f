"""The signing key must stay the one links in sent emails were signed with.

Every unsubscribe link already in someone's inbox was signed with ``DRIP_SECRET_KEY``
(or the generated ``drip-secret.key``). If that key is lost and a new one made, every
such link stops working. So the database remembers a fingerprint of the key in use (an
HMAC of a fixed text, which reveals nothing of the key), and processes that sign or check
links refuse to start with a key whose fingerprint differs, unless the old key is still
in the rotation list (``DRIP_SECRET_KEY=new,old``) or the operator accepts the break
with ``--new-key``.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import Engine

from drip.core.exceptions import ConfigError
from drip.store import installation

FINGERPRINT = "key_fingerprint"


def fingerprint(key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"drip.key-fingerprint", hashlib.sha256).hexdigest()[:16]


def check_key(engine: Engine, keys: list[str], *, accept_new: bool = False) -> None:
    """Refuse keys that cannot verify the links already sent; remember the signing key."""
    current = fingerprint(keys[0])
    with engine.begin() as connection:
        stored = installation.read(connection, FINGERPRINT)
        if stored is not None and not accept_new and stored not in map(fingerprint, keys):
            raise ConfigError(
                f"the signing key changed (fingerprint {current}, this database's links were "
                f"signed with {stored}): every link in emails already sent would stop "
                "working. Restore the old key (drip-secret.key or DRIP_SECRET_KEY), keep it "
                "second in DRIP_SECRET_KEY=new,old to rotate, or pass --new-key to accept "
                "that old links break"
            )
        if stored != current:
            installation.write(connection, FINGERPRINT, current)
