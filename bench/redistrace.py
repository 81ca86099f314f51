"""Which process sends which Redis commands per job: MONITOR during a few sequential jobs.

Connections are attributed to the API or a worker through /proc (socket inodes -> local port).
Commands from one connection that Redis ran back to back (within ``GAP_US``, nothing else in
between) arrived in one read: they count as one round trip (a pipeline or MULTI/EXEC block).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_WORKER = re.compile(r"(rq:(?:worker|execution)s?:)[^:\s]+")
#: commands of one pipeline run within a few microseconds; a new round trip takes far longer
GAP_US = 40


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def client_ports(pids: dict[str, list[int]], redis_port: int) -> dict[int, str]:
    """Local TCP port -> role ("api", "worker", ...) for every connection those pids hold to Redis."""
    role_of_inode = {
        inode: role for role, group in pids.items() for pid in group for inode in _socket_inodes(pid)
    }
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(remote.rsplit(":", 1)[1], 16) == redis_port and inode in role_of_inode:
                ports[int(local.rsplit(":", 1)[1], 16)] = role_of_inode[inode]
    return ports


@dataclass
class Entry:
    time_us: int
    port: int
    command: str
    #: the command with its first key, ids replaced: "hset rq:job:<id>"
    label: str = ""


@dataclass
class Monitor:
    """Collects MONITOR output in a thread between ``start()`` and ``stop()``."""

    url: str
    entries: list[Entry] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        self._stop.set()
        poke = redis.Redis.from_url(self.url)
        try:
            poke.ping()  # wakes the monitor so it sees the stop flag
        finally:
            poke.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        connection = redis.Redis.from_url(self.url)
        try:
            with connection.monitor() as monitor:  # type: ignore[no-untyped-call]
                self._ready.set()
                while not self._stop.is_set():
                    item: dict[str, Any] = monitor.next_command()
                    port = int(item.get("client_port") or 0)
                    stamp = int(round(float(item["time"]) * 1_000_000))
                    words = str(item["command"]).split(" ", 2)
                    name = words[0].lower()
                    key = _WORKER.sub(r"\1<name>", _ID.sub("<id>", words[1])) if len(words) > 1 else ""
                    self.entries.append(Entry(stamp, port, name, f"{name} {key}".strip()))
        except (redis.RedisError, OSError):
            pass
        finally:
            self._ready.set()
            connection.close()


def summarise(entries: list[Entry], roles: dict[int, str], jobs: int) -> dict[str, Any]:
    """Per role: commands and round trips per job, and the round-trip sequence of one job."""
    per_role: dict[str, dict[str, Any]] = {}
    trips: list[tuple[str, list[Entry]]] = []
    previous: Entry | None = None
    for entry in entries:
        role = roles.get(entry.port)
        if role is None:
            previous = None
            continue
        same_batch = (
            previous is not None
            and previous.port == entry.port
            and entry.time_us - previous.time_us <= GAP_US
            and trips
            and trips[-1][1][-1].command != "exec"
        )
        if same_batch or (trips and previous is not None and previous.port == entry.port
                          and _inside_multi(trips[-1][1])):  # fmt: skip
            trips[-1][1].append(entry)
        else:
            trips.append((role, [entry]))
        previous = entry
    for role, batch in trips:
        stats = per_role.setdefault(role, {"commands": Counter(), "round_trips": 0, "trips": Counter()})
        stats["commands"].update(e.command for e in batch)
        stats["round_trips"] += 1
        shown = [e.label for e in batch] if len(batch) <= 2 else [e.command for e in batch]
        stats["trips"][" + ".join(shown)] += 1
    per_job = max(jobs, 1)
    return {
        role: {
            "commands_per_job": round(sum(s["commands"].values()) / per_job, 2),
            "round_trips_per_job": round(s["round_trips"] / per_job, 2),
            "by_command_per_job": {k: round(v / per_job, 2) for k, v in s["commands"].most_common()},
            "round_trips": [
                {"commands": k, "per_job": round(v / per_job, 2)} for k, v in s["trips"].most_common()
            ],
        }
        for role, s in per_role.items()
    }


def _inside_multi(batch: list[Entry]) -> bool:
    return batch[0].command == "multi" and batch[-1].command != "exec"
