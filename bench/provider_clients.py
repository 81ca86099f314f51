"""Client CPU per provider call: httpx, httpx over aiohttp's transport, and aiohttp, side by side.

``python -m bench.provider_clients`` starts the fake provider on a free port and sends 4,000
POSTs from 100 concurrent tasks with each client (after 300 warm-up calls), reporting the client
process's own CPU per request. It is why the worker's provider calls use aiohttp
(workers/providers/http.py). httpx over aiohttp is measured only where httpx-aiohttp is installed: it is not
a dependency of aigw.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop

from gateway.redis_server import free_port

CALLS = 4000
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 64}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(name: str, post: Callable[[], Awaitable[None]]) -> None:
    slots = asyncio.Semaphore(100)

    async def one() -> None:
        async with slots:
            await post()

    await asyncio.gather(*(one() for _ in range(300)))
    cpu, started = _cpu(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CALLS)))
    cpu, wall = _cpu() - cpu, time.perf_counter() - started
    print(f"{name:16s} {1000 * cpu / CALLS:6.3f} ms of client CPU per call   {CALLS / wall:6.0f} calls/s")


async def _main(url: str) -> None:
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))

    async def via_httpx() -> None:
        (await client.post(url, json=BODY)).json()

    await _measure("httpx", via_httpx)
    await client.aclose()
    if importlib.util.find_spec("httpx_aiohttp") is not None:
        from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found,unused-ignore]

        client = httpx.AsyncClient(transport=AiohttpTransport())
        await _measure("httpx + aiohttp", via_httpx)
        await client.aclose()
    else:
        print("httpx + aiohttp  (pip install httpx-aiohttp to measure it)")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    body = json.dumps(BODY).encode()

    async def via_aiohttp() -> None:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            json.loads(await response.read())

    await _measure("aiohttp", via_aiohttp)
    await session.close()


def main() -> int:
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.provider", "--port", str(port)])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        uvloop.run(_main(f"http://127.0.0.1:{port}/v1/chat/completions"))
    finally:
        fake.terminate()
        fake.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
