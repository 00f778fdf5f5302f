"""Send one lifecycle email (confirmation, welcome, goodbye) now, outside the lesson queue."""

from __future__ import annotations

import logging

from drip.config import Settings
from drip.exceptions import MailError
from drip.logs import log_event
from drip.mailer import mailer_from_url
from drip.message import Outgoing

logger = logging.getLogger("drip.notify")


def send_now(*, settings: Settings, message: Outgoing, kind: str) -> bool:
    """Hand ``message`` to the configured transport; failures are logged, never raised."""
    try:
        with mailer_from_url(
            settings.smtp_url.get_secret_value(), timeout=settings.smtp_timeout
        ) as mailer:
            mailer.send(message)
    except MailError as error:
        log_event(
            logger,
            logging.WARNING,
            "notify-failed",
            kind=kind,
            email=message.recipient,
            error=str(error),
        )
        return False
    return True
