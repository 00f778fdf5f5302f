"""Outgoing webhooks against a real HTTP receiver on 127.0.0.1, every message verified with
the Standard Webhooks library (``standardwebhooks``: a receiver drip did not write)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import Engine, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.exceptions import InvalidWebhook
from drip.core.models import WebhookEndpoint, WebhookMessage
from drip.core.states import EventType, MailEventKind, WebhookStatus
from drip.core.webhooks import check_url
from drip.doctor import examine
from drip.feedback.bounces import BouncePolicy, record
from drip.feedback.clicks import record_click
from drip.lifecycle import actions
from drip.lifecycle.controls import Control
from drip.lifecycle.signup import Consent, sign_up
from drip.outbox.webhooks import GIVE_UP_AFTER, Claimed
from drip.reporting.metrics import exposition
from drip.runner import make_sender
from drip.sending import endpoints
from drip.sending.mailer import memory
from drip.sending.webhooks import MAX_RESPONSE, Dispatcher, Poster, run_beside, send_test
from drip.store.engine import make_engine
from drip.store.schema import upgrade
from tests.fixtures import COURSES_DIR, TEST_SECRET, WebhookReceiver, enrol

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # a Monday, in the past: the clock is not it


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    found = WebhookReceiver()
    yield found
    found.close()


@pytest.fixture(autouse=True)
def _empty_outbox() -> Iterator[None]:
    memory.outbox.clear()
    yield
    memory.outbox.clear()


def add(engine: Engine, url: str, events: str | None = None) -> WebhookEndpoint:
    with engine.begin() as connection:
        return endpoints.add_endpoint(
            connection, url=url, events=events, description="test", now=NOW
        )


def verified(receiver: WebhookReceiver, *secrets: str) -> list[dict[str, Any]]:
    """Every message received, each verified by the specification's own library with one
    of ``secrets`` (it also checks the timestamp against the real clock)."""
    events = []
    for headers, body, _ in receiver.received:
        for secret in secrets:
            try:
                events.append(Webhook(secret).verify(body, headers))
                break
            except WebhookVerificationError:
                continue
        else:
            raise AssertionError(f"no secret verifies {headers.get('webhook-id')}")
    return events


def messages(engine: Engine) -> list[WebhookMessage]:
    with engine.connect() as connection:
        return [
            WebhookMessage.model_validate(row._mapping)
            for row in connection.execute(select(WebhookMessage).order_by(WebhookMessage.id))
        ]


def dispatcher(engine: Engine, **kwargs: Any) -> Dispatcher:
    return Dispatcher(engine, **kwargs)


# -- what is told ----------------------------------------------------------------------------


def test_every_event_type_reaches_a_receiver_that_verifies_it(
    any_engine: Engine, settings: Settings, course: Course, receiver: WebhookReceiver
) -> None:
    """Each kind of change, through the doors that make it, reaches the endpoint signed as
    the specification says, with its documented data, and the timestamps are the real
    clock's although the run was given another ``now``."""
    endpoint = add(any_engine, receiver.url)
    catalog = Catalog({course.slug: course})
    with any_engine.begin() as connection:  # pending: a confirmation is queued
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email="pia@example.org")],
            consent=Consent(source="test"),
            by_operator=True,
            now=NOW,
        )
    uid = enrol(any_engine, course, "ana@example.org", now=NOW)  # confirmed
    enrol(any_engine, course, "bea@example.org", now=NOW)
    sender = make_sender(engine=any_engine, settings=settings, catalog=catalog)
    sender.send_due(now=NOW)  # lesson.sent (day 1), twice
    with any_engine.begin() as connection:
        record_click(
            connection,
            enrollment_uid=uid,
            day_id=course.days[0].id,
            day_number=1,
            link="class",
            now=NOW,
        )
        ana = actions.find(connection, email="ana@example.org")
        for control, extra in [(Control.PAUSE, {"days": 2}), (Control.RESUME, {})]:
            actions.control(
                connection, subscriber=ana, catalog=catalog, control=control, now=NOW, **extra
            )
    day = NOW
    for _ in range(7):  # ana completes the course
        day += timedelta(days=1)
        sender.send_due(now=day)
    with any_engine.begin() as connection:
        ana = actions.find(connection, email="ana@example.org")
        actions.control(
            connection, subscriber=ana, catalog=catalog, control=Control.RESTART, now=day
        )
        bea = actions.find(connection, email="bea@example.org")
        policy = BouncePolicy(soft_limit=3, soft_days=7)
        for kind in (MailEventKind.SOFT, MailEventKind.COMPLAINT):
            record(
                connection,
                subscriber_id=bea.id,
                kind=kind,
                source="test",
                diagnostic="4.2.2 mailbox full",
                now=day,
                policy=policy,
            )
        actions.unsubscribe(
            connection,
            subscriber=actions.find(connection, email="pia@example.org"),
            catalog=catalog,
            now=day,
        )
    counts = dispatcher(any_engine).run_due(day)

    events = verified(receiver, endpoint.secret)
    assert counts["delivered"] == len(events) == len(messages(any_engine))
    assert {e["type"] for e in events} == {t.value for t in EventType}
    by_type = {e["type"]: e for e in events}
    sent = by_type["lesson.sent"]
    assert sent["data"]["course"] == course.slug and sent["data"]["run"] == 1
    assert sent["data"]["day"]["id"] in {d.id for d in course.days}
    assert sent["data"]["subscriber"]["email"] in {"ana@example.org", "bea@example.org"}
    assert sent["data"]["message_id"].startswith("<")
    clicked = by_type["lesson.clicked"]["data"]
    assert clicked["subscriber"]["id"] == ana.uid
    assert clicked["day"] == {"id": course.days[0].id, "number": 1}
    assert by_type["enrollment.paused"]["data"]["paused_until"].endswith("Z")
    assert by_type["enrollment.restarted"]["data"]["next_lesson"]["day"]["number"] == 1
    assert by_type["subscriber.bounced"]["data"]["bounce"]["kind"] == "soft"
    assert by_type["subscriber.complained"]["data"]["complaint"]["source"] == "test"
    assert by_type["subscriber.pending"]["data"]["subscriber"]["status"] == "pending"
    completed = {
        e["data"]["subscriber"]["email"] for e in events if e["type"] == "course.completed"
    }
    assert completed == {"ana@example.org", "bea@example.org"}
    assert by_type["subscriber.confirmed"]["timestamp"] == "2026-11-23T07:00:00Z"
    stamps = [int(headers["webhook-timestamp"]) for headers, _, _ in receiver.received]
    assert all(abs(stamp - time.time()) < 60 for stamp in stamps), "the wall clock, not now"
    ids = [headers["webhook-id"] for headers, _, _ in receiver.received]
    assert len(set(ids)) == len(ids)


def test_an_endpoint_gets_only_the_types_it_chose(
    engine: Engine, course: Course, receiver: WebhookReceiver
) -> None:
    add(engine, receiver.url, events="subscriber.confirmed,course.completed")
    enrol(engine, course, "only@example.org", now=NOW)
    with engine.begin() as connection:
        actions.unsubscribe(
            connection,
            subscriber=actions.find(connection, email="only@example.org"),
            catalog=Catalog({course.slug: course}),
            now=NOW,
        )
    dispatcher(engine).run_due(NOW)
    assert receiver.types() == ["subscriber.confirmed"]


def test_with_no_endpoint_nothing_is_queued(engine: Engine, course: Course) -> None:
    enrol(engine, course, "quiet@example.org", now=NOW)
    assert messages(engine) == []


def test_a_change_rolled_back_tells_nothing(
    engine: Engine, course: Course, receiver: WebhookReceiver
) -> None:
    add(engine, receiver.url)
    with pytest.raises(RuntimeError), engine.begin() as connection:
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email="undone@example.org")],
            consent=Consent(source="test"),
            by_operator=True,
            confirmed=True,
            now=NOW,
        )
        raise RuntimeError("the transaction fails after the change")
    assert messages(engine) == []


# -- how it is delivered ------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_later_with_the_same_webhook_id(
    any_engine: Engine, course: Course, receiver: WebhookReceiver
) -> None:
    endpoint = add(any_engine, receiver.url)
    enrol(any_engine, course, "retry@example.org", now=NOW)
    receiver.replies = [500]
    posting = dispatcher(any_engine)
    assert posting.run_due(NOW)["retried"] == 1
    [waiting] = messages(any_engine)
    assert waiting.status == WebhookStatus.SCHEDULED and waiting.last_status == 500
    assert waiting.due_at == NOW + timedelta(minutes=5)
    assert posting.run_due(NOW + timedelta(minutes=4)) == Counter(), "not before its time"
    assert posting.run_due(NOW + timedelta(minutes=5))["delivered"] == 1
    first, second = (headers["webhook-id"] for headers, _, _ in receiver.received)
    assert first == second == waiting.event_id
    assert len(verified(receiver, endpoint.secret)) == 2
    assert messages(any_engine)[0].status == WebhookStatus.DELIVERED


def test_three_days_of_failures_give_up_and_turn_the_endpoint_off(
    engine: Engine, settings: Settings, course: Course, receiver: WebhookReceiver
) -> None:
    add(engine, receiver.url)
    healthy = add(engine, receiver.url + "/other", events="subscriber.unsubscribed")
    enrol(engine, course, "gone@example.org", now=NOW)
    receiver.replies = [503] * 1000
    posting = dispatcher(engine)
    now = NOW
    while now <= NOW + GIVE_UP_AFTER + timedelta(hours=6):
        posting.run_due(now)
        now += timedelta(hours=1)
    [message] = messages(engine)
    assert message.status == WebhookStatus.FAILED and message.failed_at is not None
    assert message.failed_at - NOW >= GIVE_UP_AFTER
    assert "HTTP 503" in (message.last_error or "")
    with engine.connect() as connection:
        off, on = (
            WebhookEndpoint.model_validate(row._mapping)
            for row in connection.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.id))
        )
    assert off.disabled_at is not None and "failing since" in (off.disabled_reason or "")
    assert on.disabled_at is None and on.id == healthy.id
    tries = len(receiver.received)
    assert 10 <= tries <= 25, "backoff, not a try every hour"
    said = [str(f) for f in examine(settings, dns=lambda _: None)]
    assert any("webhook endpoint 1" in line and "is off" in line for line in said), said
    metrics = exposition(engine).decode()
    assert "drip_webhooks_given_up_total 1.0" in metrics
    assert "drip_webhook_endpoints_off 1.0" in metrics
    enrol(engine, course, "later@example.org", now=now)
    assert len(messages(engine)) == 1, "an endpoint turned off gets nothing new"
    with engine.begin() as connection:
        assert endpoints.enable_endpoint(connection, off.id or 0)
    enrol(engine, course, "after@example.org", now=now)
    assert len(messages(engine)) == 2


def test_erasing_a_subscriber_erases_what_was_to_be_told_about_them_and_counts_stay(
    engine: Engine, course: Course, receiver: WebhookReceiver
) -> None:
    endpoint = add(engine, receiver.url)
    enrol(engine, course, "told@example.org", now=NOW)
    dispatcher(engine).run_due(NOW)
    enrol(engine, course, "erased@example.org", now=NOW)
    assert len(messages(engine)) == 2
    with engine.begin() as connection:
        actions.delete(connection, subscriber=actions.find(connection, email="erased@example.org"))
    assert [m.status for m in messages(engine)] == [WebhookStatus.DELIVERED]
    assert "erased@example.org" not in str(messages(engine))
    before = exposition(engine).decode()
    assert "drip_webhooks_delivered_total 1.0" in before
    with engine.begin() as connection:
        endpoints.remove_endpoint(connection, endpoint.id or 0)
    assert messages(engine) == []
    assert "drip_webhooks_delivered_total 1.0" in exposition(engine).decode(), "never down"


def test_two_dispatchers_at_once_post_each_message_once(
    any_engine: Engine, course: Course, receiver: WebhookReceiver
) -> None:
    add(any_engine, receiver.url)
    for n in range(12):
        enrol(any_engine, course, f"p{n}@example.org", now=NOW)
    receiver.replies = [("hold", 0.05)] * 12
    both = [dispatcher(any_engine, concurrency=2), dispatcher(any_engine, concurrency=2)]
    runs = [threading.Thread(target=d.run_due, args=(NOW,)) for d in both]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    ids = [headers["webhook-id"] for headers, _, _ in receiver.received]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert {m.status for m in messages(any_engine)} == {WebhookStatus.DELIVERED}


@pytest.mark.timing
def test_a_slow_endpoint_does_not_hold_the_send_run(
    engine: Engine, settings: Settings, course: Course, receiver: WebhookReceiver
) -> None:
    """The webhooks go in a thread beside the lessons: the run's lessons are recorded
    while an endpoint is still thinking."""
    add(engine, receiver.url)
    enrol(engine, course, "slow@example.org", now=NOW)
    receiver.replies = [("hold", 1.5)]
    sender = make_sender(engine=engine, settings=settings, catalog=Catalog({course.slug: course}))
    finished: list[float] = []
    start = time.monotonic()

    def lessons() -> Any:
        report = sender.send_due(now=NOW)
        finished.append(time.monotonic() - start)
        return report

    report, posted = run_beside(dispatcher(engine), lessons, now=NOW, stop=threading.Event())
    assert report.sent == 1 and finished[0] < 1.0
    assert posted["delivered"] == 2  # subscriber.confirmed, then the lesson.sent of the run
    assert time.monotonic() - start >= 1.5


def test_a_rotated_secret_signs_beside_the_old_one_for_a_day(
    engine: Engine, course: Course, receiver: WebhookReceiver
) -> None:
    old = add(engine, receiver.url)
    with engine.begin() as connection:
        new = endpoints.rotate_secret(connection, old.id or 0, now=NOW)
    assert new != old.secret and new.startswith("whsec_")
    enrol(engine, course, "rot@example.org", now=NOW)
    dispatcher(engine).run_due(NOW + timedelta(hours=23))
    enrol(engine, course, "rot2@example.org", now=NOW + timedelta(hours=25))
    dispatcher(engine).run_due(NOW + timedelta(hours=25))
    (during, _, _), (after, _, _) = receiver.received
    assert len(during["webhook-signature"].split(" ")) == 2
    assert len(after["webhook-signature"].split(" ")) == 1
    for secret in (old.secret, new):
        Webhook(secret).verify(receiver.received[0][1], during)
    Webhook(new).verify(receiver.received[1][1], after)
    with pytest.raises(WebhookVerificationError):
        Webhook(old.secret).verify(receiver.received[1][1], after)


# -- what drip will not do -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://crm.example.com/hook", "plain http:// only to this machine"),
        ("http://10.0.0.5/hook", "plain http:// only to this machine"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://[::169.254.169.254]/", "link-local"),
        ("https://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ("https://[2002:a9fe:a9fe::]/", "link-local"),
        ("https://255.255.255.255/", "not a web server's address"),
        ("http://[::ffff:8.8.8.8]/", "plain http:// only to this machine"),
        ("https://0.0.0.0/hook", "not a web server's address"),
        ("https://224.0.0.1/hook", "not a web server's address"),
        ("https://user:pass@crm.example.com/hook", "no user or password"),
        ("file:///etc/passwd", "an https:// URL"),
        ("gopher://crm.example.com/", "an https:// URL"),
        ("https://crm.example.com:99999/", "is not a URL"),
        ("https://crm.example.com/a b", "no spaces"),
        ("https://crm.example.com/" + "a" * 3000, "longer than"),
    ],
)
def test_an_endpoint_that_could_reach_what_it_should_not_is_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidWebhook, match=why):
        check_url(url)


def _claimed(url: str, secret: str = "whsec_" + "A" * 44) -> Claimed:
    return Claimed(
        message_id=0,
        event_id="msg_test",
        body='{"type":"webhook.test"}',
        attempts=1,
        created_at=NOW,
        lease=NOW,
        endpoint_id=1,
        url=url,
        secrets=[secret],
    )


def test_a_name_that_resolves_where_it_should_not_is_refused_before_connecting(
    receiver: WebhookReceiver,
) -> None:
    """DNS is asked once and the connection made to the address checked: a name that
    answers with a link-local address, even beside a good one, gets nothing."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])

    def resolver(*answers: str) -> Any:
        def resolve(host: str, port: int, **_: Any) -> list[Any]:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers]

        return resolve

    for answers in [("169.254.169.254",), ("93.184.216.34", "169.254.169.254")]:
        poster = Poster(resolve=resolver(*answers))
        attempt = poster.post(_claimed("https://hooks.example.com/x"))
        assert attempt.status is None and "link-local" in (attempt.error or "")
    poster = Poster(resolve=resolver("127.0.0.1"))  # the same name, pinned to this machine
    attempt = poster.post(_claimed(f"http://localhost:{port}/pinned"))
    assert attempt.delivered
    headers, _, path = receiver.received[-1]
    assert path == "/pinned" and headers["host"] == f"localhost:{port}"


def test_a_redirect_is_an_answer_never_followed(receiver: WebhookReceiver) -> None:
    elsewhere = WebhookReceiver()
    try:
        receiver.replies = [("redirect", elsewhere.url)]
        attempt = Poster().post(_claimed(receiver.url))
        assert attempt.status == 302 and not attempt.delivered
        assert elsewhere.url in (attempt.error or "")
        assert elsewhere.received == []
    finally:
        elsewhere.close()


def test_a_receivers_answer_is_kept_without_control_characters(
    receiver: WebhookReceiver,
) -> None:
    receiver.replies = [("say", 500, b"oops \x1b[31mred\x1b[0m\r\nX-Injected: 1")]
    attempt = Poster().post(_claimed(receiver.url))
    assert attempt.error is not None and "\x1b" not in attempt.error
    assert "\n" not in attempt.error and "red" in attempt.error


def test_no_answer_in_time_and_a_huge_answer_are_failures_read_no_further(
    receiver: WebhookReceiver,
) -> None:
    receiver.replies = [("hold", 3)]
    start = time.monotonic()
    attempt = Poster(timeout=0.5).post(_claimed(receiver.url))
    assert attempt.status is None and "no answer within 0.5 s" in (attempt.error or "")
    assert time.monotonic() - start < 2
    receiver.replies = [("big", 5 * MAX_RESPONSE)]
    attempt = Poster().post(_claimed(receiver.url))
    assert attempt.status == 500 and len(attempt.error or "") < 400


def test_https_is_verified_for_the_endpoints_name_while_the_address_is_pinned(
    tmp_path: Path,
) -> None:
    """A TLS receiver with a certificate for "hooks.test": drip connects to the address
    it resolved and checked, and still verifies the certificate against the name."""
    authority = trustme.CA()
    certificate = authority.issue_cert("hooks.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    receiver = WebhookReceiver()
    receiver.server.socket = server_context.wrap_socket(receiver.server.socket, server_side=True)
    port = receiver.server.server_address[1]
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    def resolve(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    try:
        poster = Poster(resolve=resolve, verify=client_context)
        assert poster.post(_claimed(f"https://hooks.test:{port}/tls")).delivered
        wrong = poster.post(_claimed(f"https://other.test:{port}/tls"))
        assert not wrong.delivered and "certificate" in (wrong.error or "").lower()
    finally:
        receiver.close()


# -- the commands -----------------------------------------------------------------------------


def _drip(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("drip")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'hooks.db'}",
        "DRIP_SECRET_KEY": TEST_SECRET,
        "DRIP_COURSES_DIR": str(COURSES_DIR),
        "DRIP_SMTP_URL": f"file://{tmp_path / 'outbox'}",
    }
    assert _drip(env, "db", "upgrade").returncode == 0
    return env


def test_the_webhooks_commands(
    cli_env: dict[str, str], receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from drip.cli import app

    for name, value in cli_env.items():
        if name.startswith("DRIP_"):
            monkeypatch.setenv(name, value)
    runner = CliRunner()

    def _drip(_: dict[str, str], *args: str) -> Any:
        result = runner.invoke(app, list(args))
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.output)

    added = _drip(cli_env, "webhooks", "add", receiver.url, "--description", "crm")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and secret.count("whsec_") == 1
    listed = _drip(cli_env, "webhooks", "list", "--json")
    [row] = __import__("json").loads(listed.stdout)
    assert (row["id"], row["url"], row["events"], row["enabled"]) == (1, receiver.url, ["*"], True)
    assert secret not in listed.stdout
    tested = _drip(cli_env, "webhooks", "test", "1")
    assert tested.returncode == 0 and "delivered (HTTP 200)" in tested.stdout
    [event] = verified(receiver, secret)
    assert event["type"] == "webhook.test"
    receiver.replies = [500]
    assert _drip(cli_env, "webhooks", "test", "1").returncode == 1
    rotated = _drip(cli_env, "webhooks", "rotate-secret", "1")
    assert rotated.stdout.strip().splitlines()[-1].startswith("whsec_")
    sent = _drip(
        cli_env, "subscribers", "add", "cli@example.org", "--confirmed", "--now", NOW.isoformat()
    )
    assert sent.returncode == 0
    run = _drip(cli_env, "send-due", "--now", NOW.isoformat())
    assert run.returncode == 0 and "webhooks: 2 delivered" in run.stdout, run.stdout
    for bad, words in [
        (["webhooks", "add", "http://crm.example.com/"], "plain http:// only to this machine"),
        (["webhooks", "add", receiver.url, "--events", "lesson.opened"], "unknown event type"),
        (["webhooks", "remove", "9"], "no webhook endpoint 9"),
        (["webhooks", "test", "9"], "no webhook endpoint 9"),
    ]:
        result = _drip(cli_env, *bad)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert _drip(cli_env, "webhooks", "remove", "1").returncode == 0
    assert __import__("json").loads(_drip(cli_env, "webhooks", "list", "--json").stdout) == []


@pytest.mark.slow
def test_a_kill_9_during_a_delivery_then_another_run_delivers_it_once(
    cli_env: dict[str, str], receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """The process dies while the endpoint holds the request: the message stays claimed
    until its lease runs out, then the next run posts it again with the same webhook-id;
    it is recorded delivered once, and later runs post nothing more."""
    engine = make_engine(cli_env["DRIP_DATABASE_URL"])
    upgrade(engine)
    add(engine, receiver.url, events="subscriber.confirmed")
    enrol(engine, Catalog.from_dir(COURSES_DIR).get("yin-immersion"), "k@example.org", now=NOW)
    receiver.replies = [("hold", 30)]
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("drip")), "send-due", "--now", NOW.isoformat()],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.received, "the POST began"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    [held] = messages(engine)
    assert held.status == WebhookStatus.SENDING
    soon = _drip(cli_env, "send-due", "--now", (NOW + timedelta(minutes=1)).isoformat())
    assert soon.returncode == 0 and len(receiver.received) == 1, "the lease still holds"
    later = _drip(cli_env, "send-due", "--now", (NOW + timedelta(minutes=3)).isoformat())
    assert later.returncode == 0 and "webhooks: 1 delivered" in later.stdout, later.stdout
    again = _drip(cli_env, "send-due", "--now", (NOW + timedelta(minutes=10)).isoformat())
    assert "webhooks" not in again.stdout
    first, second = (headers["webhook-id"] for headers, _, _ in receiver.received)
    assert first == second
    [done] = messages(engine)
    assert done.status == WebhookStatus.DELIVERED and done.attempts == 2
    engine.dispose()


def test_send_test_posts_to_the_endpoint_alone(receiver: WebhookReceiver) -> None:
    endpoint = WebhookEndpoint(id=7, url=receiver.url, secret="whsec_" + "B" * 44, created_at=NOW)
    attempt = send_test(Poster(), endpoint, now=NOW)
    assert attempt.delivered
    [event] = verified(receiver, endpoint.secret)
    assert event["data"]["endpoint"] == 7
