"""The dashboard at /admin: off without a password, sign-in, session, CSRF, rate limit,
the pages, the subscriber actions, previews, test sends, and `drip admin set-password`."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from drip.cli import app as cli_app
from drip.core.config import Settings, get_settings
from drip.core.courses import Catalog
from drip.core.entries import Entry
from drip.core.models import Delivery, Enrollment, Subscriber
from drip.core.states import DeliveryStatus, EmailKind, SubscriberStatus
from drip.lifecycle.signup import Consent, sign_up
from drip.runner import make_sender
from drip.sending.mailer import memory
from drip.store import installation, passwords
from drip.store.engine import engine_for
from drip.testing import SmtpSink
from drip.web import create_app
from drip.web.admin import charts
from drip.web.admin.auth import SESSION_COOKIE
from drip.web.admin.charts import FUNNEL, Group, bar_chart, funnel_chart
from tests.fixtures import (
    COURSES_DIR,
    ROOT,
    SHIPPED_COURSE,
    TEST_SECRET,
    app_client,
    enrol,
    make_settings,
)

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _store_password(settings: Settings, password: str) -> str:
    password_hash = passwords.hash_password(password)
    engine = engine_for(settings)
    with engine.begin() as connection:
        passwords.store(connection, password_hash)
    engine.dispose()
    return password_hash


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """The app, with the dashboard's password set."""
    _store_password(app_settings, PASSWORD)
    with app_client(app_settings) as test_client:
        yield test_client


@pytest.fixture
def db(client: TestClient) -> Engine:
    return client.app.state.drip.engine  # type: ignore[attr-defined]


def login(client: TestClient, password: str = PASSWORD) -> str:
    """Sign in; the session's CSRF token (from the overview's forms)."""
    form = client.get("/admin/login")
    answer = client.post(
        "/admin/login", data={"csrf": CSRF.search(form.text)[1], "password": password}
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/admin")
    return str(CSRF.search(client.get("/admin").text)[1])


def wrong_login(client: TestClient) -> int:
    form = client.get("/admin/login")
    token = CSRF.search(form.text)[1]
    return client.post(
        "/admin/login", data={"csrf": token, "password": "not the password"}
    ).status_code


def row(db: Engine, email: str) -> Subscriber | None:
    with Session(db) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def uid_of(db: Engine, email: str) -> str:
    found = row(db, email)
    assert found is not None
    return found.uid


def add_pending(db: Engine, email: str, *, name: str = "") -> None:
    course = Catalog.from_dir(COURSES_DIR).get("yin-immersion")
    with db.begin() as connection:
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email=email, name=name)],
            consent=Consent(source="test"),
            by_operator=True,
            resend_gap_seconds=0,
            now=datetime.now(UTC),
        )


def sent(client: TestClient, *, wake: bool = False) -> list[str]:
    """The recipients of what the app's prompt sender sent, once it has finished what it
    was woken for (``wake``: by the test, for what the test itself queued)."""
    if wake:
        client.app.state.drip.prompt.wake()  # type: ignore[attr-defined]
    assert client.app.state.drip.prompt.wait_idle(10)  # type: ignore[attr-defined]
    return [message.recipient for message in memory.outbox]


# -- off, signed out, signing in -------------------------------------------------------------


def test_without_a_password_the_dashboard_does_not_exist(app_settings: Settings) -> None:
    """No password stored nor configured: every /admin URL answers 404, the login too."""
    with TestClient(create_app(app_settings), follow_redirects=False) as client:
        for path in (
            "/admin",
            "/admin/login",
            "/admin/subscribers",
            "/admin/courses/yin-immersion",
        ):
            assert client.get(path).status_code == 404, path
        assert client.post("/admin/login", data={"password": "x"}).status_code == 404
        assert client.get("/admin/nope").json() == client.get("/nope").json()


def test_signed_out_pages_redirect_to_the_login(client: TestClient) -> None:
    """Every page redirects (303) to the login form until signed in."""
    for path in ("/admin", "/admin/subscribers?q=a", "/admin/courses/yin-immersion/emails/1"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login"), path
    assert client.get("/admin/login").status_code == 200


def test_wrong_password_is_refused_and_the_sixth_try_in_a_minute_gets_429(
    client: TestClient,
) -> None:
    """Five wrong passwords get the form again (401, "wrong password"); the sixth try
    from that address within a minute is refused unchecked, even the right password."""
    form = client.get("/admin/login")
    token = CSRF.search(form.text)[1]
    for _ in range(5):
        answer = client.post("/admin/login", data={"csrf": token, "password": "guess-guess-guess"})
        assert answer.status_code == 401
        assert "wrong password" in answer.text
        assert "drip_admin=" not in answer.headers.get("set-cookie", "")
    answer = client.post("/admin/login", data={"csrf": token, "password": PASSWORD})
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) > 0
    assert client.get("/admin").status_code == 303


def test_the_login_limit_is_per_client_address(tmp_path: Path) -> None:
    """Behind a proxy, another client's address may still sign in while one is limited."""
    settings = make_settings(tmp_path, trust_forwarded_for=True)
    _store_password(settings, PASSWORD)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        token = CSRF.search(client.get("/admin/login").text)[1]

        def attempt(ip: str, password: str) -> int:
            return client.post(
                "/admin/login",
                data={"csrf": token, "password": password},
                headers={"X-Forwarded-For": ip},
            ).status_code

        assert [attempt("203.0.113.9", "guess-guess-guess") for _ in range(6)][-1] == 429
        assert attempt("198.51.100.7", PASSWORD) == 303


def test_the_session_cookie_is_httponly_strict_and_scoped_to_admin(client: TestClient) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Path=/admin, 12 h, not Secure on
    plain HTTP."""
    form = client.get("/admin/login")
    answer = client.post(
        "/admin/login", data={"csrf": CSRF.search(form.text)[1], "password": PASSWORD}
    )
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("drip_admin=")]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/admin", "max-age=43200"} <= attributes
    assert "secure" not in attributes


def test_the_cookies_are_secure_when_served_over_https(tmp_path: Path) -> None:
    """With an https:// DRIP_BASE_URL, the login form's and the session's cookies are Secure."""
    settings = make_settings(tmp_path, base_url="https://courses.example.org")
    _store_password(settings, PASSWORD)
    with TestClient(
        create_app(settings), base_url="https://testserver", follow_redirects=False
    ) as client:
        form = client.get("/admin/login")
        assert "; secure" in form.headers["set-cookie"].lower()
        answer = client.post(
            "/admin/login", data={"csrf": CSRF.search(form.text)[1], "password": PASSWORD}
        )
        [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("drip_admin=")]
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}


def test_a_new_password_ends_every_session(client: TestClient, app_settings: Settings) -> None:
    """Once the password changes, an old session cookie signs in no more."""
    login(client)
    assert client.get("/admin").status_code == 200
    _store_password(app_settings, "a different password now")
    assert client.get("/admin").status_code == 303


def test_a_forged_or_stale_session_cookie_is_refused(client: TestClient) -> None:
    """A cookie changed by one character, signed with another key, or older than 12 hours
    signs nobody in; one 11 hours old still does."""
    gate = client.app.state.drip.admin  # type: ignore[attr-defined]
    login(client)
    good = client.cookies["drip_admin"]
    client.cookies.clear()

    def status(cookie: str) -> int:
        return client.get("/admin", headers={"Cookie": f"drip_admin={cookie}"}).status_code

    assert status(good) == 200
    # one character of the signature changed (not its last: in base64 that one may only
    # carry padding bits, and then the signature is unchanged)
    head, signature = good.rsplit(".", 1)
    forged = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert status(forged) == 303
    with engine_for(client.app.state.drip.settings).connect() as connection:  # type: ignore[attr-defined]
        password_hash = passwords.current_hash(client.app.state.drip.settings, connection)  # type: ignore[attr-defined]
    assert password_hash is not None
    other = type(gate)(["another-key-of-16-chars-or-more"], secure=False)
    assert status(other.new_session(password_hash)) == 303
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 13 * 3600)
        stale = gate.new_session(password_hash)
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 11 * 3600)
        recent = gate.new_session(password_hash)
    assert (status(stale), status(recent)) == (303, 200)


def test_logout_ends_the_session(client: TestClient) -> None:
    """Signing out (a POST with the session's token) clears the cookie and ends the
    session on the server: a copy of the cookie taken before opens nothing, and the login
    page shows its form to it; another session goes on."""
    phone = TestClient(client.app, follow_redirects=False)  # the same teacher, elsewhere
    login(phone)
    token = login(client)
    kept = client.cookies.get(SESSION_COOKIE)
    answer = client.post("/admin/logout", data={"csrf": token})
    assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login")
    assert client.get("/admin").status_code == 303
    replay = TestClient(client.app, follow_redirects=False)
    replay.cookies.set(SESSION_COOKIE, kept, path="/admin")
    assert replay.get("/admin").status_code == 303
    assert replay.get("/admin/login").status_code == 200  # the form, not a redirect loop
    assert phone.get("/admin").status_code == 200


# -- CSRF ----------------------------------------------------------------------------------


def test_a_post_without_the_right_csrf_token_is_refused(client: TestClient, db: Engine) -> None:
    """An action posted with no token, a wrong one, or another session's, is refused
    (403) and changes nothing; with its own session's token it acts."""
    enrol(
        db,
        client.app.state.drip.catalog.get("yin-immersion"),
        "ana@example.org",
        now=datetime.now(UTC),
    )  # type: ignore[attr-defined]
    uid = uid_of(db, "ana@example.org")
    their_token = login(TestClient(client.app, follow_redirects=False))  # another browser
    token = login(client)
    assert their_token != token
    url = f"/admin/subscribers/{uid}/unsubscribe"
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": their_token}):
        answer = client.post(url, data=data)
        assert answer.status_code == 403, data
        assert "out of date" in answer.text
    assert row(db, "ana@example.org").status == SubscriberStatus.ACTIVE  # type: ignore[union-attr]
    assert client.post(url, data={"csrf": token}).status_code == 303
    assert row(db, "ana@example.org").status == SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]


def test_the_login_form_needs_its_csrf_token(client: TestClient) -> None:
    """A login posted without the form's token, or without its cookie, is refused (403)
    before the password is looked at."""
    token = CSRF.search(client.get("/admin/login").text)[1]
    assert client.post("/admin/login", data={"password": PASSWORD}).status_code == 403
    assert (
        client.post("/admin/login", data={"csrf": "x" + token, "password": PASSWORD}).status_code
        == 403
    )
    client.cookies.clear()
    assert (
        client.post("/admin/login", data={"csrf": token, "password": PASSWORD}).status_code == 403
    )
    assert client.get("/admin").status_code == 303


# -- pages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("smtp_sink", ["pipelining"], indirect=True)
def test_the_overview_charts_the_funnel_signups_and_failures(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """After day 1 went to one subscriber and bounced for another, the overview's funnel
    chart, signups chart and failure and bounce tables say so."""
    settings = make_settings(tmp_path, smtp_url=smtp_sink.url, max_attempts=1)
    _store_password(settings, PASSWORD)
    engine = engine_for(settings)
    catalog = Catalog.from_dir(COURSES_DIR)
    course = catalog.get("yin-immersion")
    now = datetime.now(UTC)
    for name in ("ana", "bounce"):
        enrol(engine, course, f"{name}@example.org", now=now)
    smtp_sink.rcpt_replies["bounce@example.org"] = "550 5.1.1 no such user"
    make_sender(engine=engine, settings=settings, catalog=catalog).send_due(now=now)
    engine.dispose()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        login(client)
        page = client.get("/admin").text
    day1 = f"Day 1 ({course.days[0].id})"
    assert page.count('<svg class="funnel-chart"') == 1
    assert f"<title>{day1}: 1 sent</title>" in page
    assert f"<title>{day1}: 1 bounced</title>" in page
    assert f"<title>{day1}: 0 clicked</title>" in page
    assert '<svg class="signups-chart"' in page
    assert f"<title>{now.date().isoformat()}: 2 signups</title>" in page
    assert f"<title>{(now - timedelta(days=1)).date().isoformat()}: 0 signups</title>" in page
    failures = page.split("Recent failures")[1].split("Recent bounces")[0]
    assert "bounce@example.org" in failures and "no such user" in failures
    assert "ana@example.org" not in failures
    bounces = page.split("Recent bounces")[1]
    assert "bounce@example.org" in bounces and "hard" in bounces


def test_a_bar_chart_scales_to_its_highest_value() -> None:
    """Bars are as tall as their share of the highest value; all zeros draw flat bars."""
    chart = bar_chart(
        css_class="c",
        title="t",
        series=FUNNEL[:1],
        groups=[Group("a", "A", [2]), Group("b", "B", [4])],
    )
    low, high = chart.bars
    assert high.y == charts.TOP  # the highest reaches the top of the plot
    assert high.height == pytest.approx(2 * low.height)
    assert high.y + high.height == pytest.approx(low.y + low.height)
    assert [label.text for label in chart.ticks] == ["0", "4"]
    flat = funnel_chart(
        {
            "course": "x",
            "days": [
                {"day": 1, "id": "d1", "sent": 0, "clicked": 0, "unsubscribed": 0, "bounced": 0}
            ],
        }
    )
    assert {bar.height for bar in flat.bars} == {0} and len(flat.bars) == len(FUNNEL)


def test_search_finds_addresses_by_substring_in_any_case(client: TestClient, db: Engine) -> None:
    """`q` matches part of an address, whatever its case, and lists no one else; `%` is
    a plain character, not a wildcard."""
    for email in ("ana@example.org", "joanna@elsewhere.net", "bob@example.org"):
        add_pending(db, email)
    login(client)
    page = client.get("/admin/subscribers", params={"q": "AN"}).text
    assert "ana@example.org" in page and "joanna@elsewhere.net" in page
    assert "bob@example.org" not in page
    wildcard = client.get("/admin/subscribers", params={"q": "%"}).text
    assert "No subscriber matches" in wildcard and "@example.org" not in wildcard
    everyone = client.get("/admin/subscribers").text
    assert all(e in everyone for e in ("ana@", "joanna@", "bob@"))


def test_the_subscriber_page_shows_their_record_and_escapes_it(
    client: TestClient, db: Engine
) -> None:
    """A name holding markup is shown as text, on the page and in search results."""
    add_pending(db, "eve@example.org", name="<script>alert(1)</script>")
    login(client)
    for page in (
        client.get(f"/admin/subscribers/{uid_of(db, 'eve@example.org')}").text,
        client.get("/admin/subscribers", params={"q": "eve"}).text,
    ):
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    record = client.get(f"/admin/subscribers/{uid_of(db, 'eve@example.org')}").text
    assert "yin-immersion (pending)" in record and "confirm:" in record
    assert "Resend confirmation" in record
    assert client.get("/admin/subscribers/no-such-uid").status_code == 404


# -- actions -----------------------------------------------------------------------------


def _with_goodbye(tmp_path: Path) -> Path:
    courses = tmp_path / "courses"
    courses.mkdir()
    text = SHIPPED_COURSE.read_text().replace("goodbye_email: false", "goodbye_email: true")
    (courses / SHIPPED_COURSE.name).write_text(text)
    return courses


def test_unsubscribe_acts_on_that_subscriber_and_queues_their_goodbye(tmp_path: Path) -> None:
    """Unsubscribe stops that subscriber only and queues the course's goodbye email,
    which the prompt sender then sends to them."""
    settings = make_settings(tmp_path, courses_dir=_with_goodbye(tmp_path))
    _store_password(settings, PASSWORD)
    memory.outbox.clear()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        db = client.app.state.drip.engine  # type: ignore[attr-defined]
        course = client.app.state.drip.catalog.get("yin-immersion")  # type: ignore[attr-defined]
        for name in ("ana", "ben"):
            enrol(db, course, f"{name}@example.org", now=datetime.now(UTC))
        token = login(client)
        answer = client.post(
            f"/admin/subscribers/{uid_of(db, 'ben@example.org')}/unsubscribe", data={"csrf": token}
        )
        assert answer.status_code == 303
        assert "Unsubscribed" in client.get(answer.headers["location"]).text
        assert row(db, "ben@example.org").status == SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
        assert row(db, "ana@example.org").status == SubscriberStatus.ACTIVE  # type: ignore[union-attr]
        assert "ben@example.org" in sent(client)
        goodbye = [m for m in memory.outbox if m.recipient == "ben@example.org"][-1]
        assert (
            "You are unsubscribed"
            in message_from_bytes(goodbye.data, policy=policy.default)["Subject"]
        )
        with Session(db) as session:
            pending = session.exec(
                select(Delivery.status)
                .join(Enrollment, col(Enrollment.id) == Delivery.enrollment_id)
                .join(Subscriber, col(Subscriber.id) == Enrollment.subscriber_id)
                .where(Subscriber.email == "ben@example.org", Delivery.kind == EmailKind.LESSON)
            ).all()
        assert DeliveryStatus.SCHEDULED not in pending
    memory.outbox.clear()


def test_delete_needs_the_box_ticked_and_erases_only_that_subscriber(
    client: TestClient, db: Engine
) -> None:
    """Without the confirmation box nothing is deleted; with it, that subscriber's row
    goes and the other stays."""
    for email in ("ana@example.org", "ben@example.org"):
        add_pending(db, email)
    token = login(client)
    url = f"/admin/subscribers/{uid_of(db, 'ben@example.org')}/delete"
    answer = client.post(url, data={"csrf": token})
    assert "tick the box" in client.get(answer.headers["location"]).text
    assert row(db, "ben@example.org") is not None
    answer = client.post(url, data={"csrf": token, "confirm": "yes"})
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "/admin/subscribers?done=deleted",
    )
    assert row(db, "ben@example.org") is None
    assert row(db, "ana@example.org") is not None
    assert client.post(url, data={"csrf": token, "confirm": "yes"}).status_code == 404


def test_resend_queues_a_confirmation_only_for_a_pending_subscriber(
    client: TestClient, db: Engine
) -> None:
    """A pending subscriber gets a fresh confirmation email; an active one gets nothing."""
    add_pending(db, "pat@example.org")
    enrol(
        db,
        client.app.state.drip.catalog.get("yin-immersion"),
        "ana@example.org",
        now=datetime.now(UTC),
    )  # type: ignore[attr-defined]
    before = sent(client, wake=True)
    token = login(client)
    answer = client.post(
        f"/admin/subscribers/{uid_of(db, 'pat@example.org')}/resend", data={"csrf": token}
    )
    assert answer.headers["location"].endswith("?done=resent")
    assert sent(client)[len(before) :] == ["pat@example.org"]
    confirmation = message_from_bytes(memory.outbox[-1].data, policy=policy.default)
    assert confirmation["Subject"].startswith("Please confirm")
    answer = client.post(
        f"/admin/subscribers/{uid_of(db, 'ana@example.org')}/resend", data={"csrf": token}
    )
    assert answer.headers["location"].endswith("?done=not-pending")
    assert sent(client)[len(before) :] == ["pat@example.org"]
    assert (
        "Resend confirmation"
        not in client.get(f"/admin/subscribers/{uid_of(db, 'ana@example.org')}").text
    )


# -- a course's emails -----------------------------------------------------------------------


def test_every_email_previews_at_phone_and_desktop_width(client: TestClient) -> None:
    """The course page lists each day and each other email; a preview shows the email's
    HTML in a sandboxed srcdoc frame of the width asked for (375 or 1200)."""
    login(client)
    course_page = client.get("/admin/courses/yin-immersion").text
    for which in ("1", "7", "confirm", "goodbye"):
        assert f"/admin/courses/yin-immersion/emails/{which}?width=375" in course_page
    preview = client.get("/admin/courses/yin-immersion/emails/3", params={"width": 375}).text
    frame = re.search(r"<iframe [^>]*>", preview)[0]  # type: ignore[index]
    assert " sandbox " in frame and 'width="375"' in frame
    assert 'srcdoc="&lt;!doctype html&gt;' in frame.lower() or 'srcdoc="&lt;' in frame
    assert "<html" not in frame  # the email's markup is an escaped attribute, not page markup
    wide = client.get("/admin/courses/yin-immersion/emails/3", params={"width": 9999}).text
    assert 'width="1200"' in re.search(r"<iframe [^>]*>", wide)[0]  # type: ignore[index]
    assert client.get("/admin/courses/nope").status_code == 404


def test_a_broken_template_shows_a_message_not_an_error(tmp_path: Path) -> None:
    """A lesson template that fails to render is reported on the preview page (200)."""
    templates = tmp_path / "emails"
    shutil.copytree(ROOT / "emails", templates)
    lesson = templates / "lesson.mjml"
    lesson.write_text(lesson.read_text() + "{{ no_such_value }}")
    settings = make_settings(tmp_path, templates_dir=templates)
    _store_password(settings, PASSWORD)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        login(client)
        answer = client.get("/admin/courses/yin-immersion/emails/2")
    assert answer.status_code == 200
    assert "does not render" in answer.text and "no_such_value" in answer.text


@pytest.mark.parametrize("smtp_sink", ["pipelining"], indirect=True)
def test_send_me_a_test_mails_that_email_and_shows_the_reply(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """ "Send me a test" sends that email, marked [Test], to the address given and shows
    the server's reply; a bad address gets its one-line error and sends nothing."""
    settings = make_settings(tmp_path, smtp_url=smtp_sink.url)
    _store_password(settings, PASSWORD)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        token = login(client)
        form = client.get("/admin/courses/yin-immersion/emails/3").text
        assert 'value="maya@example.com"' in form  # the course's reply-to, prefilled
        answer = client.post(
            "/admin/courses/yin-immersion/emails/3/test",
            data={"csrf": token, "to": "teacher@example.org", "width": "375"},
        )
        assert answer.status_code == 200
        assert "queued as drip-sink-1" in answer.text
        assert 'width="375"' in answer.text
        bad = client.post(
            "/admin/courses/yin-immersion/emails/3/test",
            data={"csrf": token, "to": "not an address"},
        )
        assert "not a valid address" in bad.text
        no_token = client.post(
            "/admin/courses/yin-immersion/emails/3/test", data={"to": "teacher@example.org"}
        )
        assert no_token.status_code == 403
    [message] = smtp_sink.received
    assert message.recipients == ("teacher@example.org",)
    parsed = message_from_bytes(message.data, policy=policy.default)
    course = Catalog.from_dir(COURSES_DIR).get("yin-immersion")
    assert parsed["Subject"] == f"[Test] {course.days[2].subject}"


# -- the command and the environment ---------------------------------------------------------


runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    monkeypatch.setenv("DRIP_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DRIP_SMTP_URL", "memory://")
    get_settings.cache_clear()
    assert runner.invoke(cli_app, ["db", "upgrade"]).exit_code == 0
    yield get_settings()
    get_settings.cache_clear()


def _stored(settings: Settings) -> str | None:
    engine = engine_for(settings)
    with engine.connect() as connection:
        found = installation.read(connection, passwords.SETTING)
    engine.dispose()
    return found


def test_set_password_reads_stdin_and_stores_an_argon2_hash(cli_env: Settings) -> None:
    """Piped in, the password is read from one line of stdin; the argon2 hash stored
    verifies it, and signs in on the dashboard."""
    result = runner.invoke(cli_app, ["admin", "set-password"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    stored = _stored(cli_env)
    assert stored is not None and stored.startswith("$argon2id$")
    assert passwords.verify(stored, PASSWORD)
    assert not passwords.verify(stored, PASSWORD + "x")
    with TestClient(create_app(cli_env), follow_redirects=False) as client:
        login(client)


def test_a_short_password_is_refused_and_nothing_stored(cli_env: Settings) -> None:
    """Under 12 characters: one line of error, a non-zero exit, nothing stored."""
    result = runner.invoke(cli_app, ["admin", "set-password"], input="elevenchars\n")
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "error: the password must be at least 12 characters (got 11)"
    ]
    assert _stored(cli_env) is None
    assert runner.invoke(cli_app, ["admin", "set-password"], input="twelve chars\n").exit_code == 0
    assert _stored(cli_env) is not None


def test_print_and_remove_password(cli_env: Settings) -> None:
    """`--print` prints a hash and stores nothing; `remove-password` turns the dashboard off."""
    result = runner.invoke(cli_app, ["admin", "set-password", "--print"], input=PASSWORD + "\n")
    assert passwords.verify(result.output.strip(), PASSWORD)
    assert _stored(cli_env) is None
    runner.invoke(cli_app, ["admin", "set-password"], input=PASSWORD + "\n")
    assert runner.invoke(cli_app, ["admin", "remove-password"]).output.startswith(
        "the dashboard is off"
    )
    assert _stored(cli_env) is None


def test_the_password_hash_from_the_environment_wins(tmp_path: Path) -> None:
    """DRIP_ADMIN_PASSWORD_HASH turns the dashboard on, and a stored password does not
    sign in while it is set; blank, it is unset."""
    settings = make_settings(
        tmp_path, admin_password_hash=passwords.hash_password("the environment's password")
    )
    _store_password(settings, PASSWORD)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert wrong_login(client) == 401
        token = CSRF.search(client.get("/admin/login").text)[1]
        answer = client.post("/admin/login", data={"csrf": token, "password": PASSWORD})
        assert answer.status_code == 401
        login(client, "the environment's password")
    assert make_settings(tmp_path, admin_password_hash=" ").admin_password_hash is None
    with pytest.raises(ValueError, match="not an argon2 hash"):
        make_settings(tmp_path, admin_password_hash="plain-text-password")


def _enrollment(db: Engine, email: str) -> Enrollment:
    with Session(db) as session:
        return session.exec(
            select(Enrollment)
            .join(Subscriber, col(Subscriber.id) == Enrollment.subscriber_id)
            .where(Subscriber.email == email)
        ).one()


def test_the_subscriber_page_pauses_resumes_restarts_and_moves_the_hour(
    client: TestClient, db: Engine
) -> None:
    """Each button acts on that subscriber only, through the operator action, and the
    overview then counts it; bad input and a stale form change nothing."""
    course = client.app.state.drip.catalog.get("yin-immersion")  # type: ignore[attr-defined]
    for name in ("ana", "ben"):
        enrol(db, course, f"{name}@example.org", now=datetime.now(UTC))
    token = login(client)
    ben = uid_of(db, "ben@example.org")
    page = client.get(f"/admin/subscribers/{ben}").text
    for control in ("pause", "resume", "restart", "time"):
        assert f'action="/admin/subscribers/{ben}/control/{control}"' in page

    def press(control: str, **fields: str) -> str:
        answer = client.post(
            f"/admin/subscribers/{ben}/control/{control}", data={"csrf": token, **fields}
        )
        assert answer.status_code == 303, answer.text
        return client.get(answer.headers["location"]).text

    assert "Paused:" in press("pause", days="5")
    assert _enrollment(db, "ben@example.org").paused_until is not None
    assert "paused until" in client.get(f"/admin/subscribers/{ben}").text
    assert "Resumed:" in press("resume")
    assert _enrollment(db, "ben@example.org").paused_until is None
    assert "new hour" in press("time", send_at="19:15")
    assert "Nothing changed: that was already so." in press("time", send_at="19:15")
    assert "Restarted:" in press("restart")
    ben_now = _enrollment(db, "ben@example.org")
    assert (ben_now.run, ben_now.send_at, ben_now.pauses, ben_now.restarts) == (2, "19:15", 1, 1)
    ana = _enrollment(db, "ana@example.org")
    assert (ana.run, ana.send_at, ana.pauses, ana.restarts) == (1, None, 0, 0)

    before = _enrollment(db, "ben@example.org")
    assert "Not paused: choose 1 to 30 mornings." in press("pause", days="45")
    assert "Not changed: give the hour as HH:MM." in press("time", send_at="nine")
    stale = client.post(
        f"/admin/subscribers/{ben}/control/pause", data={"csrf": "forged", "days": "3"}
    )
    assert stale.status_code == 403
    assert (
        client.post(f"/admin/subscribers/{ben}/control/delete", data={"csrf": token}).status_code
        == 404
    )
    assert _enrollment(db, "ben@example.org") == before

    overview = client.get("/admin").text
    assert "paused 1 (1 pause) · restarted 1 (1 restart) · own hour 1" in overview
    assert "<th>skipped</th>" in overview

    client.post(f"/admin/subscribers/{ben}/unsubscribe", data={"csrf": token})
    assert "Nothing changed: they are not receiving a course now" in press("restart")


def test_the_webhooks_page_lists_endpoints_and_what_was_given_up(
    client: TestClient, db: Engine
) -> None:
    from drip.core.models import WebhookMessage
    from drip.sending import endpoints

    now = datetime.now(UTC)
    with db.begin() as connection:
        found = endpoints.add_endpoint(
            connection,
            url="https://crm.example.com/hooks?<b>",
            events="course.completed",
            description="<script>x</script>",
            now=now,
        )
        connection.execute(
            WebhookMessage.__table__.insert().values(  # type: ignore[attr-defined]
                event_id="msg_given_up",
                endpoint_id=found.id,
                type="course.completed",
                body="{}",
                status="failed",
                due_at=now,
                attempts=14,
                created_at=now,
                failed_at=now,
                last_error="HTTP 503: <i>down</i>",
            )
        )
    login(client)
    page = client.get("/admin/webhooks")
    assert page.status_code == 200
    assert "https://crm.example.com/hooks?&lt;b&gt;" in page.text
    assert "&lt;script&gt;" in page.text and "<script>x" not in page.text
    assert "msg_given_up" in page.text and "HTTP 503: &lt;i&gt;down&lt;/i&gt;" in page.text
    assert found.secret not in page.text
