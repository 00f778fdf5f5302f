"""``/me/{token}``: the subscriber's own page, through the web app, from the link in a
real lesson: a GET changes nothing, each button changes one thing and says what happens
next, bad input is a 422 naming the field, and nothing changes for someone who left."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from drip.core.models import Delivery, Enrollment
from drip.core.tokens import Tokens
from drip.sending.mailer import memory
from tests.fixtures import TEST_SECRET, app_client, make_settings

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient]:
    with app_client(make_settings(tmp_path)) as test_client:
        yield test_client


@pytest.fixture
def db(client: TestClient) -> Engine:
    return client.app.state.drip.engine  # type: ignore[attr-defined]


def _wait(client: TestClient) -> None:
    assert client.app.state.drip.prompt.wait_idle(10)  # type: ignore[attr-defined]


def _text(index: int = -1) -> str:
    message = message_from_bytes(memory.outbox[index].data, policy=policy.default)
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _html(index: int = -1) -> str:
    message = message_from_bytes(memory.outbox[index].data, policy=policy.default)
    return message.get_body(("html",)).get_content()  # type: ignore[union-attr]


def subscribed(client: TestClient, email: str = "mia@example.org") -> str:
    """A confirmed subscriber who has had day 1; the path of her page, from the lesson."""
    client.post("/subscribe", json={"email": email, "timezone": "Europe/Madrid"})
    _wait(client)
    confirm = re.search(r"http://127\.0\.0\.1:8000(/confirm/\S+)", _text())
    assert confirm is not None
    client.post(confirm.group(1))
    _wait(client)
    lesson = _text()
    assert "Pause or change your course" in lesson
    found = re.search(r"http://127\.0\.0\.1:8000(/me/\S+)", lesson)
    assert found is not None
    assert "Pause or change your course" in _html() and found.group(1) in _html()
    return found.group(1)


def standing(db: Engine) -> tuple[Any, ...]:
    with Session(db) as session:
        e = session.exec(select(Enrollment)).one()
        rows = session.exec(select(Delivery).order_by(Delivery.id)).all()
        return (
            e.run,
            e.send_at,
            e.paused_until,
            e.pauses,
            e.restarts,
            e.status,
            [(d.key, d.status, d.due_at) for d in rows],
        )


def test_her_page_shows_the_next_lesson_and_a_get_changes_nothing(
    client: TestClient, db: Engine
) -> None:
    path = subscribed(client)
    before = standing(db)
    for _ in range(2):
        page = client.get(path)
        assert page.status_code == 200
        assert re.search(r"Day 2 on \w+day \d+ \w+ at 07:00", page.text), page.text
        assert "Europe/Madrid" in page.text and "1 of 7" in page.text
        assert page.headers["cache-control"] == "private, no-store"
        for action in ("pause", "time", "restart"):
            assert f'action="{path}/{action}"' in page.text
        assert "<script" not in page.text
    head = client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert standing(db) == before


def test_each_button_changes_one_thing_and_says_what_comes_next(
    client: TestClient, db: Engine
) -> None:
    path = subscribed(client)
    paused = client.post(f"{path}/pause", content=b"days=7", headers=FORM)
    assert paused.status_code == 200
    assert "Paused." in paused.text and "No lessons for 7 mornings" in paused.text
    assert "Resume now" in paused.text
    run, _, until, pauses, *_ = standing(db)
    assert until is not None and pauses == 1 and run == 1

    back = client.post(f"{path}/resume", headers=FORM)
    assert "Welcome back." in back.text and standing(db)[2] is None
    again = client.post(f"{path}/resume", headers=FORM)
    assert "You were not paused." in again.text

    moved = client.post(f"{path}/time", content=b"send_at=18%3A30", headers=FORM)
    assert "now arrive at 18:30" in moved.text and "at 18:30" in moved.text
    assert standing(db)[1] == "18:30"

    restarted = client.post(f"{path}/restart", headers=FORM)
    assert "Starting again." in restarted.text and "Day 1 arrives on" in restarted.text
    run, *_, lessons = standing(db)
    assert run == 2
    assert [(key, status) for key, status, _ in lessons if status == "scheduled"] == [
        ("upper-back-shoulders.2", "scheduled")
    ]


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("pause", b"days=0", "days"),
        ("pause", b"days=31", "days"),
        ("pause", b"days=seven", "days"),
        ("pause", b"", "days"),
        ("time", b"send_at=25%3A00", "send_at"),
        ("time", b"send_at=", "send_at"),
        ("time", b"send_at=%0d%0aBcc%3A%20x", "send_at"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(
    client: TestClient, db: Engine, action: str, body: bytes, field: str
) -> None:
    path = subscribed(client)
    before = standing(db)
    response = client.post(f"{path}/{action}", content=body, headers=FORM)
    assert response.status_code == 422
    assert f"{field}: " in response.text and "Traceback" not in response.text
    assert standing(db) == before


def test_forged_or_borrowed_tokens_open_nothing(client: TestClient, db: Engine) -> None:
    path = subscribed(client)
    token = path.rsplit("/", 1)[1]
    with Session(db) as session:
        uid = session.exec(select(Enrollment.uid)).one()
    tokens = Tokens([TEST_SECRET], confirm_max_age_seconds=60)
    before = standing(db)
    for bad in [
        token[:-2] + ("aa" if not token.endswith("aa") else "bb"),
        tokens.unsubscribe_token(uid),  # signed, but for another purpose
        tokens.confirm_token(uid),
        Tokens(["another-key-entirely"], confirm_max_age_seconds=60).me_token(uid),
    ]:
        assert client.get(f"/me/{bad}").status_code == 404
        assert client.post(f"/me/{bad}/restart", headers=FORM).status_code == 404
    assert client.post(f"{path}/delete", headers=FORM).status_code == 404
    assert standing(db) == before


def test_after_she_leaves_the_controls_change_nothing_and_say_so(
    client: TestClient, db: Engine
) -> None:
    path = subscribed(client)
    page = client.get(path)
    unsubscribe = re.search(r'href="(/unsubscribe/[^"]+)"', page.text)
    assert unsubscribe is not None
    client.post(unsubscribe.group(1), headers=FORM)
    before = standing(db)
    after = client.get(path)
    assert "not receiving this course any more" in after.text and "<form" not in after.text
    for action, body in [("pause", b"days=3"), ("restart", b""), ("time", b"send_at=08%3A00")]:
        response = client.post(f"{path}/{action}", content=body, headers=FORM)
        assert response.status_code == 200
        assert "Nothing changed:" in response.text
    assert standing(db) == before


def test_the_web_process_posts_its_events_by_itself(tmp_path: Any) -> None:
    """`drip serve` posts what its requests cause (a signup's subscriber.pending) without
    any send-due run."""
    import time as clock

    from drip.sending import endpoints
    from drip.store.engine import engine_for
    from tests.fixtures import WebhookReceiver

    settings = make_settings(tmp_path)
    receiver = WebhookReceiver()
    try:
        with engine_for(settings).begin() as connection:
            endpoints.add_endpoint(
                connection, url=receiver.url, events=None, description="", now=datetime.now(UTC)
            )
        with app_client(settings) as web:
            web.post("/subscribe", json={"email": "loop@example.org"})
            deadline = clock.monotonic() + 15
            while "subscriber.pending" not in receiver.types() and clock.monotonic() < deadline:
                clock.sleep(0.1)
        assert "subscriber.pending" in receiver.types()
    finally:
        receiver.close()
