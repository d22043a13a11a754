"""Typed pipeline configuration: YAML in, validated models out."""

from mlpipe_cli.config.loader import load_config, load_config_text
from mlpipe_cli.config.models import PipelineConfig

__all__ = ["PipelineConfig", "load_config", "load_config_text"]
