"""Signed, purpose-bound tokens for confirmation, unsubscribe and class links (itsdangerous).

Each purpose has its own salt, so an unsubscribe token can never confirm and vice versa.
Return addresses, "view in browser" links and the subscriber's own page carry a bare HMAC
tag instead (shorter, and cheap to make for every lesson). Tokens carry a random ``uid``
(a signup's for confirmation links, an enrollment's for the others, with the lesson's day
id for class and "view in browser" links), never a row id or an email address.
Confirmation tokens expire; the others do not, because links in old mail must keep
working. ``DRIP_SECRET_KEY`` may list several keys: the first signs, all verify.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    Signer,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode

from drip.core.exceptions import ExpiredToken, InvalidToken

if TYPE_CHECKING:
    from drip.core.config import Settings

#: hex digits of a return address's tag (80 bits)
TAG_LENGTH = 20


class Purpose(StrEnum):
    CONFIRM = "drip.confirm"  #: double opt-in link; expires
    UNSUBSCRIBE = "drip.unsubscribe"  #: List-Unsubscribe and footer links; never expires
    CLICK = "drip.click"  #: a lesson's class link, through drip; never expires
    LESSON = "drip.lesson"  #: a lesson's "view in browser" page; never expires
    ME = "drip.me"  #: the subscriber's own page (pause, restart, hour); never expires
    BOUNCE = "drip.bounce"  #: the envelope sender's tag: a bounce names its enrollment
    MAILTO_UNSUBSCRIBE = "drip.mailto-unsubscribe"  #: List-Unsubscribe's mailto address


class Tokens:
    def __init__(self, secret_keys: list[str], *, confirm_max_age_seconds: int) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        keys = list(reversed(secret_keys))  # itsdangerous signs with the *last* key
        self._confirm = URLSafeTimedSerializer(keys, salt=Purpose.CONFIRM)
        self._unsubscribe = _SigningSerializer(keys, salt=Purpose.UNSUBSCRIBE)
        self._click = _SigningSerializer(keys, salt=Purpose.CLICK)
        self._keys = [key.encode() for key in secret_keys]
        self._max_age = confirm_max_age_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        return cls(
            settings.secret_keys(),
            confirm_max_age_seconds=settings.confirm_max_age_days * 86400,
        )

    def confirm_token(self, uid: str) -> str:
        return self._confirm.dumps(uid)

    def unsubscribe_token(self, uid: str) -> str:
        return self._unsubscribe.dumps(uid)

    def click_token(self, uid: str, course_slug: str, day_id: str) -> str:
        return self._click.dumps([uid, course_slug, day_id])

    def read_click(self, token: str) -> tuple[str, str, str]:
        """(enrollment uid, course slug, day id) from a class link's token."""
        try:
            payload = self._click.loads(token)
        except BadSignature:
            raise InvalidToken("this link is not valid") from None
        if not (isinstance(payload, list) and len(payload) == 3):
            raise InvalidToken("this link is not valid")
        uid, slug, day_id = payload
        if not (isinstance(slug, str) and isinstance(day_id, str)):
            raise InvalidToken("this link is not valid")
        return _uid(uid), slug, day_id

    def lesson_token(self, uid: str, day_id: str) -> str:
        """``UID.DAY.TAG``: a bare HMAC (128 bits) binding the enrollment to one day."""
        return f"{uid}.{day_id}.{_tag(self._keys[0], Purpose.LESSON, f'{uid}:{day_id}', 32)}"

    def read_lesson(self, token: str) -> tuple[str, str]:
        """(enrollment uid, day id) from a "view in browser" token."""
        match = re.fullmatch(
            r"([0-9a-zA-Z]{1,32})\.([a-z0-9][a-z0-9_-]{0,99})\.([0-9a-f]{32})", token
        )
        if match is not None:
            uid, day_id, tag = match.groups()
            for key in self._keys:
                if hmac.compare_digest(_tag(key, Purpose.LESSON, f"{uid}:{day_id}", 32), tag):
                    return uid, day_id
        raise InvalidToken("this link is not valid")

    def me_token(self, uid: str) -> str:
        """``UID.TAG``: a bare HMAC (128 bits) naming the enrollment whose page it opens."""
        return f"{uid}.{_tag(self._keys[0], Purpose.ME, uid, 32)}"

    def read_me(self, token: str) -> str:
        """The enrollment uid of a subscriber's own page's token."""
        match = re.fullmatch(r"([0-9a-zA-Z]{1,32})\.([0-9a-f]{32})", token)
        if match is not None:
            uid, tag = match.groups()
            for key in self._keys:
                if hmac.compare_digest(_tag(key, Purpose.ME, uid, 32), tag):
                    return uid
        raise InvalidToken("this link is not valid")

    def return_address(self, bounce_address: str, purpose: Purpose, uid: str) -> str:
        """``local+b-UID-TAG@domain`` (envelope sender: bounces come back to it) or
        ``local+u-UID-TAG@domain`` (List-Unsubscribe's mailto), TAG binding the uid to the
        purpose: lowercase hex, as mail servers may change a local part's case."""
        local, _, domain = bounce_address.partition("@")
        tag = _tag(self._keys[0], purpose, uid)
        return f"{local}+{_ADDRESS_PREFIX[purpose]}-{uid}-{tag}@{domain}"

    def read_return_address(self, address: str, bounce_address: str) -> tuple[Purpose, str] | None:
        """(purpose, uid) of a return address of ``bounce_address`` with a valid tag, else
        None; case is ignored."""
        local, _, domain = bounce_address.partition("@")
        match = re.fullmatch(
            rf"{re.escape(local)}\+([bu])-([0-9a-f]{{1,32}})-([0-9a-f]{{{TAG_LENGTH}}})"
            rf"@{re.escape(domain)}",
            address.strip().strip("<>").lower(),
        )
        if match is None:
            return None
        prefix, uid, tag = match.groups()
        purpose = next(p for p, letter in _ADDRESS_PREFIX.items() if letter == prefix)
        valid = any(hmac.compare_digest(_tag(key, purpose, uid), tag) for key in self._keys)
        return (purpose, uid) if valid else None

    def read_confirm(self, token: str) -> tuple[str, datetime]:
        """(signup uid, time issued) from a confirmation token."""
        try:
            uid, issued = self._confirm.loads(token, max_age=self._max_age, return_timestamp=True)
        except SignatureExpired:
            # The signature is good, only old: keep the uid so the page can offer a resend.
            _, uid = self._confirm.loads_unsafe(token)
            raise ExpiredToken(
                "for your security, confirmation links only work for a few days",
                payload=_uid(uid),
            ) from None
        except BadSignature:
            raise InvalidToken("this link is not valid") from None
        return _uid(uid), issued  # itsdangerous gives it in UTC

    def read_confirm_any_age(self, token: str) -> str:
        """The uid of a well-signed confirmation token, however old (to offer a new one)."""
        try:
            return self.read_confirm(token)[0]
        except ExpiredToken as expired:
            return str(expired.payload)

    def read_unsubscribe(self, token: str) -> str:
        try:
            return _uid(self._unsubscribe.loads(token))
        except BadSignature:
            raise InvalidToken("this link is not valid") from None


class _KeyedSigner(Signer):
    """itsdangerous' ``Signer``, deriving its signing key once rather than per signature."""

    @functools.cached_property
    def _signing_key(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._signing_key if secret_key is None else super().derive_key(secret_key)


class _SigningSerializer(URLSafeSerializer):
    """``URLSafeSerializer`` that signs with one ``_KeyedSigner`` made once: the same
    tokens, made for every lesson without a new signer and key derivation each, and
    without trying to compress payloads of a few dozen bytes (zlib never makes them
    shorter; ``loads`` reads compressed tokens all the same)."""

    default_signer = _KeyedSigner

    def dump_payload(self, obj: object) -> bytes:
        return base64_encode(self.serializer.dumps(obj, **self.serializer_kwargs).encode())

    @functools.cached_property
    def _signer(self) -> Signer:
        return super().make_signer()

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        return self._signer if salt is None else super().make_signer(salt)


_ADDRESS_PREFIX = {Purpose.BOUNCE: "b", Purpose.MAILTO_UNSUBSCRIBE: "u"}


def _tag(key: bytes, purpose: Purpose, uid: str, length: int = TAG_LENGTH) -> str:
    return hmac.new(key, f"{purpose}:{uid}".encode(), hashlib.sha256).hexdigest()[:length]


def _uid(value: object) -> str:
    if not isinstance(value, str) or not value.isalnum() or len(value) > 32:
        raise InvalidToken("this link is not valid")
    return value
