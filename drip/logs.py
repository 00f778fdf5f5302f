"""Structured logs: one ``key=value`` line per event, easy to grep and to parse."""

from __future__ import annotations

import logging
import sys
import time


def log_event(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log ``event key=value ...``; values with spaces are quoted."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(ch in text for ch in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    logger.log(level, " ".join(parts))


def configure(level: str = "INFO") -> None:
    """Log lines to stderr as ``time level logger message`` (UTC)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s", "%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger("drip")
    root.handlers[:] = [handler]
    root.setLevel(level)
