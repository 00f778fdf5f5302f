"""The mailer interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drip.message import Outgoing


class Mailer(ABC):
    """Hands messages to a transport. One instance is one connection: not thread-safe.

    ``send`` returns the server's acceptance text, or raises ``TemporaryFailure`` (retry
    later) or ``PermanentFailure`` (never retry; ``suppress`` says the address is dead).
    """

    @abstractmethod
    def send(self, message: Outgoing) -> str: ...

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
