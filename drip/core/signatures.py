"""HMAC signatures on webhook bodies, compared in constant time.

drip's own scheme (``X-Drip-Signature: t=UNIX_SECONDS,sha256=HEX``, the HMAC-SHA256 of
``"UNIX_SECONDS." + body``) carries its time, and is refused more than five minutes away
from now (as Stripe's and Slack's are), so a captured request cannot be replayed later.
Signup forms and the generic bounce webhook accept it; each form service or email
provider's own scheme lives in its module.
"""

from __future__ import annotations

import hashlib
import hmac
import re

#: how far a signed timestamp may be from now
SIGNATURE_TOLERANCE_SECONDS = 300
#: the header of drip's own scheme (lower case, as the web tier hands headers over)
DRIP_SIGNATURE = "x-drip-signature"


def hmac_sha256(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha256).digest()


def same(given: str, expected: str) -> bool:
    """``given == expected`` in constant time (for any text, not only ASCII)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_timestamp(value: str) -> bool:
    """Unix seconds as ASCII digits (``str.isdigit`` also takes "²" and 5,000 digits)."""
    return re.fullmatch(r"[0-9]{1,12}", value) is not None


def is_fresh(stamp: str, now: float) -> bool:
    """``stamp`` is Unix seconds within ``SIGNATURE_TOLERANCE_SECONDS`` of ``now``."""
    return is_timestamp(stamp) and abs(now - int(stamp)) <= SIGNATURE_TOLERANCE_SECONDS


def drip_signature(body: bytes, secret: str, *, now: float) -> str:
    """The ``X-Drip-Signature`` value for ``body`` (for your own clients, and tests)."""
    stamp = str(int(now))
    return f"t={stamp},sha256={hmac_sha256(secret, stamp.encode() + b'.' + body).hex()}"


def verify_drip_signature(header: str, body: bytes, secret: str, *, now: float) -> bool:
    """An ``X-Drip-Signature`` value that signs ``body`` with ``secret``, made within five
    minutes of ``now``."""
    parts = dict(part.strip().partition("=")[::2] for part in header.split(","))
    stamp, given = parts.get("t", ""), parts.get("sha256", "")
    if not is_fresh(stamp, now):
        return False
    return same(given, hmac_sha256(secret, stamp.encode() + b"." + body).hex())
