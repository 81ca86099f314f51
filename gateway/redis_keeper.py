"""Keeps the embedded Redis up while `aigw up`'s children drain, then stops it.

Run as ``python -m gateway.redis_keeper`` by `aigw up` (gateway/stack.py).

When `aigw up` dies, even by ``kill -9``, its API and workers get SIGTERM (``PR_SET_PDEATHSIG``)
and drain their in-flight jobs into Redis. Had Redis got the same signal at the same moment, an
answer a provider had already given (and charged for) would be thrown away and the job run
again. So Redis is not tied to `aigw up`; this small process is. Told that `aigw up` is gone, it
waits until no other client is connected to Redis (every child has exited) or the drain deadline
passes, and only then stops Redis (SIGTERM: a clean AOF shutdown). On a normal stop `aigw up`
stops Redis itself and then this keeper, which finds Redis gone and exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import redis

from gateway.supervisor import pid_alive, stop_pid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.redis_keeper")
    parser.add_argument("--pid", type=int, required=True, help="the redis-server to stop")
    parser.add_argument("--port", type=int, required=True, help="its port on 127.0.0.1")
    parser.add_argument("--grace", type=float, required=True, help="seconds to wait for the drain")
    args = parser.parse_args(argv)
    parent_gone = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: parent_gone.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is `aigw up`'s to handle
    sys.stdout.write("ready\n")  # the starter waits for this: a SIGTERM before it would kill us
    sys.stdout.flush()
    while not parent_gone.wait(0.5):
        if not pid_alive(args.pid):  # Redis ended on its own (or `aigw up` stopped it): nothing to keep
            return
    wait_for_drain(args.port, args.pid, args.grace)
    stop_pid(args.pid)


def wait_for_drain(port: int, pid: int, grace: float) -> None:
    """Until no client but us is connected, the server is gone, or ``grace`` seconds pass."""
    deadline = time.monotonic() + grace
    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)
    try:
        while pid_alive(pid) and time.monotonic() < deadline and _other_clients(client) > 0:
            time.sleep(0.2)
    finally:
        client.close()


def _other_clients(client: redis.Redis) -> int:
    try:
        listed = client.client_list()
    except (redis.ConnectionError, redis.TimeoutError):
        return 0  # gone already: nothing left to drain into
    return max(0, len(listed) - 1)  # minus this connection


if __name__ == "__main__":
    main()
