"""Signed link tokens: purpose-bound, uid-shaped, expiring (confirmation) or not."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from drip.exceptions import ExpiredToken, InvalidToken
from drip.tokens import Purpose, Tokens

KEY = "a-test-key-of-enough-length-0123456789"
OLD_KEY = "an-older-key-still-verifying-0123456789"


def tokens(*keys: str) -> Tokens:
    return Tokens(list(keys or [KEY]), confirm_max_age_seconds=3600)


def test_a_confirmation_token_gives_back_its_uid_and_when_it_was_issued() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    uid, issued = tokens().read_confirm(tokens().confirm_token("a" * 32))
    assert uid == "a" * 32
    assert issued.tzinfo is not None and before <= issued <= datetime.now(UTC)


@pytest.mark.parametrize("uid", ["a" * 33, "abc-def", "", "../x"])
def test_only_uid_shaped_payloads_are_accepted(uid: str) -> None:
    """A token must carry 1–32 letters and digits, even when correctly signed."""
    signed = tokens()
    for token, read in (
        (signed.confirm_token(uid), signed.read_confirm),
        (signed.unsubscribe_token(uid), signed.read_unsubscribe),
    ):
        with pytest.raises(InvalidToken, match="^this link is not valid$"):
            read(token)


def test_a_payload_that_is_not_a_string_is_refused() -> None:
    forged = URLSafeSerializer([KEY], salt=Purpose.UNSUBSCRIBE).dumps(12345)
    with pytest.raises(InvalidToken):
        tokens().read_unsubscribe(forged)


def test_each_purpose_has_its_own_signature() -> None:
    signed = tokens()
    with pytest.raises(InvalidToken, match="^this link is not valid$"):
        signed.read_unsubscribe(signed.confirm_token("abc"))
    with pytest.raises(InvalidToken, match="^this link is not valid$"):
        signed.read_confirm(signed.unsubscribe_token("abc"))
    for other in (signed.unsubscribe_token("abc"), signed.confirm_token("abc")):
        with pytest.raises(InvalidToken, match="^this link is not valid$"):
            signed.read_click(other)
    with pytest.raises(InvalidToken, match="^this link is not valid$"):
        signed.read_unsubscribe(signed.click_token("abc", "yin", "spine"))


def test_a_class_link_token_names_its_lesson() -> None:
    signed = tokens()
    assert signed.read_click(signed.click_token("abc123", "yin", "spine")) == (
        "abc123",
        "yin",
        "spine",
    )


@pytest.mark.parametrize(
    "payload",
    [
        ["abc", "yin"],
        ["abc", "yin", "spine", "x"],
        ["abc", 1, "spine"],
        ["abc", "yin", None],
        ["a-b", "yin", "spine"],
        "abc",
        {"uid": "abc"},
    ],
)
def test_a_class_link_token_of_another_shape_is_refused(payload: object) -> None:
    """Even correctly signed, a class token must be [uid, course, day], each a string."""
    forged = URLSafeSerializer([KEY], salt=Purpose.CLICK).dumps(payload)
    with pytest.raises(InvalidToken, match="^this link is not valid$"):
        tokens().read_click(forged)


def test_an_old_confirmation_is_expired_but_still_names_its_signup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its age the link is refused as expired, yet its uid is known (to resend)."""
    two_hours_ago = time.time() - 7200
    with monkeypatch.context() as patch:
        patch.setattr("itsdangerous.timed.time.time", lambda: two_hours_ago)
        token = URLSafeTimedSerializer([KEY], salt=Purpose.CONFIRM).dumps("abc123")
    with pytest.raises(ExpiredToken, match="^for your security, confirmation links only"):
        tokens().read_confirm(token)
    assert tokens().read_confirm_any_age(token) == "abc123"
    assert tokens().read_confirm_any_age(tokens().confirm_token("fresh1")) == "fresh1"


def test_rotated_keys_verify_old_tokens_and_sign_with_the_first() -> None:
    old = tokens(OLD_KEY)
    rotated = tokens(KEY, OLD_KEY)
    assert rotated.read_unsubscribe(old.unsubscribe_token("u1")) == "u1"
    assert rotated.read_confirm(old.confirm_token("c1"))[0] == "c1"
    assert tokens(KEY).read_unsubscribe(rotated.unsubscribe_token("u2")) == "u2"
    with pytest.raises(InvalidToken):
        tokens(KEY).read_unsubscribe(old.unsubscribe_token("u3"))
