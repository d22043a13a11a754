"""The loaded config and artifact store a command works against."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig

DEFAULT_CONFIG = Path("mlpipe.yaml")
DEFAULT_ARTIFACT_DIR = Path("artifacts")


@dataclass
class Project:
    """A pipeline config file and its artifact directory, loaded on first use.

    The artifact directory is ``artifact_dir_override`` when given, else the config's
    ``artifact_dir``, else ``./artifacts``. Commands that never read the config (sample-data,
    schema infer) never load it.
    """

    config_path: Path
    artifact_dir_override: Path | None = None

    @cached_property
    def config(self) -> PipelineConfig:
        from mlpipe_cli.config import load_config

        return load_config(self.config_path)

    @cached_property
    def artifact_dir(self) -> Path:
        if self.artifact_dir_override is not None:
            return self.artifact_dir_override
        if self.config.artifact_dir is not None:
            return self.config.artifact_dir
        return DEFAULT_ARTIFACT_DIR

    @cached_property
    def store(self) -> ArtifactStore:
        from mlpipe_cli.artifacts import ArtifactStore

        return ArtifactStore(self.artifact_dir, self.config.pipeline)
