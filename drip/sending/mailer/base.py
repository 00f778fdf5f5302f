"""The mailer interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from drip.core.exceptions import DripError

if TYPE_CHECKING:
    from drip.sending.message import Outgoing


@dataclass(frozen=True)
class Settled:
    """What became of a message handed over: accepted (``reply``, the server's line) or
    not (``error``: a ``TemporaryFailure``, ``PermanentFailure`` or ``ConfigError``)."""

    message: Outgoing
    reply: str = ""
    error: DripError | None = None

    def result(self) -> str:
        """The reply, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.reply


class Mailer(ABC):
    """Hands messages to a transport. One instance is one connection: not thread-safe.

    ``send`` returns the server's acceptance text, or raises ``TemporaryFailure`` (retry
    later) or ``PermanentFailure`` (never retry; ``suppress`` says the address is dead).

    ``submit`` and ``settle`` are the same, for a sender that lets a message's outcome
    come later: ``submit`` hands a message over and returns what became of the messages
    whose outcome is known by then, in order; ``settle`` waits for the rest. A backend
    that knows at once (all but SMTP with PIPELINING) settles each message in ``submit``.
    """

    @abstractmethod
    def send(self, message: Outgoing) -> str: ...

    def submit(self, message: Outgoing) -> list[Settled]:
        try:
            return [Settled(message, reply=self.send(message))]
        except DripError as error:
            return [Settled(message, error=error)]

    def settle(self) -> list[Settled]:
        """The outcome of every message submitted and not yet settled (none here)."""
        return []

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing)
        """Release the connection, if any."""

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
