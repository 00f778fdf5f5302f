"""Posting webhook messages (``drip.outbox.webhooks``) to their endpoints.

Each POST carries the Standard Webhooks headers: ``webhook-id`` (the event's, the same on
every retry), ``webhook-timestamp`` (the wall clock at the attempt, whatever ``now`` the
run was given: receivers compare it with their own clock) and ``webhook-signature``. The
host is resolved once and the connection made to the address checked
(``drip.core.webhooks.refused_address``), TLS still verifying the endpoint's name; a
redirect is an answer like any other, never followed; no answer within ``TIMEOUT`` is a
failure; at most ``MAX_RESPONSE`` bytes of an answer are read.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine

from drip import __version__
from drip.core.exceptions import InvalidWebhook
from drip.core.logs import log_event
from drip.core.models import WebhookEndpoint
from drip.core.webhooks import new_event_id, refused_address, signature
from drip.outbox import webhooks
from drip.outbox.webhooks import Attempt, Claimed
from drip.store.engine import READ_ONLY

if TYPE_CHECKING:  # httpx is imported when a message is posted: cron's idle run never pays it
    import httpx

logger = logging.getLogger("drip.webhooks")

#: seconds an endpoint has to answer
TIMEOUT = 10.0
#: the most of an answer read (the rest is dropped)
MAX_RESPONSE = 64 * 1024
Resolver = Callable[..., list[Any]]


class Poster:
    """POSTs one message and says what became of it (``Attempt``)."""

    def __init__(
        self,
        *,
        timeout: float = TIMEOUT,
        resolve: Resolver = socket.getaddrinfo,
        clock: Callable[[], float] = time.time,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.timeout = timeout
        self.resolve = resolve
        self.clock = clock
        self.verify = verify
        #: one connection pool per endpoint host name: connections are made to a pinned
        #: address, so a pool shared by names could hand one name's TLS session to another
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, host: str) -> httpx.Client:
        import httpx

        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = self._clients[host] = httpx.Client(
                    timeout=self.timeout,
                    follow_redirects=False,
                    trust_env=False,
                    verify=self.verify,
                )
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def post(self, item: Claimed) -> Attempt:
        parts = urlsplit(item.url)
        try:
            address = self._address(parts.hostname or "", parts.port, parts.scheme)
        except InvalidWebhook as error:
            return Attempt(item, None, str(error))
        host = f"[{address}]" if ":" in address else address
        port = f":{parts.port}" if parts.port else ""
        pinned = urlunsplit((parts.scheme, host + port, parts.path or "/", parts.query, ""))
        timestamp = int(self.clock())
        headers = {
            "content-type": "application/json",
            "user-agent": f"drip/{__version__} (webhooks)",
            "host": parts.netloc,
            "webhook-id": item.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(item.secrets, item.event_id, timestamp, item.body),
        }
        import httpx

        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        deadline = time.monotonic() + self.timeout
        try:
            with self._client(parts.hostname or "").stream(
                "POST",
                pinned,
                content=item.body.encode("utf-8"),
                headers=headers,
                extensions=extensions,
            ) as response:
                answer = self._read(response, deadline)
        except httpx.TimeoutException:
            return Attempt(item, None, f"no answer within {self.timeout:g} s")
        except (httpx.HTTPError, OSError) as error:
            return Attempt(item, None, f"{type(error).__name__}: {error}"[:500])
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(item, status, None)
        location = _printable(response.headers.get("location", "")[:200])
        where = f" to {location}" if 300 <= status < 400 else ""
        said = _printable(answer.decode("utf-8", "replace")).strip()[:300]
        return Attempt(item, status, f"HTTP {status}{where}{': ' + said if said else ''}")

    def _address(self, host: str, port: int | None, scheme: str) -> str:
        """The one address to connect to: every address the name has must be allowed (a
        name cannot smuggle in a forbidden one beside a good one)."""
        try:
            found = self.resolve(host, port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise InvalidWebhook(f"cannot resolve {host}: {error}") from None
        addresses = [info[4][0] for info in found]
        if not addresses:
            raise InvalidWebhook(f"cannot resolve {host}")
        for address in addresses:
            why = refused_address(ipaddress.ip_address(address.split("%")[0]), scheme)
            if why:
                raise InvalidWebhook(f"{host}: {why}")
        return str(addresses[0])

    @staticmethod
    def _read(response: httpx.Response, deadline: float) -> bytes:
        """Up to ``MAX_RESPONSE`` bytes of the answer, and no later than ``deadline``."""
        kept = b""
        for chunk in response.iter_raw():
            kept += chunk[: MAX_RESPONSE - len(kept)]
            if len(kept) >= MAX_RESPONSE or time.monotonic() > deadline:
                break
        return kept


def _printable(text: str) -> str:
    """A receiver's words made safe to print and store: every control character (a
    terminal's escape codes, line breaks) becomes a space."""
    return "".join(c if c.isprintable() else " " for c in text)


class Dispatcher:
    """Claims the messages due and posts them, ``concurrency`` at a time, recording each
    outcome only where its lease still holds. Lessons never wait for it: it runs in its own
    threads beside the send run (``run_beside``) or in the long-running processes' loop."""

    def __init__(
        self,
        engine: Engine,
        *,
        poster: Poster | None = None,
        concurrency: int = 4,
        lease: timedelta = timedelta(minutes=2),
    ) -> None:
        self.engine = engine
        self.poster = poster or Poster()
        self.concurrency = concurrency
        #: a batch is two POSTs per thread at most: well inside the lease
        self.batch = 2 * concurrency
        self.lease = lease

    def run_due(self, now: datetime, *, stop: threading.Event | None = None) -> Counter[str]:
        """Post every message due at ``now``, until none is left or ``stop`` is set;
        how many were delivered, retried and given up."""
        counts: Counter[str] = Counter()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="drip-webhook") as pool:
            while stop is None or not stop.is_set():
                with self.engine.connect() as connection:
                    reading = connection.execution_options(**{READ_ONLY: True})
                    if not webhooks.any_due(reading, now=now):
                        break
                with self.engine.connect() as connection:
                    claimed = webhooks.claim(
                        connection, now=now, limit=self.batch, lease=self.lease
                    )
                if not claimed:
                    break
                attempts = list(pool.map(self.poster.post, claimed))
                with self.engine.begin() as connection:
                    counts.update(webhooks.settle(connection, attempts, now=now))
                for attempt in attempts:
                    if not attempt.delivered:
                        log_event(
                            logger,
                            logging.WARNING,
                            "webhook-failed",
                            endpoint=attempt.claimed.endpoint_id,
                            webhook_id=attempt.claimed.event_id,
                            error=attempt.error or "",
                        )
        return counts

    def close(self) -> None:
        self.poster.close()


def run_beside(
    dispatcher: Dispatcher | None, job: Callable[[], Any], *, now: datetime, stop: threading.Event
) -> tuple[Any, Counter[str]]:
    """``job()`` (a send run) with the webhooks due at ``now`` posted beside it in their own
    thread, then once more for the events the run itself emitted; ``job``'s result and
    the webhooks' counts."""
    if dispatcher is None:
        return job(), Counter()
    counts: Counter[str] = Counter()
    beside = threading.Thread(
        target=lambda: counts.update(dispatcher.run_due(now, stop=stop)),
        name="drip-webhooks",
        daemon=True,
    )
    beside.start()
    try:
        result = job()
    finally:
        beside.join()
    counts.update(dispatcher.run_due(now, stop=stop))
    return result, counts


#: the type of the event ``drip webhooks test`` sends, whatever types the endpoint chose
TEST_EVENT = "webhook.test"


def send_test(poster: Poster, found: WebhookEndpoint, *, now: datetime) -> Attempt:
    """POST a ``webhook.test`` event to ``found`` at once (no outbox row): what its
    receiver answered."""
    body = json.dumps(
        {
            "type": TEST_EVENT,
            "timestamp": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {"endpoint": found.id, "message": "a test event from drip"},
        },
        separators=(",", ":"),
    )
    return poster.post(
        Claimed(
            message_id=0,
            event_id=new_event_id(),
            body=body,
            attempts=1,
            created_at=now,
            lease=now,
            endpoint_id=found.id or 0,
            url=found.url,
            secrets=webhooks.signing_secrets(found, now),
        )
    )
