"""The signing key in use must still verify the links already sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from drip.cli import app
from drip.core.exceptions import ConfigError
from drip.store.keys import check_key, fingerprint
from tests.fixtures import COURSES_DIR

A, B, C = ("a" * 32, "b" * 32, "c" * 32)


def test_a_different_key_is_refused_unless_rotated_or_accepted(engine: Engine) -> None:
    """First use remembers the key; another key alone is refused; the old one kept second
    in the list rotates (and the new one is remembered); --new-key accepts a break."""
    check_key(engine, [A])
    with pytest.raises(ConfigError, match=f"fingerprint {fingerprint(B)}.*signed with"):
        check_key(engine, [B])
    check_key(engine, [B, A])  # rotation: B signs, A still verifies old links
    check_key(engine, [B])  # B is now the remembered key
    with pytest.raises(ConfigError, match="--new-key"):
        check_key(engine, [C])
    check_key(engine, [C], accept_new=True)
    check_key(engine, [C])


def test_a_lost_key_file_stops_send_due_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DRIP_SECRET_KEY, deleting drip-secret.key makes a new key: send-due then
    refuses to sign with it (exit 2, one line) until --new-key is given."""
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    monkeypatch.setenv("DRIP_SMTP_URL", "memory://")
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["send-due"]).exit_code == 0
    (tmp_path / "drip-secret.key").unlink()
    refused = runner.invoke(app, ["send-due"])
    assert refused.exit_code == 2
    assert "the signing key changed" in refused.output and "Traceback" not in refused.output
    assert runner.invoke(app, ["send-due", "--new-key"]).exit_code == 0
    assert runner.invoke(app, ["send-due"]).exit_code == 0
