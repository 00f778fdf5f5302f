"""The teacher's dashboard at ``/admin``: off until a password is set (``drip admin
set-password``), then behind a session cookie, with CSRF tokens on every form."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from drip.web.admin.auth import Gate
from drip.web.admin.routes import Refused, router
from drip.web.deps import page

__all__ = ["Gate", "install"]


def install(app: FastAPI) -> None:
    """Add the dashboard's routes to ``app`` and its refusals' pages."""
    app.include_router(router)

    @app.exception_handler(Refused)
    async def _refused(request: Request, error: Refused) -> Response:
        response = page(
            request.app.state.drip, request, "admin/message.html", error.status, message=str(error)
        )
        response.headers["Cache-Control"] = "no-store"
        return response
