"""Structured logs: one ``key=value`` line per event, or one JSON object per line.

``DRIP_LOG_FORMAT=json`` switches every line, drip's own and uvicorn's, to JSON:
``{"time": …, "level": …, "logger": …, "event": …, <fields>…}`` (uvicorn's lines carry
their text as ``message``). Field values are stored values at most: never a password.
"""

from __future__ import annotations

import json
import logging
import sys
import time

#: the loggers drip configures: its own and the web server's
LOGGERS = ("drip", "uvicorn", "uvicorn.error", "uvicorn.access")


def log_event(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log ``event key=value ...`` on one line: a value with a space, quote, ``=`` or a
    character that is not printable (a database error's newlines) is quoted and escaped
    as in JSON."""
    fields = {key: value for key, value in fields.items() if value is not None}
    parts = [f"event={event}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(ch in text for ch in ' "=') or not text.isprintable():
            text = json.dumps(text)  # \u-escapes all but ASCII: no line or paragraph separator
        parts.append(f"{key}={text}")
    logger.log(level, " ".join(parts), extra={"drip_event": event, "drip_fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, "drip_event", None)
        if event is not None:
            line["event"] = event
            line.update({k: _plain(v) for k, v in getattr(record, "drip_fields", {}).items()})
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _plain(value: object) -> object:
    return value if isinstance(value, bool | int | float | str) else str(value)


def configure(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Log to stderr as ``time level logger message`` (UTC), or JSON (``json_lines``, by
    default ``DRIP_LOG_FORMAT=json``)."""
    if json_lines is None:
        from drip.core.config import get_settings

        json_lines = get_settings().log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(
            "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s", "%Y-%m-%dT%H:%M:%SZ"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    logging.getLogger("drip").handlers[:] = [handler]
    logging.getLogger("drip").setLevel(level)
    if json_lines:  # uvicorn's own lines too, so every line parses
        for name in LOGGERS[1:]:
            logging.getLogger(name).handlers[:] = [handler]
            logging.getLogger(name).propagate = False
