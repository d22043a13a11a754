"""The point-in-time feature engine: vectorised Polars, one output row per spine row.

Rules (also in docs/training-set.md; the brute-force oracle in tests/test_features_oracle.py
is their executable spec). A feature's entity ``k`` is read from the spine columns named like
its key columns (the feature's ``entity_keys``, else its source's, else the pipeline's), or
mapped onto them by ``join``; key dtypes are compared by ``features.keys.join_key_dtype``.
For a spine row with entity ``k`` and time ``t``, and a feature reading source ``S``:

* A source row is **visible** at ``t`` when its event time ``e < t`` (``e <= t`` with
  ``inclusive: true``) and, if ``S`` names a ``created_timestamp`` ``c``, also ``c < t``
  (``c <= t``). Type-2 sources use ``valid_from <= t`` instead of the event-time test.
* No visible row (no history), or the newest visible row older than the feature's ttl
  (its own, else ``S.ttl``; ``t - max(e) > ttl``, see features/ttl.py) → the feature's
  ``default`` (null if none).
* A window ``w`` keeps visible rows with ``e >= t - w``: ``[t-w, t)`` (``[t-w, t]``
  inclusive). ``lifetime`` keeps all visible rows; ``N events`` the last N visible rows in
  tie order. A lag with ``offset: k`` is the k-th newest visible row.
* Ties at the same event time are ordered by created time, then source row order; the
  latest is "last".
* Any other null result (empty window for mean/min/max/last, std of < 2 values) → default.

Algorithm: per (source, boundary rule, key columns) the spine rows and the source rows are
concatenated and sorted once by (entity, visible-from time, spine-after-events). Lifetime
aggregates are cumulative ops by entity (a spine row sees exactly the rows sorted before
it), windows are ``rolling_*_by`` on the event time by entity (event-count windows: a
rolling pass over the source rows alone, read at each spine row's newest visible row), and
"last row" features take a cumulative max of the row's rank and gather. No per-row Python,
no spine × history pairing except where visibility and order genuinely differ: on a source
with a created_timestamp, windowed aggregates, event-count windows and lag offsets use a
keyed range join.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, overload

import polars as pl

from mlpipe_cli.config.features import UNIT_SECONDS, FeatureConfig
from mlpipe_cli.errors import (
    ConfigError,
    DataCheckFailed,
    InputError,
    InternalError,
    UsageError,
    first_and_more,
)
from mlpipe_cli.features.localtime import check_naive_times, localize
from mlpipe_cli.features.ttl import governing_ttl, is_expired
from mlpipe_cli.progress import advance as progress_advance
from mlpipe_cli.progress import note as progress_note
from mlpipe_cli.progress import track as progress_track

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
_GID = "__pit_gid"  # entity run id along the (entity, time)-sorted rows
_KEY = "__pit_k"  # the spine's / source's key columns, renamed: __pit_k0, __pit_k1, ...
_MATCHED = "__pit_matched"  # the spine row's entity has a source row in scope
_EVN = "__pit_evn"  # source rows so far along the sorted rows (a global running count)

TimeUnit = Literal["ns", "us", "ms"]
_UNIT_ORDER = {"ms": 0, "us": 1, "ns": 2}
_PER_SECOND = {"ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class PointInTimeInvariantError(InternalError):
    """An internal invariant (row count, order) broke: a bug, never a data problem."""


def feature_names(config: PipelineConfig) -> list[str]:
    """Names of every feature the config defines, in config order."""
    return [feature.name for feature in config.features]


@dataclass(frozen=True)
class FeatureStats:
    """How well one feature's source matched the spine.

    ``matched`` counts spine rows whose entity has at least one source row in scope at t
    (visible by the boundary and created-time rules; for a plain table, a row with the key;
    for a type-2 table, a version that started before t), before ttl, windows and defaults.
    """

    feature: str
    source: str
    keys: dict[str, str]  # spine column -> source key column
    rows: int
    matched: int
    min_match_rate: float | None = None
    spine_examples: tuple[str, ...] = ()  # a few spine key values that were tried
    source_examples: tuple[str, ...] = ()  # a few key values the source has

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.rows if self.rows else None

    def to_json(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "source": self.source,
            "keys": dict(self.keys),
            "rows": self.rows,
            "matched": self.matched,
            "match_rate": self.match_rate,
            "min_match_rate": self.min_match_rate,
        }


@dataclass
class FeatureFrame:
    """``compute_features(..., stats=True)``: the frame and one FeatureStats per feature."""

    frame: pl.DataFrame
    stats: list[FeatureStats]


def check_match_rates(stats: Sequence[FeatureStats]) -> None:
    """Raise DataCheckFailed (exit 1) naming every feature that matched no spine row, or
    fewer rows than its ``min_match_rate`` (the feature's, else its source's)."""
    failures = []
    for item in stats:
        rate = item.match_rate
        if rate is None:
            continue  # an empty spine matches nothing and needs nothing
        keys = ", ".join(
            f"spine.{spine} -> {item.source}.{key}" for spine, key in item.keys.items()
        )
        if item.matched == 0:
            tried = f"; tried e.g. {', '.join(item.spine_examples)}" if item.spine_examples else ""
            has = (
                f"; {item.source} has e.g. {', '.join(item.source_examples)}"
                if item.source_examples
                else f"; {item.source} has no row with a key"
            )
            failures.append(
                f"feature {item.feature!r} matched none of {item.rows} spine rows "
                f"(keys {keys}{tried}{has})"
            )
        elif item.min_match_rate is not None and rate < item.min_match_rate:
            failures.append(
                f"feature {item.feature!r} matched {item.matched} of {item.rows} spine rows "
                f"({rate:.1%}), below min_match_rate {item.min_match_rate:g} (keys {keys})"
            )
    if failures:
        raise DataCheckFailed(
            first_and_more(failures),
            hint="check the keys hold the same entities (names, `join:`, values), or lower "
            "min_match_rate",
        )


@dataclass(frozen=True)
class _Join:
    """Where a feature's source keys are in the spine, and the dtype both are compared as."""

    spine: tuple[str, ...]
    source: tuple[str, ...]
    dtypes: tuple[pl.DataType, ...]


@dataclass
class _Ctx:
    keys: list[str]
    unit: TimeUnit
    zone: str | None  # zone to assume for naive columns when aware ones are mixed in
    key_dtypes: dict[str, pl.DataType]
    progress: Callable[[str], None] | None = None
    notes: list[str] = field(default_factory=list)

    def units(self, delta: timedelta) -> int:
        return (delta // timedelta(microseconds=1)) * _PER_SECOND[self.unit] // 1_000_000

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)


@overload
def compute_features(
    config: PipelineConfig,
    spine: pl.LazyFrame | pl.DataFrame,
    *,
    entity_keys: Sequence[str] | None = ...,
    timestamp: str,
    features: Sequence[str] | None = ...,
    progress: Callable[[str], None] | None = ...,
    stats: Literal[False] = ...,
    source_cache: dict[tuple[object, ...], pl.DataFrame] | None = ...,
) -> pl.DataFrame: ...


@overload
def compute_features(
    config: PipelineConfig,
    spine: pl.LazyFrame | pl.DataFrame,
    *,
    entity_keys: Sequence[str] | None = ...,
    timestamp: str,
    features: Sequence[str] | None = ...,
    progress: Callable[[str], None] | None = ...,
    stats: Literal[True],
    source_cache: dict[tuple[object, ...], pl.DataFrame] | None = ...,
) -> FeatureFrame: ...


def compute_features(
    config: PipelineConfig,
    spine: pl.LazyFrame | pl.DataFrame,
    *,
    entity_keys: Sequence[str] | None = None,
    timestamp: str,
    features: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    stats: bool = False,
    source_cache: dict[tuple[object, ...], pl.DataFrame] | None = None,
) -> pl.DataFrame | FeatureFrame:
    """Spine columns + one column per feature, one row per spine row, in spine order.

    Each feature joins on the spine columns named like its source's key columns (the
    source's ``entity_keys``, default the pipeline's), or those its ``join`` maps onto them.
    ``entity_keys`` names the spine columns that hold the pipeline's ``entity_keys`` (in
    order; default: the same names). ``progress`` (optional) is called with a short
    description as each step starts. With ``stats=True`` the result is a FeatureFrame whose
    ``stats`` give each feature's matched-row rate (``check_match_rates`` turns them into a
    pass/fail). ``source_cache`` (optional, a dict the caller keeps) holds each source's
    loaded rows between calls over the same config and files: ``materialize`` computes its
    entities in batches and would otherwise read every source once per batch.
    """
    selected = _select(config, features)
    lazy = spine.lazy() if isinstance(spine, pl.DataFrame) else spine
    schema = lazy.collect_schema()
    if timestamp not in schema:
        raise InputError(
            f"spine has no column {timestamp!r} (columns: {', '.join(schema.names())})",
            hint="check training_set.timestamp",
        )
    clash = [f.name for f in selected if f.name in schema]
    if clash:
        raise UsageError(f"spine already has a column named like feature {clash[0]!r}")
    _check_time_dtype(schema[timestamp], f"spine column {timestamp!r}")
    source_schemas = {
        name: _source_schema(config, name) for name in sorted({f.source for f in selected})
    }
    default_keys = _default_key_map(config, entity_keys)
    joins = {
        f.name: _plan_join(config, f, default_keys, schema, source_schemas[f.source])
        for f in selected
    }
    try:
        frame = lazy.collect() if isinstance(spine, pl.LazyFrame) else spine
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the spine: {_first_line(exc)}") from None
    n = frame.height
    check_spine_keys(frame, _key_users(selected, joins))
    nulls = frame.get_column(timestamp).null_count()
    if nulls:
        raise DataCheckFailed(
            f"spine column {timestamp!r} has {nulls} null timestamp(s) of {n} rows",
            hint="drop or fill them; a row without a time has no point-in-time features",
        )

    ctx = _context(config, selected, schema, source_schemas, timestamp, progress)
    _check_local_times(frame, [timestamp], schema, ctx, "spine")
    base = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
        _physical(pl.col(timestamp), schema[timestamp], ctx).alias(_T),
    )

    columns: dict[str, pl.Series] = {}
    feature_stats: dict[str, FeatureStats] = {}
    # one step per (source, boundary, join) group; partitions advance within it
    for (source_name, inclusive, join), group in progress_track(
        _groups(selected, joins).items(), "features", unit="groups"
    ):
        source = config.sources[source_name]
        keys = [f"{_KEY}{i}" for i in range(len(join.spine))]
        gctx = replace(ctx, keys=keys, key_dtypes=dict(zip(keys, join.dtypes, strict=True)))
        slim = base.with_columns(
            frame.get_column(col).cast(dtype).alias(key)
            for col, dtype, key in zip(join.spine, join.dtypes, keys, strict=True)
        )
        where = ", ".join(join.spine)
        ctx.say(f"features from {source_name} by {where} ({len(group)})")
        progress_note(f"{source_name} by {where}")
        result, examples = _compute_group(
            config, gctx, slim, source_name, source, group, inclusive, join, source_cache
        )
        if result.height != n:
            raise PointInTimeInvariantError(
                f"internal error: {source_name} features have {result.height} rows for {n} "
                "spine rows (please report)"
            )
        for feature in group:
            columns[feature.name] = result.get_column(feature.name)
        if stats:
            matched = int(result.get_column(_MATCHED).sum()) if n else 0
            tried = _examples(slim.select(keys)) if matched == 0 else ()
            for feature in group:
                feature_stats[feature.name] = FeatureStats(
                    feature=feature.name,
                    source=source_name,
                    keys=dict(zip(join.spine, join.source, strict=True)),
                    rows=n,
                    matched=matched,
                    min_match_rate=(
                        feature.min_match_rate
                        if feature.min_match_rate is not None
                        else source.min_match_rate
                    ),
                    spine_examples=tried,
                    source_examples=examples if matched == 0 else (),
                )
        del result, slim
    out = frame.with_columns([columns[f.name] for f in selected]) if selected else frame
    if out.height != n:
        raise PointInTimeInvariantError(
            f"internal error: output has {out.height} rows for {n} spine rows (please report)"
        )
    if stats:
        return FeatureFrame(out, [feature_stats[f.name] for f in selected])
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


def _groups(
    selected: list[FeatureConfig], joins: dict[str, _Join]
) -> dict[tuple[str, bool, _Join], list[FeatureConfig]]:
    groups: dict[tuple[str, bool, _Join], list[FeatureConfig]] = {}
    for feature in selected:
        key = (feature.source, feature.inclusive, joins[feature.name])
        groups.setdefault(key, []).append(feature)
    return groups


def _default_key_map(config: PipelineConfig, entity_keys: Sequence[str] | None) -> dict[str, str]:
    """Pipeline key column -> the spine column holding it (``entity_keys``, by position)."""
    pipeline = list(config.entity_keys)
    spine = list(entity_keys) if entity_keys is not None else pipeline
    if not pipeline:
        return {k: k for k in spine}
    if len(spine) != len(pipeline):
        raise ConfigError(
            f"the spine's entity keys {spine} must name one column per pipeline entity key "
            f"{pipeline}",
            hint="leave training_set.entity_keys unset when the spine uses the same names",
        )
    return dict(zip(pipeline, spine, strict=True))


def _plan_join(
    config: PipelineConfig,
    feature: FeatureConfig,
    default_keys: dict[str, str],
    spine_schema: pl.Schema,
    source_schema: pl.Schema,
) -> _Join:
    """Which spine column meets which source key column, as which dtype (loud on mismatch)."""
    from mlpipe_cli.features.keys import KeyTypeMismatch, join_columns, join_key_dtype

    name = feature.source
    pairs = join_columns(config, feature, default_keys)
    if not pairs:
        raise UsageError(
            f"feature {feature.name!r}: source {name!r} has no entity keys",
            hint="set entity_keys in the config (or on the source)",
        )
    keys = [key for _, key in pairs]
    spine_cols, dtypes = [], []
    for spine_col, key in pairs:
        if key not in source_schema:
            raise InputError(
                f"source {name!r} has no key column {key!r} "
                f"(columns: {', '.join(source_schema.names())})",
                hint=f"check sources.{name}.entity_keys",
            )
        if spine_col not in spine_schema:
            raise InputError(
                f"feature {feature.name!r} joins source {name!r} key {key!r} "
                f"({source_schema[key]}) on spine column {spine_col!r}, which the spine lacks "
                f"(spine columns: {', '.join(spine_schema.names())})",
                hint=f"add {spine_col!r} to the spine, or map a spine column onto it with "
                f"`join: {{<spine column>: {key}}}` on the feature or source",
            )
        try:
            dtype = join_key_dtype(spine_schema[spine_col], source_schema[key])
        except KeyTypeMismatch as exc:
            raise InputError(
                f"feature {feature.name!r}: spine column {spine_col!r} is "
                f"{spine_schema[spine_col]} but source {name!r} key {key!r} is "
                f"{source_schema[key]}: {exc}",
                hint=f'cast one side, e.g. sources.{name}.derived: {{{key}: "CAST({key} AS ...)"}}',
            ) from None
        spine_cols.append(spine_col)
        dtypes.append(dtype)
    return _Join(tuple(spine_cols), tuple(keys), tuple(dtypes))


def _key_users(selected: list[FeatureConfig], joins: dict[str, _Join]) -> dict[str, list[str]]:
    """Spine key column -> the features that join on it, in feature order."""
    users: dict[str, list[str]] = {}
    for feature in selected:
        for column in joins[feature.name].spine:
            users.setdefault(column, []).append(feature.name)
    return users


def spine_key_columns(
    config: PipelineConfig,
    entity_keys: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Spine column -> the features joining on it (the same rule as ``compute_features``),
    for checking a spine that this process does not compute itself (the Spark engine)."""
    from mlpipe_cli.features.keys import join_columns

    default_keys = _default_key_map(config, entity_keys)
    users: dict[str, list[str]] = {}
    for feature in _select(config, features):
        for spine_col, _ in join_columns(config, feature, default_keys):
            users.setdefault(spine_col, []).append(feature.name)
    return users


# Row numbers a null-key message shows (0-based, as `validate`'s examples).
_NULL_KEY_EXAMPLES = 5


def check_spine_keys(spine: pl.DataFrame | pl.LazyFrame, key_users: dict[str, list[str]]) -> None:
    """Refuse (InputError, exit 2) a spine with a null in any entity key column it joins on.

    A null key is no entity: joined, it would get the features' defaults (or nulls) as if it
    were a real entity with no history, and a model would train on them. Composite keys fail
    when any component is null; every entity of a row is checked. The one-line message names
    each column, how many rows and the first row numbers. ``key_users``: spine column -> the
    features that join on it (``spine_key_columns``); columns the spine lacks are left to the
    join planning, which names them.
    """
    lazy = spine.lazy()
    schema = lazy.collect_schema()
    columns = [c for c in key_users if c in schema]
    if not columns:
        return
    try:
        counts = lazy.select(
            pl.len().alias("__rows"), *[pl.col(c).null_count() for c in columns]
        ).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the spine: {_first_line(exc)}") from None
    rows = counts.item(0, "__rows")
    nulls = {c: counts.item(0, c) for c in columns if counts.item(0, c)}
    if not nulls:
        return
    first = (
        lazy.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("__row"), *nulls)
        .filter(pl.any_horizontal(pl.col(c).is_null() for c in nulls))
        .head(_NULL_KEY_EXAMPLES)
        .collect()
    )
    parts = []
    for column, count in nulls.items():
        at = first.filter(pl.col(column).is_null()).get_column("__row").to_list()
        shown = ", ".join(str(r) for r in at) + (", ..." if count > len(at) else "")
        users = key_users[column]
        joined = (
            f"feature {users[0]!r} joins" if len(users) == 1
            else f"features {users[0]!r} and {len(users) - 1} more join"
        )  # fmt: skip
        parts.append(
            f"spine column {column!r} is null in {count:,} of {rows:,} rows "
            f"(0-based rows {shown}; {joined} on it)"
        )
    raise InputError(
        "null entity key: " + "; ".join(parts),
        hint="drop or fill those spine rows: a null key is no entity, and would get the "
        "features' defaults as if it had no history",
    )


def _examples(frame: pl.DataFrame, limit: int = 3) -> tuple[str, ...]:
    """A few distinct non-null key values (as text) for error messages."""
    rows = frame.head(10_000).drop_nulls().unique(maintain_order=True).head(limit).rows()
    return tuple(repr(r[0]) if len(r) == 1 else repr(r) for r in rows)


def _check_time_dtype(dtype: pl.DataType, what: str) -> None:
    if not isinstance(dtype, pl.Datetime | pl.Date):
        raise InputError(f"{what} must be a datetime or date, got {dtype}")


def _time_columns(source: SourceConfig) -> list[str]:
    cols = [source.timestamp, source.created_timestamp, source.valid_from, source.valid_to]
    return [c for c in cols if c is not None]


def _source_schema(config: PipelineConfig, name: str) -> pl.Schema:
    from mlpipe_cli.features.scan import scan_source

    try:
        return scan_source(config.sources[name], name).collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read source {name!r}: {_first_line(exc)}") from None


def _context(
    config: PipelineConfig,
    selected: list[FeatureConfig],
    spine_schema: pl.Schema,
    source_schemas: dict[str, pl.Schema],
    timestamp: str,
    progress: Callable[[str], None] | None,
) -> _Ctx:
    """Pick a common time unit and check naive/aware timestamps are not mixed silently."""
    dtypes: list[tuple[str, pl.DataType]] = [(f"spine.{timestamp}", spine_schema[timestamp])]
    for name in sorted({f.source for f in selected}):
        source = config.sources[name]
        schema = source_schemas[name]
        for col in _time_columns(source):
            if col not in schema:
                raise InputError(
                    f"source {name!r} has no column {col!r} (columns: {', '.join(schema.names())})"
                )
            _check_time_dtype(schema[col], f"source {name!r} column {col!r}")
            dtypes.append((f"{name}.{col}", schema[col]))
    unit: TimeUnit = "us"
    naive: list[str] = []
    aware: list[str] = []
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
    return _Ctx(keys=[], unit=unit, zone=zone, key_dtypes={}, progress=progress)


def _physical(expr: pl.Expr, dtype: pl.DataType, ctx: _Ctx) -> pl.Expr:
    """A timestamp column as Int64 ticks of the common unit (UTC when zone-aware)."""
    if isinstance(dtype, pl.Date):
        expr = expr.cast(pl.Datetime(ctx.unit))
        dtype = pl.Datetime(ctx.unit)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None and ctx.zone is not None:
        expr = localize(expr, ctx.zone)  # values checked by _check_local_times first
    return expr.dt.cast_time_unit(ctx.unit).to_physical().cast(pl.Int64)


def _check_local_times(
    frame: pl.LazyFrame | pl.DataFrame,
    columns: list[str],
    schema: pl.Schema,
    ctx: _Ctx,
    what: str,
) -> None:
    """Naive columns read in ctx.zone: refuse a value the zone skips or repeats (exit 2)."""
    if ctx.zone is None:
        return
    for column in columns:
        dtype = schema[column]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
            check_naive_times(frame, column, ctx.zone, what)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- loading a source -------------------------------------------------------------------


def _value_col(i: int) -> str:
    return f"__pit_v{i}"


def _load_source(
    ctx: _Ctx, name: str, source: SourceConfig, join: _Join, value_columns: list[str]
) -> pl.DataFrame:
    """Keys (as ctx.keys, in the join's dtypes), time columns as Int64 ticks, values as
    __pit_v<i>."""
    from mlpipe_cli.features.scan import scan_source

    lazy = scan_source(source, name)
    schema = lazy.collect_schema()
    for col in value_columns:
        if col not in schema:
            raise InputError(
                f"source {name!r} has no column {col!r} (columns: {', '.join(schema.names())})",
                hint="check the feature's `column`",
            )
    selects: list[pl.Expr] = []
    if source.created_timestamp is not None:  # rows are kept in source order otherwise
        selects.append(pl.int_range(pl.len(), dtype=pl.Int64).alias(_SRC))
    for src_key, key in zip(join.source, ctx.keys, strict=True):
        expr = pl.col(src_key)
        if schema[src_key] != ctx.key_dtypes[key]:
            expr = expr.cast(ctx.key_dtypes[key])
        selects.append(expr.alias(key))
    roles = [
        (source.timestamp, _E),
        (source.created_timestamp, _C),
        (source.valid_from, _E),
        (source.valid_to, _VT),
    ]
    time_cols = [time_col for time_col, _ in roles if time_col is not None]
    _check_local_times(lazy, time_cols, schema, ctx, f"source {name!r}")
    for time_col, role in roles:
        if time_col is not None:
            selects.append(_physical(pl.col(time_col), schema[time_col], ctx).alias(role))
    for i, col in enumerate(value_columns):
        selects.append(pl.col(col).alias(_value_col(i)))
    try:
        frame = lazy.select(selects).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read source {name!r}: {_first_line(exc)}") from None
    never = source.created_timestamp is not None and source.null_created == "never"
    if never and frame.get_column(_C).null_count():
        # documented: a row whose created time is unknown was never made visible
        frame = frame.filter(pl.col(_C).is_not_null())
    for time_col, role in roles[:3]:
        if time_col is not None:
            nulls = frame.get_column(role).null_count()
            if nulls:
                hint = "a row without a time cannot be placed in time; drop or fill them"
                if role == _C:
                    hint += ", or set `null_created: never` (such rows are never visible)"
                raise DataCheckFailed(
                    f"source {name!r} column {time_col!r} has {nulls} null timestamp(s)", hint=hint
                )
    if any(frame.get_column(k).null_count() for k in ctx.keys):
        frame = frame.drop_nulls(ctx.keys)  # (a copy: only when there is something to drop)
    return frame


# -- one (source, boundary) group ------------------------------------------------------


def _compute_group(
    config: PipelineConfig,
    ctx: _Ctx,
    slim: pl.DataFrame,
    name: str,
    source: SourceConfig,
    group: list[FeatureConfig],
    inclusive: bool,
    join: _Join,
    source_cache: dict[tuple[object, ...], pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The group's feature columns and _MATCHED, in spine order, and a few of the source's
    key values (for a message when nothing matched)."""
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
    # what _load_source's result depends on (the frames are never modified in place)
    cache_key = (
        name, tuple(join.source), tuple(ctx.key_dtypes.items()), ctx.unit, ctx.zone,
        tuple(value_columns),
    )  # fmt: skip
    loaded = source_cache.get(cache_key) if source_cache is not None else None
    if loaded is None:
        loaded = _load_source(ctx, name, source, join, value_columns)
        if source_cache is not None:
            source_cache[cache_key] = loaded
    holder = [loaded]
    del loaded
    examples = _examples(holder[0].select(ctx.keys))
    if not timed and not type2:
        return _plain_attributes(ctx, slim, name, holder.pop(), group, vcol), examples
    # the holder lets _timed_group drop the only reference once it has partitioned the rows
    return _timed_group(ctx, slim, source, holder, group, vcol, inclusive, type2), examples


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
    dim = dim.with_columns(pl.lit(True).alias(_MATCHED))
    joined = slim.join(dim, on=ctx.keys, how="left", maintain_order="left")
    return joined.select(
        *[
            _with_default(pl.col(vcol[f.source_column]), f).alias(f.name)  # type: ignore[index]  # an attribute names its column
            for f in group
        ],
        pl.col(_MATCHED).is_not_null(),
    )


def _with_default(value: pl.Expr, feature: FeatureConfig, stale: pl.Expr | None = None) -> pl.Expr:
    if stale is not None:
        value = pl.when(stale).then(pl.lit(None)).otherwise(value)
    if feature.default is not None:
        value = value.fill_null(pl.lit(feature.default))
    return value


# Spine + source rows per partition; entities are hashed into partitions so the sort and
# the working set stay small (and memory bounded) whatever the input size. A partition's
# working set is ~300 bytes per row (~0.3 GiB at 1M rows); each partition also costs ~60 ms
# of fixed work. 500k: -0.1 GiB peak for +~4% time at 10M spine rows / 20M events.
PARTITION_ROWS = 500_000
# A spine with fewer rows than source rows / this keeps only its own entities' source rows.
_FILTER_RATIO = 4


def _timed_group(
    ctx: _Ctx,
    slim: pl.DataFrame,
    source: SourceConfig,
    holder: list[pl.DataFrame],
    group: list[FeatureConfig],
    vcol: dict[str, str],
    inclusive: bool,
    type2: bool,
) -> pl.DataFrame:
    events = holder.pop()
    slim, events = _integer_keys(ctx, slim, events)
    if slim.height * _FILTER_RATIO < events.height:
        # a small spine (e.g. one batch of materialize's entities): only its entities' rows
        # matter (a feature of an entity depends on that entity's rows alone)
        wanted_keys = slim.select(ctx.keys).unique()
        events = events.join(wanted_keys, on=ctx.keys, how="semi", maintain_order="left")
    parts = max(1, -(-(slim.height + events.height) // PARTITION_ROWS))
    if parts == 1:
        box = [_timed_partition(ctx, slim, source, events, group, vcol, inclusive, type2)]
        del events
        return _spine_order(box, slim.height)
    # Partition by a hash of the entity. The source rows are split into one separately
    # allocated frame per partition, column by column while the whole table's columns are
    # released, and each partition's rows are freed once it is computed: the source is never
    # held twice, and what is left of it shrinks as the results grow. The spine (shared by
    # every source) is gathered one partition at a time.
    part = pl.struct(ctx.keys).hash(seed=7) % parts
    spine_slices = _partition_slices(slim, part, parts)
    event_slices = _partition_slices(events, part, parts)
    wanted = [p for p in range(parts) if spine_slices[p].len()]
    box = [events]
    del events  # _split_rows holds the only reference, so it can release columns as it goes
    event_parts = _split_rows(box, [event_slices[p] for p in wanted])
    del event_slices
    results = []
    for p in wanted:
        spine_p = slim.gather(spine_slices[p])
        events_p = event_parts.pop(0)
        ctx.say(f"partition {p + 1}/{parts}")
        results.append(
            _timed_partition(ctx, spine_p, source, events_p, group, vcol, inclusive, type2)
        )
        progress_advance(1 / len(wanted))  # of this group's step
        del spine_p, events_p
    box = [pl.concat(results, rechunk=False)]
    del results
    return _spine_order(box, slim.height)


def _integer_keys(
    ctx: _Ctx, slim: pl.DataFrame, events: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """String key columns replaced by integer codes, equal codes for equal strings on both
    sides (one categorical encoding of the spine's and the source's values together; nulls
    stay null). Sorting, hashing and comparing strings cost ~2x integers in the passes that
    follow; the codes' order is arbitrary, which is fine: every result is per entity, and
    rows go back to spine order by row number."""
    strings = [k for k in ctx.keys if slim.schema[k] == pl.String()]
    if not strings:
        return slim, events
    n = slim.height
    spine_codes, event_codes = [], []
    for key in strings:
        both = pl.concat([slim.get_column(key), events.get_column(key)], rechunk=False)
        codes = both.cast(pl.Categorical).to_physical()
        spine_codes.append(codes.slice(0, n).alias(key))
        event_codes.append(codes.slice(n).alias(key))
        del both, codes
    return slim.with_columns(spine_codes), events.with_columns(event_codes)


def _split_rows(box: list[pl.DataFrame], slices: list[pl.Series]) -> list[pl.DataFrame]:
    """``frame.gather(s)`` for each slice of the frame in ``box`` (taken out of it), built
    column by column, releasing each of the frame's columns once it is gathered."""
    frame = box.pop()
    names = frame.columns
    columns = frame.get_columns()
    del frame
    parts: list[list[pl.Series]] = [[] for _ in slices]
    for _ in names:
        column = columns.pop(0)
        for cols, index in zip(parts, slices, strict=True):
            cols.append(column.gather(index))
        del column
    return [pl.DataFrame(cols) for cols in parts]


def _partition_slices(frame: pl.DataFrame, part: pl.Expr, parts: int) -> list[pl.Series]:
    """Row indices (UInt32 when they fit) of each partition, in frame order (stable).

    The partition id is computed a slice of rows at a time and kept as UInt16, so the 64-bit
    hashes and a whole-table sort never exist at once (they used to be the memory peak)."""
    import numpy as np

    step = 1 << 20
    small = parts <= 1 << 16
    ids = np.empty(frame.height, dtype=np.uint16 if small else np.uint32)
    for offset in range(0, frame.height, step):
        chunk = frame.slice(offset, step).select(
            part.cast(pl.UInt16 if small else pl.UInt32).alias("p")
        )
        ids[offset : offset + chunk.height] = chunk.get_column("p").to_numpy()
    index_type = np.uint32 if frame.height < 2**32 else np.int64
    return [pl.Series(np.flatnonzero(ids == p).astype(index_type)) for p in range(parts)]


def _spine_order(box: list[pl.DataFrame], n: int) -> pl.DataFrame:
    """Rows back in spine order via the inverse permutation of _ROW (O(n), no sort);
    raises if the rows are not exactly one per spine row. Gathers column by column,
    releasing each source column, so the result is never held twice."""
    frame = box.pop()  # the only reference: columns are released as they are reordered
    column = frame.get_column(_ROW)
    ok = column.len() == n and (n == 0 or (column.min() >= 0 and column.max() < n))  # type: ignore[operator]
    if _skip_numpy(n):  # a sort by row number: the same order
        frame = frame.drop(_ROW)
        index = column.arg_sort()
        rows = pl.int_range(n, eager=True, dtype=column.dtype)  # type: ignore[call-overload]
        if not ok or not column.gather(index).equals(rows, check_names=False):
            raise PointInTimeInvariantError(
                f"internal error: {frame.height} feature rows do not map 1:1 onto {n} spine rows"
            )
        return frame.select(pl.all().gather(index))
    import numpy as np

    index_type = (pl.UInt32, np.uint32) if n < 2**32 else (pl.Int64, np.int64)
    rows = column.cast(index_type[0]).to_numpy() if ok else None
    frame = frame.drop(_ROW)  # the row number is the position now
    del column
    if rows is not None:
        positions = np.arange(n, dtype=index_type[1])
        inverse = np.empty(n, dtype=index_type[1])
        inverse[rows] = positions
        ok = bool((inverse[rows] == positions).all())  # every row exactly once
        del positions
    if rows is None or not ok:
        raise PointInTimeInvariantError(
            f"internal error: {frame.height} feature rows do not map 1:1 onto {n} spine rows"
        )
    index = pl.Series(inverse)
    del rows, inverse
    columns = frame.get_columns()
    names = frame.columns
    del frame
    ordered = []
    for _ in names:
        column = columns.pop(0)
        ordered.append(column.gather(index))
        del column
    return pl.DataFrame(ordered)


def _merge_by_entity_time(
    events: pl.DataFrame, spine_rows: pl.DataFrame, keys: list[str]
) -> pl.DataFrame:
    """Source rows and spine rows ordered by (entity, visible-from time), a spine row after
    the source rows visible to it, source rows keeping their order (source order, or rank
    order with a created_timestamp) among ties.

    Two passes, as in an LSD radix sort, each far cheaper than one multi-column sort: order
    by time (source rows are usually stored in time order already, so only the spine is
    sorted, then the two are merged), then a stable sort by entity. Time keys are
    2*visible_from for source rows and 2*t + 1 for spine rows, so they never tie across the
    two and a spine row at t lands after source rows visible at t.
    """
    a2 = "__pit_a2"
    events = events.with_columns((pl.col(_A) * 2).alias(a2), pl.lit(None, pl.Int64).alias(_ROW))
    events = events.drop(_A, _SRC, _C, strict=False)
    if not events.get_column(a2).is_sorted():
        events = events.sort(a2, maintain_order=True)
    spine_rows = spine_rows.with_columns((pl.col(_A) * 2 + 1).alias(a2)).sort(a2)
    spine_rows = pl.concat([events.clear(), spine_rows], how="diagonal_relaxed")
    spine_rows = spine_rows.select(events.columns).cast(events.schema)
    merged = events.set_sorted(a2).merge_sorted(spine_rows.set_sorted(a2), key=a2)
    order = merged.select(pl.arg_sort_by(keys, maintain_order=True)).to_series()
    return merged.drop(a2).gather(order)


def _timed_partition(
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
    spine_rows = slim.select(
        pl.col(_ROW),
        *keys,
        pl.col(_T).alias(_E),
        pl.col(_T).alias(_A),
        pl.lit(1, pl.Int8).alias(_KIND),
    )
    events = events.with_columns(visible_from.alias(_A), pl.lit(0, pl.Int8).alias(_KIND))
    if created:
        # rank rows by (event time, created time, source order): the "latest" row wins ties
        events = events.sort([*keys, _E, _C, _SRC]).with_row_index(_SEQ)
        events = events.with_columns(pl.col(_SEQ).cast(pl.Int64))
    conc = _merge_by_entity_time(events, spine_rows, keys)
    lookup = events
    is_ev = pl.col(_KIND) == 0
    ev_int = is_ev.cast(pl.Int64)

    def over(expr: pl.Expr) -> pl.Expr:
        # one sorted integer id per entity run: a window over it finds its groups as
        # contiguous slices instead of hashing the keys (same groups, same row order)
        return expr.over(_GID)

    # Rows are sorted by entity, so each entity is a contiguous run starting where the key
    # changes. Cumulative integer counts and "latest row so far" need no per-group hashing:
    # a global cumulative op minus its value at the run start / masked to the run.
    start = pl.int_range(pl.len()) == 0  # the first row starts a run, even with a null key
    for k in keys:
        start = start | pl.col(k).ne_missing(pl.col(k).shift())
    conc = conc.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_POS),
        start.alias("__start"),
    ).with_columns(
        pl.when(pl.col("__start")).then(pl.col(_POS)).forward_fill().alias("__gs"),
        pl.col("__start").cum_sum().cast(pl.Int64).alias(_GID),
    )
    conc = conc.with_columns(pl.col(_GID).set_sorted())
    if not created:
        conc = conc.with_columns(pl.when(is_ev).then(pl.col(_POS)).alias(_SEQ))
        lookup = conc

    def run_cumsum(flag: pl.Expr) -> pl.Expr:
        total = flag.cum_sum()
        return total - pl.when(pl.col("__start")).then(total - flag).forward_fill()

    def run_latest(index: pl.Expr) -> pl.Expr:
        """Latest non-null `index` so far in this entity's run (index increases along rows)."""
        filled = index.forward_fill()
        return pl.when(filled >= pl.col("__gs")).then(filled)

    if created:
        # rank order differs from row order: a genuine per-entity running max
        best = over(pl.col(_SEQ).cum_max().forward_fill())
        maxe = over(pl.when(is_ev).then(pl.col(_E)).cum_max().forward_fill())
        mine = over(pl.when(is_ev).then(pl.col(_E)).cum_min().forward_fill())
    else:
        best = run_latest(pl.col(_SEQ))
        # rows of a run are in event-time order, so the latest row holds the max time and
        # the run's first source row the min time
        maxe = pl.when(best.is_not_null()).then(pl.when(is_ev).then(pl.col(_E)).forward_fill())
        first_e = pl.when(is_ev).then(pl.col(_E)).backward_fill()
        mine = pl.when(pl.col("__start")).then(first_e).forward_fill()
    base: dict[str, pl.Expr] = {"__n": run_cumsum(ev_int), "__maxe": maxe, "__best": best}
    scans: dict[str, pl.Expr] = {}  # input column -> expression; see _run_cumsums

    def scan(expr: pl.Expr) -> pl.Expr:
        """Per-entity running sum of ``expr`` (no nulls), as over(cum_sum) but vectorised."""
        name = f"__scan{len(scans)}"
        scans[name] = expr
        return pl.col(name)

    exprs: dict[str, pl.Expr] = {}
    gathers: list[tuple[str, str, str]] = []  # (feature name, index column, value column)
    fallback: list[FeatureConfig] = []
    windowed: dict[timedelta, list[FeatureConfig]] = {}
    # by row count: the last N visible rows (N events), or the offset-th newest (lag)
    counted: dict[int, list[FeatureConfig]] = {}
    offset_lags: list[FeatureConfig] = []
    for feature in group:
        col = vcol.get(feature.source_column) if feature.source_column else None
        value = pl.when(is_ev).then(pl.col(col)) if col else None
        window = feature.window_delta
        fname = feature.name
        if feature.window_events is not None or (feature.kind == "lag" and feature.offset > 1):
            # without a created time the visible rows are a prefix of the entity's run in rank
            # order, so "the last N" are the N source rows just before the spine row; with one
            # they are not, and the keyed range join ranks each spine row's visible rows
            if created:
                fallback.append(feature)
            elif feature.kind == "lag":
                offset_lags.append(feature)
            else:
                counted.setdefault(feature.window_events, []).append(feature)  # type: ignore[arg-type]
        elif feature.kind in ("lag", "attribute"):
            gathers.append((fname, "__best", col))  # type: ignore[arg-type]
        elif feature.kind == "time_since_last":
            exprs[fname] = _in_unit(pl.col(_E) - pl.col("__maxe"), ctx, feature)
        elif feature.kind == "aggregate" and feature.agg == "last":
            idx = f"__best_{fname}"
            nonnull_seq = pl.when(value.is_not_null()).then(pl.col(_SEQ))  # type: ignore[union-attr]
            exprs[idx] = (
                over(nonnull_seq.cum_max().forward_fill()) if created else run_latest(nonnull_seq)
            )
            gathers.append((fname, idx, col))  # type: ignore[arg-type]
        elif window is not None and created:
            fallback.append(feature)
        elif window is not None:
            windowed.setdefault(window, []).append(feature)
        elif feature.kind == "mean_interval":
            n = pl.col("__n")
            exprs[fname] = pl.when(n >= 2).then(
                _in_unit(pl.col("__maxe") - mine, ctx, feature, intervals=n - 1)
            )
        else:
            exprs[fname] = _lifetime_expr(feature, value, keys, over, run_cumsum, base, scan)
    if counted or offset_lags:
        base[_EVN] = ev_int.cum_sum()
    stage = conc.with_columns(**base)
    if scans:
        stage = _run_cumsums(stage.with_columns(**scans), list(scans))
    if exprs:
        stage = stage.with_columns(**exprs)
    for window, feats in windowed.items():
        stage = _rolling_window(ctx, stage, window, feats, vcol, inclusive)
    keep = [_ROW, *keys, _E, "__n", "__maxe", *[i for _, i, _ in gathers], "__best"]
    keep += [_EVN] if _EVN in stage.columns else []
    keep += [f.name for f in group if f.name in stage.columns]
    spine_part = (
        stage.filter(pl.col(_KIND) == 1)
        .select(list(dict.fromkeys(keep)))
        .with_columns(pl.col(_E).alias(_T))
    )
    del stage, conc
    if spine_part.height != slim.height:
        raise PointInTimeInvariantError("internal error: spine rows lost in the as-of pass")

    cols: dict[str, pl.Series] = {}
    for fname, idx, col in gathers:
        index = spine_part.get_column(idx)
        cols[fname] = lookup.get_column(col).gather(index)
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
    if counted or offset_lags:
        cols.update(_by_row_count(ctx, lookup, spine_part, counted, offset_lags, vcol))
    if cols:
        spine_part = spine_part.with_columns([s.alias(k) for k, s in cols.items()])
    if fallback:
        spine_part = _range_join(ctx, spine_part, events, fallback, vcol)

    no_rows = pl.col("__n") == 0
    age = pl.col(_T) - pl.col("__maxe")
    finals = []
    for feature in group:
        final = pl.col(feature.name)
        if feature.kind == "aggregate" and feature.agg in ("count", "count_distinct"):
            final = final.cast(pl.Int64)
        ttl = governing_ttl(feature, source)
        stale = no_rows if ttl is None else no_rows | is_expired(age, ctx.units(ttl))
        finals.append(_with_default(final, feature, stale).alias(feature.name))
    return spine_part.select(_ROW, *finals, (~no_rows).alias(_MATCHED))


def _by_row_count(
    ctx: _Ctx,
    lookup: pl.DataFrame,
    spine_part: pl.DataFrame,
    counted: dict[int, list[FeatureConfig]],
    offset_lags: list[FeatureConfig],
    vcol: dict[str, str],
) -> dict[str, pl.Series]:
    """Event-count windows and lags with an offset, for sources without a created time.

    ``lookup`` holds the sorted rows; its source rows, in that order, are numbered 0, 1, ...
    and a spine row's ``_EVN`` is how many source rows precede it, so its newest visible row
    is number ``_EVN - 1`` (when its entity has any) and the one ``k`` back ``_EVN - k``.
    """
    events = lookup.filter(pl.col(_KIND) == 0).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("__evi")
    )
    n_before = spine_part.get_column("__n")
    newest = spine_part.get_column(_EVN) - 1
    out: dict[str, pl.Series] = {}
    for feature in offset_lags:
        back = feature.offset - 1
        index = pl.select(pl.when(n_before > back).then(newest - back)).to_series()
        out[feature.name] = events.get_column(vcol[feature.column]).gather(index)  # type: ignore[index]
    for count, feats in counted.items():
        aggs, zero_when_empty = _window_aggs(ctx, feats, vcol)
        # the window of source row i is rows (i - count, i] of its entity, order kept by the
        # run id as in _rolling_window
        rolled = (
            events.rolling(index_column="__evi", period=f"{count}i", closed="right", group_by=_GID)
            .agg(aggs)
            .sort(_GID, maintain_order=True)
        )
        if not rolled.select(_GID, "__evi").equals(events.select(_GID, "__evi")):
            raise PointInTimeInvariantError("internal error: event window changed the row order")
        index = pl.select(pl.when(n_before > 0).then(newest)).to_series()
        for feature in feats:
            value = rolled.get_column(feature.name).gather(index)
            if feature.name in zero_when_empty:
                value = value.fill_null(0)
            out[feature.name] = value
    return out


def _in_unit(
    ticks: pl.Expr, ctx: _Ctx, feature: FeatureConfig, intervals: pl.Expr | None = None
) -> pl.Expr:
    """A duration of ``ticks`` (Int64, in ctx.unit) as a float in the feature's ``unit``,
    divided by ``intervals`` when given (mean_interval's n - 1).

    The value must not depend on the unit the inputs happened to be stored in: the same
    spine as Datetime('us') and as Datetime('ns') gives the same bits. A float64 holds
    integers exactly only up to 2**53 (104 days in ns, 285 years in us), so dividing ns
    ticks rounds the numerator (and ``intervals`` times a day of ns rounds the divisor) where
    us ticks do not. So a duration that is a whole number of microseconds is always divided
    as microseconds; only a genuinely sub-microsecond one is divided as nanoseconds.

    The quotient is correctly rounded (the float nearest the exact ratio, as Python's
    ``int / int`` and the streaming path give): Polars divides a column by a constant by
    multiplying with the constant's reciprocal, one last-bit off for about a quarter of
    values, so the divisor is made a column.
    """
    per_unit_us = float(UNIT_SECONDS[feature.unit] * _PER_SECOND["us"])

    def divided(numerator: pl.Expr, per_unit: float) -> pl.Expr:
        if intervals is not None:
            return numerator / (intervals * per_unit)
        return numerator / (numerator * 0 + per_unit)  # a column: a true division

    if ctx.unit == "us":
        return divided(ticks, per_unit_us)
    if ctx.unit != "ns":  # _context never picks a unit coarser than us
        raise PointInTimeInvariantError(f"internal error: unexpected time unit {ctx.unit}")
    whole_us = (ticks % 1_000) == 0
    return (
        pl.when(whole_us)
        .then(divided(ticks // 1_000, per_unit_us))
        .otherwise(divided(ticks, per_unit_us * 1_000))
    )


def _lifetime_expr(
    feature: FeatureConfig,
    value: pl.Expr | None,
    keys: list[str],
    over: Callable[[pl.Expr], pl.Expr],
    run_cumsum: Callable[[pl.Expr], pl.Expr],
    base: dict[str, pl.Expr],
    scan: Callable[[pl.Expr], pl.Expr],
) -> pl.Expr:
    """A lifetime aggregate as a running value along the entity's sorted rows.

    Helper columns it needs first go into ``base`` (computed in an earlier pass: a window
    nested inside another window is evaluated once per outer group, quadratic in entities).
    """
    name, agg = feature.name, feature.agg
    if agg == "count" and value is None:
        return pl.col("__n")
    if value is None:
        raise ConfigError(f"feature {name!r}: agg {agg} needs `column`")
    present = value.is_not_null()
    count = run_cumsum(present.cast(pl.Int64))
    if agg == "count":
        return count
    if agg == "count_distinct":
        keys_and_value = pl.struct(*keys, value)
        return run_cumsum((present & keys_and_value.is_first_distinct()).cast(pl.Int64))
    if agg == "sum":
        # floats: a per-entity running sum, so other entities never change its rounding
        return scan(value.fill_null(0))
    if agg == "min":
        return over(value.cum_min().forward_fill())
    if agg == "max":
        return over(value.cum_max().forward_fill())
    if agg == "mean":
        total = scan(value.cast(pl.Float64).fill_null(0))
        return pl.when(count > 0).then(total / count)
    if agg == "std":
        # centred on the entity's first value (never a future one) to limit cancellation
        first = f"__first_{name}"
        base[first] = over(value.cast(pl.Float64).drop_nulls().first())
        centred = value.cast(pl.Float64) - pl.col(first)
        s1 = scan(centred.fill_null(0))
        s2 = scan((centred * centred).fill_null(0))
        var = (s2 - s1 * s1 / count) / (count - 1)
        return pl.when(count >= 2).then(var.clip(lower_bound=0).sqrt())
    raise ConfigError(f"feature {name!r}: unsupported aggregation {agg!r}")


# Runs longer than this many rows take Polars' per-group cum_sum instead of the numpy
# row-rank steps (one step per rank: cheap for many short runs, not for a few huge ones).
_SCAN_STEPS = 64
# Up to this many rows, in a process that has not imported numpy, the numpy passes below
# take a plain Polars form: cheaper than numpy's import (~0.1 s of a small
# `mlpipe training-set`, #19), and the same bits (tests/test_small_inputs.py).
_SMALL_STAGE_ROWS = 20_000


def _skip_numpy(rows: int) -> bool:
    return rows <= _SMALL_STAGE_ROWS and "numpy" not in sys.modules


def _run_cumsums(stage: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Replace each column ``name`` by its running sum along each entity run (rows are
    ordered by entity; ``__start`` marks a run's first row).

    Bit-identical to ``col.cum_sum().over(entity)``: each value is added to its
    predecessor's running sum in row order, one rank of every run at a time (numpy gathers),
    so float rounding is exactly that of the sequential per-entity sum. ``over`` pays a
    per-group cost (~2 us per entity, 10x this) that dominated materialize's compute.
    A small stage may take ``over`` itself (``_skip_numpy``).
    """
    if _skip_numpy(stage.height):
        return stage.with_columns(pl.col(name).cum_sum().over(_GID) for name in names)
    import numpy as np

    start = stage.get_column("__start").to_numpy()
    n = start.shape[0]
    pos = np.arange(n, dtype=np.int64)
    run_start = np.maximum.accumulate(np.where(start, pos, 0))
    rank = pos - run_start
    del pos
    run_id = np.cumsum(start, dtype=np.int64) - 1
    long_rows = np.bincount(run_id)[run_id] > _SCAN_STEPS if n else np.zeros(0, dtype=bool)
    steps = np.minimum(rank, _SCAN_STEPS).astype(np.uint8)
    del rank, run_start
    order = np.argsort(steps, kind="stable")  # rows grouped by rank, row order within
    bounds = np.cumsum(np.bincount(steps, minlength=_SCAN_STEPS + 1))
    levels = [order[bounds[j - 1] : bounds[j]] for j in range(1, min(_SCAN_STEPS, n))]
    levels = [level for level in levels if level.size]
    del order, steps
    has_long = bool(long_rows.any())
    out = []
    for name in names:
        column = stage.get_column(name)
        dtype = column.dtype
        target = pl.Series("x", [], dtype).cum_sum().dtype
        if target not in (pl.Float64, pl.Int64, pl.Int32):  # (Float32 sums differ)
            out.append(stage.select(pl.col(name).cum_sum().over(_GID)).to_series())
            continue
        values = column.cast(target).to_numpy()
        # a running sum starts from zero: a run's first -0.0 sums to +0.0, as in Polars
        sums = values + values.dtype.type(0)
        # inf + -inf is NaN and a float sum may overflow to inf, as in a sequential sum: the
        # IEEE results are the values, not something to warn about
        with np.errstate(invalid="ignore", over="ignore"):
            for level in levels:
                sums[level] = sums[level - 1] + values[level]
        if has_long:
            sub = pl.DataFrame({"g": run_id[long_rows], "v": values[long_rows]})
            sums[long_rows] = sub.select(pl.col("v").cum_sum().over("g")).to_series().to_numpy()
        out.append(pl.Series(name, sums, dtype=target))
    return stage.with_columns(out)


def _window_aggs(
    ctx: _Ctx, feats: list[FeatureConfig], vcol: dict[str, str]
) -> tuple[list[pl.Expr], list[str]]:
    """Aggregations over one window's rows (spine rows in it carry null values).

    Returns the expressions and the names whose empty-window value is 0 (counts, sums).
    """
    is_ev = pl.col(_KIND) == 0
    n_rows = is_ev.sum()
    ev_time = pl.col(_E).filter(is_ev)
    aggs: list[pl.Expr] = []
    zero_when_empty: list[str] = []
    for feature in feats:
        name = feature.name
        if feature.kind == "mean_interval":
            span = ev_time.max() - ev_time.min()
            aggs.append(
                pl.when(n_rows >= 2)
                .then(_in_unit(span, ctx, feature, intervals=n_rows - 1))
                .alias(name)
            )
            continue
        agg = feature.agg
        if agg == "count" and feature.column is None:
            aggs.append(n_rows.cast(pl.Int64).alias(name))
            zero_when_empty.append(name)
            continue
        x = pl.col(vcol[feature.source_column])  # type: ignore[index]
        if agg == "count":
            aggs.append(x.count().cast(pl.Int64).alias(name))
            zero_when_empty.append(name)
        elif agg == "count_distinct":
            aggs.append(x.drop_nulls().n_unique().cast(pl.Int64).alias(name))
            zero_when_empty.append(name)
        elif agg == "sum":
            aggs.append(x.sum().alias(name))
            zero_when_empty.append(name)
        elif agg == "mean":
            aggs.append(x.cast(pl.Float64).mean().alias(name))
        elif agg == "min":
            aggs.append(x.min().alias(name))
        elif agg == "max":
            aggs.append(x.max().alias(name))
        elif agg == "std":
            aggs.append(x.cast(pl.Float64).std(ddof=1).alias(name))
        elif agg == "last":
            # the newest non-null value: rows ranked by (event, created, source order)
            aggs.append(x.sort_by(_SEQ).drop_nulls().last().alias(name))
        else:
            raise ConfigError(f"feature {name!r}: unsupported windowed aggregation {agg!r}")
    return aggs, zero_when_empty


def _rolling_window(
    ctx: _Ctx,
    stage: pl.DataFrame,
    window: timedelta,
    feats: list[FeatureConfig],
    vcol: dict[str, str],
    inclusive: bool,
) -> pl.DataFrame:
    """All features sharing one window in one rolling pass: [t-w, t) (or [t-w, t])."""
    aggs, _ = _window_aggs(ctx, feats, vcol)
    # Group by the entity run id (_GID: an integer, sorted along the stage), never by the key
    # columns, and put the groups back in stage order with a stable sort: Polars does not
    # promise the order of groups in its output (string keys of different lengths came back
    # reordered). Within a group the rows keep the index order the window needs; rows with
    # the same (entity, time) share one window, so matching (_GID, _E) proves alignment.
    rolled = (
        stage.rolling(
            index_column=_E,
            period=f"{ctx.units(window)}i",
            closed="both" if inclusive else "left",
            group_by=_GID,
        )
        .agg(aggs)
        .sort(_GID, maintain_order=True)
    )
    same_order = rolled.select(_GID, _E).equals(stage.select(_GID, _E))
    if rolled.height != stage.height or not same_order:
        raise PointInTimeInvariantError("internal error: rolling window changed the row order")
    return stage.with_columns(rolled.select([f.name for f in feats]))


def _range_join(
    ctx: _Ctx,
    spine_part: pl.DataFrame,
    events: pl.DataFrame,
    fallback: list[FeatureConfig],
    vcol: dict[str, str],
) -> pl.DataFrame:
    """Features on a source with a created_timestamp whose rows cannot be found along the
    sorted rows: windowed aggregates (visibility by created time, window by event time: two
    different axes), the last N visible rows, and lags with an offset. Pair spine rows with
    their entity's visible rows and aggregate (cost: spine rows x rows per entity in scope).
    """
    keys = ctx.keys
    scopes: dict[tuple[str, object], list[FeatureConfig]] = {}
    for feature in fallback:
        if feature.kind == "lag":
            scope: tuple[str, object] = ("lag", None)
        elif feature.window_events is not None:
            scope = ("events", feature.window_events)
        else:
            scope = ("time", feature.window_delta)
        scopes.setdefault(scope, []).append(feature)
    left = spine_part.lazy().select(_ROW, *keys, _T)
    for (kind, size), feats in scopes.items():
        pairs = left.join(events.lazy(), on=keys, how="inner").filter(pl.col(_A) <= pl.col(_T))
        if kind == "time":
            pairs = pairs.filter(pl.col(_E) >= pl.col(_T) - ctx.units(size))  # type: ignore[arg-type]
        elif kind == "events":
            newest_first = pl.col(_SEQ).rank("ordinal", descending=True).over(_ROW)
            pairs = pairs.filter(newest_first <= size)  # type: ignore[operator]  # an int here
        if kind == "lag":
            aggs = [
                pl.col(vcol[f.column])  # type: ignore[index]
                .sort_by(_SEQ, descending=True)
                .slice(f.offset - 1, 1)
                .first()
                .alias(f.name)
                for f in feats
            ]
            fills: list[str] = []
        else:
            aggs, fills = _window_aggs(ctx, feats, vcol)
        # Float sums depend on the order of their terms. The lazy join emits a spine row's
        # pairs in an order that varies with the thread count, and a lazy group_by adds
        # per-morsel partial sums; both made means differ in the last bit from run to run.
        # So: pairs in rank order, then an eager group_by (each group summed in row order).
        collected = pairs.sort(_ROW, _SEQ).collect()
        result = collected.group_by(_ROW).agg(aggs)
        del collected
        spine_part = spine_part.join(result, on=_ROW, how="left", maintain_order="left")
        spine_part = spine_part.with_columns([pl.col(c).fill_null(0) for c in fills])
    return spine_part
