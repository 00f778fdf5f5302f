"""The FastAPI application factory: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from drip.compose import Composer
from drip.config import Settings
from drip.courses import Catalog
from drip.db import engine_for
from drip.engine import Sender
from drip.loop import make_scheduler, stop
from drip.ratelimit import RateLimiter
from drip.web import routes


@dataclass
class WebState:
    settings: Settings
    engine: Engine
    catalog: Catalog
    composer: Composer
    limiter: RateLimiter
    pages: Jinja2Templates


def create_app(settings: Settings, *, scheduler: bool = False) -> FastAPI:
    """The web app; with ``scheduler`` it also runs the send loop in-process."""
    engine = engine_for(settings)
    catalog = Catalog.from_dir(settings.courses_dir)
    composer = Composer(settings=settings)
    pages = Jinja2Templates(directory=Path(__file__).parent / "templates")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not scheduler:
            yield
            return
        sender = Sender(engine=engine, settings=settings, catalog=catalog, composer=composer)
        loop = make_scheduler(
            sender, interval_seconds=settings.send_interval_seconds, background=True
        )
        loop.start()
        try:
            yield
        finally:
            stop(loop, sender)

    app = FastAPI(title="drip", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.drip = WebState(
        settings=settings,
        engine=engine,
        catalog=catalog,
        composer=composer,
        limiter=RateLimiter(limit=settings.signup_rate_per_minute),
        pages=pages,
    )
    if settings.allowed_redirect_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_redirect_origins,
            allow_methods=["POST"],
            allow_headers=["Content-Type"],
        )
    app.include_router(routes.router)
    return app
