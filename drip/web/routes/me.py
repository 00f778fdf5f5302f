"""``/me/{token}``: the subscriber's own page, linked from every lesson and the
after-course email: her course, how far she is, when the next lesson comes, and buttons
to pause it, resume, start again or have her lessons at another hour
(``drip.lifecycle.controls``). A GET never changes anything (mail scanners fetch every
link); each button posts to ``/me/{token}/{control}`` and is answered with a page that
says what happens next."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from functools import partial
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.requests import ClientDisconnect

from drip.core.exceptions import InvalidToken
from drip.lifecycle import controls
from drip.lifecycle.controls import MAX_PAUSE_DAYS, Control
from drip.store.engine import READ_ONLY
from drip.web.deps import PageRoute, State, WebState, page, read_body

router = APIRouter(route_class=PageRoute)
#: the pauses the page offers, in mornings
PAUSES = (1, 2, 3, 5, 7, 14, 30)
_HOUR = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


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
    days, send_at, problem = _inputs(chosen, fields)
    if problem is not None:
        return _page(st, request, token, found, 422, problem=problem)
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


def _inputs(control: Control, fields: dict[str, str]) -> tuple[int | None, time | None, str | None]:
    """(days, send_at, what is wrong with them) for ``control``."""
    if control == Control.PAUSE:
        raw = fields.get("days", "").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAUSE_DAYS:
            return None, None, f"days: choose a pause of 1 to {MAX_PAUSE_DAYS} mornings"
        return int(raw), None, None
    if control == Control.TIME:
        match = _HOUR.fullmatch(fields.get("send_at", "").strip())
        if match is None:
            return None, None, "send_at: give a time as HH:MM, e.g. 18:30"
        return None, time(int(match[1]), int(match[2])), None
    return None, None, None
