"""Events in: Parquet or JSON lines, typed by the source's contract, checked by `validate`.

Every event gets a verdict. The column contract runs through the validation engine
(``mlpipe_cli.validation.validate_source`` on a Parquet file of the batch, with its
quarantine/out split: the failing rows come back with their failed check ids), so an event
is checked by exactly the code that checks the batch files. What the engine cannot see is
decided here, before it, with check ids in the same form: a JSON line that does not parse
(``<source>.event.json``), a value of the wrong type (``<source>.<column>.dtype``), a key
that a strict contract forbids (``<source>.table.strict``), a missing event time or entity
key (``<source>.<column>.nullable``), a naive event time that the clocks of the config's
``timezone`` skip or repeat (``<source>.<column>.local_time``: it names no single instant,
the rule of ``features.localtime``), and an entity key value longer than `serve` accepts
(``<source>.<column>.key_length``: ``online.keylimits``; such an entity could never be read).

Table-level checks (min_rows, max_rows, tolerances, the source's max_failure_rate) do not
apply to events: each event stands alone, and any failed error-severity check rejects it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.sources import ColumnContract, SourceConfig
    from mlpipe_cli.streaming.plan import StreamPlan

ROW = "__mlpipe_event_row"
CHUNK_EVENTS = 100_000  # events validated per engine run (bounds memory)


@dataclass
class Rejected:
    row: int  # 0-based position in the input
    record: dict[str, Any] | str  # the event (or the line that did not parse)
    checks: list[str]


@dataclass
class CheckedBatch:
    """One chunk of input: the good events (contract dtypes) and the rejected ones."""

    good: pl.DataFrame  # contract columns + ROW
    rejected: list[Rejected] = field(default_factory=list)


def read_events(
    config: PipelineConfig, source_name: str, path: Path | None
) -> Iterator[CheckedBatch]:
    """Read ``path`` (Parquet file/dir/glob, JSON lines; None or ``-``: JSON lines on stdin)
    in chunks and check every event; yields each chunk's verdicts in input order."""
    source = config.source(source_name)
    if path is None or str(path) == "-":
        yield from _json_chunks(config, source_name, source, sys.stdin)
        return
    if _is_parquet(path):
        yield from _parquet_chunks(config, source_name, source, path)
        return
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    from mlpipe_cli.io import register_input

    register_input(path)
    with handle:
        yield from _json_chunks(config, source_name, source, handle)


def _is_parquet(path: Path) -> bool:
    text = str(path)
    return text.endswith(".parquet") or Path(path).is_dir() or any(c in text for c in "*?[")


def _parquet_chunks(
    config: PipelineConfig, name: str, source: SourceConfig, path: Path
) -> Iterator[CheckedBatch]:
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    lazy = scan_parquet(path)
    try:
        rows = int(lazy.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    for start in range(0, max(rows, 1), CHUNK_EVENTS):
        try:
            frame = lazy.slice(start, CHUNK_EVENTS).collect()
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        frame = frame.with_columns(pl.int_range(start, start + frame.height, dtype=pl.Int64)
                                   .alias(ROW))  # fmt: skip
        yield _check(config, name, source, frame, [])


def _json_chunks(
    config: PipelineConfig, name: str, source: SourceConfig, handle: Any
) -> Iterator[CheckedBatch]:
    records: list[tuple[int, dict[str, Any]]] = []
    rejected: list[Rejected] = []
    row = 0
    for line in handle:
        text = line.strip()
        if not text:
            continue
        record, checks = _parse_line(name, source, text)
        if checks:
            rejected.append(Rejected(row, record if record is not None else text, checks))
        else:
            records.append((row, record))  # type: ignore[arg-type]
        row += 1
        if len(records) + len(rejected) >= CHUNK_EVENTS:
            yield _typed_check(config, name, source, records, rejected)
            records, rejected = [], []
    if records or rejected or row == 0:
        yield _typed_check(config, name, source, records, rejected)


def _parse_line(name: str, source: SourceConfig, text: str
                ) -> tuple[dict[str, Any] | None, list[str]]:  # fmt: skip
    try:
        record = json.loads(text)  # (the standard parser: NaN/Infinity tokens are floats)
    except ValueError:
        return None, [f"{name}.event.json"]
    if not isinstance(record, dict):
        return None, [f"{name}.event.json"]
    checks: list[str] = []
    if source.strict:
        allowed = set(source.columns) | set(source.required_columns)
        if any(k not in allowed for k in record):
            checks.append(f"{name}.table.strict")
    checks += [f"{name}.{c}.forbidden" for c in source.forbidden_columns if c in record]
    typed: dict[str, Any] = dict(record)
    for column, contract in source.columns.items():
        value = record.get(column)
        ok, converted = _convert(value, contract)
        if not ok:
            checks.append(f"{name}.{column}.dtype")
        typed[column] = converted
    return (typed if not checks else record), checks


def _convert(value: Any, contract: ColumnContract) -> tuple[bool, Any]:
    """A JSON value as the contract's dtype: (ok, value)."""
    from mlpipe_cli.schema.dtypes import FLOAT, INTEGER, STRING_LIKE

    if value is None:
        return True, None
    dtype = contract.dtype
    if dtype in INTEGER:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if dtype in FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if dtype == "bool":
        return isinstance(value, bool), value
    if dtype in STRING_LIKE:
        return isinstance(value, str), value
    if dtype == "datetime" and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return False, value
        if contract.timezone is None:
            return moment.tzinfo is None, moment
        if moment.tzinfo is None:
            return False, value
        from zoneinfo import ZoneInfo

        return True, moment.astimezone(ZoneInfo(contract.timezone))
    if dtype == "date" and isinstance(value, str):
        try:
            return True, date.fromisoformat(value)
        except ValueError:
            return False, value
    return False, value


def _typed_check(
    config: PipelineConfig,
    name: str,
    source: SourceConfig,
    records: list[tuple[int, dict[str, Any]]],
    rejected: list[Rejected],
) -> CheckedBatch:
    import polars as pl

    from mlpipe_cli.schema.dtypes import to_polars

    schema = {
        column: to_polars(contract.dtype, timezone=contract.timezone)
        for column, contract in source.columns.items()
    }
    extra = sorted({k for _, r in records for k in r if k not in schema})
    data: dict[str, list[Any]] = {c: [r.get(c) for _, r in records] for c in [*schema, *extra]}
    frame = pl.DataFrame(
        {c: pl.Series(c, values, dtype=schema.get(c), strict=False) for c, values in data.items()}
    )
    frame = frame.with_columns(pl.Series(ROW, [row for row, _ in records], dtype=pl.Int64))
    return _check(config, name, source, frame, rejected)


def _check(
    config: PipelineConfig, name: str, source: SourceConfig, frame: pl.DataFrame,
    rejected: list[Rejected],
) -> CheckedBatch:  # fmt: skip
    """Run the contract through the validation engine; split good from rejected."""
    import polars as pl

    from mlpipe_cli.validation import CheckCrashed, validate_source

    keys = list(source.entity_keys or config.entity_keys)
    stream_cols = [*keys, source.timestamp or ""]
    absent = [c for c in stream_cols if c and c not in frame.columns]
    if absent:
        raise InputError(f"events have no column {absent[0]!r} (an entity key or the event "
                         f"time of source {name!r})")  # fmt: skip
    from mlpipe_cli.online.keylimits import MAX_KEY_BYTES
    from mlpipe_cli.streaming.state import bad_local_time

    verdicts = [
        pl.when(pl.col(c).is_null()).then(pl.lit(f"{name}.{c}.nullable")) for c in stream_cols
    ]
    for key in keys:
        if isinstance(frame.schema[key], pl.String | pl.Categorical | pl.Enum):
            size = pl.col(key).cast(pl.String).str.len_bytes()
            verdicts.append(pl.when(size > MAX_KEY_BYTES).then(pl.lit(f"{name}.{key}.key_length")))
    if source.timestamp:
        skipped_or_repeated = bad_local_time(
            source.timestamp, frame.schema[source.timestamp], config.timezone
        )
        if skipped_or_repeated is not None:
            verdicts.append(pl.when(skipped_or_repeated)
                            .then(pl.lit(f"{name}.{source.timestamp}.local_time")))  # fmt: skip
    nulls = pl.concat_list(verdicts).list.drop_nulls()
    flagged = frame.with_columns(nulls.alias("__nulls"))
    usable = pl.col("__nulls").list.len() == 0
    out_rows = list(rejected)
    for record in flagged.filter(~usable).to_dicts():
        out_rows.append(Rejected(record.pop(ROW), record, list(record.pop("__nulls"))))
    checked = flagged.filter(usable).drop("__nulls")
    if checked.height == 0:
        out_rows.sort(key=lambda r: r.row)
        return CheckedBatch(checked, out_rows)

    row_col = "_mlpipe_event_row"  # rides along as a required extra column (strict allows it)
    view_source = source.model_copy(update={
        "min_rows": None, "max_rows": None,
        "required_columns": [*source.required_columns, row_col],
    })  # fmt: skip
    view = config.model_copy(update={"sources": {**config.sources, name: view_source}})
    body = checked.rename({ROW: row_col})
    with tempfile.TemporaryDirectory(prefix="mlpipe-push-") as tmp:
        data = Path(tmp) / "events.parquet"
        quarantine, passed = Path(tmp) / "rejected.parquet", Path(tmp) / "good.parquet"
        body.write_parquet(data)
        report = validate_source(view, name, data, quarantine_path=quarantine, out_path=passed)
        if report.status == "error":
            first = next(c for c in report.failing() if c.status == "error")
            raise CheckCrashed(f"a check could not run on the events: {first.id}: "
                               f"{first.message}")  # fmt: skip
        if not report.schema_ok:
            failed = [c.id for c in report.failing()]
            for record in body.to_dicts():
                out_rows.append(Rejected(record.pop(row_col), record, failed))
            out_rows.sort(key=lambda r: r.row)
            return CheckedBatch(checked.head(0), out_rows)
        bad = pl.read_parquet(quarantine)
        good = pl.read_parquet(passed).rename({row_col: ROW})
    for record in bad.drop("_row").to_dicts():
        checks = list(record.pop("_failed_checks"))
        out_rows.append(Rejected(record.pop(row_col), record, checks))
    out_rows.sort(key=lambda r: r.row)
    return CheckedBatch(good, out_rows)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dump_event(record: dict[str, Any]) -> str:
    """An event as JSON: times as ISO 8601, NaN/Infinity kept as tokens."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=True,
                      default=_json_default)  # fmt: skip


def encode_events(config: PipelineConfig, plan: StreamPlan, frame: pl.DataFrame
                  ) -> list[dict[str, str]]:  # fmt: skip
    """Stream entries (k, e, d) for checked events, in frame order (see streaming.source)."""
    from mlpipe_cli.online.codec import entity_store_key
    from mlpipe_cli.streaming.state import check_event_times, event_time_expr

    schema = frame.collect_schema()
    what = f"source {plan.source_name!r}"
    # read_events dead-letters such events (<source>.<column>.local_time) before this
    check_event_times(frame, plan.timestamp, config.timezone, what)
    e = event_time_expr(plan.timestamp, schema[plan.timestamp], config.timezone, what)
    times = frame.select(e.alias("__e")).get_column("__e").to_list()
    records = frame.drop(ROW, strict=False).to_dicts()
    keys = plan.entity_keys
    return [
        {"k": entity_store_key([r[k] for k in keys]), "e": str(t), "d": dump_event(r)}
        for r, t in zip(records, times, strict=True)
    ]
