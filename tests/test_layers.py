"""The layers between drip's packages, as ``[tool.importlinter]`` in pyproject.toml
declares them: checked on every test run, so CI holds them too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures import ROOT


def test_every_import_contract_is_kept() -> None:
    """No package imports a layer above it; the send engine never reaches the lifecycle;
    what comes back is handled without HTTP; the web and the CLI go through the services."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
