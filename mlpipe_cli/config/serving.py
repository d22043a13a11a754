"""Serving settings (owned by the serve issue): `mlpipe serve` and its feature log."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel, ConfigPath, Duration


class ServingLogConfig(ConfigModel):
    """The feature log: what was served, written off the request path to Parquet segments."""

    enabled: bool = Field(default=True, description="log every served entity")
    queue_rows: int = Field(
        default=100_000, ge=1, description="rows buffered for the writer; beyond this rows are "
        "dropped and counted (mlpipe_serve_log_rows_dropped_total), never slowing requests"
    )
    segment_rows: int = Field(default=50_000, ge=1, description="rows per Parquet segment")
    flush_interval: Duration = Field(
        default=timedelta(seconds=60), description="write a segment at least this often"
    )


class ServingConfig(ConfigModel):
    host: str = Field(default="127.0.0.1", description="bind address (loopback unless told)")
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="server processes")
    artifact: str = Field(default="latest", description="transform version to serve")
    model: str = Field(
        default="latest", description="model version for /predict, 'latest' or 'none'"
    )
    max_batch: int = Field(default=100, ge=1, le=10_000, description="entities per POST")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="request body limit")
    log_dir: ConfigPath | None = Field(
        default=None, description="feature-log directory; default <artifact_dir>/<pipeline>/"
        "serving-logs"
    )
    coalesce: bool = Field(
        default=True,
        description="under concurrency, single-entity GETs share one store call",
    )
    request_time_columns: list[str] | None = Field(
        default=None,
        description="transform inputs set to the request time (the prediction time); null = "
        "training_set.timestamp when the transform uses it and it is not a stored feature",
    )
    logging: ServingLogConfig = Field(default_factory=ServingLogConfig)
    cold_start: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict,
        description="feature -> value served for entities missing from the store (features "
        "not named here get their feature default)",
    )
