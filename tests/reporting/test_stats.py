"""``drip stats``: the funnel counted from a scripted history, and the command around it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from drip.cli import app
from drip.core.config import BouncePolicy, get_settings
from drip.core.courses import Catalog, Course
from drip.core.entries import Entry
from drip.core.states import ClickLink, MailEventKind
from drip.feedback.bounces import record
from drip.feedback.clicks import record_click
from drip.lifecycle.enrollment import find_member, unsubscribe
from drip.lifecycle.signup import Consent, sign_up
from drip.reporting.stats import funnel
from drip.runner import make_sender
from drip.store.engine import engine_for
from drip.testing import SmtpSink
from tests.fixtures import COURSES_DIR, TEST_SECRET, enrol, make_settings

START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # a Monday, 07:00 in London


def _three_days(course: Course) -> Course:
    data = course.model_dump(by_alias=True, mode="json")
    return Course.model_validate({**data, "days": data["days"][:3]})


def _history(engine: Engine, course: Course, sink: SmtpSink, tmp_path: Path) -> dict[str, str]:
    """Six confirmed and one pending; day 1 bounces for one address and fails for another
    (every attempt deferred); two follow day 1's class link (one twice), one leaves after
    day 1; day 2's class is followed once; three finish the three days, and one of them
    then reports day 3 as spam."""
    uids = {
        name: enrol(engine, course, f"{name}@example.org", now=START)
        for name in ("ana", "ben", "cat", "dan", "bounce", "soft")
    }
    with engine.begin() as connection:
        sign_up(
            connection,
            course=course,
            entries=[Entry.clean(email="pending@example.org")],
            consent=Consent(source="test"),
            by_operator=True,
            now=START,
        )
    sink.rcpt_replies["bounce@example.org"] = "550 5.1.1 no such user"
    sink.rcpt_replies["soft@example.org"] = "451 4.3.0 try again later"
    settings = make_settings(tmp_path, smtp_url=sink.url, max_attempts=1)
    sender = make_sender(engine=engine, settings=settings, catalog=Catalog({course.slug: course}))
    catalog = Catalog({course.slug: course})

    def click(name: str, day: int, at: datetime) -> None:
        with engine.begin() as connection:
            record_click(
                connection,
                enrollment_uid=uids[name],
                day_id=course.days[day - 1].id,
                link=ClickLink.CLASS,
                now=at,
            )

    sender.send_due(now=START)
    click("ana", 1, START + timedelta(hours=1))
    click("ana", 1, START + timedelta(hours=2))
    click("ben", 1, START + timedelta(hours=3))
    with engine.begin() as connection:
        unsubscribe(connection, enrollment_uid=uids["dan"], catalog=catalog, now=START)
    for day in (1, 2):
        sender.send_due(now=START + timedelta(days=day))
    click("cat", 2, START + timedelta(days=1, hours=1))
    with engine.begin() as connection:  # after the last day, ben reports day 3 as spam
        ben = find_member(connection, enrollment_uid=uids["ben"])
        record(
            connection,
            subscriber_id=ben.subscriber_id,
            kind=MailEventKind.COMPLAINT,
            source="inbound",
            diagnostic="",
            now=START + timedelta(days=2, hours=3),
            policy=BouncePolicy(3, 14),
        )
    return uids


def test_the_funnel_counts_a_scripted_history(
    any_engine: Engine, course: Course, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    course = _three_days(course)
    _history(any_engine, course, smtp_sink, tmp_path)
    with any_engine.connect() as connection:
        result = funnel(connection, course)
    ids = [day.id for day in course.days]
    assert result == {
        "course": course.slug,
        "since": None,
        "signups": 7,
        "confirmed": 6,
        "completed": 4,  # ana, ben, cat; soft, every lesson given up on, has no more days
        "completion_rate": 0.667,
        # the people, by their own status: ana, cat and soft active; bounce and ben (who
        # complained) suppressed; dan left
        "subscribers": {"active": 3, "pending": 1, "suppressed": 2, "unsubscribed": 1},
        "enrollments": {"cancelled": 2, "completed": 4, "pending": 1},
        "controls": {"paused": 0, "pauses": 0, "restarted": 0, "restarts": 0, "own_hour": 0},
        "days": [
            {"day": 1, "id": ids[0], "sent": 4, "clicked": 2, "click_rate": 0.5,
             "unsubscribed": 1, "bounced": 1, "complained": 0, "failed": 1, "skipped": 0},
            {"day": 2, "id": ids[1], "sent": 3, "clicked": 1, "click_rate": 0.333,
             "unsubscribed": 0, "bounced": 0, "complained": 0, "failed": 1, "skipped": 0},
            {"day": 3, "id": ids[2], "sent": 3, "clicked": 0, "click_rate": 0.0,
             "unsubscribed": 0, "bounced": 0, "complained": 1, "failed": 1, "skipped": 0},
        ],
    }  # fmt: skip


def test_since_narrows_the_funnel_to_later_signups(
    any_engine: Engine, course: Course, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """``since``: only the people who signed up from then on, lessons and all."""
    course = _three_days(course)
    _history(any_engine, course, smtp_sink, tmp_path)
    later = START + timedelta(days=3)
    enrol(any_engine, course, "eve@example.org", now=later)
    settings = make_settings(tmp_path, smtp_url=smtp_sink.url)
    make_sender(
        engine=any_engine, settings=settings, catalog=Catalog({course.slug: course})
    ).send_due(now=later)
    with any_engine.connect() as connection:
        result = funnel(connection, course, since=later.replace(hour=0))
    assert (result["signups"], result["confirmed"], result["completed"]) == (1, 1, 0)
    assert result["subscribers"] == result["enrollments"] == {"active": 1}
    assert [day["sent"] for day in result["days"]] == [1, 0, 0]
    assert result["days"][1]["click_rate"] is None and result["completion_rate"] == 0.0


runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    monkeypatch.setenv("DRIP_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DRIP_SMTP_URL", "memory://")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_command_prints_the_funnel_as_json_and_as_a_table(
    cli_env: Path, course: Course
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    engine = engine_for(get_settings())
    enrol(engine, course, "ana@example.org", now=START)
    engine.dispose()
    result = runner.invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    [printed] = json.loads(result.output)  # every course: a list
    assert (printed["course"], printed["signups"], printed["confirmed"]) == (course.slug, 1, 1)
    assert [day["id"] for day in printed["days"]] == [day.id for day in course.days]
    later = runner.invoke(app, ["stats", course.slug, "--since", "2026-11-03", "--json"])
    assert json.loads(later.output)["signups"] == 0
    table = runner.invoke(app, ["stats"])
    assert table.exit_code == 0
    assert "signups 1 · confirmed 1 · completed 0 (0% of confirmed)" in table.output
    lines = [line for line in table.output.splitlines() if line.startswith("│")]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert [cells[:7] for cells in rows][0] == ["1", "0", "0 (–)", "0", "0", "0", "0"]
    assert len(rows) == len(course.days)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "nope"], "unknown course 'nope'"),
        (["stats", "--since", "2026-13-01"], "'2026-13-01' is not a date"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(
    cli_env: Path, args: list[str], message: str
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
