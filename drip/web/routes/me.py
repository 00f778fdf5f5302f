"""``/me/{token}``: the subscriber's own page, linked from every lesson and the
after-course email: her course, how far she is, when the next lesson comes, and buttons
to pause it, resume, start again or have her lessons at another hour
(``drip.lifecycle.controls``). A GET never changes anything (mail scanners fetch every
link); each button posts to ``/me/{token}/{control}`` and is answered with a page that
says what happens next."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.requests import ClientDisconnect

from drip.core.exceptions import InvalidToken
from drip.lifecycle import controls
from drip.lifecycle.controls import Control
from drip.store.engine import READ_ONLY
from drip.web.deps import PageRoute, State, WebState, page, read_body

router = APIRouter(route_class=PageRoute)
#: the pauses the page offers, in mornings
PAUSES = (1, 2, 3, 5, 7, 14, 30)


def _overview(st: WebState, uid: str) -> controls.Overview | None:
    with st.engine.connect() as connection:
        reading = connection.execution_options(**{READ_ONLY: True})
        return controls.overview(
            reading, enrollment_uid=uid, catalog=st.catalog, now=datetime.now(UTC)
        )


@router.get("/me/{token}", response_class=HTMLResponse)
def me(token: str, request: Request, st: State) -> Response:
    try:
        uid = st.tokens.read_me(token)
    except InvalidToken as error:
        return page(st, request, "error.html", 404, message=str(error))
    found = _overview(st, uid)
    if found is None:
        return page(st, request, "error.html", 404, message="this course is no longer here")
    return _page(st, request, token, found)


def _page(
    st: WebState,
    request: Request,
    token: str,
    found: controls.Overview,
    status: int = 200,
    **context: object,
) -> Response:
    response = page(
        st,
        request,
        "me.html",
        status,
        token=token,
        me=found,
        course=found.course,
        pauses=PAUSES,
        unsubscribe=f"/unsubscribe/{st.tokens.unsubscribe_token(found.member.enrollment_uid)}",
        **context,
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response


@router.post("/me/{token}/{control}", response_class=HTMLResponse)
async def act(token: str, control: str, request: Request, st: State) -> Response:
    """One button: pause (``days``), resume, restart or time (``send_at``, HH:MM)."""
    try:
        uid = st.tokens.read_me(token)
        chosen = Control(control)
    except (InvalidToken, ValueError):
        return page(st, request, "error.html", 404, message="this link is not valid")
    try:
        body = await read_body(request)
    except (TimeoutError, ClientDisconnect):
        return Response(status_code=408)
    fields = {k: v[-1] for k, v in parse_qs((body or b"").decode("utf-8", "replace")).items()}
    found = _overview(st, uid)
    if found is None:
        return page(st, request, "error.html", 404, message="this course is no longer here")
    try:
        days, send_at = controls.read_inputs(chosen, fields)
    except ValueError as problem:
        return _page(st, request, token, found, 422, problem=str(problem))
    changed = await st.writes.run(
        partial(
            controls.apply,
            member=found.member,
            course=found.course,
            control=chosen,
            now=datetime.now(UTC),
            days=days,
            send_at=send_at,
        )
    )
    after = _overview(st, uid) or found
    return _page(st, request, token, after, done=chosen.value, changed=changed, days=days)
