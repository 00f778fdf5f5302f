"""``drip course preview --serve``: every email of every course in the browser, on loopback.

Each page reads the course files and templates afresh, so it shows what is on disk now;
``/events`` (server-sent events) tells open pages to reload when a course file or template
changes: one ``watchfiles`` watcher for the app, however many pages listen. A course that
does not validate shows its problems as ``file:line: key: message``; a template error
shows its message; nothing is cached.
Links in the emails are signed with a throwaway key: a preview never mints a working one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.middleware.trustedhost import TrustedHostMiddleware

from drip.core.config import Settings
from drip.core.courses import Catalog
from drip.core.exceptions import DripError
from drip.core.tokens import Tokens
from drip.sending.compose import Composer, emails_of, preview
from drip.sending.render import default_templates_dir

#: the widths a preview offers: a phone, the email's own, a desktop window
WIDTHS = (375, 600, 1200)


def create_preview_app(settings: Settings, *, host: str = "127.0.0.1") -> FastAPI:
    """The preview app; only requests naming ``host`` (or 127.0.0.1, localhost) are served."""
    courses_dir = settings.courses_dir
    templates_dir = settings.templates_dir or default_templates_dir()
    pages = Jinja2Templates(directory=Path(__file__).parent / "templates")
    changes = Changes(courses_dir, templates_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await changes.close()

    app = FastAPI(
        title="drip preview", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    # Loopback is not enough: a page elsewhere could rebind its own name to 127.0.0.1.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", host])

    def current() -> tuple[Catalog, Composer]:
        catalog = Catalog.from_dir(courses_dir, strict=False)
        tokens = Tokens([secrets.token_urlsafe(32)], confirm_max_age_seconds=3600)
        return catalog, Composer(settings=settings, tokens=tokens)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        try:
            catalog, _ = current()
        except DripError as error:
            return _page(pages, request, "preview/index.html", courses=[], problems=[str(error)])
        return _page(
            pages,
            request,
            "preview/index.html",
            courses=[(course, emails_of(course)) for course in catalog],
            problems=catalog.problems,
        )

    @app.get("/{slug}/{which}", response_class=HTMLResponse)
    def email(request: Request, slug: str, which: str, width: int = 600) -> Response:
        try:
            catalog, composer = current()
        except DripError as error:
            return _page(pages, request, "preview/email.html", 404, problems=[str(error)])
        course = catalog.find(slug)
        if course is None:
            problems = catalog.problems or [f"no course {slug!r} in {courses_dir}"]
            return _page(pages, request, "preview/email.html", 404, problems=problems)
        context: dict[str, Any] = {
            "course": course,
            "which": which,
            "emails": emails_of(course),
            "width": width if width in WIDTHS else 600,
            "widths": WIDTHS,
            "problems": catalog.problems,
        }
        try:
            outgoing = preview(composer=composer, course=course, which=which, now=datetime.now(UTC))
        except DripError as error:
            return _page(pages, request, "preview/email.html", 422, error=str(error), **context)
        message = message_from_bytes(outgoing.data, policy=policy.default)
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        return _page(
            pages,
            request,
            "preview/email.html",
            subject=message["subject"],
            html=html.get_content() if html is not None else "",  # type: ignore[attr-defined]
            text=text.get_content() if text is not None else "",  # type: ignore[attr-defined]
            **context,
        )

    @app.get("/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(
            changes.listen(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    return app


class Changes:
    """One watcher of the files under ``paths`` (an inotify instance, a thread), started
    with the first listener; every listener gets one server-sent event per batch of
    changes. A listener that has not read the last one yet gets no second."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self.listeners: set[asyncio.Queue[None]] = set()
        self._watching: asyncio.Task[None] | None = None

    async def listen(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self.listeners.add(queue)
        if self._watching is None or self._watching.done():
            self._watching = asyncio.create_task(self._watch())
        try:
            yield ": watching\n\n"
            while True:
                await queue.get()
                yield "data: changed\n\n"
        finally:
            self.listeners.discard(queue)

    async def _watch(self) -> None:
        from watchfiles import awatch

        async for _ in awatch(*self.paths):
            for queue in list(self.listeners):
                if queue.empty():
                    queue.put_nowait(None)

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching


def _page(
    pages: Jinja2Templates, request: Request, name: str, status: int = 200, **context: object
) -> Response:
    response = pages.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response
