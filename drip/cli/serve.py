"""``drip serve`` and ``drip form-snippet``: the web side."""

from __future__ import annotations

from typing import Annotated

import typer

from drip.cli._common import catalog, settings
from drip.logs import configure as configure_logging
from drip.web.forms import form_snippet as build_snippet


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    scheduler: Annotated[
        bool, typer.Option("--scheduler", help="Also run the send loop in this process.")
    ] = False,
) -> None:
    """Serve the signup webhook, confirmation and unsubscribe pages.

    Example: drip serve --host 0.0.0.0 --port 8000 --scheduler
    """
    import uvicorn

    from drip.web import create_app

    configure_logging("INFO")
    app = create_app(settings(), scheduler=scheduler)
    uvicorn.run(
        app, host=host, port=port, proxy_headers=settings().trust_forwarded_for, log_level="info"
    )


def form_snippet(course: Annotated[str, typer.Argument(help="Course slug.")]) -> None:
    """Print a copy-paste HTML signup form for your website.

    Example: drip form-snippet yin-immersion > signup-form.html
    """
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
