"""``GET /healthz``: the database answers (a read: it never waits for the write lock)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from drip.db import READ_ONLY
from drip.web.deps import State

logger = logging.getLogger("drip.web")
router = APIRouter()


@router.get("/healthz")
def healthz(st: State) -> JSONResponse:
    try:
        with st.engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True}).execute(text("SELECT 1"))
    except Exception as error:  # any database failure means "not healthy"
        logger.warning("event=healthz-failed error=%s", error)
        return JSONResponse(
            {"status": "error", "database": "unreachable"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ok"})
