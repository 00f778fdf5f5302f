"""``memory://``: keep messages in ``outbox`` (a list), for tests, yours and ours.

from drip.sending.mailer import memory
memory.outbox.clear()
...  # run drip with DRIP_SMTP_URL=memory://
assert memory.outbox[0].recipient == "ana@example.org"
"""

from __future__ import annotations

import threading

from drip.sending.mailer.base import Mailer
from drip.sending.message import Outgoing

#: every message sent through any MemoryMailer in this process, in order
outbox: list[Outgoing] = []
_lock = threading.Lock()


class MemoryMailer(Mailer):
    def send(self, message: Outgoing) -> str:
        with _lock:
            outbox.append(message)
        return "250 kept in memory"
