"""Runs a skill around a model call: scripts first (code decides), then the prompt, then the output check.

``SkillRunner.prepare`` validates the inputs, runs the skill's scripts in order and renders the
prompt; the caller (the job pipeline, or ``aigw skill test``) applies policies and calls the model
with ``PreparedSkill.prompt``; ``SkillRunner.finish`` turns the model's text into outputs checked
against the contract. No provider is called here.

Scripts run as asyncio subprocesses, so hundreds of jobs share one worker loop: argv only (never a
shell string), the context as JSON on stdin and scalar inputs as ``AIGW_INPUT_*`` variables, a
scrubbed environment (no provider keys, no aigw settings), a fresh temporary directory as cwd with
HOME and TMPDIR inside it, a timeout and an output cap. Each runs inside the bubblewrap sandbox of
``workers.sandbox`` (no view of the worker's processes or files, no network, a read-only copy of
the bundle, resource limits; everything it started dies with it). With ``skills.sandbox: none``
(trusted skills only) it runs as the worker's user instead, its process group killed when it
ends, and writes into the skill's own folder and to ``..`` are detected after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Config, SandboxConfig
from gateway.errors import SkillFailedError, SkillTimeoutError, SkillUnavailableError
from gateway.skills import (
    Skill,
    TemplateError,
    check_outputs,
    is_protected_env,
    missing_requirements,
    outputs_from_model,
    remove_tree,
    validate_inputs,
)
from gateway.validation import LONE_SURROGATE
from workers.sandbox import SANDBOX_PATH, SKILL_DIR, WORK_DIR, Sandbox, SandboxRun, hand_over, stage_bundle

#: a line ``flag:<id> — <text>`` on a script's stdout raises a risk flag (an em dash, "--" or "-")
FLAG_LINE = re.compile(r"^flag:(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\s+(?:—|–|--?)?\s*(?P<text>.*?))?\s*$")
#: scalar inputs longer than this reach scripts on stdin only (the kernel caps one variable at 128 KiB)
MAX_ENV_VALUE = 4096
_STDERR_TAIL = 2000
#: facts nested deeper than this fail the script: deeper JSON is an attack on whatever walks it next
MAX_FACT_DEPTH = 64
DEFAULT_SANDBOX = SandboxConfig()
#: how long a killed script's pipes get to close before aigw closes them itself
_SETTLE_SECONDS = 2.0
#: how often a running script's working directory is measured against ``limits.disk_mb``
_DISK_POLL_SECONDS = 0.25

ModelCall = Callable[["PreparedSkill"], Awaitable[str]]


@dataclass(frozen=True)
class ScriptRun:
    """What one script did, for the audit record and for `aigw skill test`."""

    name: str
    exit_code: int
    duration_ms: float
    stdout_bytes: int
    stderr_tail: str


@dataclass(frozen=True)
class PreparedSkill:
    """A skill's scripts have run and its prompt is rendered: what the model step needs."""

    skill: Skill
    inputs: dict[str, Any]
    #: merged JSON objects the scripts printed
    facts: dict[str, Any]
    #: ``[{"id": ..., "text": ...}]`` in the order the scripts raised them
    risk_flags: list[dict[str, str]]
    #: what the prompt was rendered from: inputs, then facts, then ``risk_flags``
    context: dict[str, Any]
    prompt: str | None
    scripts: list[ScriptRun] = field(default_factory=list)

    def policy_texts(self) -> list[tuple[str, str]]:
        """(where, text) for every text that would leave the machine, for the policy checks."""
        texts = [
            (f"inputs.{name}", _as_text(value)) for name, value in self.inputs.items() if value is not None
        ]
        if self.facts:
            texts.append(("skill.facts", _as_text(self.facts)))
        if self.prompt is not None:
            texts.append(("skill.prompt", self.prompt))
        return texts

    def audit_record(self) -> dict[str, Any]:
        """The audit line's ``skill`` field: which code ran (name, version, bundle hash) and what it found."""
        return {
            "name": self.skill.name,
            "version": self.skill.version,
            "bundle_sha256": self.skill.content_hash,
            "source": self.skill.source,
            "risk_flags": [flag["id"] for flag in self.risk_flags],
            "scripts": [
                {"name": s.name, "exit_code": s.exit_code, "ms": round(s.duration_ms, 1)}
                for s in self.scripts
            ],
        }


@dataclass(frozen=True)
class SkillRun:
    prepared: PreparedSkill
    model_text: str | None
    outputs: dict[str, Any]


def provider_key_names(config: Config) -> frozenset[str]:
    """The env vars that hold provider keys in models.yaml: never passed to a script."""
    return frozenset(
        d.api_key_env for alias in config.models.models.values() for d in alias.deployments if d.api_key_env
    )


class SkillRunner:
    """Runs skills' scripts for one worker; holds only settings, so one instance serves every job."""

    def __init__(
        self,
        *,
        max_output_bytes: int = 1_048_576,
        max_script_timeout: float = 600.0,
        protected_env: Iterable[str] = (),
        environ: Mapping[str, str],
        work_root: Path | None = None,
        sandbox: SandboxConfig = DEFAULT_SANDBOX,
    ) -> None:
        self.max_output_bytes = max_output_bytes
        self.max_script_timeout = max_script_timeout
        self.protected_env = frozenset(protected_env)
        #: the worker's environment (``os.environ`` itself in a worker), read when a skill runs
        self.environ = environ
        self.work_root = work_root
        #: None: ``skills.sandbox: none``, scripts run unsandboxed (trusted skills only)
        self.sandbox = Sandbox.from_config(sandbox, environ) if sandbox.mode == "bwrap" else None

    def check_available(self, skill: Skill) -> None:
        environ = self.environ
        if self.sandbox is not None and skill.spec.aigw.scripts:
            self.sandbox.check(f"skill {skill.ref}")
            environ = {**environ, "PATH": SANDBOX_PATH}  # its bins are looked up where it will look
        if reasons := missing_requirements(skill.spec, environ, self.protected_env):
            raise SkillUnavailableError(
                f"skill {skill.ref} is unavailable here: {'; '.join(reasons)}", reasons=reasons
            )

    async def prepare(self, skill: Skill, inputs: Mapping[str, Any]) -> PreparedSkill:
        """Validate the inputs, run the scripts in order, render the prompt.

        Raises ValidationError (bad inputs, 422), SkillUnavailableError, SkillTimeoutError or
        SkillFailedError; the temporary directory is gone either way.
        """
        self.check_available(skill)
        checked = validate_inputs(skill.spec, dict(inputs))
        facts: dict[str, Any] = {}
        flags: list[dict[str, str]] = []
        runs: list[ScriptRun] = []
        async with self._workspace(skill) as space:
            for index, script in enumerate(skill.spec.aigw.scripts):
                if script.side_effects:  # after the model: see apply()
                    continue
                context = _context(checked, facts, flags)
                run, new_facts, new_flags = await self._run_script(skill, index, context, space)
                runs.append(run)
                facts.update(new_facts)
                for flag in new_flags:  # a flag is raised once, in the order first seen
                    if all(flag["id"] != seen["id"] for seen in flags):
                        flags.append(flag)
        context = _context(checked, facts, flags)
        prompt = _render_prompt(skill, context)
        return PreparedSkill(skill, checked, facts, flags, context, prompt, runs)

    async def apply(
        self, skill: Skill, inputs: Mapping[str, Any], outputs: Mapping[str, Any]
    ) -> list[ScriptRun]:
        """Run the skill's side-effect scripts, in order; their context is the inputs and ``outputs``.

        The caller decides when (after the model, or once a reviewer approved a draft).
        """
        self.check_available(skill)
        runs: list[ScriptRun] = []
        context = {**inputs, "outputs": dict(outputs)}
        async with self._workspace(skill) as space:
            for index, script in enumerate(skill.spec.aigw.scripts):
                if script.side_effects:
                    run, _facts, _flags = await self._run_script(skill, index, context, space)
                    runs.append(run)
        return runs

    @asynccontextmanager
    async def _workspace(self, skill: Skill) -> AsyncIterator[_Workspace]:
        """A fresh temporary directory for one run (working directory, the sandbox's bundle), then gone."""
        outer = Path(tempfile.mkdtemp(prefix="aigw-skill-", dir=self.work_root))
        try:
            yield await asyncio.to_thread(self._make_workspace, skill, outer)
        finally:
            # shielded: a job canceled while its scripts run still leaves no directory behind
            await asyncio.shield(asyncio.to_thread(remove_tree, outer))

    def _make_workspace(self, skill: Skill, outer: Path) -> _Workspace:
        workdir = outer / "work"
        for sub in (workdir, workdir / ".home", workdir / ".tmp"):
            sub.mkdir(mode=0o700)
        if self.sandbox is None:
            return _Workspace(outer, workdir, skill.root.resolve(), str(skill.root.resolve()), str(workdir))
        stage_bundle(skill.root, outer / "skill")
        if (uid := self.sandbox.host_user()) is not None:
            hand_over(outer, workdir, uid)
        return _Workspace(outer, workdir, outer / "skill", SKILL_DIR, WORK_DIR)

    def finish(self, prepared: PreparedSkill, model_text: str | None) -> dict[str, Any]:
        """The outputs: the model's answer parsed per the contract, plus those the scripts produced.

        Raises SkillOutputError naming the output when the answer does not match the contract.
        """
        spec = prepared.skill.spec
        outputs = (
            outputs_from_model(spec, model_text) if spec.model_outputs and model_text is not None else {}
        )
        for name, out in spec.outputs.items():
            if out.source == "scripts":  # code decides: a script's value wins over anything the model said
                outputs[name] = prepared.context.get(name)
        return check_outputs(spec, outputs, prepared.inputs)

    async def run(self, skill: Skill, inputs: Mapping[str, Any], complete: ModelCall | None) -> SkillRun:
        """prepare -> the model (when the skill has model outputs) -> finish, in one call."""
        prepared = await self.prepare(skill, inputs)
        text = await complete(prepared) if complete is not None and skill.spec.model_outputs else None
        return SkillRun(prepared, text, self.finish(prepared, text))

    # --- one script ------------------------------------------------------------------------------

    async def _run_script(
        self, skill: Skill, index: int, context: dict[str, Any], space: _Workspace
    ) -> tuple[ScriptRun, dict[str, Any], list[dict[str, str]]]:
        script = skill.spec.aigw.scripts[index]
        name = script.label
        timeout = min(script.timeout or skill.spec.aigw.timeouts.script, self.max_script_timeout)
        where = f"skill {skill.ref}: script {name}"
        launch = self._launch(skill, index, context, space)
        # unsandboxed, writes into the folder are detected after the fact; sandboxed, they cannot happen
        before = await asyncio.to_thread(_snapshot, skill.root) if self.sandbox is None else ""
        started = time.monotonic()
        result = await self._execute(where, launch, json.dumps(context).encode(), timeout)
        duration_ms = (time.monotonic() - started) * 1000
        if self.sandbox is None:
            await self._check_writes(skill, name, before, space.outer)
        elif launch.disk_cap is not None:  # what it left, hidden in unreadable folders included
            used = await _disk_used(space.workdir, fix_modes=True)
            if used > launch.disk_cap:
                raise SkillFailedError(_disk_message(where, launch.disk_cap))
        stderr_tail = result.stderr.decode("utf-8", "replace")[-_STDERR_TAIL:]
        if result.returncode != 0:
            how = _how_it_ended(result.returncode, sandboxed=self.sandbox is not None)
            detail = f": {stderr_tail.strip().splitlines()[-1]}" if stderr_tail.strip() else ""
            raise SkillFailedError(
                f"{where} {how}{detail}",
                exit_code=result.returncode,
                stderr_tail=stderr_tail,
            )
        flags, facts = parse_script_output(where, result.stdout)
        run = ScriptRun(name, result.returncode, duration_ms, len(result.stdout), stderr_tail)
        return run, facts, flags

    def _launch(self, skill: Skill, index: int, context: dict[str, Any], space: _Workspace) -> _Launch:
        """What to start for one script: bwrap around it, or (unsandboxed) the script itself."""
        argv = self._argv(skill, index, context, space.skill_dir)
        env = self._env(skill, context, space)
        if self.sandbox is None:
            return _Launch(lambda _fd: argv, env, space.workdir)
        sandbox = self.sandbox
        run = SandboxRun(argv, env, space.bundle, space.workdir, network=skill.spec.aigw.requires.network)
        # an empty environment: bwrap is the sandbox's PID 1, and its environ is readable in there;
        # the script's variables reach bwrap through a file descriptor, off its command line
        return _Launch(
            lambda fd: sandbox.command(run, fd),
            {},
            Path("/"),
            hidden=sandbox.hidden_args(run),
            workdir=space.workdir,
            disk_cap=sandbox.limits.disk_mb * 1_048_576,
        )

    def _argv(self, skill: Skill, index: int, context: dict[str, Any], skill_dir: str) -> list[str]:
        script = skill.spec.aigw.scripts[index]
        argv = [str(Path(skill_dir) / script.run)]
        if script.interpreter:
            path = SANDBOX_PATH if self.sandbox is not None else self.environ.get("PATH", os.defpath)
            resolved = shutil.which(script.interpreter, path=path)
            if resolved is None:
                raise SkillUnavailableError(
                    f"skill {skill.ref}: missing bin: {script.interpreter}",
                    reasons=[f"missing bin: {script.interpreter}"],
                )
            argv = [resolved, argv[0]]
        for position, template in enumerate(skill.script_args[index]):
            try:
                value = template.render(context)
            except TemplateError as exc:
                raise SkillFailedError(
                    f"skill {skill.ref}: script {script.label} args[{position}]: {exc.reason}"
                ) from None
            if value.startswith("-") and value != template.source:
                # a value that arrives from data must not turn into an option of the script
                raise SkillFailedError(
                    f"skill {skill.ref}: script {script.label} args[{position}] would start with '-' "
                    f"after substitution; refusing to pass it"
                )
            argv.append(value)
        return argv

    def _env(self, skill: Skill, context: Mapping[str, Any], space: _Workspace) -> dict[str, str]:
        """A scrubbed environment: PATH, a private HOME and TMPDIR, the skill's own names, its inputs."""
        env = {
            "PATH": SANDBOX_PATH if self.sandbox is not None else self.environ.get("PATH", os.defpath),
            "HOME": f"{space.work_dir}/.home",
            "TMPDIR": f"{space.work_dir}/.tmp",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AIGW_SKILL_NAME": skill.name,
            "AIGW_SKILL_VERSION": skill.version,
            "AIGW_SKILL_DIR": space.skill_dir,
        }
        requires = skill.spec.aigw.requires
        for name in requires.env + requires.optional_env:
            if name in self.environ and not is_protected_env(name, self.protected_env):
                env[name] = self.environ[name]
        for name in skill.spec.inputs:
            value = context.get(name)
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            if len(text) <= MAX_ENV_VALUE and "\0" not in text:
                env[f"AIGW_INPUT_{name.upper()}"] = text
        return env

    async def _check_writes(self, skill: Skill, name: str, before: str, outer: Path) -> None:
        """A script must leave its skill folder alone and write only below its working directory."""
        after = await asyncio.to_thread(_snapshot, skill.root)
        if after != before:
            if skill.source == "registry":
                # the cached copy is no longer the deployed bundle; the next load materialises it again
                await asyncio.to_thread(remove_tree, skill.root)
            raise SkillFailedError(
                f"skill {skill.ref}: script {name} wrote into the skill's own folder {skill.root}"
            )
        stray = sorted(p.name for p in outer.iterdir() if p.name != "work")
        if stray:
            raise SkillFailedError(
                f"skill {skill.ref}: script {name} wrote outside its working directory ({', '.join(stray)})"
            )

    async def _execute(self, where: str, launch: _Launch, stdin: bytes, timeout: float) -> _Completed:
        # no user=/group= arguments (a root worker's bwrap drops privileges through setpriv): uvloop's
        # subprocess_exec refuses them
        args_fd = _memfd(launch.hidden) if launch.hidden is not None else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv(-1 if args_fd is None else args_fd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,  # its own process group, so everything it starts can be killed
                pass_fds=() if args_fd is None else (args_fd,),
            )
        except OSError as exc:
            raise SkillFailedError(f"{where} could not start: {exc.strerror or exc}") from None
        finally:
            if args_fd is not None:
                os.close(args_fd)  # the child has its own copy
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        cap = self.max_output_bytes
        out = asyncio.create_task(_read_capped(proc.stdout, cap, "stdout"))
        err = asyncio.create_task(_read_capped(proc.stderr, cap, "stderr"))
        feed = asyncio.create_task(_feed(proc.stdin, stdin))
        exited = asyncio.create_task(proc.wait())
        pending: set[asyncio.Task[Any]] = {out, err, feed, exited}
        watch = None
        if launch.workdir is not None and launch.disk_cap is not None:
            watch = asyncio.create_task(_watch_disk(launch.workdir, launch.disk_cap))
            pending.add(watch)
        try:
            async with asyncio.timeout(timeout):
                while pending - {watch}:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # an output flood raises here
                    if exited in done:
                        _kill_group(proc)  # whatever it left running in the background goes with it
        except TimeoutError:
            raise SkillTimeoutError(f"{where} ran past its {timeout:g}s timeout and was killed") from None
        except _FloodError as exc:
            raise SkillFailedError(
                f"{where} wrote more than {cap} bytes to {exc.stream} and was killed"
            ) from None
        except _DiskFullError as exc:
            raise SkillFailedError(_disk_message(where, exc.cap) + " and was killed") from None
        finally:
            await _stop(proc, pending)
        return _Completed(proc.returncode if proc.returncode is not None else -1, out.result(), err.result())


@dataclass(frozen=True)
class _Workspace:
    """One run's directories on the host, and the names the scripts know them by."""

    outer: Path
    workdir: Path
    #: the folder the scripts run from: the sandbox's copy, or (unsandboxed) the skill's own
    bundle: Path
    skill_dir: str
    work_dir: str


@dataclass(frozen=True)
class _Launch:
    #: the argv, given the number of the descriptor that holds ``hidden`` (-1 without one)
    argv: Callable[[int], list[str]]
    env: dict[str, str]
    cwd: Path
    #: bytes the child reads from a descriptor passed to it (bwrap's ``--args``), else None
    hidden: bytes | None = None
    #: the run's working directory on the host, and how many bytes it may hold (sandboxed only)
    workdir: Path | None = None
    disk_cap: int | None = None


@dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


class _FloodError(Exception):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


class _DiskFullError(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(cap)
        self.cap = cap


def _memfd(data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, at offset 0 (close-on-exec until passed on)."""
    fd = os.memfd_create("aigw-bwrap-args", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def _disk_used(workdir: Path, *, fix_modes: bool = False) -> int:
    """Bytes of disk under ``workdir`` (GNU ``du``: any depth, hard links once, one filesystem).

    ``fix_modes`` first makes every folder readable to the worker, so none is left uncounted (a
    script of a non-root worker owns its files on the host and may chmod a folder to 000).
    """
    argvs = [["chmod", "-R", "u+rwX", "--", str(workdir)]] if fix_modes else []
    argvs.append(["du", "-s", "-x", "-B1", "--", str(workdir)])
    out = b""
    for argv in argvs:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
    try:
        return int(out.split()[0])
    except (IndexError, ValueError):
        return 0


async def _watch_disk(workdir: Path, cap: int) -> None:
    """Raises _DiskFullError once the working directory holds more than ``cap`` bytes."""
    while True:
        await asyncio.sleep(_DISK_POLL_SECONDS)
        if await _disk_used(workdir) > cap:
            raise _DiskFullError(cap)


def _disk_message(where: str, cap: int) -> str:
    return f"{where} wrote more than {cap // 1_048_576} MiB into its working directory (/work and /tmp)"


async def _read_capped(stream: asyncio.StreamReader, cap: int, label: str) -> bytes:
    chunks: deque[bytes] = deque()
    total = 0
    while chunk := await stream.read(65_536):
        total += len(chunk)
        if total > cap:
            raise _FloodError(label)
        chunks.append(chunk)
    return b"".join(chunks)


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write the context to stdin and close it; a script that does not read it is fine."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.write(data)
        await writer.drain()
    writer.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await writer.wait_closed()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _stop(proc: asyncio.subprocess.Process, pending: set[asyncio.Task[Any]]) -> None:
    """Kill the script's process group and settle every task and pipe, whatever happened."""
    _kill_group(proc)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    try:
        # read what is left so both pipes reach EOF: a reader that stopped at the cap leaves its
        # pipe paused, and a paused pipe never closes
        async with asyncio.timeout(_SETTLE_SECONDS):
            await asyncio.gather(_drain(proc.stdout), _drain(proc.stderr))
            await proc.wait()
    except TimeoutError:
        # a process that escaped the group still holds a pipe: close ours regardless
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()


async def _drain(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(65_536):
        pass


# --- script output, prompt and helpers -----------------------------------------------------------


def parse_script_output(where: str, stdout: bytes) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """``flag:`` lines become risk flags; the other lines, if any, must be one JSON object (facts)."""
    try:
        text = stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise SkillFailedError(f"{where} printed bytes that are not UTF-8") from None
    flags: list[dict[str, str]] = []
    rest: list[str] = []
    for line in text.splitlines():
        if line.startswith("flag:"):
            match = FLAG_LINE.match(line)
            if match is None:
                raise SkillFailedError(
                    f"{where}: malformed flag line {line[:80]!r} (expected 'flag:<id> — <text>')"
                )
            flags.append({"id": match.group("id"), "text": match.group("text") or ""})
        else:
            rest.append(line)
    body = "\n".join(rest).strip()
    if not body:
        return flags, {}
    try:
        facts = json.loads(body)
    except json.JSONDecodeError:
        message = "stdout must be flag lines and at most one JSON object (write logs to stderr)"
        raise SkillFailedError(f"{where}: {message}; got {body[:80]!r}") from None
    except RecursionError:
        facts = None
    if facts is None or _depth(facts) > MAX_FACT_DEPTH:
        raise SkillFailedError(f"{where}: the JSON on stdout is nested deeper than {MAX_FACT_DEPTH} levels")
    if not isinstance(facts, dict):
        raise SkillFailedError(f"{where}: the JSON on stdout must be an object, got {type(facts).__name__}")
    if LONE_SURROGATE.search(json.dumps(facts, ensure_ascii=False)):  # survives json.loads, not Redis
        raise SkillFailedError(f"{where}: the JSON on stdout has an unpaired surrogate (\\ud800-\\udfff)")
    if "risk_flags" in facts:
        raise SkillFailedError(
            f"{where}: 'risk_flags' is reserved; raise flags with 'flag:<id> — <text>' lines"
        )
    return flags, facts


def _depth(value: Any) -> int:
    """How deeply ``value`` nests, counted without recursion (so any depth is safe to measure)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _how_it_ended(returncode: int, *, sandboxed: bool) -> str:
    """bwrap reports a script killed by signal N as exit 128+N, as a shell does."""
    signum = -returncode if returncode < 0 else returncode - 128 if sandboxed and returncode > 128 else 0
    if not 0 < signum < 65:
        return f"exited with {returncode}"
    limit = _LIMIT_SIGNALS.get(signum)
    name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
    return f"was killed by signal {signum} ({name}{', ' + limit if limit else ''})"


_LIMIT_SIGNALS: dict[int, str] = {
    signal.SIGXCPU: "its CPU time limit",
    signal.SIGXFSZ: "its file size limit",
    signal.SIGKILL: "e.g. a second past its CPU time limit",
}


def _context(inputs: dict[str, Any], facts: dict[str, Any], flags: list[dict[str, str]]) -> dict[str, Any]:
    return {**inputs, **facts, "risk_flags": list(flags)}


def _render_prompt(skill: Skill, context: dict[str, Any]) -> str | None:
    if skill.prompt is None:
        return None
    try:
        return skill.prompt.render(context).strip()  # blocks at either end may leave blank lines
    except TemplateError as exc:
        raise SkillFailedError(f"skill {skill.ref}: SKILL.md line {exc.line}: prompt: {exc.reason}") from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _snapshot(root: Path) -> str:
    """Every path under the skill folder with its size, mode and mtime: cheap, and any write changes it."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for entry in sorted(filenames) + dirnames:
            path = os.path.join(dirpath, entry)
            info = os.lstat(path)
            entries.append(
                f"{os.path.relpath(path, root)}\0{info.st_size}\0{info.st_mode}\0{info.st_mtime_ns}"
            )
    return "\n".join(entries)
