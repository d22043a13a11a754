"""The point-in-time feature engine: vectorised Polars, one output row per spine row.

Rules (also in docs/training-set.md; the brute-force oracle in tests/test_features_oracle.py
is their executable spec). For a spine row with entity ``k`` and time ``t``, and a feature
reading source ``S``:

* A source row is **visible** at ``t`` when its event time ``e < t`` (``e <= t`` with
  ``inclusive: true``) and, if ``S`` names a ``created_timestamp`` ``c``, also ``c < t``
  (``c <= t``). Type-2 sources use ``valid_from <= t`` instead of the event-time test.
* No visible row (no history), or the newest visible row older than ``S.ttl``
  (``t - max(e) > ttl``) → the feature's ``default`` (null if none).
* A window ``w`` keeps visible rows with ``e >= t - w``: ``[t-w, t)`` (``[t-w, t]``
  inclusive). ``lifetime`` keeps all visible rows.
* Ties at the same event time are ordered by created time, then source row order; the
  latest is "last".
* Any other null result (empty window for mean/min/max/last, std of < 2 values) → default.

Algorithm: per (source, boundary rule) the spine rows and the source rows are concatenated
and sorted once by (entity, visible-from time, spine-after-events). Lifetime aggregates are
cumulative ops by entity (a spine row sees exactly the rows sorted before it), windows are
``rolling_*_by`` on the event time by entity, and "last row" features take a cumulative max
of the row's rank and gather. No per-row Python, no spine × history pairing except for the
two cases that are genuinely two-dimensional (windowed aggregates on a source with a
created_timestamp, and windowed count_distinct), which use a keyed range join.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.config.features import UNIT_SECONDS, FeatureConfig
from mlpipe_cli.errors import ConfigError, DataCheckFailed, InputError, MlpipeError, UsageError

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.sources import SourceConfig

_ROW = "__pit_row"
_KIND = "__pit_kind"  # 0 = source row, 1 = spine row
_T = "__pit_t"
_E = "__pit_e"
_A = "__pit_a"  # visible-from time (rows with _A <= t are visible)
_C = "__pit_c"
_VT = "__pit_valid_to"
_SRC = "__pit_src"
_SEQ = "__pit_seq"
_POS = "__pit_pos"

_UNIT_ORDER = {"ms": 0, "us": 1, "ns": 2}
_PER_SECOND = {"ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class PointInTimeInvariantError(MlpipeError):
    """An internal invariant (row count, order) broke: a bug, never a data problem."""


def feature_names(config: PipelineConfig) -> list[str]:
    """Names of every feature the config defines, in config order."""
    return [feature.name for feature in config.features]


@dataclass
class _Ctx:
    keys: list[str]
    unit: str
    zone: str | None  # zone to assume for naive columns when aware ones are mixed in
    key_dtypes: dict[str, pl.DataType]
    progress: Callable[[str], None] | None = None
    notes: list[str] = field(default_factory=list)

    def units(self, delta: timedelta) -> int:
        return (delta // timedelta(microseconds=1)) * _PER_SECOND[self.unit] // 1_000_000

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)


def compute_features(
    config: PipelineConfig,
    spine: pl.LazyFrame | pl.DataFrame,
    *,
    entity_keys: Sequence[str],
    timestamp: str,
    features: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Spine columns + one column per feature, one row per spine row, in spine order.

    ``progress`` (optional) is called with a short description as each step starts.
    """
    selected = _select(config, features)
    keys = list(entity_keys)
    if not keys:
        raise UsageError("no entity keys given", hint="set entity_keys in the config")
    lazy = spine.lazy() if isinstance(spine, pl.DataFrame) else spine
    schema = lazy.collect_schema()
    missing = [c for c in [*keys, timestamp] if c not in schema]
    if missing:
        raise InputError(
            f"spine has no column {missing[0]!r} (columns: {', '.join(schema.names())})",
            hint="check training_set.timestamp / entity_keys",
        )
    clash = [f.name for f in selected if f.name in schema]
    if clash:
        raise UsageError(f"spine already has a column named like feature {clash[0]!r}")
    _check_time_dtype(schema[timestamp], f"spine column {timestamp!r}")
    try:
        frame = lazy.collect() if isinstance(spine, pl.LazyFrame) else spine
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the spine: {_first_line(exc)}") from None
    n = frame.height
    nulls = frame.get_column(timestamp).null_count()
    if nulls:
        raise DataCheckFailed(
            f"spine column {timestamp!r} has {nulls} null timestamp(s) of {n} rows",
            hint="drop or fill them; a row without a time has no point-in-time features",
        )

    ctx = _context(config, selected, schema, keys, timestamp, progress)
    slim = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
        *[pl.col(k) for k in keys],
        _physical(pl.col(timestamp), schema[timestamp], ctx).alias(_T),
    )

    columns: dict[str, pl.Series] = {}
    for (source_name, inclusive), group in _groups(selected).items():
        source = config.sources[source_name]
        ctx.say(f"features from {source_name} ({len(group)})")
        result = _compute_group(config, ctx, slim, source_name, source, group, inclusive)
        if result.height != n:
            raise PointInTimeInvariantError(
                f"internal error: {source_name} features have {result.height} rows for {n} "
                "spine rows (please report)"
            )
        for feature in group:
            columns[feature.name] = result.get_column(feature.name)
    out = frame.with_columns([columns[f.name] for f in selected]) if selected else frame
    if out.height != n:
        raise PointInTimeInvariantError(
            f"internal error: output has {out.height} rows for {n} spine rows (please report)"
        )
    return out


# -- planning ---------------------------------------------------------------------------


def _select(config: PipelineConfig, names: Sequence[str] | None) -> list[FeatureConfig]:
    if names is None:
        return list(config.features)
    by_name = {f.name: f for f in config.features}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none"
        raise UsageError(f"unknown feature {unknown[0]!r} (defined: {known})")
    seen: set[str] = set()
    ordered = []
    for name in names:
        if name not in seen:
            seen.add(name)
            ordered.append(by_name[name])
    return ordered


def _groups(selected: list[FeatureConfig]) -> dict[tuple[str, bool], list[FeatureConfig]]:
    groups: dict[tuple[str, bool], list[FeatureConfig]] = {}
    for feature in selected:
        groups.setdefault((feature.source, feature.inclusive), []).append(feature)
    return groups


def _check_time_dtype(dtype: pl.DataType, what: str) -> None:
    if not isinstance(dtype, pl.Datetime | pl.Date):
        raise InputError(f"{what} must be a datetime or date, got {dtype}")


def _time_columns(source: SourceConfig) -> list[str]:
    cols = [source.timestamp, source.created_timestamp, source.valid_from, source.valid_to]
    return [c for c in cols if c is not None]


def _context(
    config: PipelineConfig,
    selected: list[FeatureConfig],
    spine_schema: pl.Schema,
    keys: list[str],
    timestamp: str,
    progress: Callable[[str], None] | None,
) -> _Ctx:
    """Pick a common time unit and check naive/aware timestamps are not mixed silently."""
    from mlpipe_cli.io import scan_parquet

    dtypes: list[tuple[str, pl.DataType]] = [(f"spine.{timestamp}", spine_schema[timestamp])]
    for name in sorted({f.source for f in selected}):
        source = config.sources[name]
        schema = scan_parquet(source.path).collect_schema()
        for col in _time_columns(source):
            if col not in schema:
                raise InputError(
                    f"source {name!r} has no column {col!r} (columns: {', '.join(schema.names())})"
                )
            _check_time_dtype(schema[col], f"source {name!r} column {col!r}")
            dtypes.append((f"{name}.{col}", schema[col]))
    unit = "us"
    naive, aware = [], []
    for label, dtype in dtypes:
        if isinstance(dtype, pl.Datetime):
            if _UNIT_ORDER[dtype.time_unit] > _UNIT_ORDER[unit]:
                unit = dtype.time_unit
            (aware if dtype.time_zone else naive).append(label)
        else:
            naive.append(label)
    zone = None
    if naive and aware:
        if config.timezone is None:
            raise InputError(
                f"naive timestamps ({', '.join(naive)}) and zone-aware ones ({', '.join(aware)}) "
                "cannot be compared",
                hint="set `timezone:` in the config to the zone the naive ones are in",
            )
        zone = config.timezone
    return _Ctx(
        keys=keys,
        unit=unit,
        zone=zone,
        key_dtypes={k: spine_schema[k] for k in keys},
        progress=progress,
    )


def _physical(expr: pl.Expr, dtype: pl.DataType, ctx: _Ctx) -> pl.Expr:
    """A timestamp column as Int64 ticks of the common unit (UTC when zone-aware)."""
    if isinstance(dtype, pl.Date):
        expr = expr.cast(pl.Datetime(ctx.unit))
        dtype = pl.Datetime(ctx.unit)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None and ctx.zone is not None:
        expr = expr.dt.replace_time_zone(ctx.zone, ambiguous="earliest", non_existent="raise")
    return expr.dt.cast_time_unit(ctx.unit).to_physical().cast(pl.Int64)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- loading a source -------------------------------------------------------------------


def _value_col(i: int) -> str:
    return f"__pit_v{i}"


def _load_source(
    ctx: _Ctx, name: str, source: SourceConfig, value_columns: list[str]
) -> pl.DataFrame:
    """Keys (renamed to the spine's), time columns as Int64 ticks, values as __pit_v<i>."""
    from mlpipe_cli.io import scan_parquet

    lazy = scan_parquet(source.path)
    schema = lazy.collect_schema()
    src_keys = list(source.entity_keys or ctx.keys)
    if len(src_keys) != len(ctx.keys):
        raise ConfigError(
            f"source {name!r} has {len(src_keys)} entity key(s) {src_keys} but the spine has "
            f"{len(ctx.keys)} {ctx.keys}"
        )
    for col in [*src_keys, *value_columns]:
        if col not in schema:
            raise InputError(
                f"source {name!r} has no column {col!r} (columns: {', '.join(schema.names())})",
                hint="check the feature's `column` or the source's entity_keys",
            )
    selects: list[pl.Expr] = [pl.int_range(pl.len(), dtype=pl.Int64).alias(_SRC)]
    for src_key, key in zip(src_keys, ctx.keys, strict=True):
        selects.append(_key_expr(name, src_key, schema[src_key], ctx.key_dtypes[key]).alias(key))
    roles = [
        (source.timestamp, _E),
        (source.created_timestamp, _C),
        (source.valid_from, _E),
        (source.valid_to, _VT),
    ]
    for col, role in roles:
        if col is not None:
            selects.append(_physical(pl.col(col), schema[col], ctx).alias(role))
    for i, col in enumerate(value_columns):
        selects.append(pl.col(col).alias(_value_col(i)))
    try:
        frame = lazy.select(selects).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read source {name!r}: {_first_line(exc)}") from None
    for col, role in roles[:3]:
        if col is not None:
            nulls = frame.get_column(role).null_count()
            if nulls:
                raise DataCheckFailed(
                    f"source {name!r} column {col!r} has {nulls} null timestamp(s)",
                    hint="a row without a time cannot be placed in time; drop or fill them",
                )
    return frame.drop_nulls(ctx.keys)


def _key_expr(name: str, col: str, dtype: pl.DataType, want: pl.DataType) -> pl.Expr:
    if dtype == want:
        return pl.col(col)
    if (dtype.is_integer() and want.is_integer()) or (
        isinstance(dtype, pl.String | pl.Categorical | pl.Enum)
        and isinstance(want, pl.String | pl.Categorical | pl.Enum)
    ):
        return pl.col(col).cast(want, strict=False)
    raise InputError(
        f"source {name!r} key column {col!r} is {dtype} but the spine's key is {want}",
        hint="keys must have compatible types (both integers or both strings)",
    )


# -- one (source, boundary) group ------------------------------------------------------


def _compute_group(
    config: PipelineConfig,
    ctx: _Ctx,
    slim: pl.DataFrame,
    name: str,
    source: SourceConfig,
    group: list[FeatureConfig],
    inclusive: bool,
) -> pl.DataFrame:
    type2 = source.valid_from is not None
    timed = source.timestamp is not None
    if type2 and timed:
        raise ConfigError(
            f"source {name!r} names both timestamp and valid_from/valid_to; use one",
        )
    for feature in group:
        if not timed and feature.kind != "attribute":
            raise ConfigError(
                f"feature {feature.name!r} ({feature.kind}) needs source {name!r} to have a "
                "`timestamp` column"
            )
    value_columns: list[str] = []
    for feature in group:
        col = feature.source_column
        if col is not None and col not in value_columns:
            value_columns.append(col)
    vcol = {c: _value_col(i) for i, c in enumerate(value_columns)}
    events = _load_source(ctx, name, source, value_columns)
    if not timed and not type2:
        return _plain_attributes(ctx, slim, name, events, group, vcol)
    return _timed_group(ctx, slim, source, events, group, vcol, inclusive, type2)


def _plain_attributes(
    ctx: _Ctx,
    slim: pl.DataFrame,
    name: str,
    dim: pl.DataFrame,
    group: list[FeatureConfig],
    vcol: dict[str, str],
) -> pl.DataFrame:
    dupes = dim.select(pl.struct(ctx.keys).is_duplicated().sum()).item()
    if dupes:
        raise InputError(
            f"source {name!r} has {dupes} rows sharing an entity key; a plain attribute join "
            "needs one row per entity",
            hint="deduplicate it, or declare valid_from/valid_to (type-2) or a timestamp",
        )
    joined = slim.join(dim, on=ctx.keys, how="left", maintain_order="left")
    return joined.select(
        [_with_default(pl.col(vcol[f.source_column]), f).alias(f.name) for f in group]
    )


def _with_default(value: pl.Expr, feature: FeatureConfig, stale: pl.Expr | None = None) -> pl.Expr:
    if stale is not None:
        value = pl.when(stale).then(pl.lit(None)).otherwise(value)
    if feature.default is not None:
        value = value.fill_null(pl.lit(feature.default))
    return value


def _timed_group(
    ctx: _Ctx,
    slim: pl.DataFrame,
    source: SourceConfig,
    events: pl.DataFrame,
    group: list[FeatureConfig],
    vcol: dict[str, str],
    inclusive: bool,
    type2: bool,
) -> pl.DataFrame:
    keys = ctx.keys
    created = source.created_timestamp is not None
    delta = 0 if inclusive else 1
    delta_e = 0 if type2 else delta
    visible_from = pl.col(_E) + delta_e
    if created:
        visible_from = pl.max_horizontal(visible_from, pl.col(_C) + delta)
    events = events.with_columns(visible_from.alias(_A), pl.lit(0, pl.Int8).alias(_KIND))
    if created:
        # rank rows by (event time, created time, source order): the "latest" row wins ties
        events = events.sort([*keys, _E, _C, _SRC]).with_row_index(_SEQ)
        events = events.with_columns(pl.col(_SEQ).cast(pl.Int64))
        tiebreak = _SEQ
    else:
        tiebreak = _SRC
    spine_rows = slim.select(
        pl.col(_ROW),
        *keys,
        pl.col(_T),
        pl.col(_T).alias(_E),
        pl.col(_T).alias(_A),
        pl.lit(1, pl.Int8).alias(_KIND),
    )
    conc = pl.concat([events, spine_rows], how="diagonal_relaxed").sort(
        [*keys, _A, _KIND, tiebreak]
    )
    if created:
        lookup = events
    else:
        conc = conc.with_row_index(_POS).with_columns(
            pl.when(pl.col(_KIND) == 0).then(pl.col(_POS).cast(pl.Int64)).alias(_SEQ)
        )
        lookup = conc
    is_ev = pl.col(_KIND) == 0

    def over(expr: pl.Expr) -> pl.Expr:
        return expr.over(keys)

    base: dict[str, pl.Expr] = {
        "__n": over(is_ev.cast(pl.Int64).cum_sum()),
        "__maxe": over(pl.when(is_ev).then(pl.col(_E)).cum_max().forward_fill()),
        "__best": over(pl.col(_SEQ).cum_max().forward_fill()),
    }
    exprs: dict[str, pl.Expr] = {}
    gathers: list[tuple[str, str, str]] = []  # (feature name, index column, value column)
    fallback: list[FeatureConfig] = []
    for feature in group:
        col = vcol.get(feature.source_column) if feature.source_column else None
        value = pl.when(is_ev).then(pl.col(col)) if col else None
        window = feature.window_delta
        fname = feature.name
        if feature.kind in ("lag", "attribute"):
            gathers.append((fname, "__best", col))  # type: ignore[arg-type]
            continue
        if feature.kind == "time_since_last":
            exprs[fname] = (pl.col(_T) - pl.col("__maxe")) / _unit_ticks(ctx, feature)
            continue
        if feature.kind == "aggregate" and feature.agg == "last":
            idx = f"__best_{fname}"
            exprs[idx] = over(
                pl.when(value.is_not_null()).then(pl.col(_SEQ)).cum_max().forward_fill()
            )  # type: ignore[union-attr]
            gathers.append((fname, idx, col))  # type: ignore[arg-type]
            continue
        if window is not None and (created or feature.agg == "count_distinct"):
            fallback.append(feature)
            continue
        if window is None:
            exprs.update(_lifetime_exprs(ctx, feature, value, over))
        else:
            exprs.update(_window_exprs(ctx, feature, value, over, inclusive))
    stage = conc.with_columns(**base).with_columns(**exprs) if exprs else conc.with_columns(**base)
    spine_part = stage.filter(pl.col(_KIND) == 1).sort(_ROW)
    if spine_part.height != slim.height:
        raise PointInTimeInvariantError("internal error: spine rows lost in the as-of pass")

    cols: dict[str, pl.Series] = {}
    for fname, idx, col in gathers:
        index = spine_part.get_column(idx)
        cols[fname] = lookup.get_column(col).gather(index)
        if fname.startswith("__"):
            continue
        feature = next(f for f in group if f.name == fname)
        window = feature.window_delta
        if window is not None:
            e_of = lookup.get_column(_E).gather(index)
            inside = e_of >= (spine_part.get_column(_T) - ctx.units(window))
            cols[fname] = pl.select(
                pl.when(inside.fill_null(False)).then(cols[fname]).otherwise(None)
            ).to_series()
        if type2:
            valid_to = lookup.get_column(_VT).gather(index)
            ended = (valid_to.is_not_null() & (valid_to <= spine_part.get_column(_T))).fill_null(
                False
            )
            cols[fname] = pl.select(pl.when(ended).then(None).otherwise(cols[fname])).to_series()
    if cols:
        spine_part = spine_part.with_columns([s.alias(k) for k, s in cols.items()])
    if fallback:
        spine_part = _range_join(ctx, spine_part, events, fallback, vcol)

    stale = pl.col("__n") == 0
    if source.ttl is not None and not type2:
        stale = stale | ((pl.col(_T) - pl.col("__maxe")) > ctx.units(source.ttl))
    finals = []
    for feature in group:
        value = pl.col(feature.name)
        if feature.kind == "aggregate" and feature.agg in ("count", "count_distinct"):
            value = value.cast(pl.Int64)
        finals.append(_with_default(value, feature, stale).alias(feature.name))
    return spine_part.select(finals)


def _unit_ticks(ctx: _Ctx, feature: FeatureConfig) -> float:
    return float(UNIT_SECONDS[feature.unit] * _PER_SECOND[ctx.unit])


def _lifetime_exprs(
    ctx: _Ctx, feature: FeatureConfig, value: pl.Expr | None, over: Callable[[pl.Expr], pl.Expr]
) -> dict[str, pl.Expr]:
    name = feature.name
    is_ev = pl.col(_KIND) == 0
    if feature.kind == "mean_interval":
        mine = over(pl.when(is_ev).then(pl.col(_E)).cum_min().forward_fill())
        n = pl.col("__n")
        return {
            name: pl.when(n >= 2).then(
                (pl.col("__maxe") - mine) / ((n - 1) * _unit_ticks(ctx, feature))
            )
        }
    agg = feature.agg
    if agg == "count" and value is None:
        return {name: pl.col("__n")}
    if value is None:
        raise ConfigError(f"feature {name!r}: agg {agg} needs `column`")
    present = value.is_not_null()
    if agg == "count":
        return {name: over(present.cast(pl.Int64).cum_sum())}
    if agg == "count_distinct":
        first = present & value.is_first_distinct()
        return {name: over(first.cast(pl.Int64).cum_sum())}
    if agg == "sum":
        return {name: over(value.fill_null(0).cum_sum())}
    if agg == "min":
        return {name: over(value.cum_min().forward_fill())}
    if agg == "max":
        return {name: over(value.cum_max().forward_fill())}
    count = over(present.cast(pl.Int64).cum_sum())
    if agg == "mean":
        total = over(value.cast(pl.Float64).fill_null(0).cum_sum())
        return {name: pl.when(count > 0).then(total / count)}
    if agg == "std":
        # centred on the entity's first value (never a future one) to limit cancellation
        centred = value.cast(pl.Float64) - over(value.cast(pl.Float64).drop_nulls().first())
        s1 = over(centred.fill_null(0).cum_sum())
        s2 = over((centred * centred).fill_null(0).cum_sum())
        var = (s2 - s1 * s1 / count) / (count - 1)
        return {name: pl.when(count >= 2).then(var.clip(lower_bound=0).sqrt())}
    raise ConfigError(f"feature {name!r}: unsupported aggregation {agg!r}")


def _window_exprs(
    ctx: _Ctx,
    feature: FeatureConfig,
    value: pl.Expr | None,
    over: Callable[[pl.Expr], pl.Expr],
    inclusive: bool,
) -> dict[str, pl.Expr]:
    name = feature.name
    window = feature.window_delta or timedelta(0)
    size = f"{ctx.units(window)}i"
    closed = "both" if inclusive else "left"
    is_ev = pl.col(_KIND) == 0

    def roll(expr: pl.Expr, how: str, **kw: Any) -> pl.Expr:
        method = getattr(expr, f"rolling_{how}_by")
        return over(method(_E, size, closed=closed, **kw))

    n_rows = roll(is_ev.cast(pl.Int64), "sum")
    if feature.kind == "mean_interval":
        ev_time = pl.when(is_ev).then(pl.col(_E))
        span = roll(ev_time, "max", min_samples=1) - roll(ev_time, "min", min_samples=1)
        return {name: pl.when(n_rows >= 2).then(span / ((n_rows - 1) * _unit_ticks(ctx, feature)))}
    agg = feature.agg
    if agg == "count" and value is None:
        return {name: n_rows}
    if value is None:
        raise ConfigError(f"feature {name!r}: agg {agg} needs `column`")
    count = roll(value.is_not_null().cast(pl.Int64), "sum")
    if agg == "count":
        return {name: count}
    if agg == "sum":
        return {name: roll(value, "sum")}
    if agg == "min":
        return {name: roll(value, "min", min_samples=1)}
    if agg == "max":
        return {name: roll(value, "max", min_samples=1)}
    if agg == "mean":
        return {name: pl.when(count > 0).then(roll(value.cast(pl.Float64), "sum") / count)}
    if agg == "std":
        return {name: pl.when(count >= 2).then(roll(value.cast(pl.Float64), "std", min_samples=1))}
    raise ConfigError(f"feature {name!r}: unsupported windowed aggregation {agg!r}")


def _range_join(
    ctx: _Ctx,
    spine_part: pl.DataFrame,
    events: pl.DataFrame,
    fallback: list[FeatureConfig],
    vcol: dict[str, str],
) -> pl.DataFrame:
    """Windowed aggregates that need a 2-D range (created cutoff, windowed count_distinct)."""
    keys = ctx.keys
    by_window: dict[timedelta, list[FeatureConfig]] = {}
    for feature in fallback:
        by_window.setdefault(feature.window_delta, []).append(feature)  # type: ignore[arg-type]
    left = spine_part.lazy().select(_ROW, *keys, _T)
    for window, feats in by_window.items():
        pairs = left.join(events.lazy(), on=keys, how="inner").filter(
            (pl.col(_A) <= pl.col(_T)) & (pl.col(_E) >= pl.col(_T) - ctx.units(window))
        )
        aggs = []
        fills = []
        for feature in feats:
            name = feature.name
            if feature.kind == "mean_interval":
                aggs.append(
                    pl.when(pl.len() >= 2)
                    .then(
                        (pl.col(_E).max() - pl.col(_E).min())
                        / ((pl.len() - 1) * _unit_ticks(ctx, feature))
                    )
                    .alias(name)
                )
                continue
            agg = feature.agg
            if agg == "count" and feature.column is None:
                aggs.append(pl.len().cast(pl.Int64).alias(name))
                fills.append(name)
                continue
            x = pl.col(vcol[feature.source_column])  # type: ignore[index]
            if agg == "count":
                aggs.append(x.count().cast(pl.Int64).alias(name))
                fills.append(name)
            elif agg == "count_distinct":
                aggs.append(x.drop_nulls().n_unique().cast(pl.Int64).alias(name))
                fills.append(name)
            elif agg == "sum":
                aggs.append(x.sum().alias(name))
                fills.append(name)
            elif agg == "mean":
                aggs.append(x.cast(pl.Float64).mean().alias(name))
            elif agg == "min":
                aggs.append(x.min().alias(name))
            elif agg == "max":
                aggs.append(x.max().alias(name))
            elif agg == "std":
                aggs.append(x.cast(pl.Float64).std(ddof=1).alias(name))
            else:
                raise ConfigError(f"feature {name!r}: unsupported windowed aggregation {agg!r}")
        result = pairs.group_by(_ROW).agg(aggs).collect()
        spine_part = spine_part.join(result, on=_ROW, how="left", maintain_order="left")
        spine_part = spine_part.with_columns([pl.col(c).fill_null(0) for c in fills])
    return spine_part
