"""A TCP proxy on loopback that delays every byte by a fixed time each way: a mail
server's round trip, for benchmarks of what pipelining saves over a real network."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def delayed(port: int, rtt_ms: float) -> Iterator[int]:
    """The port of a proxy to 127.0.0.1:``port`` adding ``rtt_ms`` to each round trip."""
    delay = rtt_ms / 2000  # seconds, one way
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # each chunk leaves ``delay`` after it came, in order (the delay is the same for all)
        while data := await reader.read(65536):
            loop.call_later(delay, writer.write, data)
        loop.call_later(delay, writer.close)

    async def serve(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        server_reader, server = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(client_reader, server), pipe(server_reader, client))

    async def start() -> asyncio.Server:
        return await asyncio.start_server(serve, "127.0.0.1", 0)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield int(proxy.sockets[0].getsockname()[1])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
