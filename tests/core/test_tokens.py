"""Signed link tokens: purpose-bound, uid-shaped, expiring (confirmation) or not."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from drip.core.exceptions import ExpiredToken, InvalidToken
from drip.core.tokens import Purpose, Tokens

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


def test_a_lesson_page_token_names_its_lesson_and_nothing_else() -> None:
    """``UID.DAY.TAG``: any uid shape the other tokens take (letters of either case,
    digits), read back as it was; another day, uid, key or shape is not valid."""
    signed = tokens()
    token = signed.lesson_token("AbC123", "day-2")
    assert signed.read_lesson(token) == ("AbC123", "day-2")
    uid, day, tag = token.split(".")
    for forged in (
        f"{uid}.day-3.{tag}",
        f"abc123.{day}.{tag}",
        tokens("another-key-of-enough-length-0123456789").lesson_token("AbC123", "day-2"),
        f"{uid}.{day}.{tag.upper()}",
        f"{uid}.{day}",
        f"{token}.x",
        f"../{token}",
    ):
        with pytest.raises(InvalidToken, match="^this link is not valid$"):
            signed.read_lesson(forged)


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


def test_tokens_signed_without_drips_purpose_are_refused() -> None:
    """Signed with the right key but no purpose (itsdangerous's default salt): refused."""
    bare = URLSafeSerializer([KEY])
    with pytest.raises(InvalidToken):
        tokens().read_unsubscribe(bare.dumps("abc123"))
    with pytest.raises(InvalidToken):
        tokens().read_click(bare.dumps(["abc123", "yin", "spine"]))


def test_no_key_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="^at least one secret key is needed$"):
        Tokens([], confirm_max_age_seconds=60)


def test_confirmation_links_last_the_configured_days(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DRIP_CONFIRM_MAX_AGE_DAYS=1: a link a day old works, a second older does not."""
    from tests.fixtures import make_settings

    signed = Tokens.from_settings(make_settings(tmp_path, confirm_max_age_days=1))
    now = float(int(time.time()))
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: now)  # read at a fixed time
    for age, works in ((86400, True), (86401, False)):
        with monkeypatch.context() as patch:
            patch.setattr("itsdangerous.timed.time.time", lambda age=age: now - age)
            token = signed.confirm_token("abc123")
        if works:
            assert signed.read_confirm(token)[0] == "abc123"
        else:
            with pytest.raises(ExpiredToken):
                signed.read_confirm(token)


def test_a_return_address_tag_binds_its_uid_and_purpose() -> None:
    """A tag made for one enrollment or purpose does not pass for another; angle
    brackets and case around the address do not matter."""
    signed = tokens()
    bounces = "bounces@mail.example.com"
    address = signed.return_address(bounces, Purpose.BOUNCE, "abc123")
    assert signed.read_return_address(f"<{address.upper()}>", bounces) == (
        Purpose.BOUNCE,
        "abc123",
    )
    tag = address.split("-")[-1].split("@")[0]
    other_uid = f"bounces+b-abc124-{tag}@mail.example.com"
    other_purpose = f"bounces+u-abc123-{tag}@mail.example.com"
    assert signed.read_return_address(other_uid, bounces) is None
    assert signed.read_return_address(other_purpose, bounces) is None


def test_a_token_made_with_itsdangerous_defaults_is_nobodys() -> None:
    """Another program sharing the key and signing with itsdangerous' default salt mints
    no unsubscribe or class link: each purpose has its own salt."""
    key = "shared-secret-key-0123456789"
    tokens = Tokens([key], confirm_max_age_seconds=60)
    foreign = URLSafeSerializer(key)
    with pytest.raises(InvalidToken):
        tokens.read_unsubscribe(foreign.dumps("a1b2c3"))
    with pytest.raises(InvalidToken):
        tokens.read_click(foreign.dumps(["a1b2c3", "yin-immersion", "hips"]))


def test_unsubscribe_and_class_tokens_are_itsdangerous_own() -> None:
    """Made faster, still byte for byte what itsdangerous makes: links in mail already
    sent keep working, and one signed by itsdangerous itself is read."""
    keys = [KEY, OLD_KEY]
    made = tokens(*keys)
    for _ in range(2):  # the second time through, with the signer made the first time
        unsubscribe = URLSafeSerializer(list(reversed(keys)), salt=Purpose.UNSUBSCRIBE)
        assert made.unsubscribe_token("u1") == unsubscribe.dumps("u1")
        click = URLSafeSerializer(list(reversed(keys)), salt=Purpose.CLICK)
        assert made.click_token("u1", "yin", "day-1") == click.dumps(["u1", "yin", "day-1"])
    assert made.read_unsubscribe(URLSafeSerializer([KEY], salt=Purpose.UNSUBSCRIBE).dumps("u2"))
    old = URLSafeSerializer([OLD_KEY], salt=Purpose.CLICK).dumps(["u3", "yin", "day-2"])
    assert made.read_click(old) == ("u3", "yin", "day-2")
    # a payload zlib can shorten: itsdangerous compresses it, drip does not (a few dozen
    # bytes at most in practice); each reads the other's
    repetitive = ["u4", "yin", "d" * 90]
    stock = URLSafeSerializer([KEY], salt=Purpose.CLICK).dumps(repetitive)
    assert stock.startswith(".") and not made.click_token(*repetitive).startswith(".")
    assert (
        made.read_click(stock)
        == made.read_click(made.click_token(*repetitive))
        == (
            "u4",
            "yin",
            "d" * 90,
        )
    )
    assert URLSafeSerializer([KEY], salt=Purpose.CLICK).loads(made.click_token(*repetitive))


def test_uids_are_time_ordered_distinct_and_fit_every_link() -> None:
    """A batch's uids share their time and sort after an earlier batch's (index pages
    written together); each is 24 lowercase hex digits, the shape return addresses and
    links read back, and no two are alike."""
    import re

    from drip.core.models import new_uid, new_uids

    earlier = new_uid()
    time.sleep(0.002)
    batch = new_uids(1000)
    assert len(set(batch)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{24}", uid) for uid in [earlier, *batch])
    assert len({uid[:10] for uid in batch}) == 1
    assert earlier[:10] < batch[0][:10]
    assert len({uid[10:] for uid in batch}) == 1000
    assert tokens().read_me(tokens().me_token(batch[0])) == batch[0]
