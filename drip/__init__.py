"""drip: a self-hosted email drip-course engine.

The names below load on first use, so importing drip (as every ``drip`` command does)
stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drip.core.config import Settings, get_settings
    from drip.core.courses import Catalog, Course, load_course
    from drip.core.exceptions import DripError

__all__ = ["Catalog", "Course", "DripError", "Settings", "get_settings", "load_course"]
__version__ = "0.1.0"

_WHERE = {
    "Catalog": "drip.core.courses",
    "Course": "drip.core.courses",
    "DripError": "drip.core.exceptions",
    "Settings": "drip.core.config",
    "get_settings": "drip.core.config",
    "load_course": "drip.core.courses",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'drip' has no attribute {name!r}")
