"""What every route shares: the app's state as a typed dependency, pages, the client IP."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from drip.core.config import Settings
from drip.core.courses import Catalog, Course
from drip.core.exceptions import DripError
from drip.core.tokens import Tokens
from drip.sending.engine import Sender
from drip.sending.loop import PromptSender
from drip.web.ratelimit import RateLimiter
from drip.web.writes import WriteGate

if TYPE_CHECKING:
    from drip.web.admin.auth import Gate


class PageRoute(APIRoute):
    """A route that answers HEAD wherever it answers GET (the same headers, no body: the
    server drops it), as a web page should."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods and "GET" in self.methods:
            self.methods.add("HEAD")


@dataclass
class WebState:
    settings: Settings
    #: for reads (``READ_ONLY``) and, through ``writes``, for writes
    engine: Engine
    catalog: Catalog
    tokens: Tokens
    limiter: RateLimiter
    pages: Jinja2Templates
    writes: WriteGate
    #: sends what a request queued (confirmation, welcome, goodbye) within moments
    prompt: PromptSender
    #: every sender of this process (the prompt one, and the lessons' with --scheduler)
    senders: list[Sender]
    #: the dashboard's cookies and login limit
    admin: Gate
    #: form-service event ids seen lately (a replayed delivery is answered, not stored)
    events: RecentEvents = field(default_factory=lambda: RecentEvents(10_000))

    def stop_sending(self) -> None:
        """Claim nothing more: each run in progress settles its messages in flight,
        records them and gives back the rest (the first SIGINT or SIGTERM)."""
        for sender in self.senders:
            sender.stopping.set()

    def course_or_none(self, slug: str | None) -> Course | None:
        try:
            return self.catalog.default(slug or self.settings.default_course)
        except DripError:
            return None


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.drip
    return state


State = Annotated[WebState, Depends(_state)]


def page(st: WebState, request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return st.pages.TemplateResponse(request, name, context, status_code=status)


#: what a 503 for a busy database asks a client to wait, in seconds
RETRY_AFTER_SECONDS = 5
MAX_BODY = 16 * 1024
#: how long a client may take to send its body (nginx's client_body_timeout is 60 s)
BODY_SECONDS = 30.0


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None when it is larger than ``limit``; ``TimeoutError``
    when it takes longer than ``BODY_SECONDS`` to arrive."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = b""
    async with asyncio.timeout(BODY_SECONDS):
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
    return body


def client_ip(st: WebState, request: Request) -> str:
    """The client's address. Behind a proxy (``DRIP_TRUST_FORWARDED_FOR``), the last
    ``X-Forwarded-For`` entry: the one the proxy itself appended; entries before it
    are whatever the client wrote."""
    forwarded = request.headers.get("x-forwarded-for")
    if st.settings.trust_forwarded_for and forwarded:
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.client.host if request.client else "unknown"


class RecentEvents:
    """The last ``size`` event ids seen, oldest forgotten first (one web process)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str | None) -> bool:
        return event_id is not None and event_id in self._seen

    def add(self, event_id: str | None) -> None:
        """Remember ``event_id`` (once its signup is stored: a failed one may be retried)."""
        if event_id is None:
            return
        self._seen[event_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
