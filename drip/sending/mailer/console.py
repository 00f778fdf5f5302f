"""``console://``: print each message to stdout (for trying things out)."""

from __future__ import annotations

import sys

from drip.sending.mailer.base import Mailer
from drip.sending.message import Outgoing


class ConsoleMailer(Mailer):
    def send(self, message: Outgoing) -> str:
        sys.stdout.write(message.data.decode("utf-8", "replace").replace("\r\n", "\n"))
        sys.stdout.write("\n")
        sys.stdout.flush()
        return "250 printed"
