"""Which worker processes `aigw up` forks, by ``workers.layout`` and ``workers.processes``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import gateway as gateway_package
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.stack import Stack


def _workers(tmp_path: Path, **workers: object) -> dict[str, list[str]]:
    config_dir = tmp_path / "config"
    config_dir.mkdir(parents=True)
    for source in (Path(gateway_package.__file__).parent / "sample_config").glob("*.yaml"):
        (config_dir / source.name).write_text(source.read_text())
    gateway = yaml.safe_load((config_dir / "gateway.yaml").read_text())
    gateway["workers"].update(workers)
    (config_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    stack = Stack(load_config(config_dir), Settings.from_environ({"AIGW_HOME": str(tmp_path)}), 18789)
    return {
        child.name: sorted(child.kwargs["queues"])
        for child in stack._children({})
        if child.name.startswith("aigw-worker")
    }


def test_shared_layout_forks_processes_that_each_serve_every_queue(tmp_path: Path) -> None:
    assert _workers(tmp_path) == {"aigw-worker-0": ["batch", "interactive"]}
    assert _workers(tmp_path / "two", processes=2) == {
        "aigw-worker-0": ["batch", "interactive"],
        "aigw-worker-1": ["batch", "interactive"],
    }


def test_per_queue_layout_forks_processes_for_each_queue(tmp_path: Path) -> None:
    assert _workers(tmp_path, layout="per_queue", processes=2) == {
        "aigw-worker-interactive-0": ["interactive"],
        "aigw-worker-interactive-1": ["interactive"],
        "aigw-worker-batch-0": ["batch"],
        "aigw-worker-batch-1": ["batch"],
    }


def test_an_unknown_layout_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        _workers(tmp_path, layout="one_each")
    assert "gateway.yaml" in str(refused.value) and "layout" in str(refused.value)
