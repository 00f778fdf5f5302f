"""End to end through real processes: uvicorn serving drip, a real SMTP server, a browser."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from functools import partial
from pathlib import Path

import pytest

from drip.core.courses import Course
from drip.testing import SmtpSink
from tests.processes import Serve, drip_env
from tests.processes import cli as run_cli

pytestmark = [
    pytest.mark.slow,
    # one SMTP dialogue is enough here; test_mailer covers both
    pytest.mark.parametrize("smtp_sink", ["pipelining"], indirect=True),
]


@pytest.fixture
def server(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Serve]:
    """`drip serve` as a real process on a port of its own choosing, mailing into the
    SMTP sink; links in emails point at it."""
    env = drip_env(f"sqlite:///{tmp_path / 'drip.db'}", smtp_sink.url)
    served = Serve(env, cwd=tmp_path)
    served.env = {**env, "DRIP_BASE_URL": served.base_url}
    yield served
    assert served.stop() == 0, "".join(served.log)


def cli(server: Serve, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(server.env, *args)


def _wait_for(sink: SmtpSink, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(sink.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sink.received) >= count


def _post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


def test_signup_confirm_lessons_and_one_click_unsubscribe(
    server: Serve, smtp_sink: SmtpSink
) -> None:
    """Form post → confirmation mail → its link → day 1 at once → RFC 8058 POST from the
    List-Unsubscribe header → later runs send nothing more."""
    assert (
        _post(
            f"{server.base_url}/subscribe",
            b"email=maya.student%40example.org&name=Sam",
            "application/x-www-form-urlencoded",
        )
        == 200
    )  # 303 followed to /thanks
    _wait_for(smtp_sink, 1)
    confirmation = message_from_bytes(smtp_sink.received[0].data, policy=policy.default)
    text = confirmation.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    confirm_url = re.search(r"(http://\S+/confirm/\S+)", text).group(1)  # type: ignore[union-attr]
    assert "Yes, start my course" in urllib.request.urlopen(confirm_url, timeout=10).read().decode()
    assert _post(confirm_url, b"", "application/x-www-form-urlencoded") == 200

    # day 1 leaves within moments, as the page says, with no cron run
    deadline = time.monotonic() + 10
    while len(smtp_sink.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    run = cli(server, "send-due")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("0 sent"), "day 1 went before send-due"
    [lesson] = [
        m
        for m in (message_from_bytes(r.data, policy=policy.default) for r in smtp_sink.received)
        if m["Subject"].startswith("Day 1")
    ]
    assert lesson["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    one_click = re.search(r"<(http[^>]+)>", lesson["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]

    assert (
        _post(one_click, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded") == 200
    )
    for days in (1, 2, 5):
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * 86400))
        assert cli(server, "send-due", "--now", later).returncode == 0
    assert len(smtp_sink.received) == 2, "nothing more after unsubscribing"
    listed = cli(server, "subscribers", "list", "--json")
    assert '"status": "unsubscribed"' in listed.stdout


def _chromium() -> str:
    """The browser, or a skip: tests never install anything (`make test` does, as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium is not installed (make test installs it where it can: apt-get)")
    return found


def test_form_snippet_in_a_real_browser_from_another_origin(
    server: Serve, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """Headless Chromium loads the form snippet from another origin, fills it in, submits;
    the visitor's time zone is filled in by the snippet's script."""
    chromium = _chromium()
    snippet = cli(server, "form-snippet", "yin-immersion").stdout
    page = tmp_path / "site"
    page.mkdir()
    (page / "index.html").write_text(
        "<!doctype html><html><body><h1>My yoga blog</h1>"
        + snippet
        + "<script>document.getElementById('drip-email').value = 'browser@example.org';"
        "document.getElementById('drip-name').value = 'Bea';"
        "document.querySelector('form').submit();</script></body></html>"
    )
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(page))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--timeout=5000",
                "--dump-dom",
                f"http://127.0.0.1:{site.server_address[1]}/index.html",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TZ": "Pacific/Auckland"},
        )
    finally:
        site.shutdown()
    assert "check your inbox" in result.stdout, result.stderr[-2000:]
    listed = cli(server, "subscribers", "list", "--json").stdout
    assert '"email": "browser@example.org"' in listed
    assert '"timezone": "Pacific/Auckland"' in listed
    _wait_for(smtp_sink, 1)


def test_serve_on_a_busy_port_fails_before_sending_anything(
    tmp_path: Path, smtp_sink: SmtpSink, course: Course
) -> None:
    """`drip serve --scheduler` on a port already taken exits 2 with one line, without
    first running a send (a lesson is due, and nothing reaches the mail server)."""
    import socket

    from drip.store.engine import make_engine
    from drip.store.schema import upgrade
    from tests.fixtures import enrol

    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    enrol(engine, course, "due@example.org", now=datetime.now(UTC))
    engine.dispose()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(
            drip_env(database_url, smtp_sink.url), "serve", "--scheduler", "--port", str(port)
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert smtp_sink.received == []


def test_json_logs_are_one_object_per_line(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """DRIP_LOG_FORMAT=json: every line `drip serve` logs, uvicorn's included, is one JSON
    object; drip's carry their event and fields."""
    import json

    env = drip_env(f"sqlite:///{tmp_path / 'drip.db'}", smtp_sink.url, DRIP_LOG_FORMAT="json")
    served = Serve(env)
    assert served.post("/subscribe", {"email": "j@example.org"})[0] == 202
    time.sleep(0.5)
    assert served.stop() == 0
    lines = [json.loads(line) for line in served.log if line.strip()]
    assert {"time", "level", "logger"} <= set(lines[0])
    events = {line.get("event") for line in lines}
    assert {"listening", "send-due"} <= events
    assert any(line.get("logger", "").startswith("uvicorn") for line in lines)
