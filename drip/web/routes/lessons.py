"""``GET /lessons/{token}``: a lesson's "view in browser" page.

It shows that lesson and links to the other lessons already sent to the same person,
and to no others: a token names one (enrollment, day), and a day not handed to the mail
server for that enrollment is not found, whatever the token says (one being sent is
shown: the token is only in the email, so whoever has it has the email).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from drip.core.exceptions import InvalidToken
from drip.core.links import Links
from drip.core.states import DeliveryStatus
from drip.reporting.outbox import sent_lessons
from drip.sending.render import markdown_html
from drip.store.engine import READ_ONLY
from drip.web.deps import PageRoute, State, page

router = APIRouter(route_class=PageRoute)


@router.get("/lessons/{token}", response_class=HTMLResponse)
def lesson_page(token: str, request: Request, st: State) -> Response:
    try:
        uid, day_id = st.tokens.read_lesson(token)
    except InvalidToken as error:
        return page(st, request, "error.html", 404, message=str(error))
    with st.engine.connect() as connection:
        read = connection.execution_options(**{READ_ONLY: True})
        found = sent_lessons(read, enrollment_uid=uid)
    course = st.catalog.find(found[0]) if found is not None else None
    day = course.day(day_id) if course is not None else None
    if found is None or course is None or day is None or day_id not in found[1]:
        return page(st, request, "error.html", 404, message="this lesson is not available")
    links = Links(st.settings.base_url, st.tokens)
    response = page(
        st,
        request,
        "lesson.html",
        course=course,
        day=day,
        number=course.day_number(day.id),
        body=markdown_html(day.body),
        class_url=links.class_(uid, course, day),
        lessons=[
            (n, other, links.lesson(uid, other.id))
            for n, other in enumerate(course.days, start=1)
            if found[1].get(other.id) == DeliveryStatus.SENT or other.id == day.id
        ],
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response
