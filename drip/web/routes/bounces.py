"""``POST /webhooks/bounces/{provider}``: bounces and complaints reported by an email
provider (``drip.feedback.webhooks``), applied by the bounce policy. A provider whose key is
not configured does not exist here (404); a request that does not prove it is the
provider's gets 401 and changes nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from drip.core.config import Settings
from drip.feedback.bounces import first_time, record_for_address
from drip.feedback.webhooks import (
    READERS,
    Forged,
    Malformed,
    Report,
    check_basic_auth,
    check_generic,
    check_mailgun,
    check_sendgrid,
    check_sns,
    confirm_subscription,
    parse_json,
)
from drip.web.deps import State, read_body

router = APIRouter()
#: a provider's batch of events may be larger than a signup
MAX_BODY = 1024 * 1024


def _key(settings: Settings, provider: str) -> str | None:
    secret = {
        "postmark": settings.bounce_webhook_secret,
        "generic": settings.bounce_webhook_secret,
        "mailgun": settings.mailgun_signing_key,
    }.get(provider)
    if secret is not None:
        return secret.get_secret_value()
    return {
        "sendgrid": settings.sendgrid_verification_key,
        "ses": settings.ses_topic_arn,
    }.get(provider)


@router.post("/webhooks/bounces/{provider}")
async def bounce_webhook(provider: str, request: Request, st: State) -> JSONResponse:
    key = _key(st.settings, provider)
    if key is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    try:
        body = await read_body(request, MAX_BODY)
    except TimeoutError:
        return JSONResponse({"detail": "the request body came too slowly"}, status_code=408)
    if body is None:
        return JSONResponse({"detail": "the request body is too large"}, status_code=413)
    now = time.time()
    try:
        if provider == "postmark":
            check_basic_auth(request.headers, key)
        elif provider == "sendgrid":
            check_sendgrid(body, request.headers, key, now)
        elif provider == "generic":
            check_generic(body, request.headers, key, now)
        payload = parse_json(body)
        if provider == "mailgun":
            check_mailgun(payload, key, now)
        if provider == "ses":
            await anyio.to_thread.run_sync(check_sns, payload, key)  # may fetch a certificate
            if payload["Type"] != "Notification":
                if payload["Type"] == "SubscriptionConfirmation":  # the topic's first message
                    await anyio.to_thread.run_sync(confirm_subscription, payload)
                return JSONResponse({"handled": 0, "ignored": 0})
        reports = READERS[provider](payload)
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # Malformed too
        detail = str(error) if isinstance(error, Malformed) else "not this provider's payload"
        return JSONResponse({"detail": detail}, status_code=422)
    except Forged:
        return JSONResponse({"detail": "missing or invalid webhook signature"}, status_code=401)
    except OSError:  # SNS unreachable to confirm the subscription: it asks again later
        return JSONResponse(
            {"detail": "could not reach SNS, try again"},
            status_code=503,
            headers={"Retry-After": "60"},
        )
    handled = await st.writes.run(
        partial(
            _apply, reports=reports, source=provider, settings=st.settings, now=datetime.now(UTC)
        )
    )
    return JSONResponse({"handled": handled, "ignored": len(reports) - handled})


def _apply(
    connection: Connection,
    *,
    reports: list[Report],
    source: str,
    settings: Settings,
    now: datetime,
) -> int:
    """Record each report for its address, unless its event was handled before (a retry
    or a replay); how many were recorded."""
    handled = 0
    for report in reports:
        if report.event_id is not None and not first_time(
            connection, provider=source, event_id=report.event_id, now=now
        ):
            continue
        outcome = record_for_address(
            connection,
            email=report.email,
            kind=report.kind,
            source=source,
            diagnostic=report.diagnostic,
            message_id=report.message_id,
            now=now,
            policy=settings.bounce_policy,
        )
        handled += outcome is not None
    return handled
