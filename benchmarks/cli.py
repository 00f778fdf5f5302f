"""Start-up time of the CLI: `drip --help`, and `drip send-due` with nothing due (what
cron pays every minute), beside `python -c pass` and a bare `import typer` (the floor).

Prints the minimum of --runs runs of each whole process, run from this checkout. drip's
own modules are byte-compiled first, as pip does when it installs the package (and as
Python does on a checkout's first run unless PYTHONDONTWRITEBYTECODE is set): without it,
every start would compile drip's ~30 modules from source, about 0.2 s.
Targets on the 2-core machine: `--help` ≤ 0.3 s, `send-due` with nothing due ≤ 0.6 s.

Run: make bench (or .venv/bin/python benchmarks/cli.py [--runs 7])
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIP = Path(sys.executable).with_name("drip")


def best(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
        env.update(
            DRIP_DATABASE_URL=f"sqlite:///{workdir}/drip.db",
            DRIP_SMTP_URL="memory://",
            DRIP_COURSES_DIR=str(ROOT / "courses"),
            DRIP_SECRET_KEY="benchmark-secret-key-0123456789",
        )
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "drip")], env=env, check=True
        )
        subprocess.run([str(DRIP), "db", "upgrade"], env=env, check=True, capture_output=True)
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"], None),
            ("python -c 'import typer'", [sys.executable, "-c", "import typer"], None),
            ("drip --help", [str(DRIP), "--help"], 0.3),
            ("drip send-due (nothing due)", [str(DRIP), "send-due"], 0.6),
        ]
        print(f"CLI start-up, best of {args.runs} runs of the whole process")
        for label, command, target in rows:
            seconds = best(command, env, args.runs)
            goal = ""
            if target is not None:
                goal = f"   (target ≤ {target:.1f} s: {'met' if seconds <= target else 'NOT met'})"
            print(f"  {label:30s}: {seconds:6.3f} s{goal}")


if __name__ == "__main__":
    main()
