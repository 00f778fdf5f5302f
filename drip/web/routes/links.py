"""The links in emails: confirmation and unsubscribe.

A GET only shows a page with one button (mail-security scanners fetch every link, so a
GET must never confirm or unsubscribe); the button's POST acts, idempotently. RFC 8058
one-click unsubscribe is the same POST, sent by the mail client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.requests import ClientDisconnect

from drip.core.entries import normalize_email
from drip.core.exceptions import ExpiredToken, InvalidSubscriber, InvalidToken, StaleToken
from drip.lifecycle import enrollment
from drip.lifecycle.forms import parse
from drip.web.deps import PageRoute, State, WebState, client_ip, page, read_body

router = APIRouter(route_class=PageRoute)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(token: str, request: Request, st: State) -> Response:
    """A page with one button; following the link alone confirms nothing."""
    try:
        st.tokens.read_confirm(token)
    except ExpiredToken as error:
        return _expired(st, request, token, error)
    except InvalidToken as error:
        return page(st, request, "error.html", 400, message=str(error))
    return page(st, request, "confirm.html", token=token, course=None)


@router.post("/confirm/{token}", response_class=HTMLResponse)
async def confirm(token: str, request: Request, st: State) -> Response:
    """The button: enrol (day 1 is due at once), idempotently."""
    try:
        signup_uid, issued = st.tokens.read_confirm(token)
        confirmed = await st.writes.run(
            partial(
                enrollment.confirm,
                signup_uid=signup_uid,
                issued_at=issued,
                catalog=st.catalog,
                now=datetime.now(UTC),
            )
        )
    except ExpiredToken as error:
        return _expired(st, request, token, error)
    except InvalidToken as error:
        return page(st, request, "error.html", 400, message=str(error))
    st.prompt.wake(enrollment_id=confirmed.enrollment_id)  # day 1 now, as the page says
    plan = confirmed.next_lesson
    when = None
    if plan is not None and plan.due_at is not None and plan.day_id is not None:
        due = plan.due_at.astimezone(confirmed.zone)
        soon = plan.due_at <= datetime.now(UTC) + timedelta(minutes=1)
        when = {
            "day": confirmed.course.day_number(plan.day_id),
            "now": soon,
            "local": f"{due:%A %-d %B at %H:%M} ({confirmed.zone.key} time)",
        }
    return page(
        st,
        request,
        "confirmed.html",
        course=confirmed.course,
        changed=confirmed.changed,
        next_lesson=when,
    )


@router.post("/confirm/{token}/resend", response_class=HTMLResponse)
async def resend_confirmation(token: str, request: Request, st: State) -> Response:
    """An expired or stale link's "send me a new one" button. The answer is the same
    whether or not a new link was queued."""
    try:
        signup_uid = st.tokens.read_confirm_any_age(token)
        await st.writes.run(
            partial(
                enrollment.resend_for_link,
                signup_uid=signup_uid,
                now=datetime.now(UTC),
                gap_seconds=st.settings.confirm_resend_seconds,
            )
        )
    except InvalidToken as error:
        return page(st, request, "error.html", 400, message=str(error))
    st.prompt.wake()
    return page(st, request, "resent.html")


def _expired(st: WebState, request: Request, token: str, error: ExpiredToken) -> Response:
    # A link older than an unsubscribe gets no fresh one: only a new signup brings back
    # someone who left (drip.lifecycle.enrollment.resend_for_link).
    resend = not isinstance(error, StaleToken)
    return page(st, request, "expired.html", 410, token=token, reason=str(error), resend=resend)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, request: Request, st: State) -> Response:
    """A one-button page: GET never unsubscribes (mail scanners follow links). A link
    that does not verify (damaged, or signed with a key since lost) offers to email a
    fresh one instead of a dead end."""
    try:
        st.tokens.read_unsubscribe(token)
    except InvalidToken as error:
        return page(st, request, "unsubscribe-lookup.html", 400, message=str(error))
    return page(st, request, "unsubscribe.html", token=token)


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_by_address(request: Request, st: State) -> Response:
    """The lookup page's form: email a fresh unsubscribe link to the address typed, if it
    is on a course. The answer is the same either way."""
    retry_after = st.limiter.hit(client_ip(st, request))
    if retry_after:
        return page(st, request, "unsubscribe-lookup.html", 429, message="too many tries")
    try:
        body = await read_body(request)
        form = parse(body or b"", "application/x-www-form-urlencoded")
        email = normalize_email(form.email)
    except (TimeoutError, ClientDisconnect):
        return Response(status_code=408)
    except InvalidSubscriber as error:
        return page(st, request, "unsubscribe-lookup.html", 422, message=str(error))
    await st.writes.run(
        partial(enrollment.send_unsubscribe_link, email=email, now=datetime.now(UTC))
    )
    st.prompt.wake()
    return page(st, request, "unsubscribe-lookup.html", sent=True)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, st: State) -> Response:
    """The button, or a mail client's RFC 8058 one-click POST: unsubscribe at once."""
    try:
        uid = st.tokens.read_unsubscribe(token)
        left = await st.writes.run(
            partial(
                enrollment.unsubscribe,
                enrollment_uid=uid,
                catalog=st.catalog,
                now=datetime.now(UTC),
            )
        )
    except InvalidToken as error:
        return page(st, request, "unsubscribe-lookup.html", 400, message=str(error))
    st.prompt.wake()
    return page(st, request, "unsubscribed.html", course=left.course)
