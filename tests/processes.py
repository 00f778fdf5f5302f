"""Real drip processes for end-to-end tests: `drip serve` on a port it picks, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.fixtures import COURSES_DIR, TEST_SECRET

DRIP = Path(sys.executable).with_name("drip")
#: serve's "listening" log line, as text or as JSON
LISTENING = re.compile(r'event=listening url=(http://\S+)|"url": "(http://[^"]+)"')


def drip_env(database_url: str, smtp_url: str, **extra: str) -> dict[str, str]:
    """The environment of a drip process: this one's, minus every DRIP_ variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env.update(
        DRIP_DATABASE_URL=database_url,
        DRIP_SMTP_URL=smtp_url,
        DRIP_SECRET_KEY=TEST_SECRET,
        DRIP_COURSES_DIR=str(COURSES_DIR),
        DRIP_SEND_RATE="0",
    )
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DRIP), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Serve:
    """`drip serve --port 0`: the server binds a free port itself and prints it, so no
    other process can take the port between choosing and binding it."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path | None = None) -> None:
        self.env = env
        self.process = subprocess.Popen(
            [str(DRIP), "serve", "--port", "0", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        found = threading.Event()
        self.base_url = ""

        def drain() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line)
                match = LISTENING.search(line)
                if match:
                    self.base_url = match.group(1) or match.group(2)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(60):
            self.kill()
            raise RuntimeError("drip serve did not start:\n" + "".join(self.log))
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1).read()
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("drip serve is not healthy:\n" + "".join(self.log)) from None
                time.sleep(0.05)

    def post(
        self, path: str, body: bytes | dict[str, Any], *, content_type: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of a POST; a dict body is sent
        as JSON."""
        if isinstance(body, dict):
            body, content_type = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method="POST",
            headers={"Content-Type": content_type or "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _lower(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, _lower(error.headers), error.read()

    def kill(self) -> None:
        """SIGKILL: nothing gets a chance to finish."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
