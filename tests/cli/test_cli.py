"""The CLI through Typer's runner: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drip.cli import app
from drip.core.config import get_settings
from tests.fixtures import COURSES_DIR, SHIPPED_COURSE, TEST_SECRET

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
    report = json.loads(sent.output)
    assert (report["sent"], report["stopped"], report["ok"]) == (1, None, True)
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


def test_an_import_sets_its_rows_aside_from_the_garbage_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows read are kept to the import's end: frozen before the first batch, so the
    batches' full collections do not walk them (7 % of a 100,000-row import's time)."""
    from drip.lifecycle import signup

    frozen_at_each_batch: list[int] = []

    def sign_up(*args: object, **kwargs: object) -> object:
        frozen_at_each_batch.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    real = signup.sign_up
    monkeypatch.setattr(signup, "sign_up", sign_up)
    csv = tmp_path / "people.csv"
    csv.write_text("email\nok@example.org\n")
    result = runner.invoke(app, ["subscribers", "import", str(csv), "--confirmed"])
    assert result.exit_code == 0, result.output
    assert len(frozen_at_each_batch) == 1 and frozen_at_each_batch[0] > 0


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


# -- what an operator's terminal and files meet ----------------------------------------------


def _stored(email: str, **values: object) -> None:
    """Give a stored subscriber (and their deliveries) values a stranger or a server chose."""
    from sqlalchemy import update
    from sqlmodel import Session

    from drip.core.models import Delivery, Subscriber
    from drip.store.engine import make_engine

    engine = make_engine(os.environ["DRIP_DATABASE_URL"])
    with Session(engine) as session, session.begin():
        subscriber = {k: v for k, v in values.items() if k != "reply"}
        session.execute(update(Subscriber).where(Subscriber.email == email).values(**subscriber))
        if "reply" in values:
            session.execute(update(Delivery).values(last_error=values["reply"]))
    engine.dispose()


def test_stored_values_reach_the_terminal_as_plain_text() -> None:
    """Names with Rich markup or terminal escapes, and a server reply with markup, are
    shown as typed: no crash, no live link, no escape sequence."""
    runner.invoke(app, ["subscribers", "add", "a@example.org", "--confirmed"])
    runner.invoke(app, ["subscribers", "add", "b@example.org", "--confirmed"])
    _stored("a@example.org", name="[/x]", consent_user_agent="evil\x1b]8;;http://x\x1b\\")
    _stored("b@example.org", name="[link=https://evil.example/x]Renew[/link]", reply="550 [/x]")
    listed = runner.invoke(app, ["subscribers", "list"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    assert "[/x]" in listed.output and "[link=https://evil.example/x]Renew" in listed.output
    shown = runner.invoke(app, ["subscribers", "show", "a@example.org"])
    assert shown.exit_code == 0 and "\x1b" not in shown.output and "\\x1b" in shown.output
    reply = runner.invoke(app, ["subscribers", "show", "b@example.org"])
    assert reply.exit_code == 0 and "550 [/x]" in reply.output


def test_export_keeps_formulas_from_running_in_a_spreadsheet(tmp_path: Path) -> None:
    """A name starting like a formula is exported with a leading apostrophe (OWASP)."""
    runner.invoke(app, ["subscribers", "add", "f@example.org", "--confirmed"])
    _stored("f@example.org", name='=HYPERLINK("https://evil.example","Click")')
    out = tmp_path / "out.csv"
    assert runner.invoke(app, ["subscribers", "export", "-o", str(out)]).exit_code == 0
    row = out.read_text().splitlines()[1]
    assert "'=HYPERLINK(" in row and ",=HYPERLINK(" not in row


@pytest.mark.parametrize(
    ("content", "extra", "code", "message"),
    [
        ("email,name\nzoë@example.org,Zoë\n".encode("latin-1"), [], 2, "the file is not UTF-8"),
        (
            "email,name\nzoe@example.org,Zoë\n".encode("latin-1"),
            ["--encoding", "latin-1"],
            0,
            "1 queued a confirmation",
        ),
        ("email,name\nzoe@example.org,Zoë\n".encode("utf-16"), [], 0, "1 queued a confirmation"),
        (b"email,name\na@example.org," + b"x" * 70_000 + b"\n", [], 2, "people.csv:2"),
        (b"email,timezone\na@example.org,Mars/Base\n", [], 1, "people.csv:2: timezone: unknown"),
        (b"name\nAna\n", [], 2, "needs a header row with an 'email' column"),
    ],
)
def test_import_edge_cases_are_one_line_each(
    tmp_path: Path, content: bytes, extra: list[str], code: int, message: str
) -> None:
    """Encodings, huge fields, bad zones and missing columns: a file:line message and an
    exit code, never a traceback; nothing stored when the file is refused."""
    people = tmp_path / "people.csv"
    people.write_bytes(content)
    result = runner.invoke(app, ["subscribers", "import", str(people), *extra])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    if code:
        assert _statuses() == {}


def test_commands_other_than_upgrade_never_create_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stats` run where there is no database says where it looked; no file is made."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{elsewhere / 'drip.db'}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 2 and "no database at" in result.output
    assert str(elsewhere / "drip.db") in result.output
    assert not (elsewhere / "drip.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:////nonexistent/dir/drip.db", "the directory does not exist"),
        ("sqlite:///", "in-memory SQLite database"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot open the database"),
    ],
)
def test_db_upgrade_on_a_bad_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    """An unusable DRIP_DATABASE_URL: one line and exit 2, not a long traceback."""
    monkeypatch.setenv("DRIP_DATABASE_URL", url)
    get_settings.cache_clear()
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_small_first_hour_answers() -> None:
    """--version, an unknown course for list, and answering no to delete."""
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("drip ")
    unknown = runner.invoke(app, ["subscribers", "list", "--course", "nope"])
    assert unknown.exit_code == 2 and "unknown course 'nope'" in unknown.output
    runner.invoke(app, ["subscribers", "add", "d@example.org"])
    kept = runner.invoke(app, ["subscribers", "delete", "d@example.org"], input="n\n")
    assert kept.exit_code == 1 and "not deleted" in kept.output
    assert _statuses() == {"d@example.org": "pending"}


def test_validate_checks_the_folder_as_send_due_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two files with one slug fail validation; example.com and template braces warn."""
    folder = tmp_path / "courses"
    folder.mkdir()
    shipped = SHIPPED_COURSE.read_text()
    (folder / "a.yaml").write_text(
        shipped.replace("Welcome to the first day.", "Welcome, {{ name }}.", 1)
    )
    monkeypatch.setenv("DRIP_COURSES_DIR", str(folder))
    get_settings.cache_clear()
    one = runner.invoke(app, ["course", "validate"])
    assert one.exit_code == 0, one.output
    assert "warning: the course still uses example.com" in one.output
    assert "warning: '{{' is shown as typed" in one.output
    (folder / "b.yaml").write_text(shipped)
    two = runner.invoke(app, ["course", "validate"])
    assert two.exit_code == 1 and "is also the slug of" in two.output


def test_preview_open_never_writes_html_into_the_eml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-f eml -o x.eml --open: x.eml is the message; the browser gets an HTML file."""
    monkeypatch.setenv("BROWSER", "true")  # a "browser" that accepts and does nothing
    target = tmp_path / "x.eml"
    result = runner.invoke(
        app, ["course", "preview", "yin-immersion", "1", "-f", "eml", "-o", str(target), "--open"]
    )
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("From: ") and "<!doctype" not in target.read_text()[:200]
    assert "opened " in result.output and ".html" in result.output


def test_dry_run_lists_what_is_due_in_order_and_claims_nothing(tmp_path: Path) -> None:
    """`send-due --dry-run` lists each due email (oldest first, then oldest row) with its
    day or kind and attempts, honours --limit, leaves out what is not due, sends nothing."""
    for email, when, confirmed in (
        ("b@example.org", "2026-11-25T06:00:00Z", True),
        ("a@example.org", "2026-11-25T06:00:00Z", True),
        ("c@example.org", "2026-11-25T05:30:00Z", False),
        ("late@example.org", "2026-11-25T08:00:00Z", False),
    ):
        args = ["subscribers", "add", email, "--timezone", "Asia/Tokyo", "--now", when]
        assert runner.invoke(app, [*args, "--confirmed"] if confirmed else args).exit_code == 0

    def dry(*extra: str) -> list[dict[str, object]]:
        result = runner.invoke(
            app, ["send-due", "--now", "2026-11-25T07:00:00Z", "--dry-run", "--json", *extra]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.output)  # type: ignore[no-any-return]

    lesson = {"course": "yin-immersion", "kind": "lesson", "day": "upper-back-shoulders"}
    expected = [
        {
            "email": "c@example.org",
            "course": "yin-immersion",
            "kind": "confirm",
            "day": "confirm",
            "due_at": "2026-11-25T05:30:00+00:00",
            "attempts": 0,
        },
        *(
            {"email": email, **lesson, "due_at": "2026-11-25T06:00:00+00:00", "attempts": 0}
            for email in ("b@example.org", "a@example.org")
        ),
    ]
    assert dry() == expected
    assert dry("--limit", "2") == expected[:2]
    assert dry() == expected, "a dry run claims nothing"
    assert not (tmp_path / "outbox").exists()


def test_piped_tables_keep_every_value_whole_and_show_has_json() -> None:
    """Piped into another program (CliRunner is not a terminal), a table cuts no value, so
    `drip subscribers list | grep` finds a long address; `subscribers show --json` prints
    the subscriber, their courses, emails and bounces as one object."""
    long = "a-rather-long-address-for-a-narrow-terminal-window@example-yoga-studio.org"
    assert runner.invoke(app, ["subscribers", "add", long, "--confirmed"]).exit_code == 0
    listed = runner.invoke(app, ["subscribers", "list"])
    assert long in listed.output
    shown = runner.invoke(app, ["subscribers", "show", long])
    assert long in shown.output and "upper-back-shoulders" in shown.output
    assert "…" not in shown.output
    data = json.loads(runner.invoke(app, ["subscribers", "show", long, "--json"]).output)
    assert data["subscriber"]["email"] == long and data["subscriber"]["status"] == "active"
    assert [e["course"] for e in data["enrollments"]] == ["yin-immersion"]
    [email] = data["emails"]
    assert (email["key"], email["status"], email["attempts"]) == (
        "upper-back-shoulders",
        "scheduled",
        0,
    )
    assert data["events"] == []
    courses = json.loads(runner.invoke(app, ["course", "list", "--json"]).output)
    assert [(c["slug"], c["days"]) for c in courses] == [("yin-immersion", 7)]


def test_stats_shows_every_course_or_the_one_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two courses, `drip stats` shows both (JSON: a list), `drip stats SLUG` one
    (JSON: that course's object); it never asks which."""
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "yin.yaml").write_text(SHIPPED_COURSE.read_text())
    (folder / "other.yaml").write_text(
        SHIPPED_COURSE.read_text().replace("slug: yin-immersion", "slug: other-course")
    )
    monkeypatch.setenv("DRIP_COURSES_DIR", str(folder))
    get_settings.cache_clear()
    both = runner.invoke(app, ["stats", "--json"])
    assert both.exit_code == 0, both.output
    assert sorted(c["course"] for c in json.loads(both.output)) == ["other-course", "yin-immersion"]
    one = json.loads(runner.invoke(app, ["stats", "other-course", "--json"]).output)
    assert one["course"] == "other-course"
    table = runner.invoke(app, ["stats"])
    assert (
        table.exit_code == 0 and "yin-immersion" in table.output and "other-course" in table.output
    )


def test_the_export_carries_every_proof_of_consent_the_json_has(tmp_path: Path) -> None:
    """The CSV export has every consent field the JSON export has (user agent included)."""
    import csv

    assert runner.invoke(app, ["subscribers", "add", "ana@example.org"]).exit_code == 0
    as_json = json.loads(runner.invoke(app, ["subscribers", "export", "--format", "json"]).output)
    rows = list(csv.DictReader(runner.invoke(app, ["subscribers", "export"]).output.splitlines()))
    consent = {key for key in as_json[0] if key.startswith("consent_")}
    assert consent and consent <= set(rows[0])


def test_doctor_and_send_due_read_a_wrong_smtp_url_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """One reading of DRIP_SMTP_URL: a scheme send-due refuses, doctor reports as a
    problem with the same words; send-due says it once, claims nothing, exits 2."""
    monkeypatch.setenv("DRIP_SMTP_URL", "smtpp://mail.example.org")
    get_settings.cache_clear()
    assert (
        runner.invoke(app, ["subscribers", "add", "ana@example.org", "--confirmed"]).exit_code == 0
    )
    sent = runner.invoke(app, ["send-due"])
    assert sent.exit_code == 2
    assert sent.output.count("unsupported scheme 'smtpp'") == 1, sent.output
    doctor = runner.invoke(app, ["doctor"])
    assert doctor.exit_code == 1
    assert "problem: smtp: DRIP_SMTP_URL: unsupported scheme 'smtpp'" in doctor.output


def test_the_subscribers_controls_from_the_command_line(tmp_path: Path) -> None:
    """pause, resume, set-time and restart say what comes next; the next lesson moves as
    her own page would move it; someone who left is refused with exit 1 and one line."""
    now = "2026-11-23T07:00:00Z"  # a Monday, 07:00 in London
    add = ["subscribers", "add", "cli@example.org", "--confirmed", "--now", now]
    assert runner.invoke(app, add).exit_code == 0
    assert runner.invoke(app, ["send-due", "--now", now]).exit_code == 0

    def control(*args: str, at: str = "2026-11-23T12:00:00Z") -> str:
        result = runner.invoke(app, ["subscribers", *args, "--now", at])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        return " ".join(result.output.split())

    assert control("pause", "cli@example.org", "--days", "3") == (
        "cli@example.org: paused; next lesson at 2026-11-27 07:00 UTC"
    )
    assert control("resume", "cli@example.org") == (
        "cli@example.org: resumed; next lesson at 2026-11-24 07:00 UTC"
    )
    assert control("resume", "cli@example.org").startswith("cli@example.org: nothing to change")
    assert control("set-time", "cli@example.org", "18:30") == (
        "cli@example.org: moved; next lesson at 2026-11-24 18:30 UTC"
    )
    assert control("restart", "cli@example.org") == (
        "cli@example.org: restarted; next lesson at 2026-11-24 18:30 UTC"
    )
    shown = json.loads(
        runner.invoke(app, ["subscribers", "show", "cli@example.org", "--json"]).output
    )
    assert "upper-back-shoulders.2" in json.dumps(shown)

    assert runner.invoke(app, ["subscribers", "unsubscribe", "cli@example.org"]).exit_code == 0
    refused = runner.invoke(app, ["subscribers", "restart", "cli@example.org", "--now", now])
    assert refused.exit_code == 1
    assert refused.output.strip() == (
        "cli@example.org: nothing changed: this address is not receiving this course, "
        "so nothing was changed"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pause", "a@example.org", "--days", "0"], "error: days: choose a pause of 1 to 30"),
        (["pause", "a@example.org", "--days", "31"], "1 to 30 mornings, not '31'"),
        (["pause", "a@example.org", "--days", "a week"], "1 to 30 mornings, not 'a week'"),
        (["pause", "a@example.org"], "Missing option '--days'"),
        (["set-time", "a@example.org", "25:00"], "error: send_at: give a time as HH:MM"),
        (["set-time", "a@example.org", "7pm"], "e.g. 18:30, not '7pm'"),
    ],
)
def test_a_control_given_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    runner.invoke(app, ["subscribers", "add", "a@example.org", "--confirmed"])
    result = runner.invoke(app, ["subscribers", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_db_recount_sets_counts_edited_by_hand_back_and_keeps_the_counters(
    tmp_path: Path,
) -> None:
    """Rows changed below drip (an operator's SQL): `drip db recount` counts the figures
    again from the rows, names what it changed, and leaves a metric counter that
    counted more (an erased subscriber's signup) as it was."""
    runner.invoke(app, ["subscribers", "add", "ana@example.org", "--confirmed"])
    runner.invoke(app, ["subscribers", "add", "ben@example.org", "--confirmed"])
    runner.invoke(app, ["subscribers", "delete", "ben@example.org", "--yes"])
    database = sqlite3.connect(tmp_path / "cli.db")
    with database:
        database.execute("DROP TRIGGER tally_subscriber_update")
        database.execute("UPDATE subscriber SET status = 'unsubscribed'")
    assert runner.invoke(app, ["db", "recount"]).output.splitlines() == [
        "people yin-immersion,active: -1",
        "people yin-immersion,unsubscribed: +1",
        "subscribers active: -1",
        "subscribers unsubscribed: +1",
    ]
    assert runner.invoke(app, ["db", "recount"]).output.strip() == "every count was right"
    runner.invoke(app, ["subscribers", "add", "cat@example.org", "--confirmed"])
    runner.invoke(app, ["subscribers", "unsubscribe", "cat@example.org"])  # its trigger is back
    assert runner.invoke(app, ["db", "recount"]).output.strip() == "every count was right"
    signups = database.execute("SELECT n FROM tally WHERE name = 'drip_signups'").fetchone()
    assert signups == (3,)  # ben's signup still counted, though his rows are gone
    database.close()


def test_each_helper_process_keeps_to_its_share_of_the_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DRIP_SEND_RATE`` is the whole run's: with 4 processes each is started with a
    quarter of it (the parent too), and none starts helpers of its own."""
    from drip.cli import send
    from drip.core.config import Settings
    from drip.store.engine import make_engine
    from tests.fixtures import TEST_SECRET
    from tests.sending.test_concurrency import NOW, seed

    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    seed(database_url, 40)
    config = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        secret_key=TEST_SECRET,
        send_rate=10,
        send_processes=4,
        batch_size=5,
        smtp_connections=1,
    )
    engine = make_engine(database_url)
    assert send._processes(engine, config, when=NOW, limit=None) == 4
    assert send._processes(engine, config, when=NOW, limit=39) == 1  # a share under 2 batches
    started: list[dict[str, str]] = []
    monkeypatch.setattr(send.subprocess, "Popen", lambda command, env, **_: started.append(env))
    share = send._per_process(config, 4)
    assert share.send_rate == 2.5
    send._start_helper(share, when=NOW, limit=None)
    assert started[0]["DRIP_SEND_RATE"] == "2.5" and started[0]["DRIP_SEND_PROCESSES"] == "1"
    engine.dispose()
