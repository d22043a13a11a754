"""Batch engines: where a command's rows are computed.

``polars`` (the default) runs in this process. ``spark`` (``mlpipe_cli.engines.spark``) cuts
the same work into tasks on a Spark cluster and runs mlpipe's own Polars code inside each
task, so both engines give the same values by construction (docs/scale.md). pyspark is
imported only when the Spark engine is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlpipe_cli.errors import UsageError

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig

ENGINES = ("polars", "spark")


def choose_engine(config: PipelineConfig | None, flag: str | None) -> str:
    """The engine a command runs on: ``--engine`` if given, else the config's ``engine:``."""
    engine = flag or (config.engine if config is not None else "polars")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r} (choose polars or spark)")
    return engine


def unsupported(what: str) -> UsageError:
    """The error for a command or option the Spark engine does not run yet."""
    return UsageError(
        f"engine spark does not support {what} yet", hint="run it with --engine polars"
    )
