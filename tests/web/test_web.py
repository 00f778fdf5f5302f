"""The web side through FastAPI's TestClient: signup, confirmation, unsubscribe, bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import Engine
from sqlmodel import Session, select

from drip.core.config import Settings
from drip.core.models import Delivery, Enrollment, Signup, Subscriber
from drip.core.tokens import Purpose
from drip.sending.mailer import memory
from drip.sending.message import Outgoing
from drip.web import create_app
from drip.web.ratelimit import RateLimiter
from tests.fixtures import SHIPPED_COURSE, TEST_SECRET, app_client, make_settings

WEBHOOK_SECRET = "webhook-secret-for-tests"


@pytest.fixture
def app_settings(tmp_path: Any) -> Settings:
    return make_settings(
        tmp_path, allowed_redirect_origins=["https://blog.example"], confirm_resend_seconds=0
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with app_client(app_settings) as test_client:
        yield test_client


@pytest.fixture
def db(client: TestClient) -> Engine:
    return client.app.state.drip.engine  # type: ignore[attr-defined]


def subscribers(client: TestClient) -> list[Subscriber]:
    """Every subscriber, once the app has processed the signups it recorded."""
    sent(client)
    with Session(client.app.state.drip.engine) as session:  # type: ignore[attr-defined]
        return list(session.exec(select(Subscriber)).all())


def sent(client: TestClient) -> list[Outgoing]:
    """What the app's prompt sender has sent, once it has sent all that was queued."""
    assert client.app.state.drip.prompt.wait_idle(10)  # type: ignore[attr-defined]
    return memory.outbox


def link(client: TestClient, kind: str) -> str:
    """The path of the last confirm/unsubscribe link sent."""
    text = message_from_bytes(sent(client)[-1].data, policy=policy.default)
    body = text.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return re.search(rf"http://127\.0\.0\.1:8000(/{kind}/\S+)", body).group(1)  # type: ignore[union-attr]


def test_json_signup_is_pending_with_consent_and_a_confirmation(
    client: TestClient, db: Engine
) -> None:
    """A JSON signup answers 202 pending, stores proof of consent, mails a confirmation."""
    response = client.post(
        "/subscribe",
        json={"email": "Ana@Example.org", "name": "Ana", "timezone": "Europe/Lisbon"},
        headers={"User-Agent": "pytest-agent", "Referer": "https://blog/x"},
    )
    assert response.status_code == 202
    assert response.json() == {"status": "pending"}
    [ana] = subscribers(client)
    assert (ana.email, ana.status, ana.timezone) == ("ana@example.org", "pending", "Europe/Lisbon")
    assert ana.consent_user_agent == "pytest-agent"
    assert ana.consent_ip and ana.consent_source == "json:https://blog/x"
    assert [m.recipient for m in sent(client)] == ["ana@example.org"]


def test_form_post_redirects_to_thanks(client: TestClient) -> None:
    """A browser form post gets a 303 to the thank-you page, which renders."""
    response = client.post("/subscribe", data={"email": "bo@example.org"})
    assert response.status_code == 303
    assert response.headers["location"] == "/thanks/yin-immersion"
    assert "check your inbox" in client.get(response.headers["location"]).text


def test_redirect_only_to_allowed_origins(client: TestClient) -> None:
    """A `redirect` to an allowed origin is followed; any other is ignored (no open redirect)."""
    ok = client.post(
        "/subscribe", data={"email": "a@example.org", "redirect": "https://blog.example/thanks"}
    )
    assert ok.headers["location"] == "https://blog.example/thanks"
    evil = client.post(
        "/subscribe", data={"email": "b@example.org", "redirect": "https://evil.example/phish"}
    )
    assert evil.headers["location"] == "/thanks/yin-immersion"
    for n, target in enumerate(
        [
            "https://blog.example.evil/x",
            "https://blog.example@evil.example/",
            "http://blog.example/thanks",
            "//blog.example/thanks",
            "javascript://blog.example/%0aalert(1)",
        ]
    ):
        moved = client.post("/subscribe", data={"email": f"c{n}@example.org", "redirect": target})
        assert moved.headers["location"] == "/thanks/yin-immersion", target
    shouted = client.post(
        "/subscribe", data={"email": "d@example.org", "redirect": "HTTPS://BLOG.EXAMPLE/ok"}
    )
    assert shouted.headers["location"] == "HTTPS://BLOG.EXAMPLE/ok"


def test_same_answer_whatever_the_address_state(client: TestClient, db: Engine) -> None:
    """New, pending, active and unsubscribed addresses all get the identical response."""
    answers = []
    for _ in range(2):  # new, then pending
        answers.append(client.post("/subscribe", json={"email": "x@example.org"}))
    client.post(link(client, "confirm"))  # active
    answers.append(client.post("/subscribe", json={"email": "x@example.org"}))
    client.post(_unsubscribe_path(db, "x@example.org"))  # unsubscribed
    answers.append(client.post("/subscribe", json={"email": "x@example.org"}))
    assert {(a.status_code, a.text) for a in answers} == {(202, '{"status":"pending"}')}


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "body"),
        (
            {"content": b"email=a@b.org", "headers": {"Content-Type": "text/plain"}},
            422,
            "content-type",
        ),
        ({"json": {"name": "No Email"}}, 422, "email"),
        ({"json": {"email": "not-an-address"}}, 422, "email"),
        ({"json": {"email": "a@example.org\r\nBcc: x@example.net"}}, 422, "email"),
        ({"json": {"email": "'; DROP TABLE subscriber; --@example.org"}}, 422, "email"),
        ({"json": {"email": ["a@example.org"]}}, 422, "email"),
        ({"json": ["a@example.org"]}, 422, "body"),
        ({"json": {"email": "a@example.org", "course": "pilates"}}, 422, "course"),
        ({"json": {"email": "a@example.org", "name": "x" * 20_000}}, 413, "body"),
    ],
)
def test_bad_input_is_named_and_stores_nothing(
    client: TestClient, db: Engine, kwargs: dict[str, Any], status: int, field: str
) -> None:
    """Each malformed request gets a clear error naming the field, and no row is written."""
    response = client.post("/subscribe", **kwargs)
    assert response.status_code == status
    [detail] = response.json()["detail"]
    assert detail.keys() == {"loc", "msg", "type"} and detail["msg"]
    assert (detail["loc"], detail["type"]) == (["body", field], "value_error")
    assert subscribers(client) == []
    assert sent(client) == []


def test_browser_errors_reshow_the_form(client: TestClient, db: Engine) -> None:
    """A bad address from a browser re-shows the form with the message and what was typed."""
    response = client.post("/subscribe", data={"email": "nope", "name": "<b>Ana</b>"})
    assert response.status_code == 422
    assert 'role="alert"' in response.text and "email is not a valid address" in response.text
    assert 'aria-invalid="true" aria-describedby="form-error"' in response.text
    assert "&lt;b&gt;Ana&lt;/b&gt;" in response.text and "<b>Ana</b>" not in response.text
    # a post the form reader cannot make sense of at all: the form again, empty
    garbled = client.post(
        "/subscribe",
        content=b"email=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert garbled.status_code == 422 and "the form data is not UTF-8" in garbled.text
    assert subscribers(client) == []


def test_awkward_but_valid_input_is_stored_safely(client: TestClient, db: Engine) -> None:
    """Unicode, CR/LF and SQL-looking names are stored as plain text; bad zones fall back."""
    client.post(
        "/subscribe",
        json={
            "email": "zoe@example.org",
            "name": "Zoë\r\nBcc: x@evil'); DROP TABLE x;--",
            "timezone": "Not/AZone",
        },
    )
    [zoe] = subscribers(client)
    assert zoe.name == "Zoë Bcc: x@evil'); DROP TABLE x;--"
    assert zoe.timezone is None


def test_honeypot_pretends_success_and_stores_nothing(client: TestClient, db: Engine) -> None:
    """A filled honeypot looks like a normal signup to the bot, but nothing is kept or sent."""
    response = client.post(
        "/subscribe", data={"email": "bot@example.org", "website": "http://spam"}
    )
    assert response.status_code == 303
    assert subscribers(client) == [] and sent(client) == []


def test_rate_limit_per_ip(tmp_path: Any) -> None:
    """Past the per-IP limit a signup gets 429 with Retry-After."""
    with TestClient(create_app(make_settings(tmp_path, signup_rate_per_minute=2))) as client:
        codes = [
            client.post("/subscribe", json={"email": f"r{n}@example.org"}).status_code
            for n in range(3)
        ]
        assert codes == [202, 202, 429]
        assert (
            int(client.post("/subscribe", json={"email": "r@example.org"}).headers["Retry-After"])
            > 0
        )


def _signed_client(tmp_path: Any) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path, webhook_secret=WEBHOOK_SECRET)))


def _hmac(body: bytes) -> bytes:
    return hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()


TALLY = {
    "eventType": "FORM_RESPONSE",
    "data": {
        "fields": [
            {
                "key": "question_1",
                "label": "Email",
                "type": "INPUT_EMAIL",
                "value": "tally@example.org",
            },
            {"key": "question_2", "label": "First name", "type": "INPUT_TEXT", "value": "Tal"},
            {
                "key": "question_3",
                "label": "timezone",
                "type": "HIDDEN_FIELDS",
                "value": "Asia/Tokyo",
            },
        ]
    },
}
TYPEFORM = {
    "event_type": "form_response",
    "form_response": {
        "answers": [
            {"type": "text", "text": "Ty", "field": {"ref": "name", "type": "short_text"}},
            {"type": "email", "email": "type@example.org", "field": {"ref": "email"}},
        ],
        "hidden": {"timezone": "America/Chicago", "course": "yin-immersion"},
    },
}


def test_tally_and_typeform_webhooks_with_valid_signatures(tmp_path: Any) -> None:
    """Signed Tally and Typeform payloads are accepted and their fields mapped."""
    with _signed_client(tmp_path) as client:
        body = json.dumps(TALLY).encode()
        tally = client.post(
            "/subscribe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Tally-Signature": base64.b64encode(_hmac(body)).decode(),
            },
        )
        body = json.dumps(TYPEFORM).encode()
        typeform = client.post(
            "/subscribe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Typeform-Signature": "sha256=" + base64.b64encode(_hmac(body)).decode(),
            },
        )
        assert (tally.status_code, typeform.status_code) == (202, 202)
        rows = {s.email: (s.name, s.timezone) for s in subscribers(client)}
    assert rows == {
        "tally@example.org": ("Tal", "Asia/Tokyo"),
        "type@example.org": ("Ty", "America/Chicago"),
    }


@pytest.mark.parametrize(
    "headers", [{}, {"X-Drip-Signature": "sha256=" + "0" * 64}, {"Tally-Signature": "bm9wZQ=="}]
)
def test_unsigned_or_wrongly_signed_webhooks_are_refused(
    tmp_path: Any, headers: dict[str, str]
) -> None:
    """With DRIP_WEBHOOK_SECRET set, a JSON post without a valid signature is 401, not stored."""
    with _signed_client(tmp_path) as client:
        response = client.post("/subscribe", json={"email": "x@example.org"}, headers=headers)
        assert response.status_code == 401
        assert subscribers(client) == []


def test_confirm_enrols_once_and_day_one_is_due(client: TestClient, db: Engine) -> None:
    """The link's page only shows a button; its POST confirms, enrols, and day 1 goes out
    within moments (the web process sends it, as the page says); a replay changes nothing."""
    client.post("/subscribe", json={"email": "c@example.org"})
    path = link(client, "confirm")
    for _ in range(3):  # a link scanner fetching the link confirms nothing
        page = client.get(path)
        assert page.status_code == 200 and f'action="{path}"' in page.text
    with Session(db) as session:
        assert session.exec(select(Subscriber.status)).one() == "pending"
        assert session.exec(select(Delivery.kind)).all() == ["confirm"]
    first, again = client.post(path), client.post(path)
    assert first.status_code == again.status_code == 200
    assert "You're in" in first.text and "You're in" in again.text
    assert "Day 1 is on its way to your inbox now" in first.text
    assert "Your lessons keep coming as before" in again.text
    assert [m for m in sent(client) if b"Subject: Day 1" in m.data]
    with Session(db) as session:
        assert session.exec(select(Subscriber.status)).one() == "active"
        assert session.exec(select(Enrollment.status)).one() == "active"
        lessons = session.exec(select(Delivery).where(Delivery.kind == "lesson")).all()
        assert [(d.key, d.status) for d in lessons] == [
            ("upper-back-shoulders", "sent"),
            ("hips", "scheduled"),
        ]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("A" if t[-1] != "A" else "B") + "x",
        lambda t: "garbage",
        lambda t: t.split(".")[0],
    ],
)
def test_tampered_tokens_get_a_400_page(client: TestClient, mutate: Any) -> None:
    """A modified token is refused with a plain page that leaks nothing."""
    client.post("/subscribe", json={"email": "t@example.org"})
    bad = "/confirm/" + mutate(link(client, "confirm").removeprefix("/confirm/"))
    for response in (client.get(bad), client.post(bad), client.post(bad + "/resend")):
        assert response.status_code == 400
        assert "<p>This link is not valid.</p>" in response.text
        assert "Traceback" not in response.text
    lookup = client.get("/unsubscribe/" + mutate(link(client, "confirm").removeprefix("/confirm/")))
    assert lookup.status_code == 400
    assert "<p>This link is not valid. This link no longer works, but" in lookup.text


def test_well_signed_links_naming_nobody_are_refused(client: TestClient) -> None:
    """A correctly signed token whose signup or enrollment does not exist (deleted since)
    is refused like a damaged one, and changes nothing."""
    tokens = client.app.state.drip.tokens  # type: ignore[attr-defined]
    for path, says in (
        (f"/confirm/{tokens.confirm_token('0123456789abcdef')}", "<p>This link is not valid.</p>"),
        (
            f"/unsubscribe/{tokens.unsubscribe_token('0123456789abcdef')}",
            "<p>This link is not valid. This link no longer works, but",
        ),
    ):
        response = client.post(path)
        assert response.status_code == 400, path
        assert says in response.text
    assert subscribers(client) == []


def test_tokens_are_purpose_bound(client: TestClient, db: Engine) -> None:
    """An unsubscribe token cannot confirm, and a confirm token cannot unsubscribe."""
    client.post("/subscribe", json={"email": "p@example.org"})
    confirm_token = link(client, "confirm").removeprefix("/confirm/")
    assert client.post(f"/unsubscribe/{confirm_token}").status_code == 400
    unsubscribe_path = _unsubscribe_path(db, "p@example.org")
    token = unsubscribe_path.removeprefix("/unsubscribe/")
    assert client.get(f"/confirm/{token}").status_code == 400
    assert client.post(f"/confirm/{token}").status_code == 400


def test_expired_confirmation_offers_a_resend(
    client: TestClient, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old link says it expired and offers a new one, which is then mailed."""
    client.post("/subscribe", json={"email": "late@example.org"})
    with Session(db) as session:
        uid = session.exec(select(Signup.uid)).one()
    month_ago = time.time() - 30 * 86400
    with monkeypatch.context() as patch:  # sign as if 30 days ago
        patch.setattr("itsdangerous.timed.time.time", lambda: month_ago)
        token = URLSafeTimedSerializer([TEST_SECRET], salt=Purpose.CONFIRM).dumps(uid)
    for response in (client.get(f"/confirm/{token}"), client.post(f"/confirm/{token}")):
        assert response.status_code == 410
        assert (
            "<p>For your security, confirmation links only work for a few days. "
            "We can send you a fresh one.</p>"
        ) in response.text
        assert f'action="/confirm/{token}/resend"' in response.text
    assert subscribers(client)[0].status == "pending"
    sent(client).clear()
    assert client.post(f"/confirm/{token}/resend").status_code == 200
    assert [m.recipient for m in sent(client)] == ["late@example.org"]
    assert "You're in" in client.post(link(client, "confirm")).text


def _unsubscribe_path(db: Engine, email: str) -> str:
    with Session(db) as session:
        uid = session.exec(
            select(Enrollment.uid).join(Subscriber).where(Subscriber.email == email)
        ).one()
    from drip.core.tokens import Tokens

    return "/unsubscribe/" + Tokens([TEST_SECRET], confirm_max_age_seconds=60).unsubscribe_token(
        uid
    )


def test_get_never_unsubscribes_post_does_at_once(client: TestClient, db: Engine) -> None:
    """GET shows a button only; an RFC 8058 one-click POST unsubscribes and cancels lessons."""
    client.post("/subscribe", json={"email": "u@example.org"})
    client.post(link(client, "confirm"))
    sent(client)  # day 1 went out at once; day 2 waits
    path = _unsubscribe_path(db, "u@example.org")
    page = client.get(path)
    assert page.status_code == 200 and "<button" in page.text
    assert subscribers(client)[0].status == "active"
    for _ in range(2):  # idempotent
        response = client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200 and "unsubscribed" in response.text
    assert subscribers(client)[0].status == "unsubscribed"
    with Session(db) as session:
        lessons = session.exec(select(Delivery).where(Delivery.kind == "lesson")).all()
        assert [(d.key, d.status) for d in lessons] == [
            ("upper-back-shoulders", "sent"),
            ("hips", "cancelled"),
        ]


def test_resubscribe_resumes_at_the_next_unsent_day(client: TestClient, db: Engine) -> None:
    """Leaving and coming back needs a new confirmation, then resumes where it stopped."""
    client.post("/subscribe", json={"email": "back@example.org"})
    client.post(link(client, "confirm"))
    with Session(db) as session:  # pretend day 1 went out
        delivery = session.exec(select(Delivery).where(Delivery.kind == "lesson")).one()
        delivery.status, delivery.sent_at = "sent", delivery.due_at
        session.add(delivery)
        session.commit()
    client.post(_unsubscribe_path(db, "back@example.org"))
    client.post("/subscribe", json={"email": "back@example.org"})
    assert subscribers(client)[0].status == "unsubscribed", "only confirming brings them back"
    path = link(client, "confirm")
    email = message_from_bytes(sent(client)[-1].data, policy=policy.default)
    text = email.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "picks up where you left off, with day 2 of 7" in " ".join(text.split())
    client.post(path)
    with Session(db) as session:
        rows = {
            d.key: d.status for d in session.exec(select(Delivery).where(Delivery.kind == "lesson"))
        }
    assert rows == {"upper-back-shoulders": "sent", "hips": "scheduled"}


def test_healthz(client: TestClient) -> None:
    """/healthz answers ok when the database is reachable."""
    assert client.get("/healthz").json() == {"status": "ok"}


# -- hardening ----------------------------------------------------------------------------


def test_forwarded_for_takes_the_address_the_proxy_appended(tmp_path: Any) -> None:
    """Behind a proxy, the client IP is the last X-Forwarded-For entry (what the proxy
    added): forged entries before it neither dodge the rate limit nor become the
    recorded consent IP."""
    settings = make_settings(tmp_path, trust_forwarded_for=True, signup_rate_per_minute=3)
    with TestClient(create_app(settings)) as client:
        codes = [
            client.post(
                "/subscribe",
                json={"email": f"f{n}@example.org"},
                headers={"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.9"},
            ).status_code
            for n in range(5)
        ]
        assert codes == [202, 202, 202, 429, 429]
        assert {s.consent_ip for s in subscribers(client)} == {"203.0.113.9"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 8000 + b"]" * 8000, 422),
        (b'{"form_response":{"answers":5}}', 422),
        (b'{"form_response":{"answers":[{"type":"text","text":"x","field":[1]}]}}', 422),
        (b'{"data":{"fields":"nope"}}', 422),
        (b'{"data":{"fields":[1,"x",{"label":{"a":1},"value":[]}]}}', 422),
        # an email answer whose "field" is not an object: the address is still usable
        (
            b'{"form_response":{"answers":[{"type":"email","email":"tf@example.com","field":"x"}]}}',
            202,
        ),
    ],
)
def test_malformed_json_is_never_a_500(client: TestClient, body: bytes, status: int) -> None:
    """Deep nesting and odd Typeform/Tally shapes get a 422 naming what is wrong (or are
    taken, when they still carry an address), never a 500."""
    response = client.post("/subscribe", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["detail"][0]["loc"][0] == "body"


def test_a_stranger_reposting_the_form_rewrites_nothing(client: TestClient, db: Engine) -> None:
    """Signing up a pending or unsubscribed address again changes neither its name, its
    zone nor its proof of consent; confirming applies the signup that was confirmed."""
    client.post(
        "/subscribe",
        json={"email": "owner@example.org", "name": "Owner", "timezone": "Europe/Lisbon"},
        headers={"User-Agent": "owner-browser"},
    )
    owner_link = link(client, "confirm")
    client.post(
        "/subscribe",
        json={"email": "owner@example.org", "name": "Mallory", "timezone": "Asia/Tokyo"},
        headers={"User-Agent": "mallory-bot"},
    )
    [owner] = subscribers(client)
    assert (owner.name, owner.timezone, owner.consent_user_agent) == (
        "Owner",
        "Europe/Lisbon",
        "owner-browser",
    )
    client.post(owner_link)
    [owner] = subscribers(client)
    assert (owner.status, owner.name, owner.consent_user_agent) == (
        "active",
        "Owner",
        "owner-browser",
    )
    client.post(_unsubscribe_path(db, "owner@example.org"))
    client.post(
        "/subscribe",
        json={"email": "owner@example.org", "name": "Mallory"},
        headers={"User-Agent": "mallory-bot"},
    )
    [owner] = subscribers(client)
    assert (owner.status, owner.name, owner.consent_user_agent) == (
        "unsubscribed",
        "Owner",
        "owner-browser",
    )
    with Session(db) as session:
        names = [s.name for s in session.exec(select(Signup).order_by(Signup.id))]
    assert names == ["Owner", "Mallory", "Mallory"], "every signup is kept as posted"


def test_pages_carry_protective_headers_and_no_api_docs(client: TestClient) -> None:
    """Pages forbid sniffing and framing; the OpenAPI schema and docs are not served."""
    for path in ("/", "/healthz", "/thanks/yin-immersion"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 404


def test_a_valid_drip_signature_is_accepted_and_a_replay_later_refused(tmp_path: Any) -> None:
    """X-Drip-Signature signs a timestamp with the body: accepted now, refused 10 minutes
    later (a captured request cannot be replayed), and refused for another body."""
    from drip.core.signatures import drip_signature

    body = json.dumps({"email": "signed@example.org"}).encode()
    headers = {"Content-Type": "application/json"}
    with _signed_client(tmp_path) as client:
        stale = drip_signature(body, WEBHOOK_SECRET, now=time.time() - 600)
        fresh = drip_signature(body, WEBHOOK_SECRET, now=time.time())
        other = drip_signature(b'{"email": "x@example.org"}', WEBHOOK_SECRET, now=time.time())
        codes = [
            client.post(
                "/subscribe", content=body, headers={**headers, "X-Drip-Signature": s}
            ).status_code
            for s in (stale, other, fresh)
        ]
        assert codes == [401, 401, 202]
        assert [s.email for s in subscribers(client)] == ["signed@example.org"]


def test_a_replayed_tally_delivery_is_answered_but_not_stored_twice(tmp_path: Any) -> None:
    """Tally signs the body only; a second delivery with the same eventId is dropped."""
    body = json.dumps({**TALLY, "eventId": "evt-1"}).encode()
    headers = {
        "Content-Type": "application/json",
        "Tally-Signature": base64.b64encode(_hmac(body)).decode(),
    }
    with _signed_client(tmp_path) as client:
        codes = [client.post("/subscribe", content=body, headers=headers).status_code for _ in "ab"]
        assert codes == [202, 202]
        subscribers(client)
        with Session(client.app.state.drip.engine) as session:  # type: ignore[attr-defined]
            assert len(session.exec(select(Signup)).all()) == 1


def test_a_broken_unsubscribe_link_still_lets_the_person_leave(
    client: TestClient, db: Engine
) -> None:
    """A link that does not verify shows a form; typing the address emails a fresh link
    (nothing for an unknown address, and the same page either way), which unsubscribes."""
    client.post("/subscribe", json={"email": "stuck@example.org"})
    client.post(link(client, "confirm"))
    sent(client).clear()
    page = client.get("/unsubscribe/signed-with-a-lost-key")
    assert page.status_code == 400 and 'action="/unsubscribe"' in page.text
    answers = [
        client.post("/unsubscribe", data={"email": address}).text
        for address in ("stuck@example.org", "nobody@example.org")
    ]
    assert answers[0] == answers[1] and "Check your inbox" in answers[0]
    assert [m.recipient for m in sent(client)] == ["stuck@example.org"]
    client.post(link(client, "unsubscribe"))
    assert subscribers(client)[0].status == "unsubscribed"


def test_consent_source_names_the_form_without_inventing_a_referrer(
    client: TestClient,
) -> None:
    """A form post without Referer or Origin records its source as "form", not "form:None"."""
    client.post("/subscribe", data={"email": "bare@example.org"})
    [bare] = subscribers(client)
    assert bare.consent_source == "form"


def test_metrics_are_off_unless_enabled_and_count_from_the_database(tmp_path: Any) -> None:
    """/metrics is a 404 by default; enabled, it reports signups, confirmations and emails
    sent by kind, as stored."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/metrics").status_code == 404
    with TestClient(create_app(make_settings(tmp_path, metrics=True))) as client:
        client.post("/subscribe", json={"email": "m@example.org"})
        client.post(link(client, "confirm"))
        sent(client)
        text = client.get("/metrics").text
    assert "drip_signups_total 1.0" in text
    assert "drip_confirmations_total 1.0" in text
    assert 'drip_emails_sent_total{kind="confirm"} 1.0' in text
    assert 'drip_emails_sent_total{kind="lesson"} 1.0' in text  # day 1, at once
    # nothing due: every kind still has a sample, 0
    assert 'drip_queue_depth{kind="lesson"} 0.0' in text
    assert 'drip_oldest_due_seconds{kind="confirm"} 0.0' in text
    assert 'drip_subscribers{status="active"} 1.0' in text


def test_with_several_courses_the_signup_page_offers_them(tmp_path: Any) -> None:
    """A second course (``drip course new``) and no DRIP_DEFAULT_COURSE: the page at ``/``
    lets the visitor choose, and the choice is the course they join."""

    folder = Path(tmp_path) / "courses"
    folder.mkdir()
    shutil.copy(SHIPPED_COURSE, folder)
    other = SHIPPED_COURSE.read_text().replace("slug: yin-immersion", "slug: yin-two")
    (folder / "two.yaml").write_text(other.replace('title: "7-Day', 'title: "Another 7-Day'))
    with TestClient(create_app(make_settings(tmp_path, courses_dir=folder))) as client:
        page = client.get("/").text
        assert '<select id="course" name="course" required' in page
        assert '<option value="yin-immersion">7-Day Yin Yoga Immersion</option>' in page
        assert '<option value="yin-two">Another 7-Day Yin Yoga Immersion</option>' in page
        response = client.post(
            "/subscribe",
            data={"email": "ana@example.org", "course": "yin-two"},
            follow_redirects=False,
        )
        assert (response.status_code, response.headers["location"]) == (303, "/thanks/yin-two")
        missing = client.post("/subscribe", data={"email": "ben@example.org"})
        assert missing.status_code == 422 and '<option value="yin-two">' in missing.text
        with Session(client.app.state.drip.engine) as session:  # type: ignore[attr-defined]
            assert [s.course_slug for s in session.exec(select(Signup))] == ["yin-two"]


def test_pages_answer_head_as_they_answer_get(client: TestClient, db: Engine) -> None:
    """HEAD on a page (the signup page, a confirmation, an unsubscribe, a lesson page, the
    health check) answers as GET would, without a body, and changes nothing."""
    client.post("/subscribe", json={"email": "h@example.org"})
    confirm = link(client, "confirm")
    for path in ("/", "/healthz", confirm, _unsubscribe_path(db, "h@example.org")):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert subscribers(client)[0].status == "pending"  # HEAD on the link confirmed nothing


def test_a_trailing_slash_redirects_on_the_same_origin_whatever_the_host_header(
    client: TestClient,
) -> None:
    """`GET /thanks/yin-immersion/` with a forged Host header is redirected to a path, never
    to the host the client named."""
    answer = client.get("/thanks/yin-immersion/?x=1", headers={"Host": "evil.example"})
    assert answer.status_code == 307
    assert answer.headers["location"] == "/thanks/yin-immersion?x=1"
    assert client.get("/nowhere/").status_code == 307  # then a 404, on the same origin
    assert client.get("/nowhere").status_code == 404


def test_the_rate_limiter_forgets_idle_clients_and_stays_bounded() -> None:
    """Each key gets ``limit`` hits per window; a key idle for a window is forgotten
    (memory stays bounded however many clients were seen), and past ``max_keys`` the
    longest idle goes first."""
    now = [0.0]
    limiter = RateLimiter(limit=2, window_seconds=60, clock=lambda: now[0], max_keys=1000)
    assert [limiter.hit("a"), limiter.hit("a")] == [0.0, 0.0]
    assert limiter.hit("a") == 60.0  # the first of the two leaves the window in 60 s
    for n in range(500):
        limiter.hit(f"client-{n}")
    assert len(limiter) == 501
    now[0] = 61.0
    limiter.hit("late")  # every key idle for a window is dropped on the way
    assert len(limiter) == 1
    assert limiter.hit("a") == 0.0  # "a" starts afresh
    for n in range(2000):
        limiter.hit(f"flood-{n}")
    assert len(limiter) == 1000
