"""The planning and packing behind `mlpipe materialize` (the run itself: ``ops.materialize``).

The values come from ``mlpipe_cli.features.engine.compute_features`` — the function
`training-set` uses — called with a spine of (every entity, as_of), batch by batch, so the
online values equal the offline ones by construction and memory stays bounded by a few
batches.

A run: ping the store → list the entities (distinct keys of the sources the selected
features read, with a row at or before as_of) → sort them → compute the features a batch
of chunks at a time (``ops.materialize.compute_batches``) while a writer thread packs one
row per entity (``_pack_chunk``, column-wise) and writes the previous batch, chunk by chunk
of ``online_store.chunk_size`` entities, into a new version namespace, recording progress →
check every row arrived → flip the live pointer atomically → remove old versions → publish a
``materialization`` artifact.

This module holds the pure steps (which features, their hash and ttls, the as-of, the entity
list, the spine time, one packed row per entity); ``mlpipe_cli.ops.materialize`` chains them
with the store's write primitives (``online.writer``). A run that dies leaves the live
version untouched. Re-running with the same as-of (``--as-of``
given, or ``--resume`` which adopts the as-of of the newest abandoned run) continues the
abandoned version after its last completed chunk instead of starting over.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from mlpipe_cli.errors import ConfigError, InputError, UsageError
from mlpipe_cli.online.codec import PackedChunk, utcnow
from mlpipe_cli.online.keylimits import check_key_sizes

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig

AS_OF_COLUMN = "__mlpipe_as_of"
_AGE_PREFIX = "__mlpipe_age__"


# -- planning ---------------------------------------------------------------------------


def given(arg: str, value: object) -> str:
    """An argument with its value as a message names it: ``--as-of X`` for a CLI flag,
    ``as_of=X`` for a Python parameter (callers pass the name their user typed)."""
    return f"{arg} {value}" if arg.startswith("-") else f"{arg}={value}"


def select_features(
    config: PipelineConfig, names: Sequence[str] | None, arg: str = "features"
) -> list[FeatureConfig]:
    """The features to materialize (all when ``names`` is empty); ``arg`` is how messages
    name the argument that listed them (``--features`` from the CLI)."""
    if not config.features:
        raise ConfigError(
            "the config defines no features to materialize",
            hint="add a `features:` section (see configs/example.yaml)",
        )
    if not names:
        return list(config.features)
    by_name = {f.name: f for f in config.features}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"unknown feature {unknown[0]!r} in {arg} (defined: {', '.join(by_name)})")
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return [by_name[n] for n in seen]


def feature_hash(config: PipelineConfig, selected: Sequence[FeatureConfig]) -> str:
    """sha256 of what defines the values: entity keys, the features, their sources' time
    rules, keys, joins and derived columns."""
    from mlpipe_cli.config.loader import config_section_hash

    sources: dict[str, dict[str, Any]] = {}
    for name in sorted({f.source for f in selected}):
        src = config.sources[name]
        sources[name] = {
            "timestamp": src.timestamp,
            "created_timestamp": src.created_timestamp,
            "valid_from": src.valid_from,
            "valid_to": src.valid_to,
            "entity_keys": src.entity_keys,
            "ttl": src.ttl.total_seconds() if src.ttl is not None else None,
        }
        # Newer source settings that change values, only when set (so the hash of a config
        # that does not use them stays what it was).
        if src.derived:
            sources[name]["derived"] = dict(src.derived)
        if src.join:
            sources[name]["join"] = dict(src.join)
        if src.null_created != "error":
            sources[name]["null_created"] = src.null_created
    return config_section_hash(
        {
            "entity_keys": config.entity_keys,
            "timezone": config.timezone,
            "features": [f.model_dump(mode="json") for f in selected],
            "sources": sources,
        }
    )


def feature_ttls(config: PipelineConfig, selected: Sequence[FeatureConfig]) -> dict[str, float]:
    """Feature name → the ttl governing it in seconds: the engine's rule (features/ttl.py)."""
    from mlpipe_cli.features.ttl import feature_ttls as governed

    return governed(config, selected)


def parse_as_of(text: str | None, config: PipelineConfig, arg: str = "as_of") -> datetime:
    """ISO 8601 (naive = the config's timezone, else UTC) or 'now'; never in the future.
    ``arg`` is how messages name the argument (``--as-of`` from the CLI)."""
    now = utcnow()
    if text is None or text.strip().lower() == "now":
        return now.replace(microsecond=0)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{given(arg, repr(text))} is not a timestamp",
            hint="use ISO 8601, e.g. 2026-07-01T00:00:00Z",
        ) from None
    if value.tzinfo is None:
        if config.timezone:
            from mlpipe_cli.features.localtime import local_time

            value = local_time(value, config.timezone, arg)
        else:
            value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value > now + timedelta(minutes=1):
        raise UsageError(
            f"{given(arg, value.isoformat())} is in the future; the online store serves values "
            "as of a time that has passed"
        )
    return value


@dataclass(frozen=True)
class KeySet:
    """One entity type of a run: the request key columns identifying it (the spine's column
    names, e.g. ``("pickup_zone",)``) and the features stored per entity of that type.
    Each key set is one namespace of the store version."""

    columns: tuple[str, ...]
    features: tuple[FeatureConfig, ...]


def plan_key_sets(config: PipelineConfig, selected: Sequence[FeatureConfig]) -> list[KeySet]:
    """The run's entity types: features grouped by the spine columns they join on
    (``features.keys.join_columns``, the rule `training-set` uses), in order of first
    appearance. A config with one entity gives one key set: the pipeline's entity_keys."""
    from mlpipe_cli.features.keys import join_columns

    columns: dict[frozenset[str], tuple[str, ...]] = {}
    members: dict[frozenset[str], list[FeatureConfig]] = {}
    for feature in selected:
        pairs = join_columns(config, feature)
        if not pairs:
            raise ConfigError(
                f"feature {feature.name!r}: source {feature.source!r} has no entity keys",
                hint="set entity_keys in the config (or on the source or feature)",
            )
        spine = tuple(column for column, _ in pairs)
        if len(set(spine)) != len(spine):
            raise ConfigError(
                f"feature {feature.name!r} joins two of its keys on one column {list(spine)}",
                hint="map each key to its own column with `join:`",
            )
        ident = frozenset(spine)
        columns.setdefault(ident, spine)
        members.setdefault(ident, []).append(feature)
    return [KeySet(columns[ident], tuple(members[ident])) for ident in columns]


def _visible_before(dtype: Any, column: str, as_of: datetime, zone: str | None) -> pl.Expr:
    import polars as pl

    from mlpipe_cli.features.localtime import localize

    naive_utc = as_of.astimezone(UTC).replace(tzinfo=None)
    expr = pl.col(column)
    if isinstance(dtype, pl.Date):
        return expr <= pl.lit(naive_utc.date())
    if dtype.time_zone is not None:
        expr = expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    elif zone is not None:
        # its values were checked (check_naive_times): none is skipped or repeated in zone
        expr = localize(expr, zone).dt.convert_time_zone("UTC")
        expr = expr.dt.replace_time_zone(None)
    return expr.dt.cast_time_unit("us") <= pl.lit(naive_utc).dt.cast_time_unit("us")


def list_entities(
    config: PipelineConfig, selected: Sequence[FeatureConfig], as_of: datetime
) -> pl.DataFrame:
    """The entities of a run with one entity type (see ``key_set_entities``)."""
    key_sets = plan_key_sets(config, selected)
    if len(key_sets) != 1:
        raise UsageError(
            f"these features have {len(key_sets)} entity types; list them per key set "
            "(plan_key_sets, key_set_entities)"
        )
    return key_set_entities(config, key_sets[0], as_of)


def key_set_entities(config: PipelineConfig, key_set: KeySet, as_of: datetime) -> pl.DataFrame:
    """Distinct keys of one entity type with a row at or before as_of, sorted.

    Columns: the key set's columns. Every (source, key columns) its features read
    contributes, through ``scan_source`` (derived key columns included); each column has
    the dtype all contributions are compared as (``features.keys.join_key_dtype``: Int32
    meets Int64, categorical meets string), and contributions that cannot match are an
    InputError naming both, as in `training-set`.
    """
    import polars as pl

    from mlpipe_cli.features.keys import KeyTypeMismatch, join_columns, join_key_dtype
    from mlpipe_cli.features.localtime import check_naive_times
    from mlpipe_cli.features.scan import scan_source

    columns = list(key_set.columns)
    frames: list[pl.LazyFrame] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    # per column: (where it came from, its dtype there), for the common dtype and errors
    origins: dict[str, list[tuple[str, Any]]] = {c: [] for c in columns}
    for feature in key_set.features:
        name = feature.source
        onto = dict(join_columns(config, feature))  # spine column -> source key column
        src_keys = tuple(onto[c] for c in columns)
        if (name, src_keys) in seen:
            continue
        seen.add((name, src_keys))
        source = config.sources[name]
        lazy = scan_source(source, name)
        schema = lazy.collect_schema()
        missing = [k for k in src_keys if k not in schema]
        if missing:
            raise InputError(
                f"source {name!r} has no entity key column {missing[0]!r} "
                f"(columns: {', '.join(schema.names())})"
            )
        time_col = source.valid_from or source.timestamp
        if time_col is not None and time_col in schema:
            dtype = schema[time_col]
            if config.timezone and isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
                check_naive_times(lazy, time_col, config.timezone, f"source {name!r}")
            lazy = lazy.filter(_visible_before(dtype, time_col, as_of, config.timezone))
        for column, key in zip(columns, src_keys, strict=True):
            origins[column].append((f"source {name!r} column {key!r}", schema[key]))
        frames.append(
            lazy.select([pl.col(k).alias(c) for k, c in zip(src_keys, columns, strict=True)])
            .drop_nulls()
            .unique()
        )
    common: dict[str, Any] = {}
    for column, seen_dtypes in origins.items():
        first_label, dtype = seen_dtypes[0]
        for label, other in seen_dtypes[1:]:
            try:
                dtype = join_key_dtype(dtype, other)
            except KeyTypeMismatch as exc:
                raise InputError(
                    f"entity key {column!r}: {first_label} is {seen_dtypes[0][1]} but {label} "
                    f"is {other}: {exc}",
                    hint="cast one side with a derived column, e.g. "
                    f'derived: {{{column}: "CAST({column} AS ...)"}}',
                ) from None
        common[column] = join_key_dtype(dtype, pl.Null())  # canonical: Int64, String, ...
    try:
        casted = [f.cast(common) for f in frames]  # type: ignore[arg-type]
        entities = pl.concat(casted).unique().sort(columns).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot list entities: {str(exc).strip().splitlines()[0]}") from None
    # Before any row is written: a key serve refuses would be an entity nobody can read.
    check_key_sizes(
        entities, columns, f"materialize: entity type {columns}", "the live version was not changed"
    )
    return entities


def union_keys(
    key_sets: Sequence[KeySet], entities: Sequence[pl.DataFrame]
) -> tuple[list[str], list[str]]:
    """Every key column a lookup needs (in order of first appearance) and its kind; a column
    two entity types hold as different kinds (an integer here, text there) is an InputError."""
    names: list[str] = []
    kinds: dict[str, str] = {}
    for key_set, frame in zip(key_sets, entities, strict=True):
        for column, kind in zip(key_set.columns, _key_types(frame), strict=True):
            if column not in kinds:
                names.append(column)
                kinds[column] = kind
            elif kinds[column] != kind:
                raise InputError(
                    f"entity key {column!r} is {kinds[column]} for one entity type and {kind} "
                    "for another; a request gives it once",
                    hint="cast one source's column with a derived column",
                )
    return names, [kinds[n] for n in names]


def _key_types(frame: pl.DataFrame) -> list[str]:
    from mlpipe_cli.features.keys import key_kind

    return [key_kind(dtype) for dtype in frame.dtypes]


def _entities_hash(*frames: pl.DataFrame) -> str:
    """One digest of the entity lists of every key set (a resume needs the same ones)."""
    digest = hashlib.sha256()
    for i, frame in enumerate(frames):
        if i:
            digest.update(b"|")
        digest.update(",".join(f"{n}:{d}" for n, d in frame.schema.items()).encode())
        hashes = frame.hash_rows(seed=0)
        if hashes.len() <= 20_000 and "numpy" not in sys.modules:
            # the same native-order uint64 bytes without numpy's import (#19: ~0.1 s of a
            # small materialize)
            digest.update(array("Q", hashes.to_list()).tobytes())
        else:
            digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()


def _spine_time(config: PipelineConfig, selected: Sequence[FeatureConfig], as_of: datetime) -> Any:
    """as_of as a Polars literal whose zone-awareness matches the sources (the engine refuses
    to compare naive with aware timestamps)."""
    import polars as pl

    from mlpipe_cli.features.scan import scan_source

    aware = False
    for name in sorted({f.source for f in selected}):
        source = config.sources[name]
        schema = scan_source(source, name).collect_schema()
        for col in (source.timestamp, source.created_timestamp, source.valid_from):
            if col and col in schema:
                dtype = schema[col]
                if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
                    aware = True
    if aware:
        return pl.lit(as_of.astimezone(UTC)).dt.cast_time_unit("us")
    if config.timezone:
        from zoneinfo import ZoneInfo

        local = as_of.astimezone(ZoneInfo(config.timezone)).replace(tzinfo=None)
        return pl.lit(local).dt.cast_time_unit("us")
    return pl.lit(as_of.astimezone(UTC).replace(tzinfo=None)).dt.cast_time_unit("us")


def _age_features(
    config: PipelineConfig, selected: Sequence[FeatureConfig], ttls: dict[str, float], tag: str = ""
) -> tuple[list[FeatureConfig], dict[str, str]]:
    """One `time_since_last` helper feature (seconds) per (source, keys, boundary, ttl) with a
    ttl: joined like the features it serves and governed by the same ttl, so it is null
    exactly when they hold their default.

    ``t - age`` is the newest visible event the ttl is measured from, exactly as the engine
    sees it; readers expire the value once ``now - event > ttl``.
    """
    from mlpipe_cli.config.features import FeatureConfig
    from mlpipe_cli.features.keys import join_columns
    from mlpipe_cli.features.ttl import governing_ttl

    helpers: dict[tuple[Any, ...], FeatureConfig] = {}
    owner: dict[str, str] = {}
    for feature in selected:
        if feature.name not in ttls:
            continue
        pairs = tuple(join_columns(config, feature))
        ttl = governing_ttl(feature, config.sources[feature.source])
        group = (feature.source, pairs, feature.inclusive, ttl)
        if group not in helpers:
            helpers[group] = FeatureConfig(
                name=f"{_AGE_PREFIX}{tag}{len(helpers)}",
                source=feature.source,
                kind="time_since_last",
                unit="s",
                inclusive=feature.inclusive,
                entity_keys=[key for _, key in pairs],
                join=dict(pairs),
                ttl=ttl,
            )
        owner[feature.name] = helpers[group].name
    return list(helpers.values()), owner


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} feature value")


# Probe values for the check below: where float formatters tend to differ (exponent
# thresholds, subnormals, signed zero, shortest round trip) and random bit patterns.
_FLOAT_PROBES = (
    0.0, -0.0, 1.0, -1.5, 0.1, 0.2 + 0.1, 1 / 3, 2 / 3, 100.0, 1e15, 1e16, 1e17, 123456789.125,
    9007199254740993.0, 1e-4, 1e-5, 1e-6, 1e-7, 1.5e-300, 5e-324, 2.2250738585072014e-308,
    1.7976931308623157e308, 1e21, 1e22, 1e23, 12345678901234567890.0, 0.30000000000000004,
)  # fmt: skip


@functools.cache
def _floats_format_like_orjson() -> bool:
    """Does Polars write every float64 as orjson does (shortest round trip, same exponent
    form)? Checked once per process on the probes above and 4,096 random bit patterns, so
    a future Polars or orjson that formats differently falls back to orjson per row
    instead of storing other bytes."""
    import random

    import polars as pl

    # random bit patterns as float64 (the standard library's generator: numpy's import
    # would be ~0.1 s of a small materialize, #19)
    rng = random.Random(20261205)
    bits = array("Q", [rng.getrandbits(63) for _ in range(4096)])
    values = [*_FLOAT_PROBES, *(-v for v in _FLOAT_PROBES), *array("d", bits.tobytes()).tolist()]
    values = [v for v in values if math.isfinite(v)]
    ours = pl.Series(values, dtype=pl.Float64).cast(pl.String).to_list()
    return ours == [orjson.dumps(v).decode() for v in values]


def _json_column(name: str, dtype: Any) -> pl.Expr | None:
    """A column as JSON text, row by row (``null`` for nulls), when Polars writes exactly
    what orjson writes for the Python value the row holds; None otherwise."""
    import polars as pl

    column = pl.col(name)
    if dtype in (pl.Int128, pl.UInt128):
        return None  # beyond 64 bits: orjson refuses them, and so must the fast path
    if dtype.is_integer() or dtype == pl.Boolean or dtype == pl.Null:
        text = column.cast(pl.String)  # decimal digits; true/false; all null
    elif dtype.is_float() and _floats_format_like_orjson():
        # a Float32 row is a Python float (a float64) to orjson: widen first
        text = column.cast(pl.Float64).cast(pl.String)
    else:
        return None
    return text.fill_null("null")


def _pack_chunk(
    out: pl.DataFrame,
    keys: list[str],
    names: list[str],
    event_cols: list[str],
    as_of_epoch: float,
) -> PackedChunk:
    """One packed row per entity of ``out`` (codec.py: key and value encoding).

    Built column-wise by Polars when every value column is numeric, boolean or null and
    every key column an integer (the common case; 0.1 µs a row): the same bytes as orjson
    per row (``_pack_rows``, used for any other column type), which tests/test_materialize_bytes.py
    checks on messy data.
    """
    import polars as pl

    # Event times (epoch seconds) next to the values, built vectorised in Polars.
    events = [(pl.lit(as_of_epoch) - pl.col(c)).alias(f"__ev{i}") for i, c in enumerate(event_cols)]
    values = out.select([pl.col(n) for n in names] + events)
    wide = [n for n in names if values.schema[n] in (pl.Int128, pl.UInt128)]
    if wide:
        raise UsageError(
            f"feature {wide[0]!r} is {values.schema[wide[0]]}: the online store holds integers "
            "of up to 64 bits; cast the source column (e.g. a `derived:` CAST to BIGINT or DOUBLE)"
        )
    key_frame = out.select(keys)
    texts = [_json_column(c, t) for c, t in values.schema.items()]
    int_keys = all(t.is_integer() for t in key_frame.dtypes) and not any(
        key_frame.null_count().row(0)
    )
    if not int_keys or any(t is None for t in texts):
        store_keys, rows = _pack_rows(values, key_frame)
        return PackedChunk.from_items(store_keys, rows)
    frame = pl.DataFrame(
        [
            key_frame.select(_json_array([pl.col(c).cast(pl.String) for c in keys]))
            .to_series()
            .alias("k"),
            values.select(_json_array(texts)).to_series().alias("v"),  # type: ignore[arg-type]
        ]
    )
    flagged = _non_finite_rows(values)
    if flagged:
        # NaN/±inf rows: boxed by orjson row by row, exactly as _pack_rows does
        boxed = [_boxed_row(values.row(i)).decode() for i in flagged]
        frame = frame.with_columns(frame.get_column("v").scatter(flagged, boxed))
    return PackedChunk(frame)


def _json_array(texts: Sequence[pl.Expr]) -> pl.Expr:
    """``[a,b,...]`` of per-row JSON texts (compact, as orjson writes an array)."""
    import polars as pl

    parts: list[pl.Expr] = [pl.lit("[")]
    for i, text in enumerate(texts):
        parts += [pl.lit(","), text] if i else [text]
    parts.append(pl.lit("]"))
    return pl.concat_str(parts)


def _non_finite_rows(values: pl.DataFrame) -> list[int]:
    """Rows holding a NaN or ±inf in a float column (JSON cannot say those)."""
    import polars as pl

    floats = [c for c, t in values.schema.items() if t.is_float()]
    if not floats:
        return []
    flagged = values.select(
        pl.any_horizontal([pl.col(c).is_nan() | pl.col(c).is_infinite() for c in floats]).fill_null(
            False
        )
    ).to_series()
    return flagged.arg_true().to_list() if flagged.any() else []


def _boxed_row(row: Sequence[Any]) -> bytes:
    from mlpipe_cli.online.codec import NON_FINITE_PREFIX, box_non_finite

    boxed = [box_non_finite(v) for v in row]
    return NON_FINITE_PREFIX + orjson.dumps(
        boxed, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY
    )


def _pack_rows(values: pl.DataFrame, key_frame: pl.DataFrame) -> tuple[list[str], list[bytes]]:
    """Store keys and packed values one row at a time through orjson: any column type
    (strings, dates, decimals, lists)."""
    dumps = orjson.dumps
    if len(key_frame.columns) == 1 and key_frame.dtypes[0].is_integer():
        store_keys = [f"[{k}]" for k in key_frame.to_series()]
    else:
        store_keys = [dumps(list(k)).decode() for k in key_frame.iter_rows()]
    option = orjson.OPT_SERIALIZE_NUMPY
    try:
        rows = [dumps(r, option=option) for r in values.iter_rows()]
    except TypeError:
        rows = [dumps(r, default=_json_default, option=option) for r in values.iter_rows()]
    # JSON has no NaN/inf (orjson writes null): repack those rows so serving sees the value
    # training saw (online.codec decodes them back)
    for i in _non_finite_rows(values):
        rows[i] = _boxed_row(values.row(i))
    return store_keys, rows
