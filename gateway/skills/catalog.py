"""Which skill a job runs: the registry's deployed version, the folder on disk, or either.

The API uses it to check a skill job's inputs at the door; each worker uses it to load the
skill it runs. ``gateway.skills.source`` in gateway.yaml picks the mode (see SkillsConfig).
"""

from __future__ import annotations

from pathlib import Path

import redis

from gateway.config import Config
from gateway.errors import SkillNotFoundError
from gateway.jobs import JobRequest
from gateway.skills.folder import DiskSkills, Skill
from gateway.skills.registry import SkillRegistry


class SkillCatalog:
    """``load(name, version)`` by the configured source; ``auto`` prefers a deployed version."""

    def __init__(self, config: Config, connection: redis.Redis, cache_dir: Path) -> None:
        self.source = config.gateway.skills.source
        self.registry = SkillRegistry(connection, cache_dir)
        self.disk = DiskSkills(config.skills_dir())

    def load(self, name: str, version: str | None = None) -> Skill:
        if self.source == "disk":
            return self.disk.load(name, version)
        try:
            return self.registry.load(name, version)
        except SkillNotFoundError as not_deployed:
            if self.source == "registry":
                raise
            try:
                return self.disk.load(name, version)
            except SkillNotFoundError as not_on_disk:
                raise SkillNotFoundError(f"{not_deployed.message}, and {not_on_disk.message}") from None


def routed_request(request: JobRequest, skill: Skill) -> JobRequest:
    """A skill job as the policies and the router see it: the skill's model (or task) and its
    max_tokens stand in for what the job left unset, so the max_tokens policy caps them too."""
    spec = skill.spec.aigw
    update: dict[str, object] = {}
    if request.model is None and request.task is None:
        update.update(model=spec.model, task=spec.task)
    if request.max_tokens is None and spec.max_tokens is not None:
        update["max_tokens"] = spec.max_tokens
    return request.model_copy(update=update) if update else request
