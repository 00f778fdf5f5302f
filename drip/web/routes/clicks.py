"""``GET /c/{token}``: a lesson's class link. Notes the first click, then redirects to the
class; a link that is not drip's, or whose lesson is gone, leads to the signup page and
never anywhere else."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from drip.core.exceptions import DatabaseBusy, InvalidToken
from drip.core.states import ClickLink
from drip.feedback.clicks import record_click
from drip.web.deps import PageRoute, State

logger = logging.getLogger("drip.web")
router = APIRouter(route_class=PageRoute)


@router.api_route("/c/{token}", methods=["GET", "HEAD"])
async def class_link(token: str, st: State) -> RedirectResponse:
    try:
        uid, slug, day_id = st.tokens.read_click(token)
    except InvalidToken:
        return _redirect("/")
    course = st.catalog.find(slug)
    day = course.day(day_id) if course is not None else None
    if day is None:  # the course or the day was removed since the lesson went out
        return _redirect("/")
    try:
        await st.writes.run(
            partial(
                record_click,
                enrollment_uid=uid,
                day_id=day_id,
                day_number=course.day_number(day_id) if course is not None else None,
                link=ClickLink.CLASS,
                now=datetime.now(UTC),
            )
        )
    except DatabaseBusy:  # the click goes unnoted; the person still gets their class
        logger.warning("event=click-not-recorded reason=database-busy")
    return _redirect(day.class_.url)


def _redirect(url: str) -> RedirectResponse:
    # not cached: every visit comes back here (only the first is counted)
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
