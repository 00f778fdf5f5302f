"""Settings from the environment (``DRIP_`` prefix) and a ``.env`` file.

``DRIP_SECRET_KEY`` has no default in code: when it is unset and the database is a
local SQLite file, a random key is generated once into ``drip-secret.key`` beside the
database (mode 0600) and reused from then on. Other databases need it set explicitly,
because every host sharing the database must sign with the same key.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from drip.core.exceptions import ConfigError

SECRET_FILE_NAME = "drip-secret.key"


@dataclass(frozen=True)
class BouncePolicy:
    """When soft bounces (mailbox full, greylisting given up) suppress an address:
    ``soft_limit`` emails soft-bounced within ``soft_days`` days."""

    soft_limit: int = 3
    soft_days: int = 14


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = "sqlite:///./drip.db"
    smtp_url: SecretStr = SecretStr("file://./outbox")
    base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None
    courses_dir: Path = Path("./courses")
    templates_dir: Path | None = None
    webhook_secret: SecretStr | None = None
    default_course: str | None = None

    #: messages per second across all connections; 0 means unthrottled
    send_rate: float = Field(default=10.0, ge=0)
    smtp_connections: int = Field(default=2, ge=1, le=32)
    #: send-due processes sharing a large run (each with its connections and its share
    #: of the rate): a run bound by the interpreter's CPU uses more of the machine's cores
    send_processes: int = Field(default=1, ge=1, le=16)
    smtp_timeout: float = Field(default=30.0, gt=0)
    #: seconds a claimed delivery stays leased before another worker may retry it
    lease_seconds: int = Field(default=300, ge=10)
    #: attempts before a temporarily failing delivery is given up as failed
    max_attempts: int = Field(default=8, ge=1)
    send_interval_seconds: int = Field(default=60, ge=1)
    batch_size: int = Field(default=200, ge=1)
    #: messages a connection sends before their receipts are written (in one transaction):
    #: the most a crash can leave sent but unrecorded, resent after the lease
    smtp_window: int = Field(default=10, ge=1, le=100)
    #: how long a web request waits to write before answering 503 (Retry-After)
    db_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    #: serve GET /metrics (Prometheus); keep it off the public internet
    metrics: bool = False
    #: log lines as text (key=value) or one JSON object each
    log_format: Literal["text", "json"] = "text"

    #: origins a signup form may name in its ``redirect`` field
    allowed_redirect_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: signups per IP per minute before answering 429
    signup_rate_per_minute: int = Field(default=10, ge=1)
    #: requests per API key per minute before ``/api/v1`` answers 429
    api_rate_per_minute: int = Field(default=600, ge=1)
    #: minimum seconds between two confirmation emails to the same pending address
    confirm_resend_seconds: int = Field(default=600, ge=0)
    confirm_max_age_days: int = Field(default=7, ge=1)
    trust_forwarded_for: bool = False

    dkim_selector: str | None = None
    dkim_private_key_file: Path | None = None

    #: a mailbox drip reads (``drip inbound``): each email's envelope sender becomes
    #: ``local+tag@domain``, so a bounce names the email it is about, and List-Unsubscribe
    #: gains a mailto to it
    bounce_address: str | None = None
    #: soft bounces (mailbox full, …) within ``soft_bounce_days`` that suppress an address
    soft_bounce_limit: int = Field(default=3, ge=1)
    soft_bounce_days: int = Field(default=14, ge=1)
    #: providers' bounce webhooks (``POST /webhooks/bounces/{provider}``): Postmark's
    #: basic-auth password and the generic form's signing key (not the signups' secret)
    bounce_webhook_secret: SecretStr | None = None
    mailgun_signing_key: SecretStr | None = None
    #: the Event Webhook's public key (base64), as SendGrid shows it
    sendgrid_verification_key: str | None = None
    #: the SNS topic SES publishes bounces and complaints to
    ses_topic_arn: str | None = None
    #: the dashboard's password as an argon2 hash (``drip admin set-password --print``);
    #: takes precedence over the one ``drip admin set-password`` stores
    admin_password_hash: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        """A SQLite file or a PostgreSQL database; ``postgres://`` and ``postgresql://``
        (as hosting providers write them) are read with drip's driver, psycopg."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.strip())
        except ArgumentError:
            raise ValueError(
                "not a database URL: write sqlite:///PATH for a SQLite file (sqlite:////srv/"
                "drip/drip.db for an absolute path) or postgresql://user:password@host/database"
            ) from None
        backend, _, _ = url.drivername.partition("+")
        if backend in ("postgres", "postgresql"):
            return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        if backend != "sqlite":
            raise ValueError(
                f"drip keeps its data in SQLite (sqlite:///PATH) or PostgreSQL "
                f"(postgresql://…), not {backend}"
            )
        return value.strip()

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator(
        "webhook_secret",
        "bounce_webhook_secret",
        "mailgun_signing_key",
        "sendgrid_verification_key",
        "ses_topic_arn",
        "admin_password_hash",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``KEY=`` in a .env file means unset, never an empty key anyone can sign with."""
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("admin_password_hash")
    @classmethod
    def _argon2_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip().startswith("$argon2"):
            raise ValueError("not an argon2 hash (make one with: drip admin set-password --print)")
        return SecretStr(value.get_secret_value().strip()) if value is not None else None

    @field_validator("bounce_address")
    @classmethod
    def _plain_address(cls, value: str | None) -> str | None:
        """An ASCII ``local@domain`` whose local part has no ``+`` (drip adds the tag)."""
        if value is None or not value.strip():
            return None
        value = value.strip().lower()
        if not re.fullmatch(r"[a-z0-9._-]+@[a-z0-9-]+(\.[a-z0-9-]+)+", value):
            raise ValueError(f"{value!r} is not an address like bounces@mail.example.com")
        return value

    @field_validator("allowed_redirect_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/").lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_redirect_origins")
    @classmethod
    def _origins_only(cls, value: list[str]) -> list[str]:
        """Each entry is exactly scheme://host[:port], http or https (no path, no user)."""
        for origin in value:
            parts = urlsplit(origin)
            port = f":{parts.port}" if parts.port else ""
            if (
                parts.scheme not in ("http", "https")
                or origin != f"{parts.scheme}://{parts.hostname}{port}"
            ):
                raise ValueError(f"{origin!r} is not an origin like https://blog.example.com")
        return value

    @property
    def bounce_policy(self) -> BouncePolicy:
        """``DRIP_SOFT_BOUNCE_LIMIT`` and ``DRIP_SOFT_BOUNCE_DAYS`` as the bounce policy."""
        return BouncePolicy(self.soft_bounce_limit, self.soft_bounce_days)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for an in-memory or non-SQLite database."""
        if not self.is_sqlite:
            return None
        database = make_url(self.database_url).database
        if not database or database == ":memory:":
            return None
        return Path(database)

    def generated_key_file(self) -> Path | None:
        """Where the generated signing key lives (``drip-secret.key`` beside the SQLite
        database), or None when ``DRIP_SECRET_KEY`` is set (or the database is not SQLite)."""
        database = self.sqlite_path()
        if self.secret_key is not None or database is None:
            return None
        return database.resolve().parent / SECRET_FILE_NAME

    def secret_keys(self) -> list[str]:
        """Signing keys, newest first: the first signs, all verify."""
        if self.secret_key is not None:
            keys = [k.strip() for k in self.secret_key.get_secret_value().split(",") if k.strip()]
            if not keys or any(len(k) < 16 for k in keys):
                raise ConfigError("DRIP_SECRET_KEY: each key must be at least 16 characters")
            return keys
        return [_generated_key(self)]


def _generated_key(settings: Settings) -> str:
    key_file = settings.generated_key_file()
    if key_file is None:
        raise ConfigError(
            "DRIP_SECRET_KEY is not set; it is required unless the database is a local "
            "SQLite file (generate one with: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temp file, then hard-link it into place: atomic, and a concurrent
    # first run either wins or reads the winner's complete key.
    fd, temp_name = tempfile.mkstemp(dir=key_file.parent, prefix=".drip-key-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(temp_name, key_file)
        except FileExistsError:
            pass
    finally:
        os.unlink(temp_name)
    return key_file.read_text().strip()


#: the file ``get_settings`` reads besides the environment (``drip --env-file``)
_env_file: Path = Path(".env")


def env_file() -> Path:
    """The file ``get_settings`` reads besides the environment."""
    return _env_file


def use_env_file(path: Path) -> None:
    """Read settings from ``path`` instead of ``./.env`` (the environment still wins): for
    a process started with no environment of its own, in another directory, such as an
    MTA's pipe or cron."""
    global _env_file
    if not path.is_file():
        raise ConfigError(f"--env-file: no file at {path}")
    try:
        path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--env-file: cannot read {path}: {error.strerror}") from None
    _env_file = path
    get_settings.cache_clear()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings(...)`` instead."""
    try:
        return Settings(_env_file=_env_file)  # type: ignore[call-arg]
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


def describe(error: ValidationError) -> str:
    """One line naming each bad variable: ``DRIP_SEND_RATE: … (got 'fast')``."""
    problems = []
    for item in error.errors():
        name = "DRIP_" + "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        field = Settings.model_fields.get(str(item["loc"][0]))
        secret = field is not None and "SecretStr" in str(field.annotation)
        given = item.get("input")
        if item["loc"][0] == "database_url" and isinstance(given, str) and "@" in given:
            secret = True  # it may carry the database's password
        got = "value not shown: a secret" if secret else f"got {given!r}"
        problems.append(f"{name}: {message} ({got})")
    return "invalid configuration: " + "; ".join(problems)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address: a server on this machine (where a password
    or a plain-HTTP link may travel unencrypted)."""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
