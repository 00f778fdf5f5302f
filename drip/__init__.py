"""drip: a self-hosted email drip-course engine."""

from drip.config import Settings, get_settings
from drip.courses import Catalog, Course, load_course
from drip.exceptions import DripError

__all__ = ["Catalog", "Course", "DripError", "Settings", "get_settings", "load_course"]
__version__ = "0.1.0"
