"""Addresses: the quick check of plain addresses decides as email_validator does."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drip.core.entries import _PLAIN, normalize_email, validated
from drip.core.exceptions import InvalidSubscriber

#: the characters addresses are made of, and some that break them
ALPHABET = "aZz09.-_+@'!#=`{}|~x\u212a\u0131\u00e9 "


def _outcome(check: object, raw: str) -> str:
    try:
        return check(raw)  # type: ignore[operator, no-any-return]
    except InvalidSubscriber:
        return "refused"


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.from_regex(_PLAIN, fullmatch=True),
        st.text(alphabet=ALPHABET, max_size=40),
        st.builds(
            lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
            st.text(alphabet=ALPHABET, min_size=1, max_size=70),
            st.lists(st.text(alphabet="ab-0Z", min_size=1, max_size=64), min_size=1, max_size=3),
            st.sampled_from(["org", "COM", "test", "local", "x", "c0m", "xn--p1ai", "onion"]),
        ),
    )
)
@example("K@example.org".replace("K", "\u212a"))  # lower-cases to ASCII: not plain
@example("a@ab--cd.org")
@example("a@xn--80ak6aa92e.com")
@example("a" * 65 + "@example.org")
@example("a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57 + ".org")
def test_plain_addresses_are_decided_as_email_validator_decides(raw: str) -> None:
    raw = raw.strip()
    if not raw or len(raw) > 320 or any(ch in raw for ch in "\r\n\0"):
        return  # refused before either check
    assert _outcome(normalize_email, raw) == _outcome(validated, raw)


def test_a_plain_address_is_lower_cased_and_a_special_use_one_refused() -> None:
    assert normalize_email(" Ana.Smith+yin@Example.ORG ") == "ana.smith+yin@example.org"
    with pytest.raises(InvalidSubscriber, match="special-use"):
        normalize_email("ana@studio.test")
