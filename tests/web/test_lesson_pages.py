""" "View in browser": every lesson links to ``/lessons/{token}``, which shows that lesson
and links to the lessons already sent to the same person, and to no others."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.models import Delivery
from drip.core.tokens import Tokens
from drip.runner import make_sender
from drip.sending.mailer import memory
from drip.web import create_app
from tests.fixtures import TEST_SECRET, app_client, enrol, make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8000"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(make_settings(tmp_path)) as test_client:
        yield test_client


def _send_days(client: TestClient, course: Course, email: str, days: int) -> list[str]:
    """Enrol ``email`` and send them ``days`` lessons; the view link (path) of each."""
    app = client.app.state.drip  # type: ignore[attr-defined]
    db: Engine = app.engine
    settings: Settings = app.settings
    enrol(db, course, email, now=NOW)
    sender = make_sender(engine=db, settings=settings, catalog=Catalog({course.slug: course}))
    for day in range(days):
        sender.send_due(now=NOW + timedelta(days=day))
    paths = []
    for lesson in [m for m in memory.outbox if m.recipient == email]:
        message = message_from_bytes(lesson.data, policy=policy.default)
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        match = re.search(rf"{re.escape(BASE)}(/lessons/[\w.-]+)", text)
        assert match, text
        assert f'href="{BASE}{match.group(1)}"' in html
        paths.append(match.group(1))
    return paths


def _links(page: str) -> list[str]:
    return re.findall(r'href="[^"]*(/lessons/[^"]+)"', page)


def test_a_lesson_page_shows_that_lesson_and_only_the_lessons_already_sent(
    client: TestClient, course: Course
) -> None:
    """Ana has had days 1-3 (day 4 is queued). Day 2's page shows day 2, with its class
    link through drip, and links to days 1 and 3; never to day 4, even once it is queued.
    Ben's pages link to Ben's lessons only."""
    ana = _send_days(client, course, "ana@example.org", 3)
    assert len(ana) == 3
    response = client.get(ana[1])
    assert response.status_code == 200
    page = response.text
    assert f"<h1>{course.days[1].subject}</h1>" in page
    assert "Day 2 of 7" in page
    assert f'href="{BASE}/c/' in page and course.days[1].class_.url not in page
    assert _links(page) == [ana[0], ana[2]]  # day 2 itself is shown, not linked
    assert course.days[3].subject not in page
    assert response.headers["cache-control"] == "private, no-store"

    ben = _send_days(client, course, "ben@example.org", 1)
    assert _links(client.get(ben[0]).text) == []
    assert client.get(ana[2]).status_code == 200

    # Day 4 handed to the mail server, its receipt not yet written: its own page shows
    # (whoever has the link has the email), the others do not list it yet.
    db: Engine = client.app.state.drip.engine  # type: ignore[attr-defined]
    with db.begin() as connection:
        connection.execute(
            update(Delivery).where(Delivery.key == course.days[3].id).values(status="sending")  # type: ignore[arg-type]
        )
    uid = ana[0].removeprefix("/lessons/").split(".")[0]
    day_four = Tokens([TEST_SECRET], confirm_max_age_seconds=60).lesson_token(
        uid, course.days[3].id
    )
    assert client.get(f"/lessons/{day_four}").status_code == 200
    assert _links(client.get(ana[1]).text) == [ana[0], ana[2]]


def test_a_day_not_yet_sent_or_a_forged_token_is_not_found(
    client: TestClient, course: Course
) -> None:
    """A well-signed token for a day not sent yet (day 2, queued) shows nothing; neither
    does a token with its tag changed, signed by another key, or for another day."""
    [day_one] = _send_days(client, course, "ana@example.org", 1)
    uid, day_id, tag = day_one.removeprefix("/lessons/").split(".")
    own = Tokens([TEST_SECRET], confirm_max_age_seconds=60)
    other_key = Tokens(["another-key-of-at-least-16"], confirm_max_age_seconds=60)
    assert own.lesson_token(uid, day_id) == f"{uid}.{day_id}.{tag}"
    for token in (
        own.lesson_token(uid, course.days[1].id),  # queued, not sent
        f"{uid}.{day_id}.{tag[:-1]}{'0' if tag[-1] != '0' else '1'}",
        other_key.lesson_token(uid, day_id),
        f"{uid}.{course.days[1].id}.{tag}",
        f"{'0' * 24}.{day_id}.{own.lesson_token('0' * 24, day_id).rsplit('.', 1)[1]}",
        "not-a-token",
    ):
        response = client.get(f"/lessons/{token}")
        assert response.status_code == 404, token
        assert course.days[0].subject not in response.text


def test_an_old_key_still_opens_the_pages_of_lessons_it_signed(
    tmp_path: Path, course: Course
) -> None:
    """Rotating the key (new first, old kept) leaves links in old lessons working."""
    memory.outbox.clear()  # (what an earlier test of this worker sent is not Ana's lesson)
    settings = make_settings(tmp_path, secret_key=f"a-brand-new-key-0123456789,{TEST_SECRET}")
    with TestClient(create_app(settings, new_key=True), follow_redirects=False) as client:
        old = Tokens([TEST_SECRET], confirm_max_age_seconds=60)
        [path] = _send_days(client, course, "ana@example.org", 1)
        uid, day_id, _ = path.removeprefix("/lessons/").split(".")
        assert client.get(f"/lessons/{old.lesson_token(uid, day_id)}").status_code == 200
        assert old.lesson_token(uid, day_id) != path.removeprefix("/lessons/")
