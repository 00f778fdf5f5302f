"""``drip serve`` and ``drip form-snippet``: the web side."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

from drip.cli._common import NewKeyOption, catalog, settings

logger = logging.getLogger("drip.web")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one, printed).")] = 8000,
    scheduler: Annotated[
        bool, typer.Option("--scheduler", help="Also send lessons from this process.")
    ] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (with client addresses).")
    ] = False,
    new_key: NewKeyOption = False,
) -> None:
    """Serve the signup webhook and the confirmation and unsubscribe pages; confirmation,
    welcome and goodbye emails go out from this process within moments. Lessons are sent
    by `drip send-due` / `drip run`, or here with --scheduler. Without DRIP_BASE_URL,
    links in emails point at this host and port. Stops cleanly (exit 0) on SIGTERM or
    Ctrl-C, the messages in flight recorded; a second Ctrl-C exits at once.

    Example: drip serve --host 0.0.0.0 --port 8000 --scheduler
    """
    from drip.core.logs import configure as configure_logging
    from drip.core.logs import log_event
    from drip.web import create_app
    from drip.web.server import listen, run

    configure_logging("INFO")
    config = settings()
    listener = listen(host, port)  # a busy port fails before anything starts
    port = listener.getsockname()[1]  # the one chosen, for --port 0
    if "base_url" not in config.model_fields_set:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        config = config.model_copy(update={"base_url": f"http://{shown}:{port}"})
        if shown != host:
            log_event(
                logger,
                logging.WARNING,
                "base-url-not-set",
                links=config.base_url,
                hint="set DRIP_BASE_URL to your public address",
            )
    app = create_app(config, scheduler=scheduler, new_key=new_key)
    log_event(logger, logging.INFO, "listening", url=f"http://{host}:{port}")
    # uvicorn re-raises the signal that stopped it; a handler of ours makes that a no-op,
    # so a graceful stop exits 0, as `drip run` does.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    # SIGHUP: read changed course files now (the prompt sender re-reads them every run)
    signal.signal(signal.SIGHUP, lambda *_: app.state.drip.prompt.wake())
    run(app, listener, access_log=access_log, json_logs=config.log_format == "json")


def form_snippet(course: Annotated[str, typer.Argument(help="Course slug.")]) -> None:
    """Print a copy-paste HTML signup form for your website.

    Example: drip form-snippet yin-immersion > signup-form.html
    """
    from drip.lifecycle.forms import form_snippet as build_snippet

    chosen = catalog().get(course)
    typer.echo(
        build_snippet(
            slug=chosen.slug,
            title=chosen.title,
            privacy=chosen.footer.privacy,
            base_url=settings().base_url,
        ),
        nl=False,
    )
