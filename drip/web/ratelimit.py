"""A per-key sliding-window rate limiter kept in memory (one web process).

Keys are kept in the order they were last hit, so the ones whose last hit left the
window are at the front and are forgotten from there: each hit costs the same however
many keys (client addresses) were seen.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

#: the most keys remembered at once; past it, the longest idle are forgotten first
MAX_KEYS = 100_000


class RateLimiter:
    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._clock = clock
        #: key → its hits within the window, oldest first; least recently hit key first
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count a request; 0 if allowed, else the seconds until the next one is."""
        now = self._clock()
        with self._lock:
            self._forget_idle(now)
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            else:
                self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            return 0.0

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._hits)

    def _forget_idle(self, now: float) -> None:
        """Drop keys whose last hit left the window (they are at the front), and the
        longest idle past ``max_keys``."""
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if (hits and hits[-1] > now - self.window) and len(self._hits) < self.max_keys:
                return
            del self._hits[key]
