"""The teacher's course tools: ``drip course new``, ``send-test`` and ``preview --serve``."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from drip.cli import app
from drip.core.config import get_settings
from drip.core.courses import load_course
from drip.sending.compose import Composer, render_problems
from drip.sending.render import default_templates_dir
from drip.testing import SmtpSink
from drip.web.preview import Changes, create_preview_app
from tests.fixtures import SHIPPED_COURSE, TEST_SECRET, make_settings

runner = CliRunner()


@pytest.fixture
def courses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A courses directory holding a copy of the shipped course, as the CLI's."""
    folder = tmp_path / "courses"
    folder.mkdir()
    shutil.copy(SHIPPED_COURSE, folder)
    monkeypatch.setenv("DRIP_COURSES_DIR", str(folder))
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    monkeypatch.setenv("DRIP_SECRET_KEY", TEST_SECRET)
    get_settings.cache_clear()
    return folder


def test_course_new_writes_a_commented_seven_day_course_that_validates(
    courses: Path, tmp_path: Path
) -> None:
    """The skeleton validates, renders every email, keeps a title with quotes as typed, and
    is never written over an existing file or slug."""
    result = runner.invoke(app, ["course", "new", "pilates-basics", "--title", 'Pilates "Core"'])
    assert result.exit_code == 0, result.output
    path = courses / "pilates-basics.yaml"
    course = load_course(path)
    assert (course.slug, course.title, len(course.days)) == ("pilates-basics", 'Pilates "Core"', 7)
    assert course.after_course is not None and not course.evergreen
    assert path.read_text().count("\n#") >= 10  # commented for the teacher
    problems = render_problems(
        composer=Composer(settings=make_settings(tmp_path)), course=course, label="x", now=_now()
    )
    assert problems == []
    validated = runner.invoke(app, ["course", "validate"])
    assert validated.exit_code == 0, validated.output
    assert "pilates-basics.yaml: ok (pilates-basics, 7 days)" in validated.output

    before = path.read_text()
    again = runner.invoke(app, ["course", "new", "pilates-basics"])
    assert again.exit_code == 1 and "already exists" in again.output
    assert path.read_text() == before
    elsewhere = runner.invoke(
        app, ["course", "new", "yin-immersion", "-o", str(tmp_path / "y.yaml")]
    )
    assert elsewhere.exit_code == 0  # another folder: its own catalog
    taken = runner.invoke(app, ["course", "new", "yin-immersion"])
    assert taken.exit_code == 1 and "already" in taken.output
    taken_elsewhere = runner.invoke(
        app, ["course", "new", "yin-immersion", "-o", str(courses / "another-name.yaml")]
    )
    assert taken_elsewhere.exit_code == 1 and "already the slug" in taken_elsewhere.output
    for title in ("   ", "a\x7fb"):  # nothing written for a title that cannot be a course's
        refused = runner.invoke(app, ["course", "new", "other-course", "--title", title])
        assert refused.exit_code == 1 and "--title" in refused.output, refused.output
        assert "Traceback" not in refused.output
    bad = runner.invoke(app, ["course", "new", "Bad Slug"])
    assert bad.exit_code == 1 and "a slug is lowercase" in bad.output
    assert "Traceback" not in bad.output
    assert sorted(p.name for p in courses.iterdir()) == [
        "pilates-basics.yaml",
        "yin-immersion.yaml",
    ]


def _now() -> datetime:
    return datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table: what a test send must leave as it was."""
    engine = create_engine(url)
    with engine.connect() as connection:
        tables = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ).scalars()
        rows = {
            t: list(map(tuple, connection.execute(text(f'SELECT * FROM "{t}"')))) for t in tables
        }
    engine.dispose()
    return rows


def test_send_test_sends_one_marked_email_and_touches_no_subscriber(
    courses: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day 3 goes to the given address through real SMTP, marked as a test; the database
    is left exactly as it was, even when the server refuses the address (the teacher's
    address is not suppressed)."""
    with SmtpSink() as sink:
        monkeypatch.setenv("DRIP_SMTP_URL", sink.url)
        get_settings.cache_clear()
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        added = runner.invoke(app, ["subscribers", "add", "ana@example.org", "--confirmed"])
        assert added.exit_code == 0, added.output
        before = _rows(f"sqlite:///{tmp_path / 'drip.db'}")

        result = runner.invoke(
            app, ["course", "send-test", "yin-immersion", "3", "--to", "Teacher@Example.org"]
        )
        assert result.exit_code == 0, result.output
        assert "sent 3 of yin-immersion to Teacher@Example.org: 250" in result.output
        [received] = sink.received
        message = message_from_bytes(received.data, policy=policy.default)
        course = load_course(courses / "yin-immersion.yaml")
        assert received.recipients == ("teacher@example.org",)
        assert message["Subject"] == f"[Test] {course.days[2].subject}"
        assert message["X-Drip-Test"] == "yes"

        sink.rcpt_replies["teacher@example.org"] = "550 5.1.1 no such user"
        refused = runner.invoke(
            app, ["course", "send-test", "yin-immersion", "welcome", "--to", "teacher@example.org"]
        )
        assert refused.exit_code != 0 and "550" in refused.output
        assert "Traceback" not in refused.output
        bad = runner.invoke(app, ["course", "send-test", "yin-immersion", "1", "--to", "nobody"])
        assert bad.exit_code != 0 and "--to: email is not a valid address" in bad.output
        assert _rows(f"sqlite:///{tmp_path / 'drip.db'}") == before
        assert len(sink.received) == 1


@pytest.fixture
def previews(courses: Path, tmp_path: Path) -> tuple[TestClient, Path, Path]:
    templates = tmp_path / "emails"
    shutil.copytree(default_templates_dir(), templates)
    settings = make_settings(tmp_path, courses_dir=courses, templates_dir=templates)
    client = TestClient(create_preview_app(settings), base_url="http://127.0.0.1:8025")
    return client, courses / "yin-immersion.yaml", templates


def test_the_preview_server_shows_what_is_on_disk_now(
    previews: tuple[TestClient, Path, Path],
) -> None:
    """Every email is listed; day 3 shows at phone width; an edit shows on the next load;
    a broken course or template shows its file:line in the page, not a 500."""
    client, course_file, templates = previews
    index = client.get("/")
    assert index.status_code == 200
    # a page on another site that rebinds its name to 127.0.0.1 reads nothing
    rebound = client.get("/", headers={"Host": "attacker.example:8025"})
    assert rebound.status_code == 400 and "yin" not in rebound.text
    course = load_course(course_file)
    for which in [d.id for d in course.days] + ["confirm", "after_course"]:
        assert f'href="/yin-immersion/{which}"' in index.text
    day3 = client.get("/yin-immersion/3", params={"width": 375})
    assert day3.status_code == 200
    assert f"<strong>Subject:</strong> {course.days[2].subject}" in day3.text
    assert 'sandbox srcdoc="&lt;!doctype html&gt;' in day3.text.lower()
    assert "width: 375px" in day3.text
    assert "new EventSource" in day3.text

    course_file.write_text(course_file.read_text().replace(course.days[2].subject, "Day 3: Edited"))
    assert "<strong>Subject:</strong> Day 3: Edited" in client.get("/yin-immersion/3").text

    (templates / "lesson.txt").write_text("Hi\n{{ name }\n")
    broken = client.get("/yin-immersion/3")
    assert broken.status_code == 422
    assert f"{templates / 'lesson.txt'}:2: " in broken.text

    course_file.write_text(course_file.read_text().replace('send_at: "07:00"', 'send_at: "7am"'))
    invalid = client.get("/yin-immersion/3")
    assert invalid.status_code == 404
    assert "yin-immersion.yaml:13: send_at: must be a local time as HH:MM" in invalid.text
    assert "yin-immersion.yaml:13: send_at" in client.get("/").text


def _inotify_instances() -> int:
    """This process's inotify instances (each a file descriptor, and a kernel quota)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:  # closed meanwhile
            pass
    return count


def test_every_preview_page_hears_of_a_change_through_one_watcher(tmp_path: Path) -> None:
    """``/events``: however many pages listen (50 here), one watcher (one inotify
    instance) serves them, and each gets an event when a watched file changes."""
    watched = tmp_path / "courses"
    watched.mkdir()
    before = _inotify_instances()

    async def scenario() -> tuple[list[str], int]:
        changes = Changes(watched)
        streams = [changes.listen() for _ in range(50)]
        for stream in streams:
            assert await anext(stream) == ": watching\n\n"
        events = [asyncio.ensure_future(anext(stream)) for stream in streams]
        for attempt in range(40):  # until the watcher, started in the background, sees one
            (watched / "course.yaml").write_text(f"edit {attempt}")
            _, pending = await asyncio.wait(events, timeout=0.25)
            if not pending:
                break
        watching = _inotify_instances() - before
        for stream in streams:
            await stream.aclose()
        await changes.close()
        return [event.result() for event in events], watching

    received, watching = asyncio.run(scenario())
    assert received == ["data: changed\n\n"] * 50
    assert watching == 1


def test_previews_are_served_on_loopback_only(courses: Path) -> None:
    """They show drafts and local paths: never on an address another machine can reach.
    A busy port is one line too, before anything else is printed."""
    result = runner.invoke(app, ["course", "preview", "--serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "previews are served on loopback only" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = runner.invoke(app, ["course", "preview", "--serve", "--port", port])
    assert busy.exit_code == 2
    assert busy.output == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
