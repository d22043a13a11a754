"""Sources: where the data lives, its timestamps, and its column contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath, Duration
from mlpipe_cli.config.features import drop_new_defaults
from mlpipe_cli.config.streaming import StreamConfig

if TYPE_CHECKING:
    import polars as pl

Severity = Literal["error", "warn"]

# The dtypes a contract may name, in the spelling users write in YAML.
DTYPES = (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "bool", "string", "categorical", "date", "datetime",
    "duration", "list[float64]", "list[float32]", "array[float64]", "array[float32]",
)  # fmt: skip


class Tolerance(ConfigModel):
    """How many failing rows a check may have and still pass (like GX's `mostly`)."""

    max_failure_rate: float | None = Field(default=None, ge=0, le=1)
    max_failures: int | None = Field(default=None, ge=0)


class ColumnContract(Tolerance):
    """What one column must look like."""

    dtype: str
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    gt: float | None = Field(default=None, description="exclusive lower bound")
    lt: float | None = Field(default=None, description="exclusive upper bound")
    allowed: list[str | int | float | bool] | None = None
    regex: str | None = Field(default=None, description="must match the whole value")
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    timezone: str | None = Field(
        default=None, description="for datetime columns: required zone, e.g. UTC; null = naive"
    )
    severity: Severity = "error"

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"expected one of {', '.join(DTYPES)}, got {value!r}")
        return value


class RowCheck(Tolerance):
    """A free-form row check written as a Polars SQL boolean expression."""

    name: str
    expr: str
    severity: Severity = "error"


class DistributionChecks(ConfigModel):
    """Checks of the batch's distribution against a saved reference profile (PSI, KS, ...).

    Run only when `mlpipe validate --reference VERSION|latest` names a profile.
    """

    columns: list[str] | None = Field(
        default=None, description="columns to compare (default: every column in the profile)"
    )
    psi_threshold: float | None = Field(default=0.2, ge=0, description="fail when PSI > this")
    ks_pvalue: float | None = Field(
        default=None, ge=0, le=1, description="fail when the KS p-value < this (numeric columns)"
    )
    mean_shift_factor: float | None = Field(
        default=10.0, gt=1, description="fail when |mean| grows beyond k x |reference mean|"
    )
    max_null_rate_increase: float | None = Field(
        default=0.05, ge=0, le=1, description="fail when null rate rises by more than this"
    )
    severity: Severity = "error"


class SourceConfig(ConfigModel):
    """One input table."""

    path: ConfigPath = Field(description="Parquet file, directory of Parquet files, or glob")
    timestamp: str | None = Field(default=None, description="event-timestamp column")
    created_timestamp: str | None = Field(
        default=None, description="ingestion time column for the bitemporal cutoff"
    )
    valid_from: str | None = None
    valid_to: str | None = None
    entity_keys: list[str] | None = Field(
        default=None, description="this source's key columns (default: the pipeline's)"
    )
    join: dict[str, str] | None = Field(
        default=None,
        description="spine column -> key column, for keys named differently in the spine",
    )
    derived: dict[str, str] = Field(
        default_factory=dict,
        description="column -> Polars SQL expression, computed whenever the source is read",
    )
    null_created: Literal["error", "never"] = Field(
        default="error",
        description="a null created_timestamp: error, or never (the row is never visible)",
    )
    min_match_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="default min_match_rate of the features reading this source",
    )
    ttl: Duration | None = Field(default=None, description="values older than this are stale")
    columns: dict[str, ColumnContract] = Field(default_factory=dict)
    checks: list[RowCheck] = Field(default_factory=list)
    strict: bool = Field(default=False, description="reject columns not in the contract")
    required_columns: list[str] = Field(default_factory=list)
    forbidden_columns: list[str] = Field(default_factory=list)
    min_rows: int | None = Field(default=None, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    primary_key: list[str] | None = None
    max_failure_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="quality SLO: fraction of rows allowed to fail row checks without their "
        "own tolerance",
    )
    distribution: DistributionChecks = Field(default_factory=DistributionChecks)
    # Excluded from dumps (hence from config hashes): a stream changes how fresh the
    # features are, not what they mean, so adding one must not change any version id.
    stream: StreamConfig | None = Field(
        default=None, exclude=True, description="event stream (docs/streaming.md)"
    )

    @model_validator(mode="after")
    def _validity_pair(self) -> SourceConfig:
        if (self.valid_from is None) != (self.valid_to is None):
            raise ValueError("valid_from and valid_to must be given together")
        if self.join is not None and len(set(self.join.values())) != len(self.join):
            raise ValueError("`join` maps two spine columns to one key column")
        for column, expr in self.derived.items():
            if not column.strip() or not str(expr).strip():
                raise ValueError(f"derived column {column!r}: name and expression must be set")
        return self

    @model_validator(mode="after")
    def _streamable(self) -> SourceConfig:
        if self.stream is not None:
            if self.timestamp is None or self.valid_from is not None:
                raise ValueError("stream: needs an event-time source (timestamp:, no valid_from)")
            if self.created_timestamp is not None:
                raise ValueError("stream: a streamed source cannot have a created_timestamp")
            if self.derived:
                # the consumer applies events as pushed; derived columns would differ between
                # streamed and batch values, so refuse rather than serve wrong numbers
                raise ValueError("stream: a streamed source cannot have derived columns yet")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        new: dict[str, Any] = {
            "join": None,
            "derived": {},
            "null_created": "error",
            "min_match_rate": None,
        }
        return drop_new_defaults(handler(self), self, new)


# -- reading a source: the one place its derived columns are computed ------------------
# Here, next to the model, so that every reader (the feature engine, validate, entity
# listing) can call it: config is a package every layer may import.


def scan_source(source: SourceConfig, name: str) -> pl.LazyFrame:
    """The source's rows with its ``derived`` columns added (in config order, so a derived
    column may use an earlier one; a derived column named like a stored one replaces it).

    Raises ConfigError naming ``sources.<name>.derived.<column>`` when an expression does not
    parse or refers to a column that does not exist.
    """
    import polars as pl

    from mlpipe_cli.errors import ConfigError, InputError
    from mlpipe_cli.io import scan_parquet

    lazy = scan_parquet(source.path)
    if not source.derived:
        return lazy
    try:
        columns = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read source {name!r}: {_first_error_line(exc)}") from None
    for column, text in source.derived.items():
        where = f"sources.{name}.derived.{column}"
        try:
            expr = pl.sql_expr(text)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise ConfigError(
                f"{where}: {text!r} is not a Polars SQL expression: {_first_error_line(exc)}"
            ) from None
        lazy = lazy.with_columns(expr.alias(column))
        try:
            lazy.collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise ConfigError(
                f"{where}: cannot compute {text!r}: {_first_error_line(exc)}",
                hint=f"columns available: {', '.join(columns)}",
            ) from None
        if column not in columns:
            columns.append(column)
    return lazy


def _first_error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
