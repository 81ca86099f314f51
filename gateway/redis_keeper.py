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
import socket
import sys
import threading
import time

from gateway.supervisor import pid_alive, stop_pid

# It idles beside the stack for as long as the stack runs, so it stays small: no redis-py (which
# brings asyncio and ssl, 20 MB of RSS), one RESP command over a plain socket instead.
_CLIENT_LIST = b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n"


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
    client: socket.socket | None = None
    try:
        while pid_alive(pid) and time.monotonic() < deadline:
            if client is None:
                client = _connect(port)
            if client is None or (others := _other_clients(client)) is None:
                return  # gone already: nothing left to drain into
            if others == 0:
                return
            time.sleep(0.2)
    finally:
        if client is not None:
            client.close()


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return None


def _other_clients(client: socket.socket) -> int | None:
    """Clients connected besides this one (``CLIENT LIST`` has a line per client); None when
    Redis cannot be asked (gone, or an error reply)."""
    try:
        client.settimeout(2)
        client.sendall(_CLIENT_LIST)
        reply = _read_bulk(client)
    except OSError:
        return None
    if reply is None:
        return None
    return max(0, len([line for line in reply.split(b"\n") if line.strip()]) - 1)  # minus us


def _read_bulk(client: socket.socket) -> bytes | None:
    """One RESP bulk-string reply (``$<length>\\r\\n<data>\\r\\n``); None for anything else."""
    data = b""
    while b"\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            return None
        data += chunk
    header, _, body = data.partition(b"\r\n")
    if not header.startswith(b"$"):
        return None
    length = int(header[1:])
    while len(body) < length + 2:
        chunk = client.recv(max(4096, length + 2 - len(body)))
        if not chunk:
            return None
        body += chunk
    return body[:length]


if __name__ == "__main__":
    main()
