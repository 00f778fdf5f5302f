"""``/api/v1`` end to end: drip's app on a real uvicorn on 127.0.0.1, spoken to over HTTP
as a CRM would, with keys made by ``drip.store.apikeys`` (``drip api-keys create``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, select

from drip.core.models import ApiKey, Subscriber
from drip.store import apikeys
from drip.web import create_app, server
from tests.fixtures import make_settings


@dataclass
class Api:
    url: str
    engine: Engine
    key: str
    reader: str

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"} if key != "" else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    app = create_app(make_settings(tmp_path, api_rate_per_minute=40))
    engine: Engine = app.state.drip.engine
    now = datetime.now(UTC)
    with engine.begin() as connection:
        key = apikeys.create(connection, name="crm", read_only=False, now=now)
        reader = apikeys.create(connection, name="reports", read_only=True, now=now)
    listener = server.listen("127.0.0.1", 0)
    instance = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield Api(f"http://127.0.0.1:{listener.getsockname()[1]}/api/v1", engine, key, reader)
    instance.should_exit = True
    thread.join(timeout=10)


def _people(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Subscriber.email, Subscriber.status, Subscriber.consent_source)
        )
        return {email: (status, source) for email, status, source in rows}


def test_a_crm_adds_finds_unsubscribes_and_erases_subscribers(api: Api) -> None:
    added = api.call("POST", "/subscribers", json={"email": "Ana@Example.org", "name": "Ana"})
    assert added.status_code == 201, added.text
    assert added.json()["action"] == "confirm"
    ana = added.json()["subscriber"]
    assert (ana["email"], ana["status"], ana["consent"]["source"]) == (
        "ana@example.org",
        "pending",
        "api:crm",
    )
    confirmed = api.call(
        "POST", "/subscribers", json={"email": "ana@example.org", "confirmed": True}
    )
    assert confirmed.status_code == 200 and confirmed.json()["action"] == "activate"
    assert confirmed.json()["subscriber"]["enrollments"][0]["status"] == "active"

    found = api.call("GET", "/subscribers", params={"email": "ANA@example.org"})
    assert [s["id"] for s in found.json()["items"]] == [ana["id"]]
    assert api.call("GET", f"/subscribers/{ana['id']}").json()["status"] == "active"

    paused = api.call("POST", f"/subscribers/{ana['id']}/pause", json={"days": 3})
    assert paused.status_code == 200 and paused.json()["changed"] is True
    assert paused.json()["next_lesson"]["due_at"].endswith("Z") or "+00:00" in str(
        paused.json()["next_lesson"]["due_at"]
    )

    left = api.call("POST", f"/subscribers/{ana['id']}/unsubscribe")
    assert left.status_code == 200 and left.json()["changed"] is True
    assert left.json()["subscriber"]["status"] == "unsubscribed"
    assert api.call("POST", f"/subscribers/{ana['id']}/unsubscribe").json()["changed"] is False
    assert api.call("POST", f"/subscribers/{ana['id']}/restart").status_code == 409
    back = api.call("POST", "/subscribers", json={"email": "ana@example.org", "confirmed": True})
    assert back.status_code == 409 and "unsubscribed" in back.json()["detail"]
    assert _people(api.engine)["ana@example.org"][0] == "unsubscribed"

    assert api.call("DELETE", f"/subscribers/{ana['id']}").status_code == 204
    assert api.call("GET", f"/subscribers/{ana['id']}").status_code == 404
    assert api.call("DELETE", f"/subscribers/{ana['id']}").status_code == 404
    assert _people(api.engine) == {}


def test_pages_follow_the_cursor_and_filters(api: Api) -> None:
    for n in range(5):
        body = {"email": f"p{n}@example.org", "confirmed": n % 2 == 0}
        assert api.call("POST", "/subscribers", json=body).status_code == 201
    seen, cursor = [], None
    for _ in range(5):
        page = api.call("GET", "/subscribers", params={"limit": 2, "cursor": cursor}).json()
        seen += [s["email"] for s in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"p{n}@example.org" for n in range(5)]
    active = api.call("GET", "/subscribers", params={"status": "active"}).json()["items"]
    assert [s["email"] for s in active] == ["p0@example.org", "p2@example.org", "p4@example.org"]
    assert api.call("GET", "/subscribers", params={"course": "pilates"}).json()["items"] == []


def test_a_read_only_key_reads_and_changes_nothing(api: Api) -> None:
    uid = api.call("POST", "/subscribers", json={"email": "r@example.org"}).json()["subscriber"]
    before = _people(api.engine)
    assert api.call("GET", "/subscribers", key=api.reader).status_code == 200
    assert api.call("GET", f"/subscribers/{uid['id']}", key=api.reader).status_code == 200
    assert api.call("GET", "/courses/yin-immersion/stats", key=api.reader).status_code == 200
    for method, path, body in [
        ("POST", "/subscribers", {"email": "new@example.org"}),
        ("POST", f"/subscribers/{uid['id']}/unsubscribe", None),
        ("POST", f"/subscribers/{uid['id']}/pause", {"days": 2}),
        ("DELETE", f"/subscribers/{uid['id']}", None),
    ]:
        refused = api.call(method, path, key=api.reader, json=body)
        assert refused.status_code == 403 and refused.json()["detail"] == "this key is read-only"
    assert _people(api.engine) == before


def test_without_a_valid_key_nothing_is_told(api: Api) -> None:
    api.call("POST", "/subscribers", json={"email": "secret@example.org"})
    for headers in [
        {},
        {"Authorization": "Bearer drip_not-a-key"},
        {"Authorization": "Basic " + "a" * 20},
        {"Authorization": f"Bearer {api.key}x"},
        {"Authorization": api.key},
    ]:
        refused = httpx.get(api.url + "/subscribers", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "secret@example.org" not in refused.text
    with api.engine.begin() as connection:
        apikeys.revoke(connection, name="crm")
    assert api.call("GET", "/subscribers").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/subscribers", {"json": {"email": "not-an-address"}}, ["body", "email"]),
        ("POST", "/subscribers", {"json": {"email": "a@example.org", "x": 1}}, ["body", "x"]),
        ("POST", "/subscribers", {"json": {"name": "no address"}}, ["body", "email"]),
        (
            "POST",
            "/subscribers",
            {"json": {"email": "a@example.org", "timezone": "Mars/Base"}},
            ["body", "timezone"],
        ),
        (
            "POST",
            "/subscribers",
            {"json": {"email": "a@example.org", "course": "pilates"}},
            ["body", "course"],
        ),
        ("POST", "/subscribers", {"content": b"{not json"}, ["body", 1]),
        ("GET", "/subscribers", {"params": {"limit": 0}}, ["query", "limit"]),
        ("GET", "/subscribers", {"params": {"status": "gone"}}, ["query", "status"]),
        ("GET", "/subscribers", {"params": {"cursor": "AAAA"}}, ["query", "cursor"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(
    api: Api, method: str, path: str, kwargs: dict[str, Any], field: list[Any]
) -> None:
    if "content" in kwargs:
        kwargs["headers"] = {"Content-Type": "application/json"}
        response = httpx.request(
            method,
            api.url + path,
            headers={"Authorization": f"Bearer {api.key}", **kwargs.pop("headers")},
            **kwargs,
        )
    else:
        response = api.call(method, path, **kwargs)
    assert response.status_code == 422, response.text
    assert [problem["loc"][:2] for problem in response.json()["detail"]][0] == field
    assert _people(api.engine) == {}


def test_a_control_with_bad_input_is_a_422_naming_the_field(api: Api) -> None:
    added = api.call("POST", "/subscribers", json={"email": "c@example.org", "confirmed": True})
    uid = added.json()["subscriber"]["id"]
    for control, body, field in [
        ("pause", {"days": 0}, "days"),
        ("pause", {}, "days"),
        ("time", {"send_at": "25:00"}, "send_at"),
    ]:
        response = api.call("POST", f"/subscribers/{uid}/{control}", json=body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", field]
    assert api.call("POST", f"/subscribers/{uid}/explode").status_code == 422
    assert api.call("POST", "/subscribers/nobody/pause", json={"days": 2}).status_code == 404


def test_each_key_has_its_own_rate(api: Api) -> None:
    codes = [api.call("GET", "/courses").status_code for _ in range(45)]
    assert codes[:40] == [200] * 40 and set(codes[40:]) == {429}
    limited = api.call("GET", "/courses")
    assert int(limited.headers["retry-after"]) >= 1
    assert api.call("GET", "/courses", key=api.reader).status_code == 200


def test_courses_their_funnel_and_the_api_document(api: Api) -> None:
    [course] = api.call("GET", "/courses").json()["items"]
    assert course["slug"] == "yin-immersion" and len(course["days"]) == 7
    stats = api.call("GET", "/courses/yin-immersion/stats").json()
    assert stats["course"] == "yin-immersion" and len(stats["days"]) == 7
    assert api.call("GET", "/courses/pilates/stats").status_code == 404
    document = httpx.get(api.url + "/openapi.json").json()
    assert document["info"]["title"] == "drip API"
    assert {"/subscribers", "/subscribers/{subscriber_id}", "/courses"} <= set(document["paths"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    root = api.url.removesuffix("/api/v1")
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(root + path).status_code == 404
    assert api.call("GET", "/docs").status_code == 404
    assert httpx.get(api.url + "/docs").status_code == 401, "nothing but the document unkeyed"


def test_a_key_notes_when_it_was_last_used(api: Api) -> None:
    with api.engine.connect() as connection:
        assert connection.execute(select(ApiKey.last_used_at)).scalars().all() == [None, None]
    api.call("GET", "/courses")
    with api.engine.connect() as connection:
        used = dict(connection.execute(select(ApiKey.name, ApiKey.last_used_at)).all())
    assert used["crm"] is not None and used["reports"] is None


def test_a_stranger_cannot_make_the_api_read_or_parse_a_body(api: Api) -> None:
    import socket

    host, port = api.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /api/v1/subscribers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400000000\r\n\r\n{"
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401")
    bad_json = httpx.post(api.url + "/subscribers", content=b"{nope", headers={})
    assert bad_json.status_code == 401
    big = api.call("POST", "/subscribers", content=b"[" + b"1," * 40_000 + b"1]")
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"email": "a@example.org", "name": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    streamed = httpx.post(
        api.url + "/subscribers",
        content=chunks(),
        headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert _people(api.engine) == {}


@pytest.mark.parametrize(
    ("path", "body", "params"),
    [
        ("/subscribers/x/pause", b'{"days": NaN}', None),
        ("/subscribers", b'{"email": NaN}', None),
        ("/subscribers", b'{"email": 1e400}', None),
        ("/subscribers", b'{"email": "\\ud800@example.org"}', None),
        ("/subscribers", b'{"email": "a@example.org", "confirmed": "yes"}', None),
        ("/subscribers/x/pause", b'{"days": true}', None),
        ("/subscribers", None, {"email": "foo"}),
        ("/subscribers", None, {"email": "\x00"}),
    ],
)
def test_odd_input_is_a_422_never_a_500(
    api: Api, path: str, body: bytes | None, params: dict[str, str] | None
) -> None:
    if body is None:
        response = api.call("GET", path, params=params)
    else:
        response = httpx.post(
            api.url + path,
            content=body,
            headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"]
    assert _people(api.engine) == {}
