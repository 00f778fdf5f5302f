"""The CLI through Typer's runner: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drip.cli import app
from tests.conftest import COURSES_DIR, SHIPPED_COURSE, TEST_SECRET

runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    monkeypatch.setenv("DRIP_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DRIP_SMTP_URL", f"file://{tmp_path / 'outbox'}")
    monkeypatch.setenv("DRIP_SEND_RATE", "0")
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0


def test_validate_shipped_course_passes() -> None:
    """`drip course validate courses/yin-immersion.yaml` exits 0."""
    result = runner.invoke(app, ["course", "validate", str(SHIPPED_COURSE)])
    assert result.exit_code == 0, result.output
    assert "ok (yin-immersion, 7 days)" in result.output


def test_validate_broken_copy_fails_with_file_and_line(tmp_path: Path) -> None:
    """A broken copy exits 1 with `file:line: key: message` and no traceback."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(SHIPPED_COURSE.read_text().replace('send_at: "07:00"', 'send_at: "7am"'))
    result = runner.invoke(app, ["course", "validate", str(broken)])
    assert result.exit_code == 1
    assert "broken.yaml:13: send_at: must be a local time as HH:MM" in result.output
    assert "Traceback" not in result.output


def test_add_list_json_and_send_due(tmp_path: Path) -> None:
    """Add a confirmed subscriber, list as JSON, dry-run then send day 1 into the outbox."""
    now = "2026-11-25T07:00:00Z"
    added = runner.invoke(
        app,
        [
            "subscribers",
            "add",
            "Ana@Example.org",
            "--name",
            "Ana",
            "--timezone",
            "Europe/Lisbon",
            "--confirmed",
            "--now",
            now,
        ],
    )
    assert added.exit_code == 0, added.output
    listed = json.loads(runner.invoke(app, ["subscribers", "list", "--json"]).output)
    assert [(s["email"], s["name"], s["timezone"], s["status"]) for s in listed] == [
        ("ana@example.org", "Ana", "Europe/Lisbon", "active")
    ]
    dry = runner.invoke(app, ["send-due", "--now", now, "--dry-run", "--json"])
    assert json.loads(dry.output)[0]["day"] == "upper-back-shoulders"
    sent = runner.invoke(app, ["send-due", "--now", "2026-11-25T20:00+13:00", "--json"])
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output)["sent"] == 1
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["send-due", "--now", "tomorrow"], 2, "is not ISO 8601"),
        (["subscribers", "add", "nope"], 2, "email is not a valid address"),
        (
            ["subscribers", "add", "a@example.org", "--timezone", "Mars/Base"],
            2,
            "unknown IANA time zone",
        ),
        (["subscribers", "show", "ghost@example.org"], 1, "no subscriber"),
        (["course", "preview", "yin-immersion", "9"], 2, "has no day '9'"),
        (["course", "preview", "pilates", "1"], 2, "unknown course 'pilates'"),
    ],
)
def test_user_mistakes_are_one_line_and_an_exit_code(
    args: list[str], code: int, message: str
) -> None:
    """Bad input gives a precise message and exit code, never a traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_preview_eml_has_one_click_headers() -> None:
    """`drip course preview … --format eml` prints a full message with RFC 8058 headers."""
    result = runner.invoke(app, ["course", "preview", "yin-immersion", "1", "--format", "eml"])
    assert result.exit_code == 0
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.output
    assert "Subject: Day 1: Soften the upper back and shoulders" in result.output


def test_import_checks_every_row_before_storing(tmp_path: Path) -> None:
    """A CSV with one bad row names its line and imports nothing."""
    csv = tmp_path / "people.csv"
    csv.write_text("email,name\nok@example.org,Ok\nbroken,Bad\n")
    result = runner.invoke(app, ["subscribers", "import", str(csv), "--confirmed"])
    assert result.exit_code == 1 and "people.csv:3:" in result.output
    assert json.loads(runner.invoke(app, ["subscribers", "list", "--json"]).output) == []
    csv.write_text("email,name\nok@example.org,Ok\n")
    assert runner.invoke(app, ["subscribers", "import", str(csv), "--confirmed"]).exit_code == 0


def _outbox(tmp_path: Path) -> list[str]:
    """Subjects of the .eml files in the outbox directory."""
    from email import message_from_bytes, policy

    return sorted(
        str(message_from_bytes(path.read_bytes(), policy=policy.default)["Subject"])
        for path in (tmp_path / "outbox").glob("*.eml")
    )


def _statuses() -> dict[str, str]:
    listed = json.loads(runner.invoke(app, ["subscribers", "list", "--json"]).output)
    return {row["email"]: row["status"] for row in listed}


def test_add_without_confirmed_queues_a_confirmation(tmp_path: Path) -> None:
    """`subscribers add` (no --confirmed) leaves the person pending with a confirmation in
    the outbox, which the next `send-due` sends; nothing is sent twice."""
    added = runner.invoke(app, ["subscribers", "add", "ana@example.org", "--name", "Ana"])
    assert added.exit_code == 0, added.output
    assert "confirmation email is queued" in added.output
    assert _statuses() == {"ana@example.org": "pending"}
    for _ in range(2):
        assert runner.invoke(app, ["send-due"]).exit_code == 0
    assert _outbox(tmp_path) == ["Please confirm: 7-Day Yin Yoga Immersion"]


def test_import_without_confirmed_queues_confirmations_and_never_readds_leavers(
    tmp_path: Path,
) -> None:
    """Import checks every row, then queues one confirmation per new address; a duplicate
    row is skipped, and an address that unsubscribed is not brought back."""
    runner.invoke(app, ["subscribers", "add", "gone@example.org", "--confirmed"])
    assert runner.invoke(app, ["subscribers", "unsubscribe", "gone@example.org"]).exit_code == 0
    people = tmp_path / "people.csv"
    people.write_text(
        "email,name,timezone\n"
        "a@example.org,A,Europe/Paris\n"
        "B@example.org,B,\n"
        "a@example.org,A again,\n"
        "gone@example.org,G,\n"
    )
    result = runner.invoke(app, ["subscribers", "import", str(people)])
    assert result.exit_code == 0, result.output
    assert "1 duplicate rows skipped" in result.output
    assert "1 unsubscribed earlier (not re-added)" in result.output
    assert _statuses() == {
        "gone@example.org": "unsubscribed",
        "a@example.org": "pending",
        "b@example.org": "pending",
    }
    assert runner.invoke(app, ["send-due"]).exit_code == 0
    assert _outbox(tmp_path).count("Please confirm: 7-Day Yin Yoga Immersion") == 2


def test_resend_confirmation_to_one_or_all_pending(tmp_path: Path) -> None:
    """`resend-confirmation EMAIL` queues a fresh link for a pending address (and refuses
    one that is not pending); `--all-pending --older-than` picks only stale ones."""
    day0 = "2026-11-20T07:00:00Z"
    runner.invoke(app, ["subscribers", "add", "old@example.org", "--now", day0])
    runner.invoke(app, ["subscribers", "add", "new@example.org", "--now", "2026-11-25T06:00Z"])
    runner.invoke(app, ["subscribers", "add", "in@example.org", "--confirmed"])
    one = runner.invoke(
        app, ["subscribers", "resend-confirmation", "new@example.org", "--now", "2026-11-25T06:30Z"]
    )
    assert one.exit_code == 0 and "queued 1" in one.output
    refused = runner.invoke(app, ["subscribers", "resend-confirmation", "in@example.org"])
    assert refused.exit_code == 1 and "is active, not waiting" in refused.output
    stale = runner.invoke(
        app,
        [
            "subscribers",
            "resend-confirmation",
            "--all-pending",
            "--older-than",
            "1d",
            "--now",
            "2026-11-25T07:00:00Z",
        ],
    )
    assert stale.exit_code == 0 and "queued 1" in stale.output, stale.output
    assert runner.invoke(app, ["send-due", "--now", "2026-11-25T07:00:00Z"]).exit_code == 0
    subjects = _outbox(tmp_path)
    assert subjects.count("Please confirm: 7-Day Yin Yoga Immersion") == 4  # 2 + 1 + 1
    bad = runner.invoke(
        app, ["subscribers", "resend-confirmation", "--all-pending", "--older-than", "soon"]
    )
    assert bad.exit_code == 2 and "not a duration" in bad.output
