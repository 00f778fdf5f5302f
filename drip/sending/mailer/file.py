"""``file://DIR``: every message as an ``.eml`` file (the embedded default: ./outbox)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from drip.sending.mailer.base import Mailer
from drip.sending.message import Outgoing


class FileMailer(Mailer):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def send(self, message: Outgoing) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", message.message_id.strip("<>"))
        path = self.directory / f"{stem}.eml"
        temp = path.with_suffix(".eml.tmp")
        temp.write_bytes(message.data)
        os.replace(temp, path)  # atomic: a reader never sees half a message
        return f"250 written {path.name}"
