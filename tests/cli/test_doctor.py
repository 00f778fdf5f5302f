"""`drip doctor` finds what is wrong and says how to fix it, one line each."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from drip.cli import app
from drip.core.config import get_settings
from drip.doctor import Level, examine
from drip.store.engine import engine_for
from drip.testing import SmtpSink
from tests.fixtures import COURSES_DIR, SHIPPED_COURSE, make_settings


def _key(path: Path) -> bytes:
    """A new RSA key written to ``path``; returns its public key's DNS record value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _levels(findings: list) -> dict[str, set[str]]:  # type: ignore[type-arg]
    found: dict[str, set[str]] = {}
    for finding in findings:
        found.setdefault(finding.level, set()).add(finding.text)
    return found


def _tls_sink(tmp_path: Path) -> SmtpSink:
    """An SMTP server requiring STARTTLS and the login maya/pw; its CA in ca.pem."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return SmtpSink(tls_context=context, credentials=("maya", "pw"))


def test_a_good_installation_has_no_problem(tmp_path: Path) -> None:
    """Migrated database, valid course, a reachable SMTP server with TLS and login, and a
    DKIM record matching the key: ok lines only (and the course's placeholder warning)."""
    record = _key(tmp_path / "dkim.pem")
    with _tls_sink(tmp_path) as sink:
        settings = make_settings(
            tmp_path,
            smtp_url=f"smtp://maya:pw@127.0.0.1:{sink.port}?cafile={tmp_path / 'ca.pem'}",
            base_url="https://yoga.example.org",
            dkim_selector="drip",
            dkim_private_key_file=tmp_path / "dkim.pem",
        )
        engine_for(settings).dispose()
        asked: list[str] = []
        findings = examine(settings, dns=lambda name: asked.append(name) or record)
    levels = _levels(findings)
    assert Level.PROBLEM not in levels, levels
    assert any("STARTTLS" in text and "logged in as maya" in text for text in levels[Level.OK])
    assert "DKIM: drip._domainkey.example.com matches the signing key" in levels[Level.OK]
    assert asked == ["drip._domainkey.example.com"]
    assert sink.received == [], "doctor sends nothing"


def test_each_problem_is_named(tmp_path: Path) -> None:
    """A refused SMTP login, a DKIM record for another key, a missing one, a broken
    course: each is a problem line saying what is wrong."""
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "ok.yaml").write_text(SHIPPED_COURSE.read_text())
    (courses / "bad.yaml").write_text("slug: [\n")
    other = _key(tmp_path / "other.pem")
    _key(tmp_path / "dkim.pem")
    with _tls_sink(tmp_path) as sink:
        settings = make_settings(
            tmp_path,
            courses_dir=courses,
            smtp_url=f"smtp://maya:wrong@127.0.0.1:{sink.port}?cafile={tmp_path / 'ca.pem'}",
            dkim_selector="drip",
            dkim_private_key_file=tmp_path / "dkim.pem",
        )
        engine_for(settings).dispose()
        problems = _levels(examine(settings, dns=lambda name: other))[Level.PROBLEM]
        missing = _levels(examine(settings, dns=lambda name: None))[Level.PROBLEM]
    assert any("bad.yaml:2: invalid YAML" in text for text in problems), problems
    assert any("SMTP login refused" in text for text in problems), problems
    assert any("does not match" in text for text in problems), problems
    assert any("no TXT record at drip._domainkey.example.com" in text for text in missing)


def test_doctor_command_exits_1_on_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No database yet: one problem line saying where it looked; exit 1."""
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("DRIP_SECRET_KEY", "k" * 32)
    monkeypatch.setenv("DRIP_COURSES_DIR", str(COURSES_DIR))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "problem: database: no database at" in result.output
    assert "ok: course yin-immersion" in result.output
