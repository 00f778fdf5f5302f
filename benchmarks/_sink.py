"""The SMTP sink benchmarks send to: postfix's C smtp-sink when installed, else aiosmtpd."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drip.testing import SmtpSink, free_port


def _smtp_sink_binary() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None


@contextmanager
def sink() -> Iterator[tuple[str, str]]:
    """(smtp URL, description) of a running sink on 127.0.0.1."""
    binary = _smtp_sink_binary()
    if binary is None:
        with SmtpSink() as aiosmtpd_sink:
            yield aiosmtpd_sink.url, "aiosmtpd (install postfix for the faster C smtp-sink)"
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"smtp://127.0.0.1:{port}?starttls=off&max_per_connection=0", "postfix smtp-sink"
    finally:
        process.terminate()
        process.wait()
