"""Which skill a job runs: the registry's deployed version, the folder on disk, or either.

The API uses it to check a skill job's inputs at the door; each worker uses it to load the
skill it runs. ``gateway.skills.source`` in gateway.yaml picks the mode (see SkillsConfig).
"""

from __future__ import annotations

from pathlib import Path

import redis

from gateway.config import Config
from gateway.skill_registry import SkillRegistry
from gateway.skills import DiskSkills, Skill, SkillNotFoundError


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
