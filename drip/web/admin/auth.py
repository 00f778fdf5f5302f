"""Who may use the dashboard: its session cookie, CSRF tokens and the login rate limit.

A session is a cookie signed with the installation's keys (itsdangerous, its own salt,
12 hours), bound to the password hash in force: a new password ends every session, and
signing out ends that one on the server too (its nonce is kept as signed out).
Every POST under /admin carries a ``csrf`` field, an HMAC of the session's random nonce
(on the login form, of a pre-session cookie's), compared in constant time. The cookies
are HttpOnly, SameSite=Strict, limited to /admin, and Secure when drip is served over
HTTPS (``DRIP_BASE_URL``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from drip.web.ratelimit import RateLimiter

#: the session cookie
SESSION_COOKIE = "drip_admin"
#: the login form's pre-session cookie (its nonce keys the form's CSRF token)
LOGIN_COOKIE = "drip_admin_login"
PATH = "/admin"
SESSION_SECONDS = 12 * 3600
#: login attempts per client IP per minute, right or wrong (concurrent guesses included)
LOGIN_TRIES = 5


@dataclass(frozen=True)
class Admin:
    """A signed-in session: its nonce, and the CSRF token its forms carry."""

    nonce: str
    csrf: str


class Gate:
    """Signs and reads the dashboard's cookies with the installation's keys (the first
    signs, all verify)."""

    def __init__(self, secret_keys: list[str], *, secure: bool) -> None:
        # itsdangerous signs with the *last* key
        self._sessions = URLSafeTimedSerializer(
            list(reversed(secret_keys)), salt="drip.admin-session"
        )
        self._key = secret_keys[0].encode()
        self.secure = secure
        self.login_tries = RateLimiter(limit=LOGIN_TRIES)

    def csrf_token(self, purpose: str, nonce: str) -> str:
        message = f"drip.admin-csrf:{purpose}:{nonce}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def csrf_ok(self, purpose: str, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.csrf_token(purpose, nonce), token)

    def new_session(self, password_hash: str) -> str:
        """A session cookie's value for the password ``password_hash`` is the hash of."""
        return self._sessions.dumps(
            {"nonce": secrets.token_urlsafe(16), "password": _fingerprint(password_hash)}
        )

    def read_session(
        self, cookie: str | None, password_hash: str, signed_out: Collection[str] = ()
    ) -> Admin | None:
        """The session ``cookie`` holds, if it is well signed, younger than 12 hours, made
        under the password in force and not signed out; else None."""
        if not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:  # SignatureExpired included
            return None
        if not isinstance(data, dict) or not isinstance(data.get("nonce"), str):
            return None
        if not hmac.compare_digest(str(data.get("password")), _fingerprint(password_hash)):
            return None
        if data["nonce"] in signed_out:
            return None
        return Admin(nonce=data["nonce"], csrf=self.csrf_token("session", data["nonce"]))

    def set_cookie(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            max_age=SESSION_SECONDS,
            path=PATH,
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def delete_cookie(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name, path=PATH, secure=self.secure, httponly=True, samesite="strict"
        )


def _fingerprint(password_hash: str) -> str:
    """A short digest of the password hash: enough to tell one password from the next."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def new_nonce() -> str:
    return secrets.token_urlsafe(16)
