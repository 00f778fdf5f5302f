"""Class clicks: a lesson links to its class through ``GET /c/{token}``, which notes the
first click per lesson and redirects only ever to a class of drip's courses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.models import Click, Delivery, Subscriber
from drip.core.tokens import Tokens
from drip.runner import make_sender
from drip.sending.compose import Composer
from drip.sending.mailer import memory
from tests.fixtures import TEST_SECRET, app_client, enrol, erase, make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8000"


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with app_client(app_settings) as test_client:
        yield test_client


@pytest.fixture
def db(client: TestClient) -> Engine:
    return client.app.state.drip.engine  # type: ignore[attr-defined]


def _day_one_link(db: Engine, settings: Settings, course: Course) -> tuple[str, str]:
    """Ana's day 1 lesson, sent: its class link's path (in the text part) and HTML part."""
    enrol(db, course, "ana@example.org", now=NOW)
    make_sender(engine=db, settings=settings, catalog=Catalog({course.slug: course})).send_due(
        now=NOW
    )
    (lesson,) = [m for m in memory.outbox if b"Day 1" in m.data]
    message = message_from_bytes(lesson.data, policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    match = re.search(rf"{re.escape(BASE)}(/c/[\w.-]+)", text)
    assert match, text
    return match.group(1), html


def _clicks(db: Engine) -> list[tuple[str, str, datetime]]:
    with Session(db) as session:
        rows = session.exec(select(Delivery.key, Click.link, Click.clicked_at).join(Delivery))
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_the_class_link_counts_the_first_click_and_leads_to_the_class(
    client: TestClient, db: Engine, app_settings: Settings, course: Course
) -> None:
    """The lesson links to the class through drip (text and HTML alike); following the link
    lands on the class every time, and only the first visit is stored."""
    path, html = _day_one_link(db, app_settings, course)
    class_url = course.days[0].class_.url
    assert f'href="{BASE}{path}"' in html
    assert class_url not in html
    before = datetime.now(UTC)
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["location"] == class_url
        assert response.headers["cache-control"] == "no-store"
    assert client.head(path).status_code == 302  # some link checkers ask HEAD first
    assert client.head(path).status_code == 302  # some link checkers ask HEAD first
    ((day_id, link, clicked_at),) = _clicks(db)
    assert (day_id, link) == (course.days[0].id, "class")
    assert before <= clicked_at <= datetime.now(UTC)


def test_links_not_drips_lead_to_the_signup_page_and_count_nothing(
    client: TestClient, db: Engine, app_settings: Settings, course: Course
) -> None:
    """A tampered token, another purpose's token, another key's token, or a lesson whose day
    or course was removed: redirected to the signup page, never elsewhere, nothing stored."""
    path, _ = _day_one_link(db, app_settings, course)
    token = path.removeprefix("/c/")
    ours = Tokens([TEST_SECRET], confirm_max_age_seconds=60)
    enrollment_uid = ours.read_click(token)[0]
    others = Tokens(["another-key-" + "x" * 40], confirm_max_age_seconds=60)
    day = course.days[0].id
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        ours.unsubscribe_token(enrollment_uid),
        ours.confirm_token(enrollment_uid),
        others.click_token(enrollment_uid, course.slug, day),
        ours.click_token(enrollment_uid, course.slug, "a-day-removed-since"),
        ours.click_token(enrollment_uid, "a-course-removed-since", day),
        "https:evil.example",
    ):
        response = client.get(f"/c/{bad}")
        assert (response.status_code, response.headers["location"]) == (302, "/"), bad
    assert _clicks(db) == []


def test_a_link_to_a_lesson_not_yet_sent_opens_the_class_and_counts_nothing(
    client: TestClient, db: Engine, app_settings: Settings, course: Course
) -> None:
    """Day 2 is queued, not sent: a well-signed link to it (only a preview or a send that
    never happened could carry one) leads to the class, and no click is counted, so the
    funnel never shows clicks on a lesson nobody received."""
    path, _ = _day_one_link(db, app_settings, course)
    ours = Tokens([TEST_SECRET], confirm_max_age_seconds=60)
    enrollment_uid = ours.read_click(path.removeprefix("/c/"))[0]
    day_two = course.days[1]
    response = client.get(f"/c/{ours.click_token(enrollment_uid, course.slug, day_two.id)}")
    assert (response.status_code, response.headers["location"]) == (302, day_two.class_.url)
    assert _clicks(db) == []


def test_an_erased_subscribers_link_still_opens_the_class_and_stores_nothing(
    client: TestClient, db: Engine, app_settings: Settings, course: Course
) -> None:
    """Erasing a subscriber erases their clicks; their old link still opens the class."""
    path, _ = _day_one_link(db, app_settings, course)
    client.get(path)
    assert len(_clicks(db)) == 1
    with Session(db) as session:
        email = session.exec(select(Subscriber.email)).one()
    erase(db, email)
    assert _clicks(db) == []
    response = client.get(path)
    assert (response.status_code, response.headers["location"]) == (302, course.days[0].class_.url)
    assert _clicks(db) == []


def test_without_tracking_lessons_link_the_class_directly(
    app_settings: Settings, course: Course
) -> None:
    """``track_clicks: false``: the class URL itself, in both parts, and no ``/c/`` link."""
    data = course.model_dump(by_alias=True, mode="json")
    untracked = Course.model_validate({**data, "track_clicks": False})
    from drip.sending.compose import Recipient

    recipient = Recipient("ana@example.org", "Ana", "a1b2c3", "Europe/Lisbon")
    for which, expected in ((untracked, True), (course, False)):
        lesson = Composer(settings=app_settings).lesson(
            course=which, day=which.days[1], recipient=recipient, now=NOW
        )
        message = message_from_bytes(lesson.data, policy=policy.default)
        for part in ("plain", "html"):
            body = message.get_body((part,)).get_content()  # type: ignore[union-attr]
            assert (course.days[1].class_.url in body) is expected, part
            assert (f"{BASE}/c/" in body) is not expected, part
