"""``GET /healthz``: the database answers (a read: it never waits for the write lock)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from drip.store.engine import ping
from drip.web.deps import PageRoute, State

logger = logging.getLogger("drip.web")
router = APIRouter(route_class=PageRoute)


@router.get("/metrics")
def metrics(st: State) -> Response:
    """Prometheus metrics, read from the database (off unless DRIP_METRICS=true)."""
    if not st.settings.metrics:
        return Response(status_code=404)
    from drip.reporting.metrics import CONTENT_TYPE, exposition

    return Response(exposition(st.engine), media_type=CONTENT_TYPE)


@router.get("/healthz")
def healthz(st: State) -> JSONResponse:
    try:
        ping(st.engine)
    except Exception as error:  # any database failure means "not healthy"
        logger.warning("event=healthz-failed error=%s", error)
        return JSONResponse(
            {"status": "error", "database": "unreachable"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ok"})
