"""Scale-out in numbers: `drip send-due` on PostgreSQL, one process and several at once,
and what each delivered message costs the database server in CPU.

For each process count: a fresh database with N lessons due; that many `drip send-due`
processes started together; the messages counted at an SMTP sink that records each
Message-ID (so duplicates would show); and the PostgreSQL server's CPU time (every
postgres process, exited backends included via the postmaster's children's time)
before and after, divided by the messages delivered. Then `drip subscribers import` of
the same number of rows, and its database CPU per row.

Target: ≤ 0.25 ms of PostgreSQL CPU per message and per imported row (≥ 4,000 per second
per database core). The server must run on this machine (its processes are read from
/proc). URL: DRIP_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1/test.

Run: .venv/bin/python benchmarks/send_due.py --database postgresql --processes 1,2
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DRIP = Path(sys.executable).with_name("drip")
SECRET = "benchmark-secret-key-0123456789"
SERVER = os.environ.get(
    "DRIP_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TICK = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by the PostgreSQL server: live processes, plus what exited
    children left in their parent's (the postmaster's) accounts."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if name in ("postgres", "postmaster") or name.startswith("postgres"):
            utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
            total += utime + stime + cutime + cstime
    return total / TICK


class _Database:
    """A fresh database on the server, dropped on exit."""

    def __enter__(self) -> str:
        self.name = f"drip_bench_{secrets.token_hex(4)}"
        self.admin = create_engine(SERVER, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        url = make_url(SERVER).set(database=self.name)
        return url.render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def _env(database_url: str, smtp_url: str, connections: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env.update(
        DRIP_DATABASE_URL=database_url,
        DRIP_SMTP_URL=smtp_url,
        DRIP_SECRET_KEY=SECRET,
        DRIP_COURSES_DIR=str(ROOT / "courses"),
        DRIP_SEND_RATE="0",
        DRIP_SMTP_CONNECTIONS=str(connections),
    )
    return env


def _send(n: int, processes: int, connections: int) -> dict[str, float]:
    from drip.testing import SmtpSink

    with _Database() as database_url, SmtpSink() as sink:
        env = _env(database_url, sink.url, connections)
        subprocess.run([str(DRIP), "db", "upgrade"], env=env, check=True, capture_output=True)
        seed = (
            "from tests.sending.test_concurrency import NOW, seed; "
            f"seed({database_url!r}, {n}); print(NOW.isoformat())"
        )
        due_at = subprocess.run(
            [sys.executable, "-c", seed], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        cpu_before = postgres_cpu_seconds()
        started = time.perf_counter()
        runs = [
            subprocess.Popen(
                [str(DRIP), "send-due", "--now", due_at], env=env, stdout=subprocess.DEVNULL
            )
            for _ in range(processes)
        ]
        for run in runs:
            run.wait()
        elapsed = time.perf_counter() - started
        cpu = postgres_cpu_seconds() - cpu_before
        ids = Counter(sink.message_ids())
    return {
        "rate": sum(ids.values()) / elapsed,
        "delivered": len(ids),
        "duplicates": sum(ids.values()) - len(ids),
        "cpu_ms": cpu * 1000 / max(len(ids), 1),
        "seconds": elapsed,
    }


def _import(n: int) -> dict[str, float]:
    with _Database() as database_url, tempfile.TemporaryDirectory() as workdir:
        env = _env(database_url, "memory://", 2)
        subprocess.run([str(DRIP), "db", "upgrade"], env=env, check=True, capture_output=True)
        people = Path(workdir) / "people.csv"
        people.write_text("email,name\n" + "".join(f"p{i}@example.org,P{i}\n" for i in range(n)))
        cpu_before = postgres_cpu_seconds()
        started = time.perf_counter()
        subprocess.run(
            [str(DRIP), "subscribers", "import", str(people)],
            env=env,
            check=True,
            capture_output=True,
        )
        elapsed = time.perf_counter() - started
        cpu = postgres_cpu_seconds() - cpu_before
    return {"rate": n / elapsed, "cpu_ms": cpu * 1000 / n, "seconds": elapsed}


def main(n: int, process_counts: list[int], connections: int) -> None:
    print(
        f"scale-out: drip send-due on PostgreSQL ({make_url(SERVER).host}), {n} lessons due, "
        f"{connections} SMTP connections per process, into an aiosmtpd sink counting Message-IDs"
    )
    for processes in process_counts:
        result = _send(n, processes, connections)
        print(
            f"  {processes} process(es): {result['rate']:6.0f} msgs/s ({result['seconds']:.1f} s), "
            f"{result['delivered']:.0f} delivered, {result['duplicates']:.0f} duplicates; "
            f"PostgreSQL CPU {result['cpu_ms']:.3f} ms per message "
            f"(target ≤ 0.25: {'met' if result['cpu_ms'] <= 0.25 else 'NOT met'})"
        )
    imported = _import(n)
    print(
        f"  subscribers import of {n} rows: {imported['rate']:6.0f} rows/s "
        f"({imported['seconds']:.1f} s); PostgreSQL CPU {imported['cpu_ms']:.3f} ms per row "
        f"(target ≤ 0.25: {'met' if imported['cpu_ms'] <= 0.25 else 'NOT met'})"
    )


if __name__ == "__main__":
    main(10_000, [1, 2], 2)
