"""Signup throughput and latency through a real `drip serve`, and the import beside it.

1. `drip serve` on loopback (SQLite, confirmations into the local SMTP sink); a load
   generator posts JSON signups of distinct addresses for --seconds, once with 32
   connections (throughput) and once with 4 (latency). wrk when installed
   (`apt-get install wrk`), else a bounded asyncio client. Printed: requests/s, p50,
   p99, errors, and rows stored vs. requests accepted, plus confirmations delivered.
   Each measured load follows 3 s of the same load, not measured, and its confirmations
   (a running server's figures, not those of its first seconds; the baseline is warmed
   the same way).
2. `drip subscribers import` of --rows addresses (a separate process, as an operator
   would run it) while a client polls `GET /healthz`: the import's rows/s, the worst
   /healthz latency during it, and signups answered meanwhile.

Baseline in the same run: a bare ASGI app on the same uvicorn answering 202 to the same
requests (the web stack's own ceiling on this machine).

Run: make bench (or .venv/bin/python benchmarks/signup.py [--seconds 15] [--rows 100000])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._sink import sink  # noqa: E402

DRIP = Path(sys.executable).with_name("drip")
SECRET = "benchmark-secret-key-0123456789"
#: the same load, not measured, before each measured one
WARM_UP_SECONDS = 3

WRK_SCRIPT = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  prefix = args[1]
end
function request()
  counter = counter + 1
  local email = prefix .. '-t' .. id .. '-' .. counter .. '@example.org'
  return wrk.format(nil, "/subscribe", nil, '{"email": "' .. email .. '", "name": "Load"}')
end
function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %f, "p50": %f, "p99": %f, "non2xx": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, sink() as (smtp_url, description):
        work = Path(workdir)
        database = work / "bench.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
        env.update(
            DRIP_DATABASE_URL=f"sqlite:///{database}",
            DRIP_SMTP_URL=smtp_url,
            DRIP_SECRET_KEY=SECRET,
            DRIP_COURSES_DIR=str(ROOT / "courses"),
            DRIP_SEND_RATE="0",
            DRIP_SIGNUP_RATE_PER_MINUTE="100000000",
        )
        subprocess.run([str(DRIP), "db", "upgrade"], env=env, check=True, capture_output=True)
        tool = "wrk" if shutil.which("wrk") else "asyncio client"
        print(f"signup: `drip serve` on SQLite, confirmations into {description}; load: {tool}")
        with _server([sys.executable, "-c", BASELINE_APP, "{port}"], env) as port:
            baseline = {}
            for conns in (32, 4):
                _load(port, conns, WARM_UP_SECONDS, "warm")
                baseline[conns] = _load(port, conns, args.seconds, "base")
        with _server([str(DRIP), "serve", "--port", "{port}"], env) as port:
            ours = {}
            for conns in (32, 4):  # each after the last one's confirmations have gone
                # a warm process: the first seconds after start-up (statements and
                # templates compiled on first use) are not what a running server answers
                _load(port, conns, WARM_UP_SECONDS, f"w{conns}")
                _wait_for_confirmations(database, 0)
                before = _count(database, "SELECT count(*) FROM signup")
                ours[conns] = _load(port, conns, args.seconds, f"c{conns}")
                ours[conns]["stored"] = _count(database, "SELECT count(*) FROM signup") - before
                ours[conns].update(_wait_for_confirmations(database, before))
            imported = _import_beside_healthz(env, port, work, args.rows)

    for conns in (32, 4):
        r, b = ours[conns], baseline[conns]
        rate, base_rate = r["requests"] / r["seconds"], b["requests"] / b["seconds"]
        accepted = r["requests"] - r["non2xx"] - r["errors"]
        print(
            f"  {conns:2d} connections: {rate:5.0f} signups/s  p50 {r['p50']:5.1f} ms  "
            f"p99 {r['p99']:5.1f} ms  errors {r['non2xx'] + r['errors']:.0f}  "
            f"stored {r['stored']:.0f} of {accepted:.0f} accepted; "
            f"every confirmation sent {r['drain_seconds']:.1f} s after the load ended "
            f"({r['sent']:.0f} in all, {r['sent'] / (r['seconds'] + r['drain_seconds']):.0f}/s)"
        )
        print(
            f"      baseline: bare ASGI 202 on the same uvicorn: {base_rate:5.0f}/s, "
            f"p99 {b['p99']:.1f} ms (drip {rate / base_rate:.2f}x)"
        )
    print(
        f"  import of {args.rows} rows (whole `drip subscribers import --confirmed` process): "
        f"{imported['rows_per_second']:.0f} rows/s ({imported['import_seconds']:.1f} s); "
        f"/healthz meanwhile: worst {imported['worst_ms']:.1f} ms, "
        f"p99 {imported['p99_ms']:.1f} ms over {imported['polls']:.0f} polls"
    )


# -- servers and load ---------------------------------------------------------------------

#: a bare ASGI app answering 202 on uvicorn: the ceiling of the web stack on this machine
BASELINE_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"pending"}'})
uvicorn.run(app, port=int(sys.argv[1]), log_level="warning")
"""


@contextmanager
def _server(command: list[str], env: dict[str, str]) -> Iterator[int]:
    """A server process on a free port (``{port}`` in ``command``), stopped on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in command],
        env={**env, "DRIP_BASE_URL": f"http://127.0.0.1:{port}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _load(port: int, connections: int, seconds: float, prefix: str) -> dict[str, float]:
    if shutil.which("wrk"):
        return _wrk(port, connections, seconds, prefix)
    return asyncio.run(_async_load(port, connections, seconds, prefix))


def _wrk(port: int, connections: int, seconds: float, prefix: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{int(seconds)}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}",
                "--",
                prefix,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


async def _async_load(port: int, connections: int, seconds: float, prefix: str) -> dict[str, float]:
    """A closed-loop HTTP/1.1 keep-alive client: each connection posts, waits, posts again."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def one(index: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            body = json.dumps({"email": f"{prefix}-{index}-{n}@example.org"}).encode()
            head = (
                "POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            started = time.perf_counter()
            writer.write(head.encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            failures += status >= 300
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50": quantiles[49] * 1e3,
        "p99": quantiles[98] * 1e3,
        "non2xx": failures,
        "errors": 0,
    }


# -- measurements -------------------------------------------------------------------------


def _count(database: Path, query: str) -> int:
    with sqlite3.connect(database, timeout=30) as connection:
        return int(connection.execute(query).fetchone()[0])


def _wait_for_confirmations(database: Path, before: int) -> dict[str, float]:
    """Wait until every signup (each a new address) has had its confirmation sent; how
    long that took and how many were sent since ``before`` signups."""
    started = time.perf_counter()
    signups = _count(database, "SELECT count(*) FROM signup")
    sent_query = "SELECT count(*) FROM delivery WHERE kind = 'confirm' AND status = 'sent'"
    while (sent := _count(database, sent_query)) < signups and time.perf_counter() - started < 120:
        time.sleep(0.05)
    return {"sent": sent - before, "drain_seconds": time.perf_counter() - started}


def _import_beside_healthz(
    env: dict[str, str], port: int, work: Path, rows: int
) -> dict[str, float]:
    csv_path = work / "people.csv"
    with csv_path.open("w") as handle:
        handle.write("email,name,timezone\n")
        for n in range(rows):
            handle.write(f"import-{n}@example.org,Person {n},Europe/London\n")
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30).read()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    subprocess.run(
        [str(DRIP), "subscribers", "import", "--confirmed", str(csv_path)],
        env=env,
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    stop.set()
    poller.join()
    return {
        "import_seconds": elapsed,
        "rows_per_second": rows / elapsed,
        "worst_ms": max(latencies) * 1e3,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1e3,
        "polls": len(latencies),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
