"""Transform specs (owned by the fit/transform area): what `mlpipe fit` learns, per column.

Each input column maps to a list of steps. Numeric steps (``fill_null``, ``standard``,
``minmax``, ``robust``, ``clip``, ``log1p``) chain in the declared order and produce one
Float64 output named like the column. Every other step (``onehot``, ``ordinal``,
``frequency``, ``target``, ``temporal``, ``embedding``, ``passthrough``, ``drop``) is an
*encoder*: it must be the column's only step and produces the outputs documented in
docs/fit-transform.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath
from mlpipe_cli.config.sources import ColumnContract

NUMERIC_STEPS = ("fill_null", "standard", "minmax", "robust", "clip", "log1p")
TEMPORAL_FEATURES = (
    "hour", "dow", "month", "is_weekend",
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "month_sin", "month_cos",
    "days_since",
)  # fmt: skip


class ValuePolicy(ConfigModel):
    """What a numeric column does with null, NaN and ±inf inputs, in fit, `transform` and
    `serve` alike. Each key is set on at most one of the column's steps (it applies to the
    column's input, before the first step). Every value handled is counted in the transform
    report; a value the policy refuses fails the run (exit 1) or the request."""

    on_null: Literal["fill", "keep", "error"] | None = Field(
        default=None,
        description="null (missing) input: 'fill' by the column's fill_null step (the default "
        "when it has one), 'keep' as a missing output, 'error' refuse (the default otherwise)",
    )
    on_nan: Literal["null", "error"] | None = Field(
        default=None, description="NaN input: 'null' read as missing (default), 'error' refuse"
    )
    on_inf: Literal["clip", "error"] | None = Field(
        default=None,
        description="±inf input: 'error' refuse (default), 'clip' to the training min/max",
    )


class FillNull(ValuePolicy):
    type: Literal["fill_null"]
    strategy: Literal["constant", "mean", "median"] = "mean"
    value: float | None = Field(default=None, description="the constant for strategy=constant")

    @model_validator(mode="after")
    def _constant_needs_value(self) -> FillNull:
        if self.strategy == "constant" and self.value is None:
            raise ValueError("fill_null with strategy 'constant' needs a value")
        if self.strategy != "constant" and self.value is not None:
            raise ValueError("value is only used with strategy 'constant'")
        return self


class Standard(ValuePolicy):
    type: Literal["standard"]
    with_mean: bool = True
    with_std: bool = True


class MinMax(ValuePolicy):
    type: Literal["minmax"]
    feature_range: tuple[float, float] = (0.0, 1.0)
    clip: bool = Field(default=False, description="clip outputs to feature_range")

    @model_validator(mode="after")
    def _ordered(self) -> MinMax:
        if not self.feature_range[0] < self.feature_range[1]:
            raise ValueError("feature_range must be [low, high] with low < high")
        return self


class Robust(ValuePolicy):
    type: Literal["robust"]
    with_centering: bool = True
    with_scaling: bool = True
    quantile_range: tuple[float, float] = (25.0, 75.0)

    @model_validator(mode="after")
    def _ordered(self) -> Robust:
        lo, hi = self.quantile_range
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                "quantile_range must be [low, high] percentiles, 0 <= low < high <= 100"
            )
        return self


class Clip(ValuePolicy):
    type: Literal["clip"]
    min: float | None = Field(default=None, description="fixed lower bound")
    max: float | None = Field(default=None, description="fixed upper bound")
    quantiles: tuple[float, float] | None = Field(
        default=None, description="fitted bounds: [low, high] quantiles in [0, 1]"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Clip:
        fixed = self.min is not None or self.max is not None
        if fixed == (self.quantiles is not None):
            raise ValueError("clip needs either min/max (fixed) or quantiles (fitted), not both")
        if self.quantiles is not None and not 0 <= self.quantiles[0] < self.quantiles[1] <= 1:
            raise ValueError("clip quantiles must be [low, high] with 0 <= low < high <= 1")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("clip min must not exceed max")
        return self


class Log1p(ValuePolicy):
    type: Literal["log1p"]
    on_invalid: Literal["error", "shift"] = Field(
        default="error",
        description="values <= -1 in the training data: 'error' fails fit; 'shift' adds "
        "shift = -min(train) so the smallest training value maps to log1p(0) = 0",
    )


class OneHot(ConfigModel):
    type: Literal["onehot"]
    min_frequency: int | float | None = Field(
        default=None, description="rarer categories go to `other` (int = count, float = share)"
    )
    max_categories: int | None = Field(
        default=None, ge=2, description="output columns including `other` (like sklearn)"
    )


class Ordinal(ConfigModel):
    type: Literal["ordinal"]
    order: Literal["lexical", "frequency"] = Field(
        default="lexical", description="lexical = sorted values (sklearn); frequency = count desc"
    )
    unknown_value: int = Field(default=-1, description="index for unknown and null values")


class Frequency(ConfigModel):
    type: Literal["frequency"]
    unknown_value: float = Field(default=0.0, description="output for unknown and null values")


class Target(ConfigModel):
    type: Literal["target"]
    smooth: Literal["auto"] | float = Field(
        default="auto",
        description="'auto' = empirical Bayes (sklearn); a number m = "
        "(sum + m*prior) / (count + m)",
    )
    cv: int = Field(default=5, ge=2, description="folds for the cross-fitted training outputs")


class Temporal(ConfigModel):
    type: Literal["temporal"]
    features: list[Literal[TEMPORAL_FEATURES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [
            "hour_sin",
            "hour_cos",
            "dow_sin",
            "dow_cos",
            "month_sin",
            "month_cos",
        ],
    )
    reference: str | None = Field(
        default=None, description="timestamp column for days_since (days = column - reference)"
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone (e.g. Europe/Berlin) whose local wall-clock time the calendar "
        "features (hour, dow, month, is_weekend, sin/cos) are computed on, DST-correct; a "
        "naive column is read as UTC. Default: the column's own zone (naive: as given)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
            ) from None
        return value

    @model_validator(mode="after")
    def _reference(self) -> Temporal:
        if ("days_since" in self.features) != (self.reference is not None):
            raise ValueError("days_since and reference must be given together")
        if len(set(self.features)) != len(self.features) or not self.features:
            raise ValueError("features must be a non-empty list without repeats")
        if self.timezone is not None and self.features == ["days_since"]:
            raise ValueError(
                "timezone applies to calendar features only; days_since is "
                "elapsed time whatever the zone"
            )
        return self


class Embedding(ConfigModel):
    type: Literal["embedding"]
    table: ConfigPath = Field(description="Parquet lookup table: id column + vector column")
    key: str = Field(description="id column in the table")
    vector: str = Field(description="Array/List of floats column in the table")
    unknown: Literal["zero", "mean"] = "zero"


class Passthrough(ValuePolicy):
    type: Literal["passthrough"]


class Drop(ConfigModel):
    type: Literal["drop"]


Step = Annotated[
    FillNull
    | Standard
    | MinMax
    | Robust
    | Clip
    | Log1p
    | OneHot
    | Ordinal
    | Frequency
    | Target
    | Temporal
    | Embedding
    | Passthrough
    | Drop,
    Field(discriminator="type"),
]


POLICY_KEYS = ("on_null", "on_nan", "on_inf")


def _check_policy(column: str, steps: list[Any]) -> None:
    for key in POLICY_KEYS:
        where = [i for i, step in enumerate(steps) if getattr(step, key) is not None]
        if len(where) > 1:
            raise ValueError(
                f"column {column!r}: {key} is set on steps #{where[0] + 1} "
                f"({steps[where[0]].type}) and #{where[1] + 1} ({steps[where[1]].type}); set it "
                "once (it applies to the column's input)"
            )
    on_null = next((s.on_null for s in steps if s.on_null is not None), None)
    fills = any(s.type == "fill_null" for s in steps)
    if on_null == "fill" and not fills:
        raise ValueError(f"column {column!r}: on_null: fill needs a fill_null step")
    if on_null in ("keep", "error") and fills:
        raise ValueError(
            f"column {column!r}: on_null: {on_null} contradicts its fill_null step (which "
            "fills nulls); remove one of them"
        )


class TransformConfig(ConfigModel):
    """The preprocessing fitted by `mlpipe fit`: one entry per input column."""

    data: ConfigPath | None = Field(default=None, description="default training data for fit")
    target: str | None = Field(default=None, description="label column (target encoding)")
    contract: dict[str, ColumnContract] = Field(
        default_factory=dict, description="column contract the training data must satisfy"
    )
    source_contracts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="source name -> columns whose contract in `sources` the training data "
        "must also satisfy (e.g. {users: [age, country, plan]}); `contract` overrides",
    )
    golden_rows: int = Field(default=5, ge=1, le=100)
    columns: dict[str, list[Step]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _steps_compose(self) -> TransformConfig:
        for column, steps in self.columns.items():
            if not steps:
                raise ValueError(f"column {column!r} has no steps (use [{{type: passthrough}}])")
            kinds = [s.type for s in steps]
            encoders = [k for k in kinds if k not in NUMERIC_STEPS]
            if encoders and len(steps) > 1:
                raise ValueError(
                    f"column {column!r}: {encoders[0]} must be the column's only step "
                    f"(numeric steps {', '.join(NUMERIC_STEPS)} may be chained)"
                )
            if not encoders or kinds == ["passthrough"]:
                _check_policy(column, steps)
            if any(k == "target" for k in kinds) and self.target is None:
                raise ValueError(f"column {column!r} uses target encoding but no target is set")
        if self.target is not None and self.target in self.columns:
            raise ValueError(f"target {self.target!r} cannot also be a transformed column")
        return self

    def plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
