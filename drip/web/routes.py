"""HTTP routes: thin adapters that parse input, call drip's services and render a page.

Answers never reveal whether an address was known: every valid signup gets the same
response, whatever the address's state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from drip import enrollment
from drip.compose import Recipient
from drip.courses import Course
from drip.db import session_scope
from drip.exceptions import DripError, ExpiredToken, InvalidSubscriber, InvalidToken
from drip.notify import send_now
from drip.signup import SignupRequest, parse, verify_signature

logger = logging.getLogger("drip.web")
router = APIRouter()
MAX_BODY = 16 * 1024


def state(request: Request) -> Any:
    return request.app.state.drip


State = Annotated[Any, Depends(state)]


def _page(st: Any, request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return st.pages.TemplateResponse(request, name, context, status_code=status)


def _client_ip(st: Any, request: Request) -> str:
    forwarded = request.headers.get("x-forwarded-for")
    if st.settings.trust_forwarded_for and forwarded:
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def _recipient(subscriber: Any, enrolled: Any, course: Course) -> Recipient:
    return Recipient(
        subscriber.email,
        subscriber.name,
        enrolled.uid,
        subscriber.timezone or course.default_timezone,
    )


# -- signup -------------------------------------------------------------------------------


@router.post("/subscribe", response_model=None)
async def subscribe(request: Request, background: BackgroundTasks, st: State) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    browser = content_type == "application/x-www-form-urlencoded"
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        return _error(st, request, browser, 413, "body", "the request body is too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _error(st, request, browser, 413, "body", "the request body is too large")
    secret = st.settings.webhook_secret
    if (
        not browser
        and secret is not None
        and not verify_signature(body, request.headers, secret.get_secret_value())
    ):
        return JSONResponse({"detail": "missing or invalid webhook signature"}, status_code=401)
    retry_after = st.limiter.hit(_client_ip(st, request))
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
        if not form.is_bot:
            _sign_up(st, request, background, form, course)
    except InvalidSubscriber as error:
        return _error(st, request, browser, 422, error.field, str(error), form=form)
    except DripError as error:  # unknown course
        return _error(st, request, browser, 422, "course", str(error), form=form)
    if not browser:
        return JSONResponse({"status": "pending"}, status_code=202)
    target = form.redirect if _allowed_redirect(st, form.redirect) else f"/thanks/{course.slug}"
    return RedirectResponse(target or "/", status_code=303)


def _sign_up(
    st: Any, request: Request, background: BackgroundTasks, form: SignupRequest, course: Course
) -> None:
    now = datetime.now(UTC)
    consent = enrollment.Consent(
        ip=_client_ip(st, request),
        user_agent=request.headers.get("user-agent"),
        source=f"{form.source}:{request.headers.get('referer') or request.headers.get('origin')}",
    )
    for attempt in (1, 2):  # a concurrent signup of the same address may win the insert
        try:
            with session_scope(st.engine) as session:
                result = enrollment.sign_up(
                    session=session,
                    course=course,
                    email=form.email,
                    name=form.name,
                    timezone=form.timezone,
                    consent=consent,
                    now=now,
                    confirm_resend_seconds=st.settings.confirm_resend_seconds,
                )
                if result.send_confirmation:
                    enrollment.mark_confirmation_sent(
                        session=session, subscriber=result.subscriber, now=now
                    )
                recipient = _recipient(result.subscriber, result.enrollment, course)
            break
        except IntegrityError:
            if attempt == 2:
                raise
    if result.send_confirmation:
        message = st.composer.confirmation(course=course, recipient=recipient, now=now)
        background.add_task(send_now, settings=st.settings, message=message, kind="confirm")


def _allowed_redirect(st: Any, target: str | None) -> bool:
    if not target:
        return False
    parts = urlsplit(target)
    origin = f"{parts.scheme}://{parts.netloc}"
    return parts.scheme in ("http", "https") and origin in st.settings.allowed_redirect_origins


def _error(
    st: Any,
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
    return _page(
        st,
        request,
        "signup.html",
        status,
        message=message,
        field=field,
        form=form,
        course=_course_or_none(st, form.course if form else None),
    )


def _course_or_none(st: Any, slug: str | None) -> Course | None:
    try:
        return st.catalog.default(slug or st.settings.default_course)
    except DripError:
        return None


@router.get("/", response_class=HTMLResponse)
def signup_page(request: Request, st: State) -> Response:
    return _page(
        st,
        request,
        "signup.html",
        course=_course_or_none(st, None),
        form=None,
        message=None,
        field=None,
    )


@router.get("/thanks/{slug}", response_class=HTMLResponse)
def thanks(slug: str, request: Request, st: State) -> Response:
    return _page(st, request, "thanks.html", course=_course_or_none(st, slug))


# -- confirmation ------------------------------------------------------------------------


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm(token: str, request: Request, background: BackgroundTasks, st: State) -> Response:
    now = datetime.now(UTC)
    try:
        uid, issued = st.composer.tokens.read_confirm(token)
        with session_scope(st.engine) as session:
            enrolled, subscriber = enrollment.find_enrollment(session=session, uid=uid)
            course = st.catalog.get(enrolled.course_slug)
            first_time = enrolled.status == "pending" or subscriber.status != "active"
            enrollment.confirm(session=session, uid=uid, course=course, issued_at=issued, now=now)
            recipient = _recipient(subscriber, enrolled, course)
    except ExpiredToken:
        return _page(st, request, "expired.html", 410, token=token)
    except DripError as error:
        return _page(st, request, "error.html", 400, message=_token_message(error))
    if first_time and course.welcome_email:
        message = st.composer.welcome(course=course, recipient=recipient, now=now)
        background.add_task(send_now, settings=st.settings, message=message, kind="welcome")
    return _page(st, request, "confirmed.html", course=course)


@router.post("/confirm/{token}/resend", response_class=HTMLResponse)
def resend_confirmation(
    token: str, request: Request, background: BackgroundTasks, st: State
) -> Response:
    """An expired link's "send me a new one" button."""
    now = datetime.now(UTC)
    try:
        st.composer.tokens.read_confirm(token)
        uid = None  # still valid: nothing to resend, the link works
    except ExpiredToken as expired:
        uid = str(expired.payload)
    except InvalidToken as error:
        return _page(st, request, "error.html", 400, message=_token_message(error))
    if uid:
        with session_scope(st.engine) as session:
            try:
                enrolled, subscriber = enrollment.find_enrollment(session=session, uid=uid)
            except InvalidToken as error:
                return _page(st, request, "error.html", 400, message=_token_message(error))
            course = st.catalog.get(enrolled.course_slug)
            due = enrollment.confirmation_due(
                subscriber=subscriber, now=now, min_seconds=st.settings.confirm_resend_seconds
            )
            if subscriber.status == "pending" and due:
                enrollment.mark_confirmation_sent(session=session, subscriber=subscriber, now=now)
                message = st.composer.confirmation(
                    course=course, recipient=_recipient(subscriber, enrolled, course), now=now
                )
                background.add_task(send_now, settings=st.settings, message=message, kind="confirm")
    return _page(st, request, "resent.html")


# -- unsubscribe --------------------------------------------------------------------------


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, request: Request, st: State) -> Response:
    """A one-button page: GET never unsubscribes (mail scanners follow links)."""
    try:
        st.composer.tokens.read_unsubscribe(token)
    except InvalidToken as error:
        return _page(st, request, "error.html", 400, message=_token_message(error))
    return _page(st, request, "unsubscribe.html", token=token)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, request: Request, background: BackgroundTasks, st: State) -> Response:
    """The button, or a mail client's RFC 8058 one-click POST: unsubscribe at once."""
    now = datetime.now(UTC)
    try:
        uid = st.composer.tokens.read_unsubscribe(token)
        with session_scope(st.engine) as session:
            enrolled, subscriber = enrollment.find_enrollment(session=session, uid=uid)
            _, changed = enrollment.unsubscribe(session=session, uid=uid, now=now)
            course = _course_or_none(st, enrolled.course_slug)
            recipient = _recipient(subscriber, enrolled, course) if course else None
    except InvalidToken as error:
        return _page(st, request, "error.html", 400, message=_token_message(error))
    if changed and course and recipient and course.goodbye_email:
        message = st.composer.goodbye(course=course, recipient=recipient, now=now)
        background.add_task(send_now, settings=st.settings, message=message, kind="goodbye")
    return _page(st, request, "unsubscribed.html", course=course)


def _token_message(error: DripError) -> str:
    return str(error) if isinstance(error, InvalidToken) else "this link is not valid"


@router.get("/healthz")
def healthz(st: State) -> JSONResponse:
    try:
        with st.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any database failure means "not healthy"
        logger.warning("event=healthz-failed error=%s", error)
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})
