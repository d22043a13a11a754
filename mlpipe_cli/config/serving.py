"""Serving settings (owned by the serve issue): `mlpipe serve` and its feature log."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath, Duration


class ServingLogConfig(ConfigModel):
    """The feature log: what was served, written off the request path to Parquet segments."""

    enabled: bool = Field(default=True, description="log every served entity")
    queue_rows: int = Field(
        default=100_000,
        ge=1,
        description="rows buffered for the writer; beyond this rows are "
        "dropped and counted (mlpipe_serve_log_rows_dropped_total), never slowing requests",
    )
    segment_rows: int = Field(default=50_000, ge=1, description="rows per Parquet segment")
    sample_rate: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="fraction of served entities logged, each drawn independently at random; "
        "the others are counted (mlpipe_serve_log_rows_sampled_out_total)",
    )
    flush_interval: Duration = Field(
        default=timedelta(seconds=60), description="write a segment at least this often"
    )


class ShadowConfig(ConfigModel):
    """A second transform (and model) computed on live traffic and only logged."""

    transform: str = Field(description="transform version to run in shadow")
    model: str = Field(
        default="none", description="model version bound to the shadow transform, or 'none'"
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
        default=None,
        description="feature-log directory; default <artifact_dir>/<pipeline>/serving-logs",
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
    auth_token: SecretStr | None = Field(
        default=None,
        description="bearer token every route but /healthz requires; write ${ENV_VAR}, never "
        "the literal",
    )
    tls_cert: ConfigPath | None = Field(
        default=None, description="PEM certificate (chain) file: serve HTTPS (with tls_key)"
    )
    tls_key: ConfigPath | None = Field(default=None, description="PEM private key file")
    tls_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted tls_key; write ${ENV_VAR}"
    )
    read_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="a request's headers, and then its body, must arrive within this (408)",
    )
    shutdown_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="on SIGTERM/SIGINT, in-flight requests get this long to finish",
    )
    logging: ServingLogConfig = Field(default_factory=ServingLogConfig)
    follow_interval: Duration = Field(
        default=timedelta(seconds=2),
        description="how often a server started without an explicit artifact checks the "
        "serving pointer (`mlpipe promote`)",
    )
    ledger_interval: Duration = Field(
        default=timedelta(seconds=60),
        description="how often the server writes its latency histogram to the run ledger "
        "(also at shutdown), where `mlpipe slo` reads the latency objective",
    )
    shadow: ShadowConfig | None = Field(
        default=None,
        description="run this transform (and model) in shadow: logged beside the live vector "
        "(shadow.vec.*), never served (serve --shadow overrides)",
    )
    cold_start: dict[str, bool | int | float | str | None] = Field(
        default_factory=dict,
        description="feature -> value served for entities missing from the store (features "
        "not named here get their feature default)",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServingConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.auth_token is not None and not self.auth_token.get_secret_value().strip():
            raise ValueError("auth_token is empty (is its environment variable set?)")
        if self.read_timeout.total_seconds() <= 0 or self.shutdown_timeout.total_seconds() < 0:
            raise ValueError("read_timeout must be positive and shutdown_timeout not negative")
        if self.follow_interval.total_seconds() <= 0 or self.ledger_interval.total_seconds() <= 0:
            raise ValueError("follow_interval and ledger_interval must be positive")
        return self
