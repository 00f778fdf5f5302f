"""Rendering and SMTP throughput, each against a baseline measured in the same run.

1. Lessons rendered + built as complete MIME messages per second, vs. raw Jinja rendering
   of the same compiled lesson HTML (the floor any templating approach pays).
2. Messages per second through drip's smtp:// mailer, vs. plain smtplib on one
   connection sending the same prebuilt messages to the same sink.

Run: make bench (or .venv/bin/python benchmarks/render.py [--messages N])
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._sink import sink  # noqa: E402
from drip.core.config import Settings  # noqa: E402
from drip.core.courses import load_course  # noqa: E402
from drip.sending.compose import Composer, Recipient  # noqa: E402
from drip.sending.mailer import mailer_from_url  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    n = parser.parse_args().messages
    course = load_course(ROOT / "courses" / "yin-immersion.yaml")
    composer = Composer(
        settings=Settings(secret_key="benchmark-secret-key-0123456789", _env_file=None)
    )
    recipients = [
        Recipient(f"p{i}@example.org", f"Person {i}", f"uid{i:08d}", "UTC") for i in range(n)
    ]
    for day in course.days:  # warm the per-(course, day) caches, as a real run does
        composer.lesson(course=course, day=day, recipient=recipients[0], now=NOW)

    started = time.perf_counter()
    messages = [
        composer.lesson(course=course, day=course.days[i % 7], recipient=r, now=NOW)
        for i, r in enumerate(recipients)
    ]
    built = rate(n, time.perf_counter() - started)

    template = composer.renderer.html_template("lesson")
    context = dict(composer._prepared[(course.slug, course.days[0].id)].context)
    context.update(
        name="Person",
        greeting_name="Person",
        unsubscribe_url="https://x/u/t",
        class_url="https://x/c/t",  # per recipient when the course tracks clicks
        view_url="https://x/lessons/t",  # per recipient: the lesson's "view in browser" page
        me_url="https://x/me/t",  # per recipient: the subscriber's own page
    )
    started = time.perf_counter()
    for _ in range(n):
        template.render(context)
    jinja = rate(n, time.perf_counter() - started)

    size = sum(len(m.data) for m in messages) / n
    print(f"rendering ({n} lessons, {size / 1024:.1f} KiB each)")
    print(f"  drip render + MIME build : {built:9.0f} msgs/s")
    print(f"  raw Jinja render (HTML)  : {jinja:9.0f} renders/s")
    print(f"  ratio drip / raw Jinja   : {built / jinja:9.2f}x")

    with sink() as (url, description):
        started = time.perf_counter()
        host, port = "127.0.0.1", int(url.split(":")[2].split("?")[0])
        with smtplib.SMTP(host, port) as raw:
            for message in messages:
                raw.sendmail(message.envelope_from, [message.recipient], message.data)
        baseline = rate(n, time.perf_counter() - started)

        started = time.perf_counter()
        with mailer_from_url(url) as mailer:
            for message in messages:
                mailer.send(message)
        ours = rate(n, time.perf_counter() - started)
    print(f"SMTP into {description}")
    print(f"  plain smtplib, 1 conn.   : {baseline:9.0f} msgs/s")
    print(f"  drip smtp:// mailer      : {ours:9.0f} msgs/s")
    print(f"  ratio drip / smtplib     : {ours / baseline:9.2f}x")


if __name__ == "__main__":
    main()
