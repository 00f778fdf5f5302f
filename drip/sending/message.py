"""MIME assembly: multipart/alternative messages as CRLF bytes, ready for SMTP.

Built by hand rather than with ``email.message.EmailMessage`` because the standard
library path costs milliseconds per message, more than the SMTP round trip. What every
recipient shares (From, Reply-To, Subject, List-Id …) is encoded once per prototype;
per recipient only a few headers and the quoted-printable bodies (C-speed
``binascii.b2a_qp``) are produced. Every header value goes through ``_header``, which
folds CR/LF away, so a name or subject can never inject a header.
"""

from __future__ import annotations

import binascii
import functools
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

CRLF = b"\r\n"
#: headers covered by a DKIM signature
DKIM_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


@dataclass(frozen=True)
class Outgoing:
    """One message ready for the wire: ``data`` has CRLF line endings only and no line
    starting with a dot (``Prototype`` guarantees both; tests check it)."""

    envelope_from: str
    recipient: str
    message_id: str
    data: bytes


def ascii_address(address: str) -> str:
    """The address with an IDNA (ASCII) domain, as SMTP and headers need it."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


def single_line(value: str) -> str:
    """Collapse every run of whitespace, CR and LF included, to one space."""
    return " ".join(value.split())


def address_header(name: str, address: str) -> str:
    """``Name <addr>``: quoted or RFC 2047-encoded as the name needs; CR/LF removed.

    A name containing ``=?`` is always encoded: it could otherwise pass for an encoded
    word of its own that mail clients decode (``=?utf-8?b?…?=`` showing as "Admin
    <admin@bank.example>"). Encoded words in headers must never come from user input.
    """
    name = single_line(name)
    if "=?" in name:
        encoded = Header(name, "utf-8").encode()
        return f"{encoded} <{ascii_address(address)}>"
    return formataddr((name, ascii_address(address)), charset="utf-8")


def _fold(line: str, width: int = 78) -> str:
    """Fold an ASCII header line at spaces so lines stay near ``width`` (RFC 5322 2.2.3)."""
    if len(line) <= width:
        return line
    lines = [""]
    for word in line.split(" "):
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}" if lines[-1] else word
    return "\r\n ".join(lines)


def _header(name: str, value: str) -> bytes:
    value = single_line(value)
    if value.isascii() and len(name) + len(value) < 996:
        return _fold(f"{name}: {value}").encode("ascii") + CRLF
    encoded = Header(
        value, "utf-8" if not value.isascii() else "us-ascii", header_name=name
    ).encode(linesep="\r\n")
    return f"{name}: {encoded}".encode("ascii") + CRLF


def quoted_printable(text: str) -> bytes:
    """``text`` as quoted-printable UTF-8 with CRLF line endings, ready for SMTP as is:
    lines of at most 76 columns (``binascii`` can exceed that before trailing
    whitespace), and a dot starting a line written ``=2E``, so DATA needs no dot-stuffing.
    """
    if _PLAIN_QP.fullmatch(text):  # a link or a short plain word: encoded as it is
        return text.encode("ascii")
    return _encoded(text)


def _encoded(text: str) -> bytes:
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = binascii.b2a_qp(normalized.encode("utf-8"), istext=True).split(b"\n")
    return CRLF.join(
        _wire_safe(line) if len(line) > QP_MAX_LINE or line.startswith(b".") else line
        for line in lines
    )


SOFT_BREAK = b"=" + CRLF
#: text quoted-printable leaves as it is: one line of printable ASCII but "=", at most
#: 76 long, neither starting with a dot nor ending in a space
_PLAIN_QP = re.compile(r"(?![.])[!-<>-~ ]{0,75}[!-<>-~]|", re.ASCII)
QP_MAX_LINE = 76


def _wire_safe(line: bytes) -> bytes:
    """One encoded line, soft-broken where longer than 76 columns, no piece starting
    with a dot."""
    pieces = []
    while True:
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
        if len(line) <= QP_MAX_LINE:
            break
        cut = QP_MAX_LINE - 1  # leaves room for the soft break's "="
        while b"=" in line[cut - 2 : cut]:  # never split an =XX escape
            cut -= 1
        pieces.append(line[:cut] + b"=")
        line = line[cut:]
    return CRLF.join([*pieces, line])


@functools.lru_cache(maxsize=4)
def _date(value: datetime) -> str:
    """A Date header's value: a run's messages share their moment, formatted once."""
    return format_datetime(value)


class SplicedBody:
    """A body rendered once with placeholder slots, its static parts encoded once.

    Per recipient only the slot values are encoded; a soft line break on each side of
    a value keeps every encoded line within quoted-printable's 76 columns, and decoding
    yields exactly the text a full render would have produced.
    """

    def __init__(self, rendered: str, slots: Mapping[str, str]) -> None:
        by_marker = {marker: name for name, marker in slots.items()}
        pattern = re.compile("|".join(re.escape(marker) for marker in by_marker))
        self._plain = pattern.split(rendered)
        self._names = [by_marker[marker] for marker in pattern.findall(rendered)]
        self._encoded = [quoted_printable(part) for part in self._plain]

    def text(self, values: Mapping[str, str]) -> str:
        """The decoded body for these values (used to check the splice against a render)."""
        out = [self._plain[0]]
        for name, part in zip(self._names, self._plain[1:], strict=True):
            out += [values[name], part]
        return "".join(out)

    def encode(self, values: Mapping[str, str]) -> bytes:
        encoded = {name: quoted_printable(value) for name, value in values.items()}
        out = [self._encoded[0]]
        for name, part in zip(self._names, self._encoded[1:], strict=True):
            out += [SOFT_BREAK, encoded[name], SOFT_BREAK, part]
        return b"".join(out)


class DkimSigner:
    """Adds a DKIM-Signature (dkimpy) with the sender's domain."""

    def __init__(self, *, selector: str, private_key_file: Path) -> None:
        self.selector = selector.encode("ascii")
        self.private_key = private_key_file.read_bytes()

    def sign(self, data: bytes, *, domain: str) -> bytes:
        import dkim  # only when signing is configured

        signature: bytes = dkim.sign(
            data,
            self.selector,
            domain.encode("ascii"),
            self.private_key,
            include_headers=list(DKIM_HEADERS),
            linesep=CRLF,
        )
        return signature + data


class Prototype:
    """The parts of one email that are the same for every recipient, serialised once."""

    def __init__(
        self,
        *,
        from_name: str,
        from_address: str,
        subject: str,
        reply_to: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        signer: DkimSigner | None = None,
    ) -> None:
        self.envelope_from = ascii_address(from_address)
        self.domain = self.envelope_from.rpartition("@")[2]
        self.boundary = f"=_drip_{secrets.token_hex(12)}"  # "=_" never occurs in QP bodies
        shared = [("From", address_header(from_name, from_address))]
        if reply_to:
            shared.append(("Reply-To", ascii_address(reply_to)))
        shared += [("Subject", subject), ("MIME-Version", "1.0"), *headers]
        self._head = b"".join(_header(name, value) for name, value in shared)
        self._content_type = _header(
            "Content-Type", f'multipart/alternative; boundary="{self.boundary}"'
        )
        self._separator = f"--{self.boundary}".encode("ascii") + CRLF
        self._closing = f"--{self.boundary}--".encode("ascii") + CRLF
        self._signer = signer

    def build(
        self,
        *,
        to_name: str,
        to_address: str,
        message_id: str,
        date: datetime,
        text: bytes,
        html: bytes,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Outgoing:
        """The message for one recipient, from bodies already encoded with
        ``quoted_printable`` (or ``SplicedBody.encode``); ``message_id`` without brackets."""
        recipient = ascii_address(to_address)
        per_recipient = [
            ("To", address_header(to_name, to_address)),
            ("Date", _date(date)),
            ("Message-ID", f"<{message_id}>"),
            *headers,
        ]
        data = b"".join(
            [
                self._head,
                *(_header(name, value) for name, value in per_recipient),
                self._content_type,
                CRLF,
                self._separator,
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                text,
                CRLF,
                self._separator,
                b"Content-Type: text/html; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                html,
                CRLF,
                self._closing,
            ]
        )
        if self._signer is not None:
            data = self._signer.sign(data, domain=self.domain)
        return Outgoing(self.envelope_from, recipient, f"<{message_id}>", data)
