"""``POST /webhooks/bounces/{provider}``: bounces and complaints reported by an email
provider (``drip.feedback.providers``), applied by the bounce policy. A provider whose key
is not configured does not exist here (404); a request that does not prove it is the
provider's gets 401 and changes nothing; a body that is not the provider's payload, 422."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from drip.feedback.bounces import apply_reports
from drip.feedback.providers import PROVIDERS
from drip.feedback.providers.base import MAX_BODY, Forged, Malformed, Report
from drip.web.deps import PageRoute, State, read_body

router = APIRouter(route_class=PageRoute)


@router.post("/webhooks/bounces/{provider}")
async def bounce_webhook(provider: str, request: Request, st: State) -> JSONResponse:
    module = PROVIDERS.get(provider)
    key = module.secret(st.settings) if module is not None else None
    if module is None or key is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    try:
        body = await read_body(request, MAX_BODY)
    except TimeoutError:
        return JSONResponse({"detail": "the request body came too slowly"}, status_code=408)
    if body is None:
        return JSONResponse({"detail": "the request body is too large"}, status_code=413)
    try:
        # in a worker thread: SES's proof may fetch Amazon's certificate, and its
        # subscription confirmation fetches a URL
        replay_key, reports = await anyio.to_thread.run_sync(
            _read, module, body, dict(request.headers), key
        )
    except Forged:
        return JSONResponse({"detail": "missing or invalid webhook signature"}, status_code=401)
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # Malformed too
        detail = str(error) if isinstance(error, Malformed) else "not this provider's payload"
        return JSONResponse({"detail": detail}, status_code=422)
    except OSError:  # SNS unreachable to confirm the subscription: it asks again later
        return JSONResponse(
            {"detail": "could not reach SNS, try again"},
            status_code=503,
            headers={"Retry-After": "60"},
        )
    handled = await st.writes.run(
        partial(
            apply_reports,
            reports=reports,
            source=provider,
            replay_key=replay_key,
            policy=st.settings.bounce_policy,
            now=datetime.now(UTC),
        )
    )
    return JSONResponse({"handled": handled, "ignored": len(reports) - handled})


def _read(
    module: Any, body: bytes, headers: dict[str, str], key: str
) -> tuple[str | None, list[Report]]:
    """The request's one-time proof, if its provider has one, and its reports."""
    payload = module.verify(body, headers, key, now=time.time())
    replay_key = module.replay_key(payload) if hasattr(module, "replay_key") else None
    return replay_key, module.parse(payload)
