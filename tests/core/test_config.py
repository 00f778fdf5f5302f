"""Settings: defaults, precedence, and the generated secret key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from drip.core.config import SECRET_FILE_NAME, Settings, get_settings
from drip.core.exceptions import ConfigError


def test_defaults_match_the_contract() -> None:
    """Unset variables give the embedded defaults from DESIGN.md."""
    settings = Settings(_env_file=None)
    assert settings.database_url == "sqlite:///./drip.db"
    assert settings.smtp_url.get_secret_value() == "file://./outbox"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.courses_dir == Path("./courses")
    assert settings.secret_key is None
    assert settings.webhook_secret is None


def test_environment_beats_env_file_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DRIP_* variables override .env, which overrides defaults."""
    (tmp_path / ".env").write_text("DRIP_BASE_URL=https://from-dotenv.example/\nDRIP_SEND_RATE=3\n")
    monkeypatch.setenv("DRIP_SEND_RATE", "7.5")
    settings = get_settings()
    assert settings.base_url == "https://from-dotenv.example"
    assert settings.send_rate == 7.5


def test_invalid_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value names the environment variable, all on one line."""
    monkeypatch.setenv("DRIP_SMTP_CONNECTIONS", "many")
    monkeypatch.setenv("DRIP_BASE_URL", "ftp://x")
    with pytest.raises(ConfigError) as raised:
        get_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert "DRIP_SMTP_CONNECTIONS: " in message and "(got 'many')" in message
    assert "DRIP_BASE_URL: must start with http:// or https:// (got 'ftp://x')" in message


def test_secret_key_is_generated_once_beside_the_database(tmp_path: Path) -> None:
    """Without DRIP_SECRET_KEY a random key is stored next to SQLite, mode 0600, and reused."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/data/drip.db", _env_file=None)
    first = settings.secret_keys()
    key_file = tmp_path / "data" / SECRET_FILE_NAME
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first[0]) >= 32
    assert settings.secret_keys() == first
    other = Settings(database_url=f"sqlite:///{tmp_path}/elsewhere/drip.db", _env_file=None)
    assert other.secret_keys() != first


def test_shared_database_requires_an_explicit_secret() -> None:
    """PostgreSQL is shared by several hosts, so a per-host generated key is refused."""
    settings = Settings(database_url="postgresql+psycopg://u@db/drip", _env_file=None)
    with pytest.raises(ConfigError, match="DRIP_SECRET_KEY"):
        settings.secret_keys()


def test_secret_key_list_allows_rotation() -> None:
    """A comma-separated DRIP_SECRET_KEY gives several keys, newest first."""
    settings = Settings(
        secret_key="new-key-0123456789abcdef, old-key-0123456789abcdef", _env_file=None
    )
    assert settings.secret_keys() == ["new-key-0123456789abcdef", "old-key-0123456789abcdef"]


def test_short_secret_key_is_refused() -> None:
    """A guessable short key is a configuration error."""
    with pytest.raises(ConfigError, match="at least 16"):
        Settings(secret_key="short", _env_file=None).secret_keys()


def test_redirect_origins_are_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """DRIP_ALLOWED_REDIRECT_ORIGINS splits on commas and drops trailing slashes."""
    monkeypatch.setenv("DRIP_ALLOWED_REDIRECT_ORIGINS", "https://a.example/, https://b.example")
    assert get_settings().allowed_redirect_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    "origin", ["javascript://x", "https://a.example/path", "https://me@a.example", "a.example"]
)
def test_a_redirect_origin_must_be_scheme_and_host(origin: str) -> None:
    """Anything but http(s)://host[:port] is refused, naming the entry."""
    with pytest.raises(ValueError, match="is not an origin like https://blog.example.com"):
        Settings(allowed_redirect_origins=origin, _env_file=None)  # type: ignore[arg-type]
    assert Settings(
        allowed_redirect_origins="HTTPS://A.example:8443/",
        _env_file=None,  # type: ignore[arg-type]
    ).allowed_redirect_origins == ["https://a.example:8443"]


@pytest.mark.parametrize(
    ("url", "read_as"),
    [
        ("postgres://u:p@db/drip", "postgresql+psycopg://u:p@db/drip"),
        ("postgresql://u:p@db:5433/drip", "postgresql+psycopg://u:p@db:5433/drip"),
        ("postgresql+psycopg://u@db/drip", "postgresql+psycopg://u@db/drip"),
        ("sqlite:////srv/drip/drip.db", "sqlite:////srv/drip/drip.db"),
    ],
)
def test_database_urls_are_read_with_drips_driver(url: str, read_as: str) -> None:
    """postgres:// and postgresql://, as hosting providers write them, use psycopg."""
    assert Settings(database_url=url, _env_file=None).database_url == read_as  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://u:hunter2@h/x", "drip keeps its data in SQLite (sqlite:///PATH) or PostgreSQL"),
        ("/srv/drip.db", "not a database URL: write sqlite:///PATH for a SQLite file"),
    ],
)
def test_other_databases_are_refused_in_drips_words(
    url: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another database or a bare path: one line saying what to write, never a driver's
    error, and never the password it carries."""
    monkeypatch.setenv("DRIP_DATABASE_URL", url)
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert said in str(raised.value) and "hunter2" not in str(raised.value)
