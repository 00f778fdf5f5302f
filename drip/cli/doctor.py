"""``drip doctor``: what to fix, one line each."""

from __future__ import annotations

import typer

from drip.cli._common import say


def doctor() -> None:
    """Check the configuration, the database and its schema, the signing key, the courses,
    the SMTP server (connect, TLS and login, sending nothing) and DKIM against the
    senders' domains; print one line per finding; exit 1 if anything must be fixed.

    Example: drip doctor
    """
    from drip.core.config import get_settings
    from drip.core.exceptions import ConfigError
    from drip.doctor import Level, examine

    try:
        findings = examine(get_settings())
    except ConfigError as error:  # the settings themselves
        say(f"problem: {error}")
        raise typer.Exit(1) from None
    for finding in findings:
        say(finding)
    if any(finding.level == Level.PROBLEM for finding in findings):
        raise typer.Exit(1)
