"""HTTP routes: thin adapters that parse input, call drip's services and render a page.

No route composes or sends an email: what a request sets off is queued in the outbox
in the request's own transaction, and the prompt sender is woken to send it.
"""

from fastapi import APIRouter

from drip.web.deps import PageRoute
from drip.web.routes import bounces, clicks, health, lessons, links, me, signup

router = APIRouter(route_class=PageRoute)
router.include_router(signup.router)
router.include_router(links.router)
router.include_router(clicks.router)
router.include_router(lessons.router)
router.include_router(me.router)
router.include_router(bounces.router)
router.include_router(health.router)

__all__ = ["router"]
