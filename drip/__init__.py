"""drip: a self-hosted email drip-course engine.

The names below load on first use, so importing drip (as every ``drip`` command does)
stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drip.config import Settings, get_settings
    from drip.courses import Catalog, Course, load_course
    from drip.exceptions import DripError

__all__ = ["Catalog", "Course", "DripError", "Settings", "get_settings", "load_course"]
__version__ = "0.1.0"

_WHERE = {
    "Catalog": "drip.courses",
    "Course": "drip.courses",
    "DripError": "drip.exceptions",
    "Settings": "drip.config",
    "get_settings": "drip.config",
    "load_course": "drip.courses",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'drip' has no attribute {name!r}")
