"""Helpers the tests share: settings, a confirmed subscriber, the web app, paths.

Tests import these from here (``from tests.fixtures import enrol``); ``conftest.py`` holds
only pytest fixtures. ``COURSES_DIR`` holds the shipped course alone, so a teacher's own
course in ``courses/`` changes no test.
"""

from __future__ import annotations

import os
import select as socket_select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import OperationalError

from drip.core.config import Settings
from drip.core.courses import Course
from drip.core.entries import Entry
from drip.core.models import Enrollment, Subscriber
from drip.lifecycle import actions
from drip.lifecycle.signup import Consent, SignupResult, sign_up
from drip.sending.mailer import memory
from drip.store import tallies
from drip.web import create_app

ROOT = Path(__file__).resolve().parent.parent
#: the shipped course, as the package ships it
SHIPPED_COURSE = ROOT / "courses" / "yin-immersion.yaml"
#: a course directory holding the shipped course and nothing else (a link to it)
COURSES_DIR = ROOT / "tests" / "courses"
TEST_SECRET = "test-secret-key-not-for-production"
PG_URL = os.environ.get("DRIP_TEST_POSTGRES_URL")


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'drip.db'}",
        "smtp_url": "memory://",
        "secret_key": TEST_SECRET,
        "courses_dir": COURSES_DIR,
        "send_rate": 0,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def enrol(
    engine: Engine,
    course: Course,
    email: str,
    *,
    now: datetime,
    timezone: str | None = None,
    name: str = "",
) -> str:
    """A subscriber the operator added as confirmed; returns their enrollment's uid."""
    with engine.begin() as connection:
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email=email, name=name, timezone=timezone)],
            consent=Consent(source="test"),
            by_operator=True,
            confirmed=True,
            now=now,
        )
        return str(
            connection.execute(
                select(Enrollment.uid)
                .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)  # type: ignore[arg-type]
                .where(Subscriber.email == email.lower(), Enrollment.course_slug == course.slug)
            ).scalar_one()
        )


def enrol_many(
    engine: Engine, course: Course, emails: Sequence[str], *, now: datetime, confirmed: bool = True
) -> list[SignupResult]:
    """Subscribers the operator added in one batch (an import), as confirmed unless
    ``confirmed`` is False (then each is sent a confirmation); the outcomes."""
    with engine.begin() as connection:
        return sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email=email) for email in emails],
            consent=Consent(source="test"),
            by_operator=True,
            confirmed=confirmed,
            now=now,
        )


def erase(engine: Engine, email: str) -> None:
    """Erase a subscriber as the operator does (``drip subscribers delete``)."""
    with engine.begin() as connection:
        actions.delete(connection, subscriber=actions.find(connection, email=email))


def lock_waited(engine: Engine, *, unless: threading.Thread | None = None) -> bool:
    """PostgreSQL: until a session of this database waits for a lock (True), or the
    thread ``unless`` has finished, or 30 s have passed (False)."""
    deadline = time.monotonic() + 30
    with engine.connect() as watcher:
        while time.monotonic() < deadline and (unless is None or unless.is_alive()):
            waiting = watcher.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            watcher.rollback()
            if waiting:
                return True
            time.sleep(0.02)
    return False


def assert_tallies_hold(engine: Engine) -> None:
    """The counts the triggers kept (``drip.store.tallies``) are what the rows count:
    the same for what the rows hold, at least as many for events (an erased subscriber's
    stay counted). Nothing to check where the schema was never made or was taken apart."""
    try:
        with engine.begin() as connection:
            if not inspect(connection).has_table("tally"):
                return
            tallies.fold(connection)
            kept, counted = tallies.totals(connection), tallies.recount(connection)
    except OperationalError:
        return  # a database a test left locked or broken on purpose
    state = {key: n for key, n in kept.items() if not key[0].startswith("drip_")}
    assert state == {key: n for key, n in counted.items() if not key[0].startswith("drip_")}
    short = {key: (kept[key], n) for key, n in counted.items() if kept[key] < n}
    assert not short, f"event counts the triggers missed: {short}"


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The web app through TestClient (its start-up and shutdown run), redirects not
    followed, with the in-memory outbox empty before and after."""
    memory.outbox.clear()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client
        assert_tallies_hold(client.app.state.drip.engine)  # type: ignore[attr-defined]
    memory.outbox.clear()


@contextmanager
def scripted_server(
    talk: Callable[[socket.socket], None], host: str = "127.0.0.1"
) -> Iterator[int]:
    """A one-connection server on ``host`` that runs ``talk(connection)``; yields its port."""
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(1)

        def serve() -> None:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                try:
                    talk(connection)
                except OSError:
                    pass  # the client hung up, as it should

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
    thread.join(timeout=10)


class WithholdingServer:
    """A PIPELINING server that answers in command order but sends nothing until a
    message's DATA (or QUIT) arrives, or the client has been silent for a second: a
    message's end of data is answered only once the next message's MAIL, RCPT and DATA
    are in, if they come at once. ``finals``: each message's reply to its end of data in
    turn (None: hang up instead). One connection."""

    def __init__(self, finals: list[bytes | None]) -> None:
        self.finals = finals
        self.seen: list[bytes] = []
        #: replies sent because the client went quiet, not because a command asked
        self.waited = 0
        #: every line of message content received
        self.content: list[bytes] = []
        self._buffer = b""

    def _line(self, connection: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            chunk = connection.recv(65536)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def talk(self, connection: socket.socket) -> None:
        connection.sendall(b"220 withholding.test ESMTP\r\n")
        self._line(connection)  # EHLO
        connection.sendall(b"250-withholding.test\r\n250 PIPELINING\r\n")
        queued: list[bytes] = []
        while line := self._line(connection):
            verb = line.split(b" ")[0].split(b":")[0].strip().upper()
            self.seen.append(verb)
            if verb == b"DATA":
                connection.sendall(b"".join([*queued, b"354 go on\r\n"]))
                queued = []
                while (content := self._line(connection)) not in (b".\r\n", b""):
                    self.content.append(content)
                self.seen.append(b".")
                final = self.finals.pop(0)
                if final is None:
                    return  # hang up without a word
                queued.append(final)
                quiet = not self._buffer and not socket_select.select([connection], [], [], 1.0)[0]
                if quiet:  # a client waiting for the reply gets it, a second late
                    self.waited += 1
                    connection.sendall(b"".join(queued))
                    queued = []
            elif verb == b"QUIT":
                connection.sendall(b"".join([*queued, b"221 bye\r\n"]))
                return
            else:
                queued.append(b"250 ok\r\n")


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that keeps every POST (headers and body) and
    answers with ``replies`` in turn (a status, or ("hold", seconds) to wait before a
    200, ("redirect", url), ("say", status, body), ("big", size)), then 200 for the rest."""

    def __init__(self) -> None:
        import http.server

        self.received: list[tuple[dict[str, str], bytes, str]] = []
        self.replies: list[Any] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(
                        ({k.lower(): v for k, v in self.headers.items()}, body, self.path)
                    )
                    reply = receiver.replies.pop(0) if receiver.replies else 200
                headers: dict[str, str] = {}
                if isinstance(reply, tuple) and reply[0] == "hold":
                    time.sleep(reply[1])
                    reply = 200
                elif isinstance(reply, tuple) and reply[0] == "redirect":
                    headers["Location"] = reply[1]
                    reply = 302
                elif isinstance(reply, tuple) and reply[0] == "say":
                    self.send_response(reply[1])
                    self.send_header("Content-Length", str(len(reply[2])))
                    self.end_headers()
                    self.wfile.write(reply[2])
                    return
                elif isinstance(reply, tuple) and reply[0] == "big":
                    payload = b"x" * reply[1]
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(int(reply))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign] # a client gone
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        import json

        with self.lock:
            return [json.loads(body) for _, body, _ in self.received]

    def types(self) -> list[str]:
        return [event["type"] for event in self.events()]
