"""A lean HTTP/1.1 keep-alive client over asyncio streams, and closed-loop load runners.

httpx costs a few hundred microseconds of CPU per request on the client side; on 2 cores that
would be measured as gateway cost, so the load generator speaks just enough HTTP itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class HttpError(Exception):
    """The peer broke HTTP/1.1 framing or closed the connection mid-response."""


@dataclass(frozen=True)
class Request:
    """A prepared request: the bytes to send (header block + body)."""

    raw: bytes

    @classmethod
    def build(
        cls, method: str, target: str, port: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Request:
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        if body or method in ("POST", "PUT"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        return cls(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


class Connection:
    """One keep-alive TCP connection to 127.0.0.1:port; reopens itself after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def send(self, request: Request) -> tuple[int, bytes]:
        """One exchange: (status, body). Any failure closes the connection and propagates."""
        try:
            await self.open()
            assert self._reader is not None and self._writer is not None
            self._writer.write(request.raw)
            return await self._read_response(self._reader)
        except BaseException:
            await self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise HttpError("connection closed before a response") from exc
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked, keep_alive = False, True
        for line in header_block.lower().split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and b"close" in value:
                keep_alive = False
        if chunked:
            body = await self._read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body, keep_alive = await reader.read(), False
        if not keep_alive:
            await self.close()
        return status, body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)


#: Decides whether an answer counts: (status, body) -> ok.
Check = Callable[[int, bytes], bool]


@dataclass
class LoadResult:
    """What one load phase measured."""

    ok: int = 0
    failed: int = 0
    wall_s: float = 0.0
    #: latency in seconds of every successful request
    latencies: list[float] = field(default_factory=list)
    #: failure kinds ("HTTP 503", "TimeoutError", "bad body") and how often
    errors: Counter[str] = field(default_factory=Counter)
    #: the phase hit its deadline before all requests were done
    timed_out: bool = False
    #: bodies of successful answers, when a phase asked to keep them
    bodies: list[bytes] = field(default_factory=list)
    #: the first few answers that did not count (status and start of the body)
    failure_samples: list[str] = field(default_factory=list)

    def failed_answer(self, status: int, body: bytes) -> None:
        self.failed += 1
        self.errors[f"HTTP {status}" if status >= 300 else "bad body"] += 1
        if len(self.failure_samples) < 5:
            self.failure_samples.append(f"HTTP {status}: {body[:300].decode(errors='replace')}")

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0


async def closed_loop(
    port: int,
    clients: int,
    total: int,
    request: Request,
    check: Check,
    *,
    deadline_s: float,
    request_timeout_s: float,
    keep_bodies: bool = False,
    preopen: bool = True,
) -> LoadResult:
    """``clients`` workers, one connection each, send ``request`` until ``total`` were sent.

    Connections are opened before the clock starts when ``preopen``; the phase stops by itself at
    ``deadline_s`` (outstanding requests are cancelled and the result is marked ``timed_out``).
    """
    result = LoadResult()
    connections = [Connection(port) for _ in range(clients)]
    if preopen:
        await _open_all(connections)
    remaining = total

    async def client(connection: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter()
            try:
                async with asyncio.timeout(request_timeout_s):
                    status, body = await connection.send(request)
            except (OSError, HttpError, TimeoutError, ValueError) as exc:
                result.failed += 1
                result.errors[type(exc).__name__] += 1
                continue
            if check(status, body):
                result.latencies.append(time.perf_counter() - began)
                result.ok += 1
                if keep_bodies:
                    result.bodies.append(body)
            else:
                result.failed_answer(status, body)

    started = time.perf_counter()
    result.timed_out = not await _run_all([client(c) for c in connections], deadline_s)
    result.wall_s = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    return result


async def timed_loop(
    port: int,
    clients: int,
    request: Request,
    check: Check,
    *,
    warmup_s: float,
    measure_s: float,
    request_timeout_s: float,
    on_start: Callable[[], None] | None = None,
    on_end: Callable[[], None] | None = None,
    drain_s: float = 30.0,
) -> LoadResult:
    """``clients`` workers, one connection each, send ``request`` back to back for a fixed time.

    After ``warmup_s`` (the pipeline fills: a saturated server's queue reaches its steady length)
    comes a window of ``measure_s``: only answers that arrive inside it count, and ``on_start`` /
    ``on_end`` run at its edges (CPU snapshots). Then no new request is sent and the outstanding
    ones get ``drain_s`` to finish (they do not count). ``wall_s`` is the window's length.
    """
    result = LoadResult()
    connections = [Connection(port) for _ in range(clients)]
    await _open_all(connections)
    window = [float("inf"), float("inf")]
    stopping = False

    def counts(now: float) -> bool:
        return window[0] <= now < window[1]

    async def client(connection: Connection) -> None:
        while not stopping:
            began = time.perf_counter()
            try:
                async with asyncio.timeout(request_timeout_s):
                    status, body = await connection.send(request)
            except (OSError, HttpError, TimeoutError, ValueError) as exc:
                if counts(time.perf_counter()):
                    result.failed += 1
                    result.errors[type(exc).__name__] += 1
                continue
            now = time.perf_counter()
            if not counts(now):
                continue
            if check(status, body):
                result.latencies.append(now - began)
                result.ok += 1
            else:
                result.failed_answer(status, body)

    tasks = [asyncio.ensure_future(client(c)) for c in connections]
    try:
        await asyncio.sleep(warmup_s)
        if on_start is not None:
            on_start()
        window[0] = time.perf_counter()
        await asyncio.sleep(measure_s)
        window[1] = time.perf_counter()
        if on_end is not None:
            on_end()
        stopping = True
        result.wall_s = window[1] - window[0]
        _done, pending = await asyncio.wait(tasks, timeout=drain_s)
        result.timed_out = bool(pending)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in connections))
    return result


async def _open_all(connections: list[Connection], batch: int = 200) -> None:
    """Open in batches so a burst of SYNs never overflows a listen backlog."""
    for i in range(0, len(connections), batch):
        await asyncio.gather(*(c.open() for c in connections[i : i + batch]))


async def _run_all(coroutines: list[Awaitable[None]], deadline_s: float) -> bool:
    """Run to completion or deadline; True when everything finished in time."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return not pending


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
