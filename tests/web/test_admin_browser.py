"""The dashboard in a real browser: `drip serve` as a process, the system Chromium driven
by Playwright, a real SMTP server. With DRIP_SCREENSHOTS=1 it also saves the
screenshots docs/admin.md shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from drip.core.courses import Catalog
from drip.core.states import ClickLink
from drip.feedback.clicks import record_click
from drip.runner import make_sender
from drip.store.engine import engine_for
from drip.testing import SmtpSink
from tests.fixtures import COURSES_DIR, ROOT, enrol, make_settings
from tests.processes import DRIP, Serve, drip_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("smtp_sink", ["pipelining"], indirect=True),
]

PASSWORD = "a dashboard password for the browser"
#: where the screenshots go when DRIP_SCREENSHOTS=1 (docs/admin.md shows them); read at
#: import, before the autouse fixture clears every DRIP_ variable
DOCS = ROOT / "docs" if os.environ.get("DRIP_SCREENSHOTS") == "1" else None


def _chromium() -> str:
    """The browser, or a skip: tests never install anything."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium is not installed (make test installs it where it can: apt-get)")
    return found


def _seed(database_url: str, sink: SmtpSink, tmp_path: Path) -> None:
    """A few days of a course: six people, three lessons each, a bounce, clicks, one left."""
    settings = make_settings(tmp_path, database_url=database_url, smtp_url=sink.url)
    engine = engine_for(settings)
    catalog = Catalog.from_dir(COURSES_DIR)
    course = catalog.get("yin-immersion")
    start = datetime.now(UTC) - timedelta(days=3)
    uids = {
        name: enrol(engine, course, f"{name}@example.org", now=start + timedelta(hours=n * 5))
        for n, name in enumerate(("ana", "ben", "cat", "dan", "eve", "nobody"))
    }
    sink.rcpt_replies["nobody@example.org"] = "550 5.1.1 no such user"
    sender = make_sender(engine=engine, settings=settings, catalog=catalog)
    for day in range(3):
        sender.send_due(now=start + timedelta(days=day, hours=23))
        with engine.begin() as connection:
            for name in ("ana", "ben", "cat")[: 3 - day]:
                record_click(
                    connection,
                    enrollment_uid=uids[name],
                    day_id=course.days[day].id,
                    link=ClickLink.CLASS,
                    now=start + timedelta(days=day, hours=23, minutes=5),
                )
    sink.received.clear()
    engine.dispose()


@pytest.fixture
def server(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Serve]:
    """`drip serve` on a port of its own, its password set with `drip admin set-password`."""
    database_url = f"sqlite:///{tmp_path / 'drip.db'}"
    _seed(database_url, smtp_sink, tmp_path)
    env = drip_env(database_url, smtp_sink.url)
    subprocess.run(
        [str(DRIP), "admin", "set-password"],
        input=PASSWORD + "\n",
        env=env,
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    served = Serve(env, cwd=tmp_path)
    yield served
    assert served.stop() == 0, "".join(served.log)


def _screenshot(page: object, name: str) -> None:
    if DOCS is not None:
        page.screenshot(path=str(DOCS / name), full_page=True)  # type: ignore[attr-defined]


def test_sign_in_see_the_funnel_preview_a_lesson_on_a_phone_and_send_a_test(
    server: Serve, smtp_sink: SmtpSink
) -> None:
    """Sign in, see the funnel chart, open day 3 at phone width, send it as a test: the
    SMTP server gets it, marked [Test]."""
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{server.base_url}/admin")
            assert page.url.endswith("/admin/login")
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            assert page.locator("p.error").inner_text() == "wrong password"
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server.base_url}/admin")
            chart = page.locator("svg.funnel-chart")
            assert chart.is_visible()
            assert chart.locator("rect.bar").count() == 7 * 4
            assert page.locator("svg.signups-chart").is_visible()
            _screenshot(page, "admin-overview.png")

            page.set_viewport_size({"width": 375, "height": 812})
            page.click('h2 a[href="/admin/courses/yin-immersion"]')
            page.locator("tr", has_text="Day 3:").get_by_role("link", name="phone").click()
            page.wait_for_url("**/emails/3?width=375")
            frame = page.locator("iframe.email-preview")
            assert frame.bounding_box()["width"] == pytest.approx(375, abs=2)  # type: ignore[index]
            course = Catalog.from_dir(COURSES_DIR).get("yin-immersion")
            title = course.days[2].class_.title
            assert title in page.frame_locator("iframe.email-preview").locator("body").inner_text()
            _screenshot(page, "admin-preview-phone.png")

            page.fill("input[name=to]", "teacher@example.org")
            page.click("text=Send me a test")
            assert "queued as" in page.locator(".test-result").inner_text()
        finally:
            browser.close()
    deadline = time.monotonic() + 10
    while not smtp_sink.received and time.monotonic() < deadline:
        time.sleep(0.05)
    [message] = smtp_sink.received
    assert message.recipients == ("teacher@example.org",)
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert parsed["Subject"] == f"[Test] {course.days[2].subject}"
    assert parsed["X-Drip-Test"] == "yes"
