"""Outgoing webhooks as the Standard Webhooks specification defines them
(https://www.standardwebhooks.com): an endpoint's secret, a message's signature, and
which URLs drip posts to.

A secret is ``whsec_`` + the base64 of 32 random bytes; a signature is ``v1,`` + the
base64 HMAC-SHA256, keyed with those bytes, of ``"{webhook-id}.{webhook-timestamp}.{body}"``.
Several signatures (after a rotation, the new secret's and the old one's) are separated
by spaces, and a receiver accepts the message when any one matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from drip.core.exceptions import InvalidWebhook
from drip.core.states import EventType

SECRET_PREFIX = "whsec_"
#: the longest URL an endpoint may have
MAX_URL_LENGTH = 2048


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_event_id() -> str:
    """A ``webhook-id``: the same for one event at every endpoint and on every retry."""
    return "msg_" + secrets.token_hex(16)


def signature(secrets_: Iterable[str], event_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,…`` per secret, space-separated."""
    content = f"{event_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1,"
        + base64.b64encode(
            hmac.new(
                base64.b64decode(secret.removeprefix(SECRET_PREFIX)), content, hashlib.sha256
            ).digest()
        ).decode("ascii")
        for secret in secrets_
    )


def read_event_types(text: str | None) -> str:
    """``--events a,b`` as stored: known types, sorted, comma-separated; empty for all."""
    if not text or not text.strip():
        return ""
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    known = {event.value for event in EventType}
    unknown = sorted(chosen - known)
    if unknown:
        raise InvalidWebhook(
            f"unknown event type {', '.join(map(repr, unknown))}: choose from "
            + ", ".join(sorted(known))
        )
    return ",".join(sorted(chosen))


def wants(events: str, event_type: str) -> bool:
    """Does an endpoint subscribed to ``events`` (stored form) get ``event_type``?"""
    return not events or event_type in events.split(",")


def check_url(url: str) -> str:
    """The URL of an endpoint drip may post to: ``https://``, or ``http://`` to this
    machine only (loopback); no user or password in it; not an address that is never a
    web server's (link-local, where clouds answer metadata requests; multicast;
    unspecified). ``InvalidWebhook`` says which rule it breaks."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (read only to check it is a number in range)
    except ValueError as error:
        raise InvalidWebhook(f"{url!r} is not a URL: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidWebhook(f"{url!r}: an endpoint is an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("an endpoint's URL carries no user or password")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidWebhook("an endpoint's URL has no spaces or control characters")
    literal = _literal(parts.hostname)
    if literal is not None and (why := refused_address(literal, parts.scheme)):
        raise InvalidWebhook(f"{url!r}: {why}")
    if parts.scheme == "http" and literal is None and parts.hostname != "localhost":
        raise InvalidWebhook(
            f"{url!r}: plain http:// only to this machine (127.0.0.1, ::1, localhost); use https://"
        )
    return url


def refused_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, scheme: str
) -> str | None:
    """Why drip will not connect to ``address`` for an endpoint, if it will not. An IPv6
    address carrying an IPv4 one (mapped, compatible, 6to4, Teredo, NAT64) is judged by
    both."""
    if address.is_loopback:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:  # judged as the IPv4 address it reaches
            why = refused_address(inner, scheme)
            return f"{address} carries {inner}: {why}" if why else None
    if address.is_link_local:
        return f"{address} is link-local (where cloud metadata services answer)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return f"{address} is not a web server's address"
    if scheme == "http" and not address.is_loopback:
        return f"plain http:// only to this machine, not {address}: use https://"
    return None


#: IPv6 prefixes that carry an IPv4 address in their last 32 bits
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL or address in _COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
