"""Addresses: the quick check of plain addresses decides as email_validator does."""

from __future__ import annotations

import email_validator
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drip.core import addresses
from drip.core.entries import normalize_email
from drip.core.exceptions import InvalidSubscriber

#: the characters addresses are made of, and some that break them
ALPHABET = "aZz09.-_+@'!#=`{}|~x\u212a\u0131\u00e9 "


def _outcome(raw: str, *, quick: bool, smtputf8: bool) -> str:
    try:
        if quick:
            return addresses.normalized(raw, smtputf8=smtputf8)
        return addresses._validated(raw, smtputf8=smtputf8)
    except addresses.AddressError:
        return "refused"


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.from_regex(addresses._PLAIN, fullmatch=True),
        st.text(alphabet=ALPHABET, max_size=40),
        st.builds(
            lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
            st.text(alphabet=ALPHABET, min_size=1, max_size=70),
            st.lists(st.text(alphabet="ab-0Z", min_size=1, max_size=64), min_size=1, max_size=3),
            st.sampled_from(["org", "COM", "Test", "local", "x", "c0m", "xn--p1ai", "onion"]),
        ),
    ),
    st.booleans(),
)
@example("K@example.org".replace("K", "\u212a"), False)  # lower-cases to ASCII: not plain
@example("Ana@Ab--cd.org", True)
@example("a@xn--80ak6aa92e.com", False)
@example("a" * 65 + "@example.org", False)
@example("a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57 + ".org", False)
def test_plain_addresses_are_decided_as_email_validator_decides(raw: str, smtputf8: bool) -> None:
    assert _outcome(raw, quick=True, smtputf8=smtputf8) == _outcome(
        raw, quick=False, smtputf8=smtputf8
    )


def test_the_special_use_names_are_email_validators() -> None:
    assert addresses.SPECIAL_USE == set(email_validator.SPECIAL_USE_DOMAIN_NAMES)


def test_a_plain_address_is_lower_cased_and_a_special_use_one_refused() -> None:
    assert normalize_email(" Ana.Smith+yin@Example.ORG ") == "ana.smith+yin@example.org"
    with pytest.raises(InvalidSubscriber, match="special-use"):
        normalize_email("ana@studio.test")
