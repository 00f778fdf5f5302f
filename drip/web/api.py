"""``/api/v1``: the JSON API for other tools (a CRM, a booking system, an automation),
with ``Authorization: Bearer KEY`` (``drip api-keys create``).

A mounted application of its own, so it alone has an OpenAPI document
(``/api/v1/openapi.json``). Every change goes through the operator's actions
(``drip.lifecycle.actions``, ``drip.lifecycle.signup``) as the CLI's and the
dashboard's do. 401 without a valid key, 403 for a change with a read-only key, 404 for
a subscriber or course that is not there, 409 for an address drip will not add back,
422 naming the field, 429 past ``DRIP_API_RATE_PER_MINUTE`` for one key.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy import Connection
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drip import __version__
from drip.core.entries import Entry, clean_timezone, normalize_email
from drip.core.exceptions import DatabaseBusy, InvalidSubscriber, SubscriberNotFound, UnknownCourse
from drip.core.states import SubscriberStatus
from drip.lifecycle import actions, controls
from drip.lifecycle.controls import Control
from drip.lifecycle.signup import Action, Consent, sign_up
from drip.reporting import subscribers
from drip.reporting.stats import funnel
from drip.store import apikeys
from drip.store.apikeys import Caller
from drip.store.engine import READ_ONLY
from drip.web.deps import RETRY_AFTER_SECONDS, WebState
from drip.web.ratelimit import RateLimiter

logger = logging.getLogger("drip.web")
#: most subscribers one page lists
MAX_PAGE = 200
#: the largest request body read (a signup is a few hundred bytes)
MAX_BODY = 64 * 1024
_bearer = HTTPBearer(auto_error=False, description="A key from `drip api-keys create`.")


class _Gate:
    """Before a body is read: a request with no Bearer key is a 401 (nothing is parsed for
    a stranger), and a body over ``MAX_BODY`` a 413, declared or streamed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"]).removeprefix(str(scope.get("root_path", "")))
        if scope["type"] != "http" or path == "/openapi.json":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not headers.get("authorization", "").lower().startswith("bearer "):
            response: Response = JSONResponse(
                {"detail": "send a key as `Authorization: Bearer KEY`"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="drip"'},
            )
            await response(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            await _too_large(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise _TooLarge
            return message

        try:
            await self.app(scope, bounded, send)
        except _TooLarge:
            await _too_large(scope, receive, send)


class _TooLarge(HTTPException):
    """Raised while the body streams in: FastAPI lets an HTTPException through as it is."""

    def __init__(self) -> None:
        super().__init__(413, f"the body is over {MAX_BODY // 1024} KiB")


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    answer = JSONResponse({"detail": f"the body is over {MAX_BODY // 1024} KiB"}, status_code=413)
    await answer(scope, receive, send)


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.drip
    return state


State = Annotated[WebState, Depends(_state)]


async def _caller(
    request: Request,
    st: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _refused(401, "send a key as `Authorization: Bearer KEY`")
    with st.engine.connect() as connection:
        found = apikeys.find(
            connection.execution_options(**{READ_ONLY: True}), credentials.credentials
        )
    if found is None:
        raise _refused(401, "this key is not valid (revoked, or never issued)")
    caller, last_used = found
    limiter: RateLimiter = request.app.state.limiter
    retry_after = limiter.hit(str(caller.key_id))
    if retry_after:
        raise HTTPException(
            429, "too many requests with this key", {"Retry-After": str(int(retry_after) + 1)}
        )
    now = datetime.now(UTC)
    if apikeys.stale(last_used, now):
        await st.writes.run(partial(apikeys.touch, key_id=caller.key_id, now=now))
    return caller


def _refused(status: int, detail: str) -> HTTPException:
    headers = {"WWW-Authenticate": 'Bearer realm="drip"'} if status == 401 else None
    return HTTPException(status, detail, headers)


Reader = Annotated[Caller, Depends(_caller)]


async def _writer(caller: Reader) -> Caller:
    if caller.read_only:
        raise _refused(403, "this key is read-only")
    return caller


Writer = Annotated[Caller, Depends(_writer)]


@contextmanager
def _reading(st: WebState) -> Iterator[Connection]:
    with st.engine.connect() as connection:
        yield connection.execution_options(**{READ_ONLY: True})


# -- the documents -------------------------------------------------------------------------


class SubscriberIn(BaseModel):
    """A signup, as ``POST /subscribe`` takes it, from a tool that may hold consent."""

    model_config = ConfigDict(extra="forbid")

    email: StrictStr = Field(max_length=320)
    name: StrictStr = Field(default="", max_length=500)
    #: the course's slug; default: ``DRIP_DEFAULT_COURSE`` or the only course
    course: StrictStr | None = Field(default=None, max_length=100)
    #: an IANA zone (``Europe/Madrid``); default: the course's
    timezone: StrictStr | None = Field(default=None, max_length=64)
    #: true when the caller holds the person's consent: enrolled at once, no confirmation
    #: email (recorded as consent from ``api:KEY NAME``); false: a confirmation is queued
    confirmed: StrictBool = False


class ControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: mornings without a lesson (pause), 1 to 30
    days: StrictInt | None = None
    #: the subscriber's own local hour for lessons (time), HH:MM
    send_at: StrictStr | None = None


# -- the routes ----------------------------------------------------------------------------


def make_api(state: WebState) -> FastAPI:
    api = FastAPI(
        title="drip API",
        version=__version__,
        description=__doc__,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    api.state.drip = state
    api.state.limiter = RateLimiter(limit=state.settings.api_rate_per_minute)
    api.add_middleware(_Gate)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        # where and what, never the value sent back (it may not even be JSON: NaN, a
        # lone surrogate)
        problems = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in error.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(problems)}, status_code=422)

    @api.exception_handler(Exception)
    async def _crash(request: Request, error: Exception) -> Response:
        logger.exception("event=api-error path=%s", request.url.path)
        return JSONResponse({"detail": "internal error: see drip's log"}, status_code=500)

    @api.exception_handler(DatabaseBusy)
    async def _busy(request: Request, error: DatabaseBusy) -> Response:
        return JSONResponse(
            {"detail": "the database is busy, try again shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @api.get("/subscribers")
    def list_subscribers(
        st: State,
        caller: Reader,
        email: str | None = None,
        course: str | None = None,
        status: Literal["pending", "active", "unsubscribed", "suppressed"] | None = None,
        cursor: Annotated[str | None, Query(description="`next` of the page before")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        """Subscribers in signup order, `limit` at a time; `next` is the cursor of the
        page after, null on the last one."""
        if email is not None:
            try:
                normalize_email(email)
            except InvalidSubscriber as error:
                raise HTTPException(422, [_problem("query", "email", str(error))]) from None
        with _reading(st) as connection:
            items, last = subscribers.api_page(
                connection,
                after=_read_cursor(cursor),
                limit=limit,
                email=email,
                course=course,
                status=status,
            )
        return {"items": items, "next": _cursor(last) if last is not None else None}

    @api.get("/subscribers/{subscriber_id}")
    def get_subscriber(subscriber_id: str, st: State, caller: Reader) -> dict[str, Any]:
        with _reading(st) as connection:
            return _found(partial(subscribers.api_one, connection, uid=subscriber_id))

    @api.post("/subscribers", status_code=201)
    async def add_subscriber(body: SubscriberIn, st: State, caller: Writer) -> Response:
        """Sign someone up, as the CLI's `drip subscribers add` does: pending with a
        confirmation email queued, or with `"confirmed": true` enrolled at once. Nobody
        who unsubscribed or was suppressed is added back (409). 201 for a new address,
        200 for one already known."""
        try:
            entry = Entry.clean(email=body.email, name=body.name, timezone=body.timezone)
            if body.timezone and clean_timezone(body.timezone) is None:
                raise InvalidSubscriber("unknown IANA time zone", field="timezone")
            course = st.catalog.default(body.course or st.settings.default_course)
        except InvalidSubscriber as error:
            return _invalid_field(error.field, str(error))
        except UnknownCourse as error:
            return _invalid_field("course", str(error))
        # the caller's address is not the person's: the consent is the key's name alone
        consent = Consent(source=f"api:{caller.name}")
        [result] = await st.writes.run(
            partial(
                sign_up,
                course=course,
                entries=[entry],
                consent=consent,
                by_operator=True,
                confirmed=body.confirmed,
                resend_gap_seconds=st.settings.confirm_resend_seconds,
                now=datetime.now(UTC),
            )
        )
        st.prompt.wake()
        if result.action == Action.NOTHING and result.was in (
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.SUPPRESSED,
        ):
            return JSONResponse(
                {"detail": f"this address is {result.was}: drip does not add it back"},
                status_code=409,
            )
        with _reading(st) as connection:
            view = subscribers.api_one(connection, email=entry.email)
        return JSONResponse(
            {"action": result.action.value, "subscriber": view},
            status_code=201 if result.was is None else 200,
        )

    @api.delete("/subscribers/{subscriber_id}", status_code=204)
    async def delete_subscriber(subscriber_id: str, st: State, caller: Writer) -> Response:
        """Erase a subscriber and their whole history (the right to erasure)."""
        await _act(st, subscriber_id, actions.delete)
        return Response(status_code=204)

    @api.post("/subscribers/{subscriber_id}/unsubscribe")
    async def unsubscribe(subscriber_id: str, st: State, caller: Writer) -> dict[str, Any]:
        """Unsubscribe as their own link would: every email not yet sent is cancelled,
        the course's goodbye email queued when it has one."""
        changed = await _act(
            st,
            subscriber_id,
            partial(actions.unsubscribe, catalog=st.catalog, now=datetime.now(UTC)),
        )
        with _reading(st) as connection:
            view = subscribers.api_one(connection, uid=subscriber_id)
        return {"changed": changed, "subscriber": view}

    @api.post("/subscribers/{subscriber_id}/{control}")
    async def control(
        subscriber_id: str,
        control: Literal["pause", "resume", "restart", "time"],
        st: State,
        caller: Writer,
        body: ControlIn | None = None,
    ) -> Response:
        """Their own controls, on the course they joined last: `pause` (`days`),
        `resume`, `restart`, `time` (`send_at`, HH:MM)."""
        chosen = Control(control)
        given = body or ControlIn()
        fields = {
            "days": "" if given.days is None else str(given.days),
            "send_at": given.send_at or "",
        }
        try:
            days, send_at = controls.read_inputs(chosen, fields)
        except InvalidSubscriber as error:
            return _invalid_field(error.field, str(error))
        changed = await _act(
            st,
            subscriber_id,
            partial(
                actions.control,
                catalog=st.catalog,
                control=chosen,
                now=datetime.now(UTC),
                days=days,
                send_at=send_at,
            ),
        )
        if changed.refused:
            return JSONResponse({"detail": changed.refused}, status_code=409)
        plan = changed.next_lesson
        return JSONResponse(
            jsonable_encoder(
                {
                    "changed": changed.changed,
                    "next_lesson": None
                    if plan is None
                    else {"day": plan.day_id, "due_at": plan.due_at},
                }
            )
        )

    @api.get("/courses")
    def list_courses(st: State, caller: Reader) -> dict[str, Any]:
        return {
            "items": [
                {
                    "slug": course.slug,
                    "title": course.title,
                    "description": course.description,
                    "days": [{"id": day.id, "subject": day.subject} for day in course.days],
                    "send_at": course.send_at.strftime("%H:%M"),
                    "timezone": course.default_timezone,
                    "double_opt_in": course.double_opt_in,
                }
                for course in st.catalog
            ]
        }

    @api.get("/courses/{slug}/stats")
    def course_stats(slug: str, st: State, caller: Reader) -> dict[str, Any]:
        """The course's funnel, as `drip stats COURSE --json` prints it."""
        course = st.catalog.find(slug)
        if course is None:
            raise HTTPException(404, f"no course {slug!r}")
        with st.engine.connect() as connection:
            return funnel(connection.execution_options(**{READ_ONLY: True}), course)

    return api


async def _act(st: WebState, uid: str, action: Callable[..., Any]) -> Any:
    """An operator action on the subscriber ``uid`` through the writer; the sender woken
    for what it queued."""

    def work(connection: Connection) -> Any:
        return action(connection, subscriber=actions.find(connection, uid=uid))

    try:
        done = await st.writes.run(work)
    except SubscriberNotFound as error:
        raise HTTPException(404, str(error)) from None
    st.prompt.wake()
    return done


def _found(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except SubscriberNotFound as error:
        raise HTTPException(404, str(error)) from None


def _problem(where: str, field: str, message: str) -> dict[str, Any]:
    """One 422 problem, as FastAPI words its own."""
    return {"loc": [where, field], "msg": message, "type": "value_error"}


def _invalid_field(field: str, message: str) -> Response:
    return JSONResponse({"detail": [_problem("body", field, message)]}, status_code=422)


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def _read_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "after" and value.isdigit() and len(value) < 19:
            return int(value)
    except ValueError:
        pass
    detail = [
        {"loc": ["query", "cursor"], "msg": "not a cursor this API gave", "type": "value_error"}
    ]
    raise HTTPException(422, detail)
