"""The FastAPI application factory: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drip.core.config import Settings
from drip.core.courses import Catalog
from drip.core.exceptions import DatabaseBusy
from drip.runner import make_sender
from drip.sending.compose import Composer
from drip.sending.engine import Throttle
from drip.sending.loop import PromptSender, WebhookLoop, make_scheduler, stop
from drip.sending.webhooks import Dispatcher
from drip.store.engine import engine_for
from drip.store.keys import check_key
from drip.web import admin
from drip.web.api import make_api
from drip.web.deps import RETRY_AFTER_SECONDS, WebState, page
from drip.web.ratelimit import RateLimiter
from drip.web.routes import router
from drip.web.writes import WriteGate


class SecurityHeaders:
    """Django's defaults on every response: no MIME sniffing, no framing, referrers kept
    on the site, no shared browsing context with other sites."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: Settings, *, scheduler: bool = False, new_key: bool = False) -> FastAPI:
    """The web app. Emails its requests queue are sent by an in-process prompt sender;
    with ``scheduler`` it also runs the lesson send loop (``drip run``) in-process.
    ``new_key`` accepts a signing key that cannot verify links already sent."""
    engine = engine_for(settings)
    check_key(engine, settings.secret_keys(), accept_new=new_key)
    sending = engine_for(settings, migrate=False)  # senders never take the web's connections
    catalog = Catalog.from_dir(settings.courses_dir, strict=False)
    composer = Composer(settings=settings)
    throttle = Throttle(settings.send_rate)  # DRIP_SEND_RATE holds across both senders
    posting = WebhookLoop(Dispatcher(sending))
    prompt = PromptSender(
        make_sender(
            engine=sending,
            # one connection, in the prompt thread itself: what a visitor waits for is
            # a few emails at a time, and every extra thread competes with requests
            settings=settings.model_copy(update={"smtp_connections": 1}),
            catalog=catalog,
            composer=composer,
            throttle=throttle,
            transactional_only=True,
        ),
        idle_seconds=settings.send_interval_seconds,
        after_run=posting.wake,
    )
    senders = [prompt.sender]
    if scheduler:
        lessons = make_sender(
            engine=sending, settings=settings, catalog=catalog, composer=composer, throttle=throttle
        )
        senders.append(lessons)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prompt.start()
        prompt.wake()  # anything queued before a restart
        posting.start()
        loop = None
        if scheduler:
            loop = make_scheduler(
                lessons, interval_seconds=settings.send_interval_seconds, background=True
            )
            loop.start()
        try:
            yield
        finally:
            prompt.stop()
            posting.stop()
            if loop is not None:
                stop(loop, lessons)
            sending.dispose()
            engine.dispose()

    app = FastAPI(title="drip", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.drip = WebState(
        settings=settings,
        engine=engine,
        catalog=catalog,
        tokens=composer.tokens,
        limiter=RateLimiter(limit=settings.signup_rate_per_minute),
        pages=_pages(),
        writes=WriteGate(engine, wait_seconds=settings.db_wait_seconds),
        prompt=prompt,
        senders=senders,
        admin=admin.Gate(settings.secret_keys(), secure=settings.base_url.startswith("https://")),
    )

    # Starlette's own trailing-slash redirect builds its Location from the Host header a
    # client sends; this one stays on the same origin whatever the client claims.
    app.router.redirect_slashes = False

    @app.exception_handler(StarletteHTTPException)
    async def _not_found(request: Request, error: StarletteHTTPException) -> Response:
        path = request.url.path
        if error.status_code == 404 and len(path) > 1 and path.endswith("/"):
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(path.rstrip("/") + query, status_code=307)
        return await http_exception_handler(request, error)

    @app.exception_handler(DatabaseBusy)
    async def _busy(request: Request, error: DatabaseBusy) -> Response:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if "text/html" in request.headers.get("accept", ""):
            response = page(app.state.drip, request, "busy.html", 503)
            response.headers.update(headers)
            return response
        return JSONResponse({"detail": str(error)}, status_code=503, headers=headers)

    app.add_middleware(SecurityHeaders)
    if settings.allowed_redirect_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_redirect_origins,
            allow_methods=["POST"],
            allow_headers=["Content-Type"],
        )
    app.include_router(router)
    app.mount("/api/v1", make_api(app.state.drip))
    admin.install(app)
    return app


def _pages() -> Jinja2Templates:
    """The page templates, loaded once now: no file is read on the event loop later."""
    pages = Jinja2Templates(directory=Path(__file__).parent / "templates")
    pages.env.auto_reload = False
    for name in pages.env.list_templates():
        pages.env.get_template(name)
    return pages
