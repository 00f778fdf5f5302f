"""Every email drip sends scores at or below zero under SpamAssassin, with no rule that
adds points (its local rules: `spamassassin -L`, no network tests)."""

from __future__ import annotations

import mailbox
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drip.core.courses import Course
from drip.sending.compose import Composer, emails_of, preview
from tests.fixtures import make_settings

pytestmark = pytest.mark.skipif(
    shutil.which("spamassassin") is None,
    reason="spamassassin is not installed (make test installs it where it can: apt-get)",
)


def test_every_lesson_and_lifecycle_email_scores_zero_or_less(
    tmp_path: Path, course: Course
) -> None:
    """All 7 lessons and the confirmation, welcome, goodbye and unsubscribe-link emails:
    score ≤ 0 and not one rule scoring above zero."""
    composer = Composer(settings=make_settings(tmp_path, base_url="https://drip.example.org"))
    which = list(emails_of(course))
    box = mailbox.mbox(tmp_path / "all.mbox")
    for name in which:
        message = preview(composer=composer, course=course, which=name, now=datetime.now(UTC))
        box.add(mailbox.mboxMessage(message.data))
    box.flush()
    with (tmp_path / "all.mbox").open("rb") as mbox:
        report = subprocess.run(
            ["spamassassin", "-L", "-t", "--mbox"],
            stdin=mbox,
            capture_output=True,
            timeout=300,
            check=True,
        ).stdout.decode("utf-8", "replace")
    scores = [float(s) for s in re.findall(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", report, re.M)]
    assert len(scores) == len(which), report[-2000:]
    positive = re.findall(r"^ *([1-9]\d*\.\d|0\.[1-9])\s+([A-Z0-9_]+)", report, re.M)
    assert positive == [], positive
    assert max(scores) <= 0, dict(zip(which, scores, strict=True))
