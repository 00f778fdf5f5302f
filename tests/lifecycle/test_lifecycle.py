"""The whole lifecycle through the web app with every optional email on: welcome,
goodbye, stale and refused links, a removed course."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, select

from drip.core.models import Delivery, Subscriber
from drip.core.states import SubscriberStatus
from drip.sending.mailer import memory
from drip.sending.message import Outgoing
from drip.web import create_app
from tests.fixtures import SHIPPED_COURSE, make_settings


@pytest.fixture
def courses(tmp_path: Path) -> Path:
    """The shipped course with its welcome and goodbye emails switched on."""
    folder = tmp_path / "courses"
    folder.mkdir()
    text = (
        SHIPPED_COURSE.read_text()
        .replace("welcome_email: false", "welcome_email: true")
        .replace("goodbye_email: false", "goodbye_email: true")
    )
    assert "welcome_email: true" in text
    (folder / "yin.yaml").write_text(text)
    return folder


@pytest.fixture
def client(tmp_path: Path, courses: Path) -> Iterator[TestClient]:
    memory.outbox.clear()
    settings = make_settings(tmp_path, courses_dir=courses, confirm_resend_seconds=0)
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        yield test_client


def _sent(client: TestClient) -> list[Outgoing]:
    assert client.app.state.drip.prompt.wait_idle(10)  # type: ignore[attr-defined]
    return memory.outbox


def _subjects(client: TestClient) -> list[str]:
    return [
        str(message_from_bytes(m.data, policy=policy.default)["Subject"]) for m in _sent(client)
    ]


def _link(client: TestClient, kind: str, index: int = -1) -> str:
    body = message_from_bytes(_sent(client)[index].data, policy=policy.default)
    text = body.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return re.search(rf"http://127\.0\.0\.1:8000(/{kind}/\S+)", text).group(1)  # type: ignore[union-attr]


def _subscriber(client: TestClient) -> Subscriber:
    with Session(client.app.state.drip.engine) as session:  # type: ignore[attr-defined]
        return session.exec(select(Subscriber)).one()


def test_welcome_once_on_confirming_goodbye_once_on_leaving(client: TestClient) -> None:
    """Confirming sends the welcome, and day 1 at once; a second press sends nothing
    more; unsubscribing sends one goodbye, a second one-click POST none."""
    client.post("/subscribe", json={"email": "w@example.org", "timezone": "Asia/Tokyo"})
    confirm = _link(client, "confirm")
    for _ in range(2):
        assert client.post(confirm).status_code == 200
    assert _subjects(client) == [
        "Please confirm: 7-Day Yin Yoga Immersion",
        "Welcome to 7-Day Yin Yoga Immersion",
        "Day 1: Soften the upper back and shoulders",
    ]
    welcome = message_from_bytes(_sent(client)[1].data, policy=policy.default)
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "(Asia/Tokyo time)" in welcome.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    leave = _link(client, "unsubscribe")
    for _ in range(2):
        assert client.post(leave).status_code == 200
    assert _subjects(client)[3:] == ["You are unsubscribed from 7-Day Yin Yoga Immersion"], (
        _subjects(client)
    )
    goodbye = message_from_bytes(_sent(client)[-1].data, policy=policy.default)
    assert goodbye["List-Unsubscribe"] is None
    subscriber = _subscriber(client)
    assert subscriber.status == SubscriberStatus.UNSUBSCRIBED and subscriber.unsubscribed_at
    with Session(client.app.state.drip.engine) as session:  # type: ignore[attr-defined]
        kinds = sorted(d.kind for d in session.exec(select(Delivery)))
    assert kinds == ["confirm", "goodbye", "lesson", "lesson", "welcome"]  # day 2 cancelled


def test_a_confirmation_link_older_than_the_unsubscribe_is_refused(client: TestClient) -> None:
    """Leaving wins over an old email: its confirmation link, pressed after the unsubscribe,
    offers a fresh link and changes nothing."""
    client.post("/subscribe", json={"email": "old@example.org"})
    confirm = _link(client, "confirm")
    client.post(confirm)
    client.post(_link(client, "unsubscribe"))
    with Session(client.app.state.drip.engine) as session:  # type: ignore[attr-defined]
        # Links count whole seconds: the unsubscribe comes a moment after the email.
        subscriber = session.exec(select(Subscriber)).one()
        subscriber.unsubscribed_at += timedelta(seconds=2)  # type: ignore[operator]
        session.add(subscriber)
        session.commit()
    page = client.post(confirm)
    assert page.status_code == 410
    assert (
        "<p>This link was sent before you unsubscribed, so it no longer works. "
        "To join again, sign up once more on the course page.</p>"
    ) in page.text
    assert "/resend" not in page.text
    mailed = len(_sent(client))
    assert client.post(confirm + "/resend").status_code == 200  # the same answer, yet
    assert len(_sent(client)) == mailed, "someone who left is not mailed a fresh link"
    assert _subscriber(client).status == SubscriberStatus.UNSUBSCRIBED


def test_a_fresh_link_is_resent_only_while_it_waits_and_once_per_gap(
    tmp_path: Path, courses: Path
) -> None:
    """ "Send me a new link" mails one while the signup awaits confirmation, at most once
    per resend gap, and nothing once confirmed."""
    memory.outbox.clear()
    settings = make_settings(tmp_path, courses_dir=courses, confirm_resend_seconds=600)
    with TestClient(create_app(settings), follow_redirects=False) as gapped:
        gapped.post("/subscribe", json={"email": "wait@example.org"})
        confirm = _link(gapped, "confirm")
        with Session(gapped.app.state.drip.engine) as session:  # type: ignore[attr-defined]
            subscriber = session.exec(select(Subscriber)).one()  # the first went out 11 min ago
            subscriber.confirmation_sent_at -= timedelta(minutes=11)  # type: ignore[operator]
            session.add(subscriber)
            session.commit()
        for _ in range(2):
            assert gapped.post(confirm + "/resend").status_code == 200
        assert _subjects(gapped) == [_subjects(gapped)[0]] * 2, "one resend within the gap"
        gapped.post(_link(gapped, "confirm"))
        mailed = len(_sent(gapped))
        with Session(gapped.app.state.drip.engine) as session:  # type: ignore[attr-defined]
            subscriber = session.exec(select(Subscriber)).one()
            subscriber.confirmation_sent_at -= timedelta(hours=1)  # type: ignore[operator]
            session.add(subscriber)
            session.commit()
        assert gapped.post(confirm + "/resend").status_code == 200
        assert len(_sent(gapped)) == mailed, "nothing to confirm once active"


def test_a_refused_browser_signup_reshows_the_course_it_was_for(
    client: TestClient, courses: Path
) -> None:
    """With two courses, a form posted for the second one comes back (422) as that
    course's form, not the default's."""
    (courses / "other.yaml").write_text(
        SHIPPED_COURSE.read_text()
        .replace("slug: yin-immersion", "slug: other")
        .replace('title: "7-Day Yin Yoga Immersion"', 'title: "Another Course"')
    )
    client.app.state.drip.catalog.refresh()  # type: ignore[attr-defined]
    page = client.post("/subscribe", data={"email": "nope", "course": "other"})
    assert page.status_code == 422
    assert "<h1>Another Course</h1>" in page.text
    assert '<input type="hidden" name="course" value="other">' in page.text


def test_links_of_a_suppressed_address_or_a_removed_course_say_why(
    client: TestClient, courses: Path
) -> None:
    """A suppressed address's confirmation link, and one for a course since removed, get a
    page saying so, and nothing changes."""
    client.post("/subscribe", json={"email": "s@example.org"})
    confirm = _link(client, "confirm")
    engine = client.app.state.drip.engine  # type: ignore[attr-defined]
    with Session(engine) as session, session.begin():
        session.execute(update(Subscriber).values(status=SubscriberStatus.SUPPRESSED))
    refused = client.post(confirm)
    assert (
        refused.status_code == 400
        and "<p>This address cannot receive email from us.</p>" in refused.text
    )
    with Session(engine) as session, session.begin():
        session.execute(update(Subscriber).values(status=SubscriberStatus.PENDING))
    (courses / "yin.yaml").unlink()
    (courses / "other.yaml").write_text(
        SHIPPED_COURSE.read_text().replace("slug: yin-immersion", "slug: other")
    )
    client.app.state.drip.catalog.refresh()  # type: ignore[attr-defined]
    gone = client.post(confirm)
    assert gone.status_code == 400 and "<p>This course is no longer offered.</p>" in gone.text
    assert _subscriber(client).status == SubscriberStatus.PENDING
