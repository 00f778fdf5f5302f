"""Every error drip raises on purpose.

::

    DripError
    ├── ConfigError(DripError, ValueError)        bad setting or environment
    ├── InvalidCourse(DripError, ValueError)       course YAML that fails validation
    ├── UnknownCourse(DripError, LookupError)
    ├── SchemaOutOfDate(DripError, RuntimeError)   database needs `drip db upgrade`
    ├── InvalidSubscriber(DripError, ValueError)   bad email, time zone, name
    ├── SubscriberNotFound(DripError, LookupError)
    ├── InvalidPassword(DripError, ValueError)     a dashboard password too short to set
    ├── InvalidToken(DripError, ValueError)        tampered, wrong purpose or unknown
    │   └── ExpiredToken                           well signed, too old: a new link is offered
    │       └── StaleToken                         issued before the last unsubscribe
    ├── DatabaseBusy(DripError, TimeoutError)      the database stayed locked past the wait
    ├── TemplateError(DripError, ValueError)       an email template fails to render
    └── MailError(DripError)                       a message could not be handed over
        ├── TemporaryFailure                       4xx or connection trouble: retry later
        └── PermanentFailure                       5xx for the recipient: never retry

The CLI prints ``str(error)`` of any ``DripError`` on one line and exits non-zero.
"""

from __future__ import annotations


class DripError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""

    exit_code = 1


class ConfigError(DripError, ValueError):
    exit_code = 2


class InvalidCourse(DripError, ValueError):
    """A course file is invalid. ``problems`` lists every ``file:line: key: message``."""

    exit_code = 1

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class UnknownCourse(DripError, LookupError):
    exit_code = 2


class SchemaOutOfDate(DripError, RuntimeError):
    exit_code = 2


class InvalidSubscriber(DripError, ValueError):
    """Bad subscriber input; ``field`` names the offending field."""

    exit_code = 2

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class SubscriberNotFound(DripError, LookupError):
    exit_code = 1


class InvalidPassword(DripError, ValueError):
    exit_code = 2


class InvalidToken(DripError, ValueError):
    pass


class InvalidWebhook(DripError, ValueError):
    """A webhook endpoint drip will not post to (its URL, its event types), or none such."""

    exit_code = 2


class InvalidApiKey(DripError, ValueError):
    """An API key name that is taken, malformed, or names no key."""

    exit_code = 2


class ExpiredToken(InvalidToken):
    """A correctly signed token past its age limit; ``payload`` is still usable to resend."""

    def __init__(self, message: str, *, payload: object = None) -> None:
        super().__init__(message)
        self.payload = payload


class StaleToken(ExpiredToken):
    """A confirmation link issued before the subscriber's last unsubscribe."""


class DatabaseBusy(DripError, TimeoutError):
    """The database could not be written within the bounded wait; try again shortly."""

    exit_code = 1


class TemplateError(DripError, ValueError):
    pass


class MailError(DripError):
    """A message was not accepted. ``code`` and ``response`` come from the server when known."""

    def __init__(self, message: str, *, code: int | None = None, response: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.response = response


class TemporaryFailure(MailError):
    """Try again later. ``connection`` means the server itself is unreachable or unusable,
    so the rest of the run would fail the same way."""

    def __init__(
        self, message: str, *, code: int | None = None, response: str = "", connection: bool = False
    ) -> None:
        super().__init__(message, code=code, response=response)
        self.connection = connection


class PermanentFailure(MailError):
    """Never retry this message. ``suppress`` means the recipient address itself was
    rejected (RCPT 5xx), so nothing more may be sent to it."""

    def __init__(
        self, message: str, *, code: int | None = None, response: str = "", suppress: bool = False
    ) -> None:
        super().__init__(message, code=code, response=response)
        self.suppress = suppress
