"""`drip send-due` throughput: N due subscribers on SQLite, into a local SMTP sink.

Prints messages/second of the real CLI process (claim, render, send, record each lesson)
and the ratio to a raw smtplib loop sending the same number of prebuilt messages over one
connection to the same sink in the same run, plus the CLI's peak RSS.

Run: make bench (or .venv/bin/python benchmarks/send_due.py [--subscribers 100000])
"""

from __future__ import annotations

import argparse
import os
import resource
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._sink import sink  # noqa: E402
from drip.compose import Composer, Recipient  # noqa: E402
from drip.config import Settings  # noqa: E402
from drip.courses import load_course  # noqa: E402
from tests.test_concurrency import NOW, seed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DRIP = Path(sys.executable).with_name("drip")
SECRET = "benchmark-secret-key-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args()
    n = args.subscribers
    with tempfile.TemporaryDirectory() as workdir, sink() as (url, description):
        database_url = f"sqlite:///{workdir}/bench.db"
        seed(database_url, n)

        course = load_course(ROOT / "courses" / "yin-immersion.yaml")
        composer = Composer(settings=Settings(secret_key=SECRET, _env_file=None))
        messages = [
            composer.lesson(
                course=course,
                day=course.days[0],
                now=datetime.now(UTC),
                recipient=Recipient(f"p{i}@example.org", f"P{i}", f"e{i:08d}", "UTC"),
            )
            for i in range(n)
        ]
        port = int(url.split(":")[2].split("?")[0])
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port) as raw:
            for message in messages:
                raw.sendmail(message.envelope_from, [message.recipient], message.data)
        baseline = n / (time.perf_counter() - started)
        del messages

        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
        env.update(
            DRIP_DATABASE_URL=database_url,
            DRIP_SMTP_URL=url,
            DRIP_SECRET_KEY=SECRET,
            DRIP_COURSES_DIR=str(ROOT / "courses"),
            DRIP_SEND_RATE="0",
            DRIP_SMTP_CONNECTIONS=str(args.connections),
        )
        started = time.perf_counter()
        result = subprocess.run(
            [str(DRIP), "send-due", "--now", NOW.isoformat()],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"send-due failed: {result.stderr}")
        ours = n / elapsed
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(
        f"drip send-due: {n} due lessons on SQLite into {description}, "
        f"{args.connections} SMTP connection(s)"
    )
    print(f"  raw smtplib, prebuilt, 1 conn. : {baseline:8.0f} msgs/s")
    print(
        f"  drip send-due (whole process)  : {ours:8.0f} msgs/s   ({elapsed:.1f} s, "
        f"{result.stdout.strip()})"
    )
    print(f"  ratio drip / raw smtplib       : {ours / baseline:8.2f}x")
    print(f"  peak RSS of drip send-due      : {rss_mib:8.0f} MiB")


if __name__ == "__main__":
    main()
