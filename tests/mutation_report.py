"""`make mutate`'s verdict on a finished `mutmut run`: the share of mutants killed on the
guarantee modules, and every survivor not listed as equivalent in docs/development.md.

Exit 0 when at least 90 % are killed and each survivor is listed; 1 otherwise.
Run from the project's root after `mutmut run` (the Makefile does both).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.90
#: a table row's first cell, listing one or more equivalent mutants' names in backticks
FIRST_CELL = re.compile(r"^\|([^|]*)\|", re.MULTILINE)
MUTANT = re.compile(r"`(drip\.[^`]+__mutmut_\d+)`")


def statuses() -> dict[str, str]:
    """Mutant name → status, from `mutmut results --all true`."""
    out = subprocess.run(
        [Path(sys.executable).with_name("mutmut"), "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = (line.rpartition(":") for line in out.splitlines())
    return {name.strip(): status.strip() for name, colon, status in rows if colon}


def main() -> int:
    results = statuses()
    if not results:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 1
    text = (ROOT / "docs" / "development.md").read_text()
    listed = {name for cell in FIRST_CELL.findall(text) for name in MUTANT.findall(cell)}
    tally = Counter(results.values())
    tested = sum(n for status, n in tally.items() if status not in ("skipped", "not checked"))
    killed = tally["killed"] + tally["timeout"]
    survivors = sorted(name for name, status in results.items() if status == "survived")
    unlisted = [name for name in survivors if name not in listed]
    stale = sorted(listed - set(survivors))
    share = killed / tested if tested else 0.0
    print(", ".join(f"{status} {n}" for status, n in sorted(tally.items())))
    print(f"killed {killed} of {tested} mutants: {share:.1%} (target {TARGET:.0%})")
    print(f"{len(survivors) - len(unlisted)} survivors listed as equivalent in docs/development.md")
    for name in unlisted:
        print(f"not killed and not listed: {name}  (mutmut show {name})")
    for name in stale:
        print(f"listed but no longer surviving (remove from docs/development.md): {name}")
    if tally["not checked"]:
        print(f"{tally['not checked']} mutants not checked yet: the run is incomplete")
    return 0 if share >= TARGET and not unlisted and not tally["not checked"] else 1


if __name__ == "__main__":
    sys.exit(main())
