"""A redis-py pipeline's commands run inside one Lua script: atomic like MULTI, with one reply.

Why: the worker's start and finish are RQ's own bookkeeping (its Python writes exactly RQ's
keys and fields into a pipeline), 10-20 commands each. In a MULTI, Redis answers every command
with ``+QUEUED`` and then the whole EXEC array, and redis-py parses each of those replies in
Python: about a third of the worker's Redis cost. Run from a script the same commands are just
as atomic and come back as one short reply (the errors, if any). The start also reads the job
and checks it was not canceled in the same script, so a job starts in one round trip.

Commands travel as ARGV: for each, its argument count, then its arguments. A script may touch
keys it was not given as KEYS: aigw runs on one Redis (or one primary), never a cluster.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

#: runs ARGV[first..] as commands; returns {index, error} pairs of those Redis refused
_RUN = """
local function run(first)
  local errors = {}
  local i = first
  local index = 0
  while i <= #ARGV do
    local n = tonumber(ARGV[i])
    index = index + 1
    local reply = redis.pcall(unpack(ARGV, i + 1, i + n))
    if type(reply) == 'table' and reply.err then
      errors[#errors + 1] = index
      errors[#errors + 1] = reply.err
    end
    i = i + n + 1
  end
  return errors
end
"""

_RUN_ALL = _RUN + "return run(1)"

#: KEYS[1] the job hash, KEYS[2] the intermediate queue; ARGV[1] the job id, ARGV[2] the status
#: that forbids a start (canceled). {0} no such job, {1} canceled (both dropped from the
#: intermediate queue), else {2, job hash after the writes, errors}
_START = (
    _RUN
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == ARGV[2] then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  if not status then return {0} end
  return {1}
end
local errors = run(3)
return {2, redis.call('HGETALL', KEYS[1]), errors}
"""
)


def _flatten(pipe: Pipeline) -> tuple[list[str], list[Any]]:
    names: list[str] = []
    argv: list[Any] = []
    for args, _options in pipe.command_stack:
        names.append(str(args[0]))
        argv.append(len(args))
        argv.extend(args)
    return names, argv


class ScriptedPipelines:
    """The two scripts of one connection (redis-py loads each once and falls back on NOSCRIPT)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._run = connection.register_script(_RUN_ALL)
        self._start = connection.register_script(_START)

    def pipeline(self) -> Pipeline:
        """A pipeline to collect commands into (never executed itself)."""
        return self.connection.pipeline(transaction=False)

    def run(self, pipe: Pipeline) -> list[str]:
        """Run the collected commands atomically; returns "COMMAND: error" for each Redis refused
        (like MULTI, the others still ran)."""
        names, argv = _flatten(pipe)
        pipe.reset()
        if not names:
            return []
        errors = self._run(args=argv)
        return _named(names, errors)

    def start(
        self, job_key: str, intermediate: str, job_id: str, forbidden: str, pipe: Pipeline
    ) -> tuple[int, dict[bytes, bytes] | None, list[str]]:
        """Unless the job is gone or ``forbidden`` (its status), run the collected commands and read
        the job: (0 gone | 1 forbidden | 2 started, the job hash, errors)."""
        names, argv = _flatten(pipe)
        pipe.reset()
        reply = self._start(keys=[job_key, intermediate], args=[job_id, forbidden, *argv])
        if reply[0] != 2:
            return int(reply[0]), None, []
        flat = reply[1]
        return 2, dict(zip(flat[::2], flat[1::2], strict=True)), _named(names, reply[2])


def _named(names: list[str], errors: list[Any]) -> list[str]:
    pairs = zip(errors[::2], errors[1::2], strict=True)
    return [f"{names[int(index) - 1]}: {_text(error)}" for index, error in pairs]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
