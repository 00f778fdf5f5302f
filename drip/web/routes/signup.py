"""``POST /subscribe`` and the pages around it: the signup form and the thank-you page.

Every valid signup gets the same answer, whatever the address's state, and the request
does the same work for each: it records the signup and wakes the prompt sender, which
files it (``drip.lifecycle.signup``). Nothing tells a known address from a new one.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import partial
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import ClientDisconnect

from drip.core.entries import Entry
from drip.core.exceptions import InvalidSubscriber, UnknownCourse
from drip.lifecycle.forms import SignupRequest, parse, verify
from drip.lifecycle.signup import Consent, record
from drip.web.deps import PageRoute, State, WebState, client_ip, page, read_body

logger = logging.getLogger("drip.web")
router = APIRouter(route_class=PageRoute)


@router.post("/subscribe", response_model=None)
async def subscribe(request: Request, st: State) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    browser = content_type == "application/x-www-form-urlencoded"
    try:
        body = await read_body(request)
    except TimeoutError:
        return _error(st, request, browser, 408, "body", "the request body came too slowly")
    except ClientDisconnect:
        logger.info("event=client-disconnected path=/subscribe")
        return Response(status_code=400)  # nobody is listening any more
    if body is None:
        return _error(st, request, browser, 413, "body", "the request body is too large")
    secret = st.settings.webhook_secret
    if (
        not browser
        and secret is not None
        and not verify(body, request.headers, secret.get_secret_value(), now=time.time())
    ):
        return JSONResponse({"detail": "missing or invalid webhook signature"}, status_code=401)
    retry_after = st.limiter.hit(client_ip(st, request))
    if retry_after:
        return JSONResponse(
            {"detail": "too many signups from this address, try again later"},
            status_code=429,
            headers={"Retry-After": str(int(retry_after) + 1)},
        )
    form: SignupRequest | None = None
    try:
        form = parse(body, content_type)
        course = st.catalog.default(form.course or st.settings.default_course)
        entry = Entry.clean(email=form.email, name=form.name, timezone=form.timezone)
    except InvalidSubscriber as error:
        return _error(st, request, browser, 422, error.field, str(error), form=form)
    except UnknownCourse as error:
        return _error(st, request, browser, 422, "course", str(error), form=form)
    if not form.is_bot and not st.events.seen(form.event_id):
        origin = request.headers.get("referer") or request.headers.get("origin")
        consent = Consent(
            source=f"{form.source}:{origin}" if origin else form.source,
            ip=client_ip(st, request),
            user_agent=(request.headers.get("user-agent") or "")[:512] or None,
        )
        await st.writes.run(
            partial(record, course=course, entry=entry, consent=consent, now=datetime.now(UTC))
        )
        st.events.add(form.event_id)
        st.prompt.wake()
    if not browser:
        return JSONResponse({"status": "pending"}, status_code=202)
    target = form.redirect if _allowed_redirect(st, form.redirect) else f"/thanks/{course.slug}"
    return RedirectResponse(target or "/", status_code=303)


def _allowed_redirect(st: WebState, target: str | None) -> bool:
    if not target:
        return False
    parts = urlsplit(target)  # the settings hold only http(s) origins
    return f"{parts.scheme}://{parts.netloc}".lower() in st.settings.allowed_redirect_origins


def _error(
    st: WebState,
    request: Request,
    browser: bool,
    status: int,
    field: str,
    message: str,
    form: SignupRequest | None = None,
) -> Response:
    if not browser:
        detail = [{"loc": ["body", field], "msg": message, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=status)
    return page(
        st,
        request,
        "signup.html",
        status,
        message=message,
        field=field,
        form=form,
        course=st.course_or_none(form.course if form else None),
        courses=list(st.catalog),
    )


@router.get("/", response_class=HTMLResponse)
def signup_page(request: Request, st: State) -> Response:
    return page(
        st,
        request,
        "signup.html",
        course=st.course_or_none(None),
        courses=list(st.catalog),  # to choose from when no course is the default
        form=None,
        message=None,
        field=None,
    )


@router.get("/thanks/{slug}", response_class=HTMLResponse)
def thanks(slug: str, request: Request, st: State) -> Response:
    return page(st, request, "thanks.html", course=st.course_or_none(slug))
