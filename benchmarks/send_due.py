"""`drip send-due` throughput: N due subscribers on SQLite, into a local SMTP sink.

Prints messages/second of the real CLI run (claim, render, send, record each lesson; by
default two send-due processes share it, `DRIP_SEND_PROCESSES=2`, one connection each)
and its ratio, in the same run and into the same sink, to two baselines: a raw smtplib
loop sending prebuilt messages over one connection, and postfix's C client `smtp-source
-d` (reused connections, not pipelined) with as many connections and messages of the same
size; plus the CLI's own peak RSS (the process cron starts). drip's own SMTP client,
sending prebuilt lessons over the same connections, is measured too: the wire's share of
the work, apart from render, check and receipt.

Run: make bench (or .venv/bin/python benchmarks/send_due.py [--subscribers 100000])
Where its time goes (py-spy from PyPI, sampling the whole process):
     .venv/bin/python benchmarks/send_due.py --py-spy
Over a network's round trip (a proxy on loopback delaying each byte; all figures through it):
     .venv/bin/python benchmarks/send_due.py --rtt-ms 10 --subscribers 1000
PostgreSQL, several processes at once (see benchmarks/scale_out.py):
     .venv/bin/python benchmarks/send_due.py --database postgresql --processes 1,2
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._latency import delayed  # noqa: E402
from benchmarks._sink import sink  # noqa: E402

if TYPE_CHECKING:
    from drip.sending.message import Outgoing

DRIP = Path(sys.executable).with_name("drip")
BASELINE_MAX = 20_000  #: prebuilt messages held in memory for the raw loop (a rate is a rate)
SECRET = "benchmark-secret-key-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument(
        "--send-processes",
        type=int,
        default=2,
        help="DRIP_SEND_PROCESSES: send-due processes sharing the run, the connections "
        "shared out between them (1: one process with every connection)",
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--rtt-ms", type=float, default=0, help="add this round trip to the SMTP connections"
    )
    parser.add_argument(
        "--processes", default="1", help="comma-separated: send-due processes at once, e.g. 1,2"
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="profile the send-due process with py-spy (pip install py-spy) and print where "
        "its threads spend their time",
    )
    args = parser.parse_args()
    if args.database == "postgresql":
        from benchmarks.scale_out import main as scale_out

        scale_out(args.subscribers, [int(p) for p in args.processes.split(",")], args.connections)
        return
    n = args.subscribers
    with tempfile.TemporaryDirectory() as workdir, _sink(args.rtt_ms) as (url, description):
        database_url = f"sqlite:///{workdir}/bench.db"
        seed = (
            "from tests.sending.test_concurrency import NOW, seed; "
            f"seed({database_url!r}, {n}); print(NOW.isoformat())"
        )
        due_at = subprocess.run(
            [sys.executable, "-c", seed], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
        env.update(
            DRIP_DATABASE_URL=database_url,
            DRIP_SMTP_URL=url,
            DRIP_SECRET_KEY=SECRET,
            DRIP_COURSES_DIR=str(ROOT / "courses"),
            DRIP_SEND_RATE="0",
            DRIP_SMTP_CONNECTIONS=str(max(1, args.connections // args.send_processes)),
            DRIP_SEND_PROCESSES=str(args.send_processes),
        )
        # drip runs first, while this process is small: Linux counts the parent's memory
        # at fork into the child's peak RSS.
        command = [str(DRIP), "send-due", "--now", due_at]
        profile = Path(workdir) / "py-spy.txt"
        if args.py_spy:
            command = [_py_spy(), "record", "--format", "raw", "--output", str(profile), "--"]
            command += [str(DRIP), "send-due", "--now", due_at]
        elapsed, output, rss_mib = _run_measured(command, env)
        summary = next(line for line in output.splitlines() if " sent, " in line)
        stacks = profile.read_text() if args.py_spy else ""
        messages = _lessons(min(n, BASELINE_MAX))
        baseline = _raw_smtplib(url, messages)
        client = _drip_client(url, messages, args.connections)
        size = len(messages[0].data)
        source = _smtp_source(url, n, size, args.connections)

    ours = n / elapsed
    print(
        f"drip send-due: {n} due lessons on SQLite into {description}, "
        f"{args.connections} SMTP connection(s) in {args.send_processes} process(es)"
    )
    print(f"  raw smtplib, prebuilt, 1 conn. : {baseline:8.0f} msgs/s")
    print(f"  drip send-due (whole process)  : {ours:8.0f} msgs/s   ({elapsed:.1f} s, {summary})")
    print(f"  ratio drip / raw smtplib       : {ours / baseline:8.2f}x   (target >= 1.0x)")
    print(f"  drip's SMTP client, prebuilt   : {client:8.0f} msgs/s   ({args.connections} conn.)")
    if source is None:
        print("  smtp-source                    : not installed (apt-get install postfix)")
    else:
        print(
            f"  smtp-source -d, {args.connections} conn.       : {source:8.0f} msgs/s"
            f"   ({size / 1024:.0f} KB messages)"
        )
        print(f"  ratio drip / smtp-source       : {ours / source:8.2f}x   (target >= 0.4x)")
        print(f"  ratio SMTP client / smtp-source: {client / source:8.2f}x")
    print(f"  peak RSS of drip send-due      : {rss_mib:8.0f} MiB")
    if args.py_spy:
        _print_profile(stacks)


@contextmanager
def _sink(rtt_ms: float) -> Iterator[tuple[str, str]]:
    """The sink's URL and description, through a delaying proxy when ``rtt_ms``."""
    with sink() as (url, description):
        if not rtt_ms:
            yield url, description
            return
        port = int(url.split(":")[2].split("?")[0])
        with delayed(port, rtt_ms) as proxy:
            yield url.replace(f":{port}?", f":{proxy}?"), f"{description}, {rtt_ms:g} ms away"


def _run_measured(command: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """(seconds, stdout, peak RSS in MiB) of one process, read from its own rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            sys.exit(f"send-due failed ({process.returncode}): {err.read()}")
        return elapsed, out.read().strip(), usage.ru_maxrss / 1024


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        sys.exit("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    return found


def _print_profile(stacks: str, top: int = 20) -> None:
    """drip's functions the profiled process was in most: the share of the samples of
    its busy threads in which each was on the stack (py-spy's raw output: folded stacks
    of ``function (file:line)`` frames)."""
    total, within = 0, Counter[str]()
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        frames = set()
        for frame in stack.split(";"):
            function, _, where = frame.rpartition(" (")
            path = where.rpartition(":")[0]
            if path.startswith("drip/"):  # (py-spy names files from their package)
                frames.add(f"{function} ({path})")
        for frame in frames:
            within[frame] += int(count)
    print(f"  py-spy, {total} samples of busy threads (the run above was slowed by it):")
    for frame, count in within.most_common(top):
        print(f"    {100 * count / total:5.1f} %  {frame}")


def _smtp_source(url: str, n: int, size: int, connections: int) -> float | None:
    """Messages/second of postfix's smtp-source sending n messages of ``size`` bytes over
    ``connections`` reused connections (None when it is not installed)."""
    binary = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None
    )
    if binary is None:
        return None
    port = int(url.split(":")[2].split("?")[0])
    command = [binary, "-d", "-s", str(connections), "-m", str(n), "-l", str(size)]
    command += ["-f", "hello@example.com", "-t", "p@example.org", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return n / (time.perf_counter() - started)


def _lessons(n: int) -> list[Outgoing]:
    """n lessons of day 1, built as send-due builds them, each to its own recipient."""
    from drip.core.config import Settings
    from drip.core.courses import load_course
    from drip.sending.compose import Composer, Recipient

    course = load_course(ROOT / "courses" / "yin-immersion.yaml")
    composer = Composer(settings=Settings(secret_key=SECRET, _env_file=None))
    return [
        composer.lesson(
            course=course,
            day=course.days[0],
            now=datetime.now(UTC),
            recipient=Recipient(f"p{i}@example.org", f"P{i}", f"e{i:08d}", "UTC"),
        )
        for i in range(n)
    ]


def _raw_smtplib(url: str, messages: list[Outgoing]) -> float:
    """Messages/second of plain smtplib sending prebuilt messages over one connection."""
    port = int(url.split(":")[2].split("?")[0])
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as raw:
        for message in messages:
            raw.sendmail(message.envelope_from, [message.recipient], message.data)
    return len(messages) / (time.perf_counter() - started)


def _drip_client(url: str, messages: list[Outgoing], connections: int) -> float:
    """Messages/second of drip's SMTP mailer sending prebuilt messages, one thread per
    connection as send-due runs it, the messages shared out between them, each message's
    outcome read with the next one's envelope (as send-due does)."""
    from drip.sending.mailer import mailer_from_url

    def send(share: list[Outgoing]) -> None:
        with mailer_from_url(url, timeout=30) as mailer:
            for message in share:
                mailer.submit(message)
            mailer.settle()

    shares = [messages[i::connections] for i in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        list(pool.map(send, shares))
    return len(messages) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
