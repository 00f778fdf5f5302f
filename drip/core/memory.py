"""Objects kept to the end of the process, set aside from the garbage collector.

CPython's collector walks every tracked object in a full collection, and a process
making many objects (requests, an import's batches) makes one every few seconds. What
is kept to the end anyway (start-up's modules, tables and app; an import's checked
rows) is frozen (``gc.freeze``): never walked again, and no longer counted towards the
next full collection.
"""

from __future__ import annotations

import gc


def set_aside() -> None:
    """Collect what is garbage now, then leave every object left out of the collector's
    walks for the rest of the process."""
    gc.collect()
    gc.freeze()
