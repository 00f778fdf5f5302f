"""The dashboard's pages: sign in and out, the overview, subscribers, a course's emails.

Every page needs a signed-in session and, until a password is set, answers 404 as any
unknown URL does. A page reads through a read-only transaction; an action goes through
the web tier's writer and only queues email, as every route does (``drip.web.routes``),
except a test send, which belongs to no subscriber and goes straight to the mail server.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection
from starlette.requests import ClientDisconnect

from drip.core.courses import Course
from drip.core.exceptions import DripError, SubscriberNotFound
from drip.core.tokens import Tokens
from drip.lifecycle import actions, controls
from drip.lifecycle.controls import MAX_PAUSE_DAYS, Control
from drip.reporting import dashboard, webhooks
from drip.reporting.stats import controls_line
from drip.sending.compose import Composer, emails_of, preview
from drip.sending.testsend import send_test
from drip.store import passwords
from drip.store.engine import READ_ONLY
from drip.web.admin.auth import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Admin, new_nonce
from drip.web.admin.charts import funnel_chart, signups_chart
from drip.web.deps import PageRoute, State, WebState, client_ip, page, read_body

router = APIRouter(prefix="/admin", route_class=PageRoute)

#: preview widths: a phone's and a desktop's
WIDTHS = (375, 1200)
#: what an action's redirect may announce (``?done=``): fixed texts, nothing echoed
DONE = {
    "unsubscribed": "Unsubscribed: every email not yet sent is cancelled.",
    "already-left": "Nothing changed: they had already left.",
    "suppressed": "Suppressed: nothing more will be sent to this address.",
    "already-suppressed": "Nothing changed: the address was already suppressed.",
    "resent": "A fresh confirmation email is queued.",
    "not-pending": "Nothing queued: they are not waiting for a confirmation.",
    "confirm-delete": "Not deleted: tick the box to confirm.",
    "deleted": "Deleted, with their whole history.",
    "paused": "Paused: their next lesson moves past the pause, the others follow one a day.",
    "resumed": "Resumed: their next lesson goes on the next allowed morning.",
    "restarted": "Restarted: day 1 again on the next allowed morning, one lesson a day.",
    "moved": "Their lessons now come at the new hour, in their own time zone.",
    "unchanged": "Nothing changed: that was already so.",
    "refused": "Nothing changed: they are not receiving a course now (pending, left or "
    "suppressed), or they have had every lesson, when only a restart applies.",
    "bad-days": f"Not paused: choose 1 to {MAX_PAUSE_DAYS} mornings.",
    "bad-time": "Not changed: give the hour as HH:MM.",
}


class Refused(Exception):
    """A dashboard request answered with a page saying why (``install`` renders it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _password_hash(st: State) -> str:
    """The password hash in force; 404 while there is none: the dashboard does not exist."""
    with _reading(st) as connection:
        found = passwords.current_hash(st.settings, connection)
    if found is None:
        raise HTTPException(status_code=404)
    return found


PasswordHash = Annotated[str, Depends(_password_hash)]


def _session(request: Request, st: WebState, password_hash: str) -> Admin | None:
    """The request's session, if its cookie is good and it was not signed out."""
    with _reading(st) as connection:
        gone = passwords.signed_out(connection, now=datetime.now(UTC))
    return st.admin.read_session(request.cookies.get(SESSION_COOKIE), password_hash, gone)


def _signed_in(request: Request, st: State, password_hash: PasswordHash) -> Admin:
    admin = _session(request, st, password_hash)
    if admin is None:
        raise HTTPException(status_code=303, headers={"Location": "/admin/login"})
    return admin


SignedIn = Annotated[Admin, Depends(_signed_in)]


@contextmanager
def _reading(st: WebState) -> Iterator[Connection]:
    with st.engine.connect() as connection:
        yield connection.execution_options(**{READ_ONLY: True})


def _page(st: WebState, request: Request, name: str, status: int = 200, **context: Any) -> Response:
    response = page(st, request, f"admin/{name}", status, **context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _form(
    request: Request, st: WebState, *, purpose: str, nonce: str | None
) -> dict[str, str]:
    """The posted form, once its ``csrf`` field proves it came from our own page."""
    try:
        body = await read_body(request)
    except (TimeoutError, ClientDisconnect):
        raise Refused(408, "The form came too slowly.") from None
    if body is None:
        raise Refused(413, "The form is too large.")
    fields = {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}
    if not st.admin.csrf_ok(purpose, nonce, fields.get("csrf")):
        raise Refused(403, "This form is out of date: reload the page and try again.")
    return fields


# -- signing in --------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, st: State, password_hash: PasswordHash) -> Response:
    if _session(request, st, password_hash):
        return RedirectResponse("/admin", status_code=303)
    return _login_form(st, request)


def _login_form(
    st: WebState, request: Request, status: int = 200, message: str | None = None
) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or new_nonce()
    response = _page(
        st, request, "login.html", status, csrf=st.admin.csrf_token("login", nonce), message=message
    )
    st.admin.set_cookie(response, LOGIN_COOKIE, nonce)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, st: State, password_hash: PasswordHash) -> Response:
    """Sign in: at most ``LOGIN_TRIES`` attempts a minute from one address."""
    form = await _form(request, st, purpose="login", nonce=request.cookies.get(LOGIN_COOKIE))
    retry_after = st.admin.login_tries.hit(client_ip(st, request))
    if retry_after:
        response = _page(st, request, "message.html", 429, message="Too many tries: wait a minute.")
        response.headers["Retry-After"] = str(int(retry_after) + 1)
        return response
    if not await run_in_threadpool(passwords.verify, password_hash, form.get("password", "")):
        return _login_form(st, request, 401, "wrong password")
    response = RedirectResponse("/admin", status_code=303)
    st.admin.set_cookie(response, SESSION_COOKIE, st.admin.new_session(password_hash))
    st.admin.delete_cookie(response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, st: State, admin: SignedIn) -> Response:
    await _form(request, st, purpose="session", nonce=admin.nonce)
    now = datetime.now(UTC)
    until = now + timedelta(seconds=SESSION_SECONDS)  # it can live no longer anyway
    await st.writes.run(partial(passwords.sign_out, nonce=admin.nonce, until=until, now=now))
    response = RedirectResponse("/admin/login", status_code=303)
    st.admin.delete_cookie(response, SESSION_COOKIE)
    return response


# -- the overview ------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def overview(request: Request, st: State, admin: SignedIn) -> Response:
    with _reading(st) as connection:
        seen = dashboard.overview(connection, catalog=st.catalog, now=datetime.now(UTC))
    return _page(
        st,
        request,
        "overview.html",
        admin=admin,
        courses=[
            (course, result, funnel_chart(result), controls_line(result))
            for course, result in zip(st.catalog, seen.funnels, strict=True)
        ],
        signups=signups_chart(seen.signups),
        signups_total=sum(count for _, count in seen.signups),
        failures=seen.failures,
        events=seen.events,
    )


# -- subscribers -------------------------------------------------------------------------


@router.get("/subscribers", response_class=HTMLResponse)
def subscribers(request: Request, st: State, admin: SignedIn, q: str = "") -> Response:
    with _reading(st) as connection:
        found = dashboard.search(connection, query=q[:320])
    return _page(
        st,
        request,
        "subscribers.html",
        admin=admin,
        q=q,
        found=found,
        limit=dashboard.SEARCH_LIMIT,
        done=DONE.get(request.query_params.get("done", "")),
    )


@router.get("/subscribers/{uid}", response_class=HTMLResponse)
def subscriber(uid: str, request: Request, st: State, admin: SignedIn) -> Response:
    try:
        with _reading(st) as connection:
            record = dashboard.record(connection, uid)
    except SubscriberNotFound as error:
        raise Refused(404, str(error)) from None
    return _page(
        st,
        request,
        "subscriber.html",
        admin=admin,
        record=record,
        now=datetime.now(UTC),
        max_pause=MAX_PAUSE_DAYS,
        done=DONE.get(request.query_params.get("done", "")),
    )


@router.post("/subscribers/{uid}/unsubscribe")
async def unsubscribe(uid: str, request: Request, st: State, admin: SignedIn) -> Response:
    await _form(request, st, purpose="session", nonce=admin.nonce)
    changed = await _act(
        st, uid, partial(actions.unsubscribe, catalog=st.catalog, now=datetime.now(UTC))
    )
    return _done(uid, "unsubscribed" if changed else "already-left")


@router.post("/subscribers/{uid}/suppress")
async def suppress(uid: str, request: Request, st: State, admin: SignedIn) -> Response:
    await _form(request, st, purpose="session", nonce=admin.nonce)
    changed = await _act(
        st,
        uid,
        partial(actions.suppress, reason="suppressed on the dashboard", now=datetime.now(UTC)),
    )
    return _done(uid, "suppressed" if changed else "already-suppressed")


@router.post("/subscribers/{uid}/resend")
async def resend(uid: str, request: Request, st: State, admin: SignedIn) -> Response:
    await _form(request, st, purpose="session", nonce=admin.nonce)
    queued = await _act(st, uid, partial(actions.resend_confirmation, now=datetime.now(UTC)))
    return _done(uid, "resent" if queued else "not-pending")


@router.post("/subscribers/{uid}/delete")
async def delete(uid: str, request: Request, st: State, admin: SignedIn) -> Response:
    form = await _form(request, st, purpose="session", nonce=admin.nonce)
    if form.get("confirm") != "yes":
        return _done(uid, "confirm-delete")
    await _act(st, uid, actions.delete)
    return RedirectResponse("/admin/subscribers?done=deleted", status_code=303)


@router.post("/subscribers/{uid}/control/{control}")
async def control(uid: str, control: str, request: Request, st: State, admin: SignedIn) -> Response:
    """Pause (``days``), resume, restart or move the hour (``send_at``) of their latest
    course, as their own page would."""
    form = await _form(request, st, purpose="session", nonce=admin.nonce)
    try:
        chosen = Control(control)
    except ValueError:
        raise Refused(404, "No such control.") from None
    try:
        days, send_at = controls.read_inputs(chosen, form)
    except ValueError:
        return _done(uid, "bad-days" if chosen == Control.PAUSE else "bad-time")
    changed = await _act(
        st,
        uid,
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
        return _done(uid, "refused")
    return _done(uid, chosen.done if changed.changed else "unchanged")


async def _act(st: WebState, uid: str, action: Callable[..., Any]) -> Any:
    """Run an operator action on the subscriber ``uid`` through the writer, then wake the
    sender for what it queued."""

    def work(connection: Connection) -> Any:
        return action(connection, subscriber=actions.find(connection, uid=uid))

    try:
        result = await st.writes.run(work)
    except SubscriberNotFound as error:
        raise Refused(404, str(error)) from None
    st.prompt.wake()
    return result


def _done(uid: str, what: str) -> Response:
    return RedirectResponse(f"/admin/subscribers/{uid}?done={what}", status_code=303)


# -- webhooks ------------------------------------------------------------------------------


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks_page(request: Request, st: State, admin: SignedIn) -> Response:
    with _reading(st) as connection:
        views = webhooks.endpoint_views(connection)
        failures = webhooks.given_up(connection)
    return _page(st, request, "webhooks.html", admin=admin, views=views, failures=failures)


# -- a course's emails -------------------------------------------------------------------


def _course(st: WebState, slug: str) -> Course:
    course = st.catalog.find(slug)
    if course is None:
        raise Refused(404, "No such course.")
    return course


def _emails(course: Course) -> list[tuple[str, str, str]]:
    """(``which``, what to call it, its subject when known) for every email of the course."""
    days = [(str(n), f"Day {n}", day.subject) for n, day in enumerate(course.days, start=1)]
    others = emails_of(course)[len(course.days) :]
    return days + [(kind, kind.replace("_", " "), "") for kind in others]


def _test_address(course: Course) -> str:
    return str(course.sender.reply_to or course.sender.address)


@router.get("/courses/{slug}", response_class=HTMLResponse)
def course_page(slug: str, request: Request, st: State, admin: SignedIn) -> Response:
    course = _course(st, slug)
    return _page(
        st,
        request,
        "course.html",
        admin=admin,
        course=course,
        emails=_emails(course),
        widths=WIDTHS,
        to=_test_address(course),
    )


@router.get("/courses/{slug}/emails/{which}", response_class=HTMLResponse)
def email_page(
    slug: str, which: str, request: Request, st: State, admin: SignedIn, width: int = 1200
) -> Response:
    return _email_page(st, request, admin, _course(st, slug), which, width)


@router.post("/courses/{slug}/emails/{which}/test", response_class=HTMLResponse)
async def test_send(
    slug: str, which: str, request: Request, st: State, admin: SignedIn
) -> Response:
    """Send this email to the address given, now, marked as a test."""
    form = await _form(request, st, purpose="session", nonce=admin.nonce)
    course = _course(st, slug)
    to = form.get("to", "").strip()
    try:
        reply = await run_in_threadpool(
            partial(send_test, st.settings, course, which, to, now=datetime.now(UTC))
        )
        result = (True, f"Sent to {to}: the server answered {reply}")
    except DripError as error:
        result = (False, str(error))
    width = int(form["width"]) if form.get("width", "").isdigit() else WIDTHS[-1]
    return _email_page(st, request, admin, course, which, width, to=to, result=result)


def _email_page(
    st: WebState,
    request: Request,
    admin: Admin,
    course: Course,
    which: str,
    width: int,
    *,
    to: str | None = None,
    result: tuple[bool, str] | None = None,
) -> Response:
    """One email rendered as a subscriber sees it, at ``width`` pixels, in a sandboxed
    frame of its own; a template error is shown instead."""
    width = width if width in WIDTHS else WIDTHS[-1]
    try:
        subject, html = _render(st, course, which)
        error = None
    except DripError as problem:
        subject, html, error = "", "", str(problem)
    return _page(
        st,
        request,
        "email.html",
        admin=admin,
        course=course,
        which=which,
        label=next((label for key, label, _ in _emails(course) if key == which), which),
        subject=subject,
        html=html,
        error=error,
        width=width,
        widths=WIDTHS,
        to=to if to is not None else _test_address(course),
        result=result,
    )


def _render(st: WebState, course: Course, which: str) -> tuple[str, str]:
    """(subject, HTML) of ``which`` for a sample subscriber; its links are signed with a
    throwaway key (a preview's links never need to work)."""
    tokens = Tokens([secrets.token_urlsafe(32)], confirm_max_age_seconds=3600)
    message = preview(
        composer=Composer(settings=st.settings, tokens=tokens),
        course=course,
        which=which,
        now=datetime.now(UTC),
    )
    parsed = BytesParser(policy=policy.default).parsebytes(message.data)
    part = parsed.get_body(("html",))
    return str(parsed["Subject"]), part.get_content() if part is not None else ""
