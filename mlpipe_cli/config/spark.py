"""Settings of the Spark engine (`engine: spark`; docs/scale.md).

Only read when a command runs on Spark: Polars stays the default engine and pyspark is
imported only then.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from mlpipe_cli.config.base import ConfigModel


class SparkConfig(ConfigModel):
    """Where the Spark session runs and how work is cut into tasks."""

    master: str = Field(
        default="local[2]",
        description="Spark master URL: local[N], spark://host:7077, yarn, k8s://...",
    )
    app_name: str | None = Field(
        default=None, description="application name; default mlpipe-<pipeline>"
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="extra Spark settings (spark.executor.memory, spark.hadoop.fs.s3a.*, ...); "
        "write credentials as ${ENV_VAR}",
    )
    python: str | None = Field(
        default=None,
        description="interpreter of the Python workers (PYSPARK_PYTHON); default: the one "
        "running mlpipe (right for local[N] and a cluster sharing this machine's paths)",
    )
    rows_per_partition: int = Field(
        default=1_000_000,
        ge=1_000,
        description="input rows per task of the point-in-time join (each task holds its rows "
        "in memory while mlpipe's engine computes)",
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        description="tasks of the point-in-time join; default from rows_per_partition",
    )
    rows_per_file: int = Field(
        default=1_000_000, ge=1, description="rows per part file of a training-set directory output"
    )

    @field_validator("conf", mode="before")
    @classmethod
    def _values_as_text(cls, value: object) -> object:
        # YAML reads `spark.executor.cores: 4` as an int; Spark wants strings
        if isinstance(value, dict):
            return {
                str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()
            }
        return value
