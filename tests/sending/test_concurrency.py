"""Real `drip send-due` processes sharing one database: no lesson is ever sent twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlmodel import Session

from drip.core.models import Delivery, Enrollment, Subscriber
from drip.core.states import DeliveryStatus
from drip.store import tallies
from drip.store.engine import make_engine
from drip.store.schema import upgrade
from drip.testing import SmtpSink
from tests.fixtures import COURSES_DIR, TEST_SECRET, assert_tallies_hold

DRIP = Path(sys.executable).with_name("drip")
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
COUNT = 1000

pytestmark = [
    pytest.mark.slow,
    # one SMTP dialogue is enough here; test_mailer covers both
    pytest.mark.parametrize("smtp_sink", ["pipelining"], indirect=True),
]


def seed(database_url: str, count: int) -> None:
    """`count` active subscribers with day 1 due at NOW, inserted in bulk."""
    engine = make_engine(database_url)
    upgrade(engine)
    with Session(engine) as session, session.begin():
        session.execute(
            insert(Subscriber),
            [
                {
                    "uid": f"s{n:08d}",
                    "email": f"p{n}@example.org",
                    "name": f"P{n}",
                    "status": "active",
                    "created_at": NOW,
                }
                for n in range(count)
            ],
        )
        session.execute(
            insert(Enrollment),
            [
                {
                    "uid": f"e{n:08d}",
                    "subscriber_id": n + 1,
                    "course_slug": "yin-immersion",
                    "status": "active",
                    "created_at": NOW,
                    "started_at": NOW,
                }
                for n in range(count)
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "enrollment_id": n + 1,
                    "key": "upper-back-shoulders",
                    "status": "scheduled",
                    "due_at": NOW,
                    "attempts": 0,
                    "created_at": NOW,
                }
                for n in range(count)
            ],
        )
    engine.dispose()


def drip_env(database_url: str, sink: SmtpSink, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env.update(
        DRIP_DATABASE_URL=database_url,
        DRIP_SMTP_URL=sink.url,
        DRIP_SECRET_KEY=TEST_SECRET,
        DRIP_COURSES_DIR=str(COURSES_DIR),
        DRIP_SEND_RATE="0",
        DRIP_SMTP_CONNECTIONS="2",
        DRIP_BATCH_SIZE="20",
    )
    env.update(extra)
    return env


def send_due(env: dict[str, str], now: datetime) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(DRIP), "send-due", "--now", now.isoformat()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def sent_rows(database_url: str) -> int:
    engine = make_engine(database_url)
    with Session(engine) as session:
        count = session.execute(
            select(func.count()).select_from(Delivery).where(Delivery.status == DeliveryStatus.SENT)
        ).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.parametrize("processes", [2, 4])
def test_overlapping_runs_send_each_lesson_exactly_once(
    database_url: str, smtp_sink: SmtpSink, processes: int
) -> None:
    """N send-due processes at once over 1,000 due lessons: 1,000 messages, no duplicates."""
    seed(database_url, COUNT)
    env = drip_env(database_url, smtp_sink)
    runs = [send_due(env, NOW) for _ in range(processes)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0, stderr.decode()
    ids = smtp_sink.message_ids()
    assert len(ids) == COUNT
    assert len(set(ids)) == COUNT, "a lesson was sent twice"
    assert sent_rows(database_url) == COUNT
    sent_by = [_sent(out) for out, _ in results]
    assert sum(sent_by) == COUNT, sent_by
    # every process did part of the work (they share, not serialise behind one another)
    assert all(n > 0 for n in sent_by), sent_by
    # and the counts their triggers kept, concurrently, are what the rows count
    engine = make_engine(database_url)
    assert_tallies_hold(engine)
    with engine.connect() as connection:
        assert tallies.totals(connection)["drip_emails_sent", "lesson"] == COUNT
    engine.dispose()


def _sent(summary: bytes) -> int:
    """N from send-due's summary line "N sent, …"."""
    match = re.match(rb"(\d+) sent,", summary.strip())
    assert match, summary
    return int(match.group(1))


@pytest.mark.parametrize(("kill_after", "window"), [(137, 1), (611, 5)])
def test_kill_9_mid_run_then_rerun_delivers_everything(
    tmp_path: Path, smtp_sink: SmtpSink, kill_after: int, window: int
) -> None:
    """A worker killed with SIGKILL mid-run, wherever the kill lands (not on a batch
    boundary): a run before the lease leaves its stranded claims alone, the run after it
    sends them; only messages sent but not yet recorded at the kill (at most a window per
    connection) may arrive twice, with the same Message-ID."""
    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    seed(database_url, COUNT)
    env = drip_env(
        database_url,
        smtp_sink,
        DRIP_SEND_RATE="400",
        DRIP_LEASE_SECONDS="30",
        DRIP_SMTP_WINDOW=str(window),
    )
    bound = 2 * window  # two connections
    victim = send_due(env, NOW)
    deadline = time.monotonic() + 120  # generous: a loaded 2-core machine is slow
    while len(smtp_sink.received) < kill_after and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = len(smtp_sink.received)
    assert 0 < killed_at < COUNT

    # Before the lease expires the stranded claims are left alone ...
    rerun = send_due(env, NOW + timedelta(seconds=5))
    out, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr.decode()
    stranded = COUNT - len(set(smtp_sink.message_ids()))
    assert stranded > 0, "the killed run's claims waited for their lease"
    assert _sent(out) + killed_at <= COUNT + bound
    # ... and after it they are sent again.
    # a lease counts from its claim: the victim's last one ends at most 30 s after the
    # time it had run for (under the 120 s deadline above) past NOW
    final = send_due(env, NOW + timedelta(seconds=30 + 120 + 1))
    out, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr.decode()
    assert _sent(out) >= stranded

    counts = Counter(smtp_sink.message_ids())
    assert len(counts) == COUNT, "every lesson delivered"
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= bound, f"only unrecorded messages may repeat: {duplicates} > {bound}"
    assert sent_rows(database_url) == COUNT


def _statuses(database_url: str) -> Counter[str]:
    engine = make_engine(database_url)
    with Session(engine) as session:
        rows = session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)  # type: ignore[arg-type]
        ).all()
    engine.dispose()
    return Counter({str(status): int(n) for status, n in rows})


def _wait_for(sink: SmtpSink, count: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while len(sink.received) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sink.received) >= count, "the run did not get going"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_send_due_after_the_messages_in_flight(
    tmp_path: Path, smtp_sink: SmtpSink, signum: int
) -> None:
    """Ctrl-C (or SIGTERM) during a slow run: nothing more is claimed or sent beyond the
    messages in flight (one per connection), their receipts are written, the unsent
    claims are given back (none left `sending`), the summary says so, and it exits 130."""
    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    seed(database_url, 40)
    run = send_due(drip_env(database_url, smtp_sink, DRIP_SEND_RATE="5"), NOW)
    _wait_for(smtp_sink, 3)
    at_signal = len(smtp_sink.received)
    run.send_signal(signum)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err.decode()
    sent = _sent(out)
    assert b"stopped early: asked to stop" in out and b"Traceback" not in err
    assert at_signal <= sent <= at_signal + 2, (at_signal, sent)
    time.sleep(0.5)  # anything still on its way would have arrived
    assert len(smtp_sink.received) == sent
    # the day-1 lessons not sent are scheduled again, and each one sent queued its day 2
    assert _statuses(database_url) == Counter({"sent": sent, "scheduled": (40 - sent) + sent})


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """A second Ctrl-C does not wait for the messages in flight: exit 130 within moments;
    at worst what was sent and not recorded goes again after its lease."""
    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    seed(database_url, 40)
    smtp_sink.data_delay = 5.0  # each message answered after 5 s: the first Ctrl-C waits
    run = send_due(drip_env(database_url, smtp_sink, DRIP_SEND_RATE="0"), NOW)
    deadline = time.monotonic() + 30
    while not smtp_sink.data_started and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    time.sleep(0.2)
    started = time.monotonic()
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    assert run.returncode == 130
    assert time.monotonic() - started < 2


def test_drip_run_stops_cleanly_on_ctrl_c(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """`drip run` on Ctrl-C: the run in progress stops after its messages in flight, their
    receipts written and the rest given back, and the loop exits 0."""
    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    seed(database_url, 40)
    run = subprocess.Popen(
        [str(DRIP), "run"],
        env=drip_env(database_url, smtp_sink, DRIP_SEND_RATE="5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(smtp_sink, 3)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err.decode()
    assert b"event=send-due" in err and b"stopped=" in err
    statuses = _statuses(database_url)
    assert statuses["sending"] == 0 and statuses["sent"] == len(smtp_sink.received) < 40


def test_serve_with_the_scheduler_stops_cleanly_on_ctrl_c(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """`drip serve --scheduler` on Ctrl-C: its lesson run stops claiming at once, the
    message in flight is recorded, the rest given back; the server exits 0."""
    from tests.processes import Serve

    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    seed(database_url, 40)
    server = Serve(drip_env(database_url, smtp_sink, DRIP_SEND_RATE="5"), "--scheduler")
    _wait_for(smtp_sink, 3)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=60) == 0, "".join(server.log)
    time.sleep(0.5)
    statuses = _statuses(database_url)
    assert statuses["sending"] == 0 and statuses["sent"] == len(smtp_sink.received) < 40


def test_a_large_run_is_shared_with_helper_processes(
    database_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """``DRIP_SEND_PROCESSES=2``: a run with many emails due starts a second send-due
    process on it; each sends part, none twice, the summary counts both, and each keeps
    to its share of ``--limit``. A small run starts none."""
    seed(database_url, COUNT)
    env = drip_env(database_url, smtp_sink, DRIP_SEND_PROCESSES="2", DRIP_SMTP_CONNECTIONS="1")
    # the database named only in the file given with --env-file: helpers read it too
    settings_file = tmp_path / "drip.env"
    settings_file.write_text(f"DRIP_DATABASE_URL={env.pop('DRIP_DATABASE_URL')}\n")
    command = [str(DRIP), "--env-file", str(settings_file), "send-due", "--now", NOW.isoformat()]
    command.append("--json")
    elsewhere = tmp_path / "elsewhere"  # (where no drip.db is found by default)
    elsewhere.mkdir()
    run = partial(subprocess.run, env=env, capture_output=True, cwd=elsewhere)
    limited = run([*command, "--limit", "301"])
    assert limited.returncode == 0, limited.stderr.decode()
    first = json.loads(limited.stdout)
    assert first["sent"] == 301 and sorted(first["processes"]) == [150, 151]
    rest = run(command)
    assert rest.returncode == 0, rest.stderr.decode()
    summary = json.loads(rest.stdout)
    assert summary["sent"] == COUNT - 301
    assert len(summary["processes"]) == 2 and all(n > 0 for n in summary["processes"])
    ids = smtp_sink.message_ids()
    assert len(ids) == len(set(ids)) == COUNT
    assert sent_rows(database_url) == COUNT
    nothing_due = json.loads(run(command).stdout)
    assert nothing_due["sent"] == 0 and "processes" not in nothing_due


def test_a_stop_sent_to_every_process_of_a_shared_run_leaves_nothing_unrecorded(
    database_url: str, smtp_sink: SmtpSink
) -> None:
    """SIGTERM to the send-due and to its helper at once (systemd stops a whole group;
    the parent passes the stop on too): each settles what it has in flight and writes its
    receipts; nothing is left claimed, and every message the server took is recorded."""
    seed(database_url, COUNT)
    smtp_sink.data_delay = 0.005  # a run still going when the stop comes
    env = drip_env(database_url, smtp_sink, DRIP_SEND_PROCESSES="2", DRIP_SMTP_CONNECTIONS="1")
    parent = send_due(env, NOW)
    deadline = time.monotonic() + 60
    helpers: list[int] = []
    while time.monotonic() < deadline and (len(smtp_sink.received) < 100 or not helpers):
        found = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True)
        helpers = [int(pid) for pid in found.stdout.split()]
        time.sleep(0.05)
    assert helpers, "no helper started"
    for pid in [*helpers, parent.pid]:  # (the helper's own first: the parent's comes second)
        os.kill(pid, signal.SIGTERM)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 130, stderr.decode()
    ids = smtp_sink.message_ids()
    assert len(ids) == len(set(ids)) == sent_rows(database_url) < COUNT
    engine = make_engine(database_url)
    with Session(engine) as session:
        claimed = session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status == DeliveryStatus.SENDING)
        ).scalar_one()
    engine.dispose()
    assert claimed == 0
