"""What one streamed source needs: its features, the columns they read, the state's horizon.

A :class:`StreamPlan` is derived from the config alone (no I/O). Every other module of the
package (the Lua state update, the bootstrap, the evaluator, the reader) works from it, so
they agree on the columns, the longest window and the key layout.

Key layout in the stream's Redis (``P`` = ``online_store.key_prefix`` or ``mlpipe:<pipeline>``,
``S`` = ``P:s:<source>``, ``<k>`` = the entity's store key, e.g. ``[123]``)::

    <stream.key>          the event stream (XADD by `mlpipe push`), consumer group <group>
    <stream.dead_letter>  rejected events: reason invalid | late | before_batch | malformed
    S:meta                hash: format, batch_version, batch_as_of_us, window_us, lateness_us,
                          columns (JSON), bootstrapped_at, state (bootstrapping | ready)
    S:stats               hash: applied, late, before_batch, malformed, duplicate counters
    S:r:<k>               sorted set: the entity's raw events newer than its fold horizon;
                          score = event time (epoch us), member = tie key (26 chars) + the
                          plan columns' values packed (streaming.state.pack_values)
    S:a:<k>               hash: the fold of every older event (running aggregates) + horizon
    S:u:<k>:<i>           set: distinct values of column i (only for lifetime count_distinct)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from mlpipe_cli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig
    from mlpipe_cli.config.sources import SourceConfig
    from mlpipe_cli.config.streaming import StreamConfig

STATE_FORMAT = 2  # 2: raw members packed to the plan's columns (streaming.state.pack_values)
US = 1_000_000
_STREAMABLE_DTYPES = {
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "bool", "string", "categorical",
}  # fmt: skip
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


def to_us(delta: timedelta) -> int:
    """A duration in whole microseconds (the state's time unit)."""
    return delta // timedelta(microseconds=1)


@dataclass(frozen=True)
class StreamPlan:
    """The streamed state of one source, as the features reading it need it."""

    pipeline: str
    source_name: str
    source: SourceConfig
    stream: StreamConfig
    entity_keys: list[str]  # the source's key columns (store keys follow this order)
    timestamp: str
    features: list[FeatureConfig]
    columns: list[str]  # value columns the features read, in first-use order
    window_us: int  # longest window of the source's windowed features (0: none)
    lateness_us: int
    distinct: list[bool]  # per column: a lifetime count_distinct needs the distinct set
    int_columns: list[bool]  # per column: integer dtype (sums stay integers)
    prefix: str  # S
    url: str
    password: str | None = field(default=None, repr=False)

    @property
    def horizon_lag_us(self) -> int:
        """How far behind its newest event an entity's fold horizon trails."""
        return self.window_us + self.lateness_us

    def raw_key(self, entity_key: str) -> str:
        return f"{self.prefix}:r:{entity_key}"

    def agg_key(self, entity_key: str) -> str:
        return f"{self.prefix}:a:{entity_key}"

    def set_key(self, entity_key: str, column_index: int) -> str:
        return f"{self.prefix}:u:{entity_key}:{column_index}"

    @property
    def meta_key(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"


def streamed_sources(config: PipelineConfig) -> list[str]:
    """Names of the sources with a ``stream:`` section, in config order."""
    return [name for name, source in config.sources.items() if source.stream is not None]


def build_plan(config: PipelineConfig, source_name: str) -> StreamPlan:
    """The plan of one streamed source; ConfigError when its features cannot stream."""
    source = config.source(source_name)
    if source.stream is None:
        raise UsageError(
            f"source {source_name!r} has no stream",
            hint=f"add sources.{source_name}.stream: {{key: {source_name}-events}}",
        )
    stream = source.stream
    assert source.timestamp is not None  # the config model guarantees it for streams
    url, password = _redis_location(config, source_name, stream)
    features = [f for f in config.features if f.source == source_name]
    columns: list[str] = []
    for feature in features:
        if feature.kind == "attribute":
            raise ConfigError(
                f"feature {feature.name!r}: kind attribute cannot read streamed source "
                f"{source_name!r}",
                hint="attributes come from dimension tables; stream only event sources",
            )
        column = feature.source_column
        if column is not None and column not in columns:
            columns.append(column)
    for column in columns:
        contract = source.columns.get(column)
        if contract is None:
            raise ConfigError(
                f"streamed source {source_name!r}: column {column!r} has no contract",
                hint="every column a streamed feature reads needs a dtype in "
                f"sources.{source_name}.columns (events are checked against it)",
            )
        if contract.dtype not in _STREAMABLE_DTYPES:
            raise ConfigError(
                f"streamed source {source_name!r}: column {column!r} is {contract.dtype}; "
                "streamed features read numbers, booleans and strings"
            )
    windows = [to_us(f.window_delta) for f in features if f.window_delta is not None]
    distinct = [
        any(
            f.kind == "aggregate" and f.agg == "count_distinct" and f.window_delta is None
            and f.column == column
            for f in features
        )
        for column in columns
    ]  # fmt: skip
    prefix = config.online_store.key_prefix or f"mlpipe:{config.pipeline}"
    return StreamPlan(
        pipeline=config.pipeline,
        source_name=source_name,
        source=source,
        stream=stream,
        entity_keys=list(source.entity_keys or config.entity_keys),
        timestamp=source.timestamp,
        features=features,
        columns=columns,
        window_us=max(windows, default=0),
        lateness_us=to_us(stream.max_lateness),
        distinct=distinct,
        int_columns=[source.columns[c].dtype in _INT_DTYPES for c in columns],
        prefix=f"{prefix}:s:{source_name}",
        url=url,
        password=password,
    )


def _redis_location(
    config: PipelineConfig, source_name: str, stream: StreamConfig
) -> tuple[str, str | None]:
    online = config.online_store
    if stream.url is not None:
        password = stream.password.get_secret_value() if stream.password else None
        return stream.url, password
    if online.type == "redis" and online.url and online.cluster:
        raise ConfigError(
            f"sources.{source_name}.stream: streaming needs one Redis server (its state update "
            "is a script over several keys), but online_store is a Redis Cluster",
            hint="set stream.url to a single redis-server",
        )
    if online.type == "redis" and online.url:
        secret = stream.password or online.password
        return online.url, secret.get_secret_value() if secret else None
    raise ConfigError(
        f"sources.{source_name}.stream: no Redis to use",
        hint="set stream.url (e.g. ${REDIS_URL}) or use online_store.type: redis",
    )
