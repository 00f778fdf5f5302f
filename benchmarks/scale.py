"""The operator's reads at two sizes of list: 1,000 and 100,000 subscribers who all had
day 1 of the shipped course (a tenth followed its class link, one in fifty left after
it) and wait for day 2. Each read is timed at both sizes, and the ratio printed: they
should cost what the courses cost, not what the list costs (target: ≤ 2×).

- ``GET /metrics``, ``GET /admin`` and its subscribers' list (signed in), through the
  web app in this process (Starlette's TestClient: routing, the database reads, the
  page's rendering), the median of --runs requests;
- ``drip stats --json`` and ``drip send-due`` with nothing due (the schema check, the
  evergreen probe, the claim that finds nothing), each the best of --runs whole processes.

The history is written through the tables (bulk inserts, the tallies' triggers counting
as they go), not through signups and sends, so that 100,000 takes seconds.

Run: make bench (or .venv/bin/python benchmarks/scale.py [--sizes 1000,100000] [--runs 7])
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DRIP = Path(sys.executable).with_name("drip")

from drip.core.config import Settings  # noqa: E402
from drip.core.courses import Catalog  # noqa: E402
from drip.core.models import Click, Delivery, Enrollment, Signup, Subscriber  # noqa: E402
from drip.store.engine import engine_for  # noqa: E402
from drip.store.passwords import hash_password  # noqa: E402
from drip.store.schema import upgrade  # noqa: E402

# day 1 went out three hours ago; day 2 is due tomorrow (``/metrics`` reads the clock)
NOW = datetime.now(UTC).replace(microsecond=0)
DAY_ONE = NOW - timedelta(hours=3)
PASSWORD = "benchmark password 0123"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
CHUNK = 10_000


def environment(workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env.update(
        DRIP_DATABASE_URL=f"sqlite:///{workdir}/drip.db",
        DRIP_SMTP_URL="memory://",
        DRIP_COURSES_DIR=str(ROOT / "courses"),
        DRIP_SECRET_KEY="benchmark-secret-key-0123456789",
        DRIP_METRICS="true",
        DRIP_ADMIN_PASSWORD_HASH=hash_password(PASSWORD),
    )
    return env


def load_history(settings: Settings, size: int) -> None:
    """``size`` subscribers who had day 1 and wait for day 2."""
    engine = engine_for(settings)
    upgrade(engine)
    course = next(iter(Catalog.from_dir(settings.courses_dir)))
    day1, day2 = course.days[0].id, course.days[1].id
    sent, due = DAY_ONE, DAY_ONE + timedelta(days=1)
    for start in range(0, size, CHUNK):
        ids = range(start + 1, min(size, start + CHUNK) + 1)
        left = {i for i in ids if i % 50 == 0}
        with engine.begin() as connection:
            connection.execute(
                insert(Subscriber),
                [
                    {
                        "id": i,
                        "uid": f"s{i}",
                        "email": f"reader{i}@example.org",
                        "name": "",
                        "status": "unsubscribed" if i in left else "active",
                        "created_at": sent - timedelta(days=1),
                        "confirmed_at": sent - timedelta(days=1),
                        "unsubscribed_at": NOW if i in left else None,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Signup),
                [
                    {
                        "uid": f"g{i}",
                        "email": f"reader{i}@example.org",
                        "course_slug": course.slug,
                        "name": "",
                        "subscriber_id": i,
                        "created_at": sent - timedelta(days=1),
                        "processed_at": sent - timedelta(days=1),
                        "confirmed_at": sent - timedelta(days=1),
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Enrollment),
                [
                    {
                        "id": i,
                        "uid": f"e{i}",
                        "subscriber_id": i,
                        "course_slug": course.slug,
                        "status": "cancelled" if i in left else "active",
                        "created_at": sent - timedelta(days=1),
                        "started_at": sent - timedelta(days=1),
                        "cancelled_at": NOW if i in left else None,
                        "left_after": day1 if i in left else None,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Delivery),
                [
                    {
                        "id": 2 * i - 1,
                        "enrollment_id": i,
                        "key": day1,
                        "kind": "lesson",
                        "status": "sent",
                        "due_at": sent,
                        "attempts": 1,
                        "created_at": sent - timedelta(days=1),
                        "sent_at": sent,
                        "message_id": f"<m{i}@example.org>",
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Delivery),
                [
                    {
                        "id": 2 * i,
                        "enrollment_id": i,
                        "key": day2,
                        "kind": "lesson",
                        "status": "cancelled" if i in left else "scheduled",
                        "due_at": due,
                        "attempts": 0,
                        "created_at": sent,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Click),
                [
                    {"delivery_id": 2 * i - 1, "link": "class", "clicked_at": sent}
                    for i in ids
                    if i % 10 == 0
                ],
            )
    engine.dispose()


def web_reads(settings: Settings, runs: int) -> dict[str, float]:
    """Median seconds of ``/metrics`` and the signed-in ``/admin``."""
    from fastapi.testclient import TestClient

    from drip.web import create_app

    timings: dict[str, float] = {}
    with TestClient(create_app(settings), follow_redirects=False) as client:
        form = client.get("/admin/login")
        answer = client.post(
            "/admin/login", data={"csrf": CSRF.search(form.text)[1], "password": PASSWORD}
        )
        assert answer.status_code == 303, answer.text
        for path in ("/metrics", "/admin", "/admin/subscribers"):
            assert client.get(path).status_code == 200  # warm: templates, statements
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                assert client.get(path).status_code == 200
                samples.append(time.perf_counter() - started)
            timings[f"GET {path}"] = statistics.median(samples)
    return timings


def process_reads(env: dict[str, str], runs: int) -> dict[str, float]:
    """Best seconds of whole ``drip`` processes."""
    timings = {}
    for label, command in (
        ("drip stats --json", [str(DRIP), "stats", "--json"]),
        ("drip send-due (nothing due)", [str(DRIP), "send-due", "--now", NOW.isoformat()]),
    ):
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            samples.append(time.perf_counter() - started)
        timings[label] = min(samples)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[int, dict[str, float]] = {}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "drip")], check=True)
    for size in sizes:
        with tempfile.TemporaryDirectory() as workdir:
            env = environment(workdir)
            os.environ.update(env)
            settings = Settings()  # type: ignore[call-arg]
            started = time.perf_counter()
            load_history(settings, size)
            took = time.perf_counter() - started
            print(f"{size:,} subscribers with history written in {took:.1f} s")
            results[size] = web_reads(settings, args.runs) | process_reads(env, args.runs)
    small, large = sizes[0], sizes[-1]
    print(f"\nThe operator's reads, {small:,} → {large:,} subscribers (target ≤ 2×)")
    for label in results[small]:
        a, b = results[small][label], results[large][label]
        verdict = "met" if b <= 2 * a else "NOT met"
        print(f"  {label:30s}: {a * 1000:8.1f} ms → {b * 1000:8.1f} ms  {b / a:5.2f}×  {verdict}")


if __name__ == "__main__":
    main()
