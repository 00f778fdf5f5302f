"""Mail transports against a real SMTP server on loopback, plus file and memory backends."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from drip.core.exceptions import ConfigError, PermanentFailure, TemporaryFailure
from drip.sending.mailer import mailer_from_url, memory
from drip.sending.mailer.base import Settled
from drip.sending.mailer.file import FileMailer
from drip.sending.mailer.smtp import IDLE_CHECK_SECONDS, MAX_REPLY_LINES, SmtpConfig, SmtpMailer
from drip.sending.message import Outgoing, Prototype, quoted_printable
from drip.testing import SmtpSink, free_port
from tests.fixtures import WithholdingServer, scripted_server

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def _message(n: int = 0, to: str = "ana@example.org") -> Outgoing:
    prototype = Prototype(from_name="Maya", from_address="hello@example.com", subject="Hi")
    return prototype.build(
        to_name="Ana",
        to_address=to,
        message_id=f"m{n}@example.com",
        date=NOW,
        text=quoted_printable("hello"),
        html=quoted_printable("<p>hello</p>"),
    )


def _smtp(url: str) -> SmtpMailer:
    mailer = mailer_from_url(url, timeout=5)
    assert isinstance(mailer, SmtpMailer)
    return mailer


def test_a_batch_reuses_one_connection(smtp_sink: SmtpSink) -> None:
    """Twenty messages go over a single SMTP connection and all arrive intact."""
    with _smtp(smtp_sink.url) as mailer:
        replies = [mailer.send(_message(n)) for n in range(20)]
        assert mailer.connections_opened == 1
    assert smtp_sink.message_ids() == [f"<m{n}@example.com>" for n in range(20)]
    assert replies[0].startswith("250 2.0.0 Ok: queued as")
    assert smtp_sink.received[0].data.endswith(b"\r\n")


def test_connection_is_recycled_after_its_message_limit(smtp_sink: SmtpSink) -> None:
    """max_per_connection makes the mailer reconnect, as servers with per-session limits need."""
    with _smtp(smtp_sink.url + "&max_per_connection=3") as mailer:
        for n in range(7):
            mailer.send(_message(n))
        assert mailer.connections_opened == 3
    assert len(smtp_sink.received) == 7


@pytest.mark.parametrize(
    "reply", ["450 4.2.0 mailbox busy", "451 4.3.0 try later", "421 4.7.0 too many connections"]
)
def test_4xx_recipient_is_temporary(smtp_sink: SmtpSink, reply: str) -> None:
    """A 4xx answer is a TemporaryFailure; the next message still goes through."""
    smtp_sink.rcpt_replies["busy@example.org"] = reply
    with _smtp(smtp_sink.url) as mailer:
        with pytest.raises(TemporaryFailure) as caught:
            mailer.send(_message(1, to="busy@example.org"))
        assert caught.value.code == int(reply[:3])
        mailer.send(_message(2))
    assert smtp_sink.message_ids() == ["<m2@example.com>"]


def test_5xx_recipient_is_permanent_and_suppresses(smtp_sink: SmtpSink) -> None:
    """A 550 at RCPT is a PermanentFailure that marks the address for suppression."""
    smtp_sink.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"
    with _smtp(smtp_sink.url) as mailer:
        with pytest.raises(PermanentFailure) as caught:
            mailer.send(_message(1, to="gone@example.org"))
        mailer.send(_message(2))
        assert mailer.connections_opened == 1
    assert caught.value.suppress is True
    assert "no such user" in caught.value.response
    assert len(smtp_sink.received) == 1


def test_5xx_after_data_fails_without_suppressing(smtp_sink: SmtpSink) -> None:
    """A message refused after DATA (content, size) is permanent but not the address's fault."""
    smtp_sink.data_replies.append("554 5.7.1 message refused")
    with _smtp(smtp_sink.url) as mailer, pytest.raises(PermanentFailure) as caught:
        mailer.send(_message(1))
    assert caught.value.suppress is False


def test_dropped_connection_is_temporary_and_reconnects(smtp_sink: SmtpSink) -> None:
    """A server vanishing mid-message is a TemporaryFailure; the next send reconnects."""
    smtp_sink.drop_next = 1
    with _smtp(smtp_sink.url) as mailer:
        with pytest.raises(TemporaryFailure) as caught:
            mailer.send(_message(1))
        assert caught.value.connection is True
        assert str(caught.value) == "connection failed: connection unexpectedly closed"
        mailer.send(_message(2))
        assert mailer.connections_opened == 2
    assert smtp_sink.message_ids() == ["<m2@example.com>"]


def test_leading_dots_and_bare_line_ends_arrive_intact(smtp_sink: SmtpSink) -> None:
    """A message not built by drip (leading dots, no final CRLF) is dot-stuffed on the
    wire and arrives byte for byte."""
    data = b"Subject: dots\r\n\r\n.starts with a dot\r\n..two\r\n.\r\nend"
    with _smtp(smtp_sink.url) as mailer:
        mailer.send(Outgoing("hello@example.com", "ana@example.org", "<d@x>", data))
    assert smtp_sink.received[0].data == data + b"\r\n"


@pytest.mark.parametrize(
    "data",
    [b".a first line starting with a dot\r\nrest\r\n", b"no dots at all\r\n", b".\r\n"],
    ids=["leading-dot", "plain", "lone-dot"],
)
def test_only_dots_that_need_it_are_stuffed(smtp_sink: SmtpSink, data: bytes) -> None:
    """A first line starting with a dot is stuffed too, and a message already ending in
    CRLF gets no extra line: what arrives is what was given."""
    with _smtp(smtp_sink.url) as mailer:
        mailer.send(Outgoing("hello@example.com", "ana@example.org", "<d@x>", data))
    assert smtp_sink.received[0].data == data


def test_addresses_that_could_break_the_command_line_are_refused(smtp_sink: SmtpSink) -> None:
    """CR, LF or angle brackets in an envelope address never reach the server."""
    with _smtp(smtp_sink.url) as mailer:
        for bad in ("ana@example.org>\r\nRCPT TO:<x@evil.test", "a b@example.org", "ané@x.org"):
            with pytest.raises(PermanentFailure, match="not a deliverable address") as raised:
                mailer.send(Outgoing("hello@example.com", bad, "<b@x>", b"Subject: x\r\n\r\nx\r\n"))
            assert raised.value.suppress is False  # no server refused it: not the address
    assert smtp_sink.received == []


def test_pipelined_data_accepted_after_a_refused_recipient_sends_no_body() -> None:
    """RFC 2920: a server may answer 354 to a pipelined DATA although it refused the
    recipient; the client must then end DATA at once, sending nothing of the message."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        seen: list[bytes] = []
        server = threading.Thread(target=_lax_pipelining_server, args=(listener, seen))
        server.start()
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            with pytest.raises(PermanentFailure) as caught:
                mailer.send(_message(1, to="gone@example.org"))
        server.join(timeout=10)
    assert caught.value.suppress is True and caught.value.code == 550
    assert seen[:5] == [
        b"MAIL FROM:<hello@example.com>",
        b"RCPT TO:<gone@example.org>",
        b"DATA",
        b".",
        b"RSET",
    ]


def _lax_pipelining_server(listener: socket.socket, seen: list[bytes]) -> None:
    """Answers 354 to DATA even with no valid recipient, as RFC 2920 warns servers may."""
    replies = {
        b"EHLO": b"250-lax.test\r\n250 PIPELINING\r\n",
        b"MAIL": b"250 ok\r\n",
        b"RCPT": b"550 5.1.1 no such user\r\n",
        b"DATA": b"354 go ahead\r\n",
        b".": b"554 5.5.1 no valid recipients\r\n",
        b"RSET": b"250 ok\r\n",
        b"QUIT": b"221 bye\r\n",
    }
    connection, _ = listener.accept()
    with connection, connection.makefile("rb") as lines:
        connection.sendall(b"220 lax.test ESMTP\r\n")
        for line in lines:
            command = line.rstrip(b"\r\n")
            verb = command.split(b" ")[0].split(b":")[0].upper()
            if verb != b"EHLO":
                seen.append(verb if verb in (b"RSET", b"QUIT") else command)
            connection.sendall(replies[verb])
            if verb == b"QUIT":
                return


def test_server_down_is_a_connection_failure() -> None:
    """Nothing listening: a TemporaryFailure flagged as a connection problem."""
    with _smtp(f"smtp://127.0.0.1:{free_port()}") as mailer:
        with pytest.raises(TemporaryFailure, match="cannot connect") as caught:
            mailer.send(_message())
    assert caught.value.connection is True


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[tuple[SmtpSink, Path]]:
    """An SMTP server that requires STARTTLS and AUTH, with a certificate from a test CA."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with SmtpSink(tls_context=server_context, credentials=("maya", "s3cret pw")) as sink:
        yield sink, ca_file


def test_starttls_and_auth(tls_sink: tuple[SmtpSink, Path]) -> None:
    """smtp://user:pass@host upgrades with STARTTLS, verifies the certificate, then logs in."""
    sink, ca_file = tls_sink
    url = f"smtp://maya:s3cret%20pw@127.0.0.1:{sink.port}?starttls=require&cafile={ca_file}"
    with _smtp(url) as mailer:
        mailer.send(_message())
    assert sink.logins == ["maya"]
    assert len(sink.received) == 1


def test_wrong_password_is_a_config_error(tls_sink: tuple[SmtpSink, Path]) -> None:
    """A refused login is reported as configuration, not retried as a delivery problem."""
    sink, ca_file = tls_sink
    url = f"smtp://maya:wrong@127.0.0.1:{sink.port}?cafile={ca_file}"
    with _smtp(url) as mailer, pytest.raises(ConfigError) as refused:
        mailer.send(_message())
    assert str(refused.value) == "SMTP login refused: 535 5.7.8 Authentication credentials invalid"


def test_a_server_off_loopback_gets_the_password_over_starttls(tmp_path: Path) -> None:
    """Off loopback the password goes out only encrypted, and STARTTLS is encryption."""
    address = _public_address()
    if address is None:
        pytest.skip("this machine has no address off loopback to run the server on")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(address).configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with SmtpSink(tls_context=server_context, credentials=("maya", "pw"), host=address) as sink:
        with _smtp(f"smtp://maya:pw@{address}:{sink.port}?cafile={ca_file}") as mailer:
            mailer.send(_message())
    assert sink.logins == ["maya"] and len(sink.received) == 1


def test_a_healthy_server_is_waited_for_up_to_the_timeout(smtp_sink: SmtpSink) -> None:
    """The timeout bounds each reply; a server that answers in time is not cut off early."""
    mailer = SmtpMailer(SmtpConfig.from_url(smtp_sink.url, timeout=1))
    with mailer:
        assert mailer.send(_message()).startswith("250 ")
    assert len(smtp_sink.received) == 1


def test_untrusted_certificate_is_refused(tls_sink: tuple[SmtpSink, Path]) -> None:
    """Without the CA, the self-signed server certificate fails verification."""
    sink, _ = tls_sink
    with _smtp(f"smtp://maya:x@127.0.0.1:{sink.port}") as mailer:
        with pytest.raises(TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED"):
            mailer.send(_message())


def test_starttls_require_refuses_a_plain_server(smtp_sink: SmtpSink) -> None:
    """starttls=require never falls back to plain text."""
    url = f"smtp://127.0.0.1:{smtp_sink.port}?starttls=require"
    with _smtp(url) as mailer, pytest.raises(ConfigError, match="STARTTLS"):
        mailer.send(_message())


def test_password_is_never_sent_in_clear_off_loopback() -> None:
    """Credentials over an unencrypted link are refused unless the server is on loopback."""
    assert SmtpConfig.from_url("smtp://u:p@127.0.0.1:25", timeout=1).is_loopback
    assert not SmtpConfig.from_url("smtp://u:p@mail.example.com", timeout=1).is_loopback
    config = SmtpConfig.from_url("smtps://u:p%40x@mail.example.com", timeout=1)
    assert (config.port, config.implicit_tls, config.password) == (465, True, "p@x")


def test_unknown_scheme_is_a_config_error() -> None:
    """A typo in DRIP_SMTP_URL is named, not a crash."""
    with pytest.raises(ConfigError, match="unsupported scheme 'smpt'"):
        mailer_from_url("smpt://host")


def test_file_mailer_writes_one_eml_per_message(tmp_path: Path) -> None:
    """file://DIR writes each message as an .eml named after its Message-ID, no temp files left."""
    mailer = mailer_from_url(f"file://{tmp_path}/outbox")
    assert isinstance(mailer, FileMailer)
    first = _message(1)
    mailer.send(first)
    mailer.send(_message(2))
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == ["m1_example.com.eml", "m2_example.com.eml"]
    assert (tmp_path / "outbox" / files[0]).read_bytes() == first.data


def test_memory_mailer_keeps_messages() -> None:
    """memory:// appends to drip.sending.mailer.memory.outbox for tests to inspect."""
    memory.outbox.clear()
    mailer_from_url("memory://").send(_message(5))
    assert [m.message_id for m in memory.outbox] == ["<m5@example.com>"]


# -- hostile and misconfigured servers --------------------------------------------------


def test_an_endless_reply_is_cut_off() -> None:
    """A server that never ends its multi-line greeting costs a bounded read: the reply is
    refused after its line limit, quickly, instead of growing without end."""
    sent = []

    def endless(connection: socket.socket) -> None:
        while True:
            connection.sendall(b"220-" + b"x" * 60 + b"\r\n")
            sent.append(1)

    started = time.monotonic()
    with scripted_server(endless) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            with pytest.raises(TemporaryFailure) as cut:
                mailer.send(_message())
    assert str(cut.value) == f"cannot connect to 127.0.0.1:{port}: (500, b'reply too long')"
    assert time.monotonic() - started < 5
    assert len(sent) > MAX_REPLY_LINES


def test_a_line_that_never_ends_is_cut_off_at_its_size_not_at_the_timeout() -> None:
    """A greeting line that never reaches its newline is dropped once it passes
    MAX_REPLY_BYTES, long before DRIP_SMTP_TIMEOUT (60 s here): neither a worker nor its
    memory is held."""

    def no_newline(connection: socket.socket) -> None:
        connection.sendall(b"220-")
        while True:
            connection.sendall(b"x" * 4096)

    started = time.monotonic()
    with scripted_server(no_newline) as port:
        mailer = mailer_from_url(f"smtp://127.0.0.1:{port}?starttls=off", timeout=60)
        with mailer, pytest.raises(TemporaryFailure) as cut:
            mailer.send(_message())
    assert str(cut.value) == (
        f"cannot connect to 127.0.0.1:{port}: the server's reply took too long"
    )
    assert time.monotonic() - started < 10


def test_a_server_dribbling_its_greeting_hits_the_timeout() -> None:
    """DRIP_SMTP_TIMEOUT bounds a whole reply, not each read: a greeting sent a byte at a
    time gives up after the timeout, not after as many timeouts as there are bytes."""

    def dribble(connection: socket.socket) -> None:
        for byte in b"220 slow.test ESMTP ready\r\n":
            connection.sendall(bytes([byte]))
            time.sleep(0.2)

    started = time.monotonic()
    with scripted_server(dribble) as port:
        mailer = SmtpMailer(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?starttls=off", timeout=1))
        with mailer, pytest.raises(TemporaryFailure) as slow:
            mailer.send(_message())
    assert (
        str(slow.value) == f"cannot connect to 127.0.0.1:{port}: the server's reply took too long"
    )
    assert time.monotonic() - started < 2.5


def test_a_silent_server_hits_the_timeout() -> None:
    """A server that accepts the connection and says nothing is given up on in time."""

    def silent(connection: socket.socket) -> None:
        connection.recv(1)  # until the client gives up

    started = time.monotonic()
    with scripted_server(silent) as port:
        mailer = SmtpMailer(
            SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?starttls=off", timeout=0.5)
        )
        with mailer, pytest.raises(TemporaryFailure) as quiet:
            mailer.send(_message())
    assert (
        str(quiet.value) == f"cannot connect to 127.0.0.1:{port}: the server's reply took too long"
    )
    assert time.monotonic() - started < 2


def test_control_bytes_in_a_reply_never_reach_the_receipt() -> None:
    """NUL, ESC and invalid UTF-8 in the server's reply are escaped in the stored receipt."""
    replies = {
        b"EHLO": b"250 odd.test\r\n",
        b"MAIL": b"250 ok\r\n",
        b"RCPT": b"250 ok\r\n",
        b"DATA": b"354 go\r\n",
        b"QUIT": b"221 bye\r\n",
    }

    def odd(connection: socket.socket) -> None:
        connection.sendall(b"220 odd.test\r\n")
        with connection.makefile("rb") as lines:
            in_data = False
            for line in lines:
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        connection.sendall(b"250 queued \x00\xff\x1b[31mred[/x] it's \\ X\r\n")
                    continue
                verb = line.split(b" ")[0].split(b":")[0].strip().upper()
                connection.sendall(replies[verb])
                in_data = verb == b"DATA"
                if verb == b"QUIT":
                    return

    with scripted_server(odd) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            receipt = mailer.send(_message())
    assert receipt.startswith("250 queued ")
    assert receipt == "250 queued \\x00\ufffd\\x1b[31mred[/x] it's \\ X"


def test_a_reply_without_a_code_is_a_temporary_failure_quoting_it() -> None:
    """A greeting that stops being SMTP (a line with no three-digit code): the lines read
    so far in the error."""

    def chatty(connection: socket.socket) -> None:
        connection.sendall(b"220-welcome X \r\nhello there\r\n")
        connection.recv(1024)

    with scripted_server(chatty) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            with pytest.raises(TemporaryFailure) as odd:
                mailer.send(_message())
    assert str(odd.value) == (f"cannot connect to 127.0.0.1:{port}: (-1, b'welcome X\\no there')")


def _public_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # routes only: nothing is sent
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_no_password_in_clear_to_a_server_off_loopback() -> None:
    """A server off loopback that offers AUTH but no STARTTLS never sees the password: the
    mailer refuses before AUTH, as a configuration error."""
    address = _public_address()
    if address is None:
        pytest.skip("this machine has no address off loopback to run the server on")
    heard: list[bytes] = []

    def plain(connection: socket.socket) -> None:
        connection.sendall(b"220 plain.test\r\n")
        with connection.makefile("rb") as lines:
            for line in lines:
                heard.append(line)
                if line.upper().startswith(b"EHLO"):
                    connection.sendall(b"250-plain.test\r\n250 AUTH PLAIN LOGIN\r\n")
                elif line.upper().startswith(b"QUIT"):
                    connection.sendall(b"221 bye\r\n")
                    return
                else:
                    connection.sendall(b"500 no\r\n")

    with scripted_server(plain, host=address) as port:
        with _smtp(f"smtp://maya:s3cret@{address}:{port}") as mailer:
            with pytest.raises(ConfigError) as refused:
                mailer.send(_message())
    assert str(refused.value) == (
        "refusing to send the SMTP password unencrypted: the server offers no STARTTLS "
        "(use smtps:// or a TLS port)"
    )
    assert heard and not any(line.upper().startswith(b"AUTH") for line in heard)
    assert not any(b"s3cret" in line for line in heard)


class _Scripted:
    """An SMTP server answering each command from a script (verb → reply), recording what
    it was sent; one connection. It reads pipelined commands as they come."""

    def __init__(
        self,
        replies: dict[bytes, bytes],
        *,
        pipelining: bool,
        greeting: bytes = b"220 scripted.test ESMTP\r\n",
    ) -> None:
        self.greeting = greeting
        self.replies = {
            b"EHLO": b"250-scripted.test\r\n"
            + (b"250-PIPELINING\r\n" if pipelining else b"")
            + b"250 8BITMIME\r\n",
            b"MAIL": b"250 ok\r\n",
            b"RCPT": b"250 ok\r\n",
            b"DATA": b"354 go on\r\n",
            b".": b"250 2.0.0 queued as scripted-1\r\n",
            b"RSET": b"250 reset\r\n",
            b"NOOP": b"250 ok\r\n",
            b"QUIT": b"221 bye\r\n",
            **replies,
        }
        self.seen: list[bytes] = []
        #: lines of message content received
        self.body_lines = 0

    def talk(self, connection: socket.socket) -> None:
        connection.sendall(self.greeting)
        in_body = False
        with connection.makefile("rb") as lines:
            for line in lines:
                if in_body:
                    if line != b".\r\n":
                        self.body_lines += 1
                        continue
                    in_body = False
                    verb = b"."
                else:
                    verb = line.split(b" ")[0].split(b":")[0].strip().upper()
                self.seen.append(verb)
                reply = self.replies[verb]
                connection.sendall(reply)
                in_body = verb == b"DATA" and reply.startswith(b"354")
                if verb == b"QUIT" or reply.startswith(b"421"):
                    return


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
@pytest.mark.parametrize(
    ("replies", "raised", "attributes", "after"),
    [
        (
            {b"MAIL": b"553 5.7.1 sender not allowed\r\n"},
            TemporaryFailure,
            {
                "code": 553,
                "response": "5.7.1 sender not allowed",
                "connection": True,
                "args": ("sender refused: 553 5.7.1 sender not allowed",),
            },
            b"RSET",
        ),
        (
            {b"MAIL": b"421 4.3.2 shutting down\r\n"},
            TemporaryFailure,
            {"code": 421, "connection": True},
            None,
        ),
        (
            {b"RCPT": b"500 5.5.2 what\r\n"},
            PermanentFailure,
            {"code": 500, "suppress": True, "args": ("rejected: 500 5.5.2 what",)},
            b"RSET",
        ),
        (
            {b"RCPT": b"600 nonsense\r\n"},
            TemporaryFailure,
            {"code": 600, "connection": False, "args": ("deferred: 600 nonsense",)},
            b"RSET",
        ),
        (
            {b"RCPT": b"251 2.1.5 will forward\r\n", b"DATA": b"554 5.7.1 no thanks\r\n"},
            PermanentFailure,
            {"code": 554, "suppress": False},
            b"RSET",
        ),
        (
            {b"DATA": b"451 4.3.0 try later\r\n"},
            TemporaryFailure,
            {"code": 451, "response": "451 4.3.0 try later", "connection": False},
            b"RSET",
        ),
        (
            {b"DATA": b"554 5.7.1 no thanks\r\n"},
            PermanentFailure,
            {"code": 554, "suppress": False},
            b"RSET",
        ),
        (
            {b"RCPT": b"421 4.7.0 closing\r\n"},
            TemporaryFailure,
            {"code": 421, "connection": False},
            None,
        ),
    ],
    ids=[
        "sender-refused",
        "mail-421-closes",
        "rcpt-500",
        "rcpt-600",
        "forwarded-then-data-refused",
        "data-deferred",
        "data-refused",
        "rcpt-421-closes",
    ],
)
def test_each_refusal_is_classified_and_the_connection_reset(
    pipelining: bool,
    replies: dict[bytes, bytes],
    raised: type[Exception],
    attributes: dict[str, object],
    after: bytes | None,
) -> None:
    """The sender refused (our side: retried, never suppressing), DATA deferred or refused,
    a 421 (the server closes): the right failure with the server's code and words, then
    RSET to reuse the connection (or nothing more after a 421)."""
    server = _Scripted(replies, pipelining=pipelining)
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            with pytest.raises(raised) as caught:
                mailer.send(_message())
            for name, value in attributes.items():
                assert getattr(caught.value, name) == value, name
    assert server.body_lines == 0, "no message content after a refusal"
    if after is None:  # the server closed after its 421: nothing more was said
        assert server.seen[-1] == next(iter(replies)) and b"RSET" not in server.seen
    else:
        assert after in server.seen


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_a_forwarding_251_is_accepted(pipelining: bool) -> None:
    """251 (user not local; will forward) accepts the recipient: the message goes."""
    server = _Scripted({b"RCPT": b"251 2.1.5 will forward\r\n"}, pipelining=pipelining)
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            assert mailer.send(_message()) == "250 2.0.0 queued as scripted-1"
    assert server.seen[:5] == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"."]


def _tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return context, tmp_path / "ca.pem"


def test_smtps_is_tls_from_the_first_byte(tmp_path: Path) -> None:
    """smtps:// (port 465 style) speaks TLS from the start, verifying the certificate."""
    context, ca_file = _tls_files(tmp_path)
    with SmtpSink(implicit_tls=context) as sink:
        with _smtp(f"smtps://127.0.0.1:{sink.port}?cafile={ca_file}") as mailer:
            mailer.send(_message())
        with _smtp(f"smtps://127.0.0.1:{sink.port}") as mailer:  # without the CA: refused
            with pytest.raises(TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED"):
                mailer.send(_message())
    assert [r.tls for r in sink.received] == [True]


@pytest.mark.parametrize(("query", "tls"), [("", True), ("&starttls=off", False)])
def test_starttls_is_used_when_offered_unless_turned_off(
    tmp_path: Path, query: str, tls: bool
) -> None:
    """By default STARTTLS is used whenever the server offers it; starttls=off keeps the
    session plain (a local relay)."""
    context, ca_file = _tls_files(tmp_path)
    with SmtpSink(tls_context=context, require_starttls=False) as sink:
        with _smtp(f"smtp://127.0.0.1:{sink.port}?cafile={ca_file}{query}") as mailer:
            mailer.send(_message())
    assert [r.tls for r in sink.received] == [tls]


@pytest.mark.parametrize(
    ("greeting", "accepted"),
    [
        (b"220-x\r\n" * (MAX_REPLY_LINES - 1) + b"220 ready\r\n", True),
        (b"220-x\r\n" * MAX_REPLY_LINES + b"220 ready\r\n", False),
        ((b"220-" + b"y" * 8000 + b"\r\n") * 8 + b"220 ready\r\n", True),
        ((b"220-" + b"y" * 8000 + b"\r\n") * 9 + b"220 ready\r\n", False),
    ],
    ids=["100-lines", "101-lines", "64k-bytes", "72k-bytes"],
)
def test_reply_limits_are_exact(greeting: bytes, accepted: bool) -> None:
    """A reply of up to 100 lines and 64 KiB is read; one line or byte past either is
    refused."""

    server = _Scripted({b"DATA": b"554 no\r\n"}, pipelining=True, greeting=greeting)
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            if accepted:
                with pytest.raises(PermanentFailure, match="554"):  # got as far as DATA
                    mailer.send(_message())
            else:
                with pytest.raises(TemporaryFailure, match="reply too long"):
                    mailer.send(_message())


def test_reply_text_is_kept_without_its_padding() -> None:
    """The receipt keeps the server's words, without the spaces and tabs around them."""
    server = _Scripted({b".": b"250 \t 2.0.0 Ok: queued as ABC \t \r\n"}, pipelining=True)
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            assert mailer.send(_message()) == "250 2.0.0 Ok: queued as ABC"


@pytest.mark.parametrize(
    ("url", "port", "starttls"),
    [
        ("smtp://mail.example", 587, "auto"),
        ("smtp://mail.example:25?starttls=off", 25, "off"),
        ("smtps://mail.example", 465, "off"),
        ("smtps://mail.example:2465?starttls=require", 2465, "off"),
    ],
)
def test_smtp_url_defaults(url: str, port: int, starttls: str) -> None:
    """587 with opportunistic STARTTLS by default; smtps:// is 465 and TLS from the start."""
    config = SmtpConfig.from_url(url, timeout=1)
    assert (config.port, config.starttls, config.max_per_connection) == (port, starttls, 100)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("smtp://h?starttls=maybe", "DRIP_SMTP_URL: starttls must be auto, require or off"),
        ("smtp:///nohost", "DRIP_SMTP_URL: no host (e.g. smtp://user:pass@mail.example:587)"),
        ("smtp://h:99999", "DRIP_SMTP_URL: Port out of range 0-65535"),
        ("smtp://h?max_per_connection=lots", "DRIP_SMTP_URL: invalid literal for int()"),
    ],
)
def test_a_bad_smtp_url_is_named_exactly(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SmtpConfig.from_url(url, timeout=1)
    assert str(raised.value).startswith(message)


def test_check_says_how_it_connected(tmp_path: Path, tls_sink: tuple[SmtpSink, Path]) -> None:
    """`drip doctor`'s SMTP line: TLS from the start, STARTTLS or none, and the login."""
    sink, ca_file = tls_sink
    url = f"smtp://maya:s3cret%20pw@127.0.0.1:{sink.port}?cafile={ca_file}"
    with _smtp(url) as mailer:
        assert mailer.check() == "connected (STARTTLS), logged in as maya"
    (tmp_path / "implicit").mkdir()
    context, ca = _tls_files(tmp_path / "implicit")
    with (
        SmtpSink(implicit_tls=context) as tls,
        _smtp(f"smtps://127.0.0.1:{tls.port}?cafile={ca}") as mailer,
    ):
        assert mailer.check() == "connected (TLS), no login"
    with SmtpSink() as plain, _smtp(f"smtp://127.0.0.1:{plain.port}") as mailer:
        assert mailer.check() == "connected (no TLS), no login"


def test_an_idle_connection_is_checked_before_reuse(smtp_sink: SmtpSink) -> None:
    """Back-to-back messages reuse the connection without a NOOP; after IDLE_CHECK_SECONDS
    a NOOP checks it first, and a connection found dead is replaced, not failed on."""
    with _smtp(smtp_sink.url) as mailer:
        mailer.send(_message(1))
        mailer.send(_message(2))
        assert (smtp_sink.noops, mailer.connections_opened) == (0, 1)
        mailer._last_used -= IDLE_CHECK_SECONDS + 1
        mailer.send(_message(3))
        assert (smtp_sink.noops, mailer.connections_opened) == (1, 1)
        assert mailer._connection is not None and mailer._connection.sock is not None
        mailer._connection.sock.shutdown(socket.SHUT_RDWR)  # the server went away meanwhile
        mailer._last_used -= IDLE_CHECK_SECONDS + 1
        mailer.send(_message(4))
        assert mailer.connections_opened == 2
    assert len(smtp_sink.received) == 4


@pytest.mark.parametrize(("userinfo", "password"), [("maya:pw", "pw"), ("maya", "")])
def test_a_local_relay_may_take_a_login_without_tls(userinfo: str, password: str) -> None:
    """On loopback the password may go in clear (a relay on the same host); a user without
    a password logs in with an empty one."""
    with SmtpSink(credentials=("maya", password)) as sink:
        with _smtp(f"smtp://{userinfo}@127.0.0.1:{sink.port}?starttls=off") as mailer:
            assert mailer.check() == "connected (no TLS), logged in as maya"
            mailer.send(_message())
    assert sink.logins == ["maya"] and len(sink.received) == 1  # one connection for both


# -- pipelining across messages (RFC 2920) ----------------------------------------------


def _outcomes(settled: list[Settled]) -> list[tuple[str, str]]:
    return [(each.message.message_id, each.reply or repr(each.error)) for each in settled]


def test_the_next_message_follows_the_end_of_data_at_once() -> None:
    """With PIPELINING a message's MAIL, RCPT and DATA leave right after the previous
    message's end of data, without waiting for its reply: one round trip per message.
    Each message's outcome comes back with the next ``submit`` (the last's with
    ``settle``), and is its own; ``send`` works again once nothing is in flight."""
    finals: list[bytes | None] = [b"250 queued %d\r\n" % n for n in range(4)]
    server = WithholdingServer(finals)
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            first = mailer.submit(_message(0))
            second = mailer.submit(_message(1))
            third = mailer.submit(_message(2))
            last = mailer.settle()
            assert mailer.send(_message(3)) == "250 queued 3"
            assert mailer.connections_opened == 1
    assert first == []
    assert _outcomes(second) == [("<m0@example.com>", "250 queued 0")]
    assert _outcomes(third) == [("<m1@example.com>", "250 queued 1")]
    assert _outcomes(last) == [("<m2@example.com>", "250 queued 2")]
    assert server.waited == 2, "only the replies nothing followed were waited for"


def test_send_refuses_while_a_message_is_in_flight(smtp_sink: SmtpSink) -> None:
    """``send`` waits for its own reply; with a submitted message's reply still to come it
    would read that one as its own, so it refuses."""
    with _smtp(smtp_sink.url) as mailer:
        if mailer.submit(_message(0)):  # settled at once: a server without PIPELINING
            return
        with pytest.raises(RuntimeError, match="settle"):
            mailer.send(_message(1))
        assert _outcomes(mailer.settle())[0][0] == "<m0@example.com>"
    assert smtp_sink.message_ids() == ["<m0@example.com>"]


@pytest.mark.parametrize(
    ("final", "raised", "code"),
    [
        (b"554 5.7.1 no thanks\r\n", PermanentFailure, 554),
        (b"451 4.3.0 later\r\n", TemporaryFailure, 451),
    ],
)
def test_a_refusal_read_with_the_next_envelope_is_that_messages_own(
    final: bytes, raised: type[Exception], code: int
) -> None:
    """A message refused at its end of data, its reply read after the next message's
    envelope went out: the refusal is the refused message's (never suppressing its
    address), the next message goes on, and no RSET is sent (it would land in the next
    message's content)."""
    server = WithholdingServer([b"250 queued 0\r\n", final, b"250 queued 2\r\n"])
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            settled = [*mailer.submit(_message(0)), *mailer.submit(_message(1))]
            settled += [*mailer.submit(_message(2)), *mailer.settle()]
    assert [each.message.message_id for each in settled] == [
        f"<m{n}@example.com>" for n in range(3)
    ]
    refused = settled[1].error
    assert isinstance(refused, raised) and refused.code == code
    assert not getattr(refused, "suppress", False) and not getattr(refused, "connection", False)
    assert (settled[0].reply, settled[2].reply) == ("250 queued 0", "250 queued 2")
    assert b"RSET" not in server.seen and b"RSET\r\n" not in server.content


def test_a_hang_up_before_the_reply_loses_both_messages_in_flight() -> None:
    """The server hangs up after a message's end of data, the next message's envelope
    already sent: both failed together, as one connection failure (one error, logged
    once), neither accepted."""
    server = WithholdingServer([None])
    with scripted_server(server.talk) as port:
        with _smtp(f"smtp://127.0.0.1:{port}?starttls=off") as mailer:
            assert mailer.submit(_message(0)) == []
            lost, next_one = mailer.submit(_message(1))
    assert [lost.message.message_id, next_one.message.message_id] == [
        "<m0@example.com>",
        "<m1@example.com>",
    ]
    assert isinstance(lost.error, TemporaryFailure) and lost.error.connection
    assert next_one.error is lost.error


def test_a_421_at_the_end_of_data_sends_the_next_message_on_a_new_connection(
    smtp_sink: SmtpSink,
) -> None:
    """A 421 (closing) in reply to a message's end of data: that message is deferred, the
    connection is dropped without a word more, and the next message, whose envelope
    followed on the closing connection, goes out on a new one, once."""
    smtp_sink.data_replies.append("421 4.3.2 closing")
    with _smtp(smtp_sink.url) as mailer:
        settled = [*mailer.submit(_message(0)), *mailer.submit(_message(1)), *mailer.settle()]
        opened = mailer.connections_opened
    deferred, sent = settled
    assert isinstance(deferred.error, TemporaryFailure) and deferred.error.code == 421
    assert not deferred.error.connection
    assert sent.message.message_id == "<m1@example.com>" and sent.error is None
    assert opened == 2
    assert smtp_sink.message_ids() == ["<m1@example.com>"]


def test_a_connection_due_for_recycling_or_a_check_settles_its_message_first(
    smtp_sink: SmtpSink,
) -> None:
    """Submitted messages with a connection recycled every two messages, and one left
    idle past IDLE_CHECK_SECONDS: the message in flight is settled on its own connection
    before the next is recycled or checked with NOOP, so each outcome is its own."""
    settled: list[Settled] = []
    with _smtp(smtp_sink.url + "&max_per_connection=2") as mailer:
        for n in range(5):
            if n == 3:
                mailer._last_used -= IDLE_CHECK_SECONDS + 1
            settled += mailer.submit(_message(n))
        settled += mailer.settle()
        opened = mailer.connections_opened
    assert [(each.message.message_id, each.error) for each in settled] == [
        (f"<m{n}@example.com>", None) for n in range(5)
    ]
    assert [each.reply for each in settled] == [
        f"250 2.0.0 Ok: queued as drip-sink-{n + 1}" for n in range(5)
    ]
    assert (opened, smtp_sink.noops) == (3, 1)
    assert smtp_sink.message_ids() == [f"<m{n}@example.com>" for n in range(5)]


def test_commands_leave_without_waiting_for_acknowledgements(smtp_sink: SmtpSink) -> None:
    """TCP_NODELAY: a pipelined envelope is a small write right behind a message not yet
    acknowledged, which Nagle's algorithm would hold back for a round trip."""
    with _smtp(smtp_sink.url) as mailer:
        mailer.send(_message())
        assert mailer._connection is not None and mailer._connection.sock is not None
        assert mailer._connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
