"""Fitting: training data + TransformConfig -> state, tables, golden example, artifact.

Statistics are computed deterministically (exactly rounded sums, sorted vocabularies, numpy
order statistics), so the same data and config give the same bytes regardless of
``POLARS_MAX_THREADS``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli import __version__
from mlpipe_cli.documents import ArtifactManifest, TransformState
from mlpipe_cli.errors import (
    ArtifactError,
    ConfigError,
    DataCheckFailed,
    InputError,
    first_and_more,
)
from mlpipe_cli.transforms.categorical import TargetEnc
from mlpipe_cli.transforms.fitted import (
    FittedTransform,
    accepted_families,
    dtype_family,
)
from mlpipe_cli.transforms.numeric import NUMERIC_STEPS
from mlpipe_cli.transforms.registry import build

if TYPE_CHECKING:
    import numpy as np

    from mlpipe_cli.artifacts import ArtifactStore, PublishResult
    from mlpipe_cli.config.transforms import TransformConfig

KIND = "transform"
STATE_FILE = "state.json"
SCHEMA_FILE = "schema.json"
GOLDEN_FILE = "golden.json"
GOLDEN_DATA = "golden.parquet"
PROFILE_FILE = "profile.json"
UNKNOWN_CATEGORY = "__mlpipe_unknown__"


@dataclass
class FitOutcome:
    transform: FittedTransform
    state: dict[str, Any]
    tables: dict[str, pl.DataFrame]
    training: pl.DataFrame  # input columns (+ target) the state was fitted on
    params: dict[str, Any]
    golden: pl.DataFrame
    golden_expected: list[list[Any]]

    def training_outputs(self, frame: pl.LazyFrame | None = None) -> pl.DataFrame:
        """The training rows transformed, with target encodings cross-fitted (out of fold).

        ``frame`` is the full training data (same rows, same order) when the other columns
        (keys, label) should be kept; by default only the fitted inputs are used.
        """
        source = frame if frame is not None else self.training.lazy()
        out = self.transform.transform_batch(source).collect()
        target = self.state.get("target")
        y = _target_values(self.training, target) if target else None
        for column in self.state["columns"]:
            if column["steps"][0]["type"] == "target" and y is not None:
                encoder = TargetEnc(column["column"], column["steps"][0])
                values = encoder.cross_fit(self.training, y, column["state"])
                out = out.with_columns(pl.Series(column["column"], values, dtype=pl.Float64))
        return out


# step options added after the first release: left out of params and state while unset, so a
# config that does not use them keeps its config hash
_OPTIONAL_KEYS = ("on_null", "on_nan", "on_inf", "timezone")


def _step_dict(step: Any) -> dict[str, Any]:
    plain = step.model_dump(mode="json")
    for key in _OPTIONAL_KEYS:
        if key in plain and plain[key] is None:
            del plain[key]
    return plain


def effective_params(config: TransformConfig) -> dict[str, Any]:
    """Every step's parameters with defaults spelled out; no machine-specific paths."""
    plain = config.model_dump(mode="json")
    plain.pop("data", None)
    plain["columns"] = {c: [_step_dict(s) for s in steps] for c, steps in config.columns.items()}
    for steps in plain["columns"].values():
        for step in steps:
            if step["type"] == "embedding":
                step["table"] = Path(step["table"]).name
    return plain


def _target_values(frame: pl.DataFrame, target: str) -> np.ndarray:
    return frame[target].cast(pl.Float64).to_numpy()


def _required_columns(config: TransformConfig) -> list[str]:
    needed: list[str] = []
    for column, steps in config.columns.items():
        if steps[0].type == "drop":
            continue
        needed.append(column)
        reference = getattr(steps[0], "reference", None)
        if reference and reference not in needed:
            needed.append(reference)
    return needed


def check_column_names(config: TransformConfig, columns: list[str]) -> None:
    """Every column the ``transforms:`` section names must be in the training data: a name
    that is not is a typo in the config (or the wrong --data), so ConfigError (exit 2) naming
    the transform, the unknown column and the nearest existing names — not a failed data
    check (exit 1), and not a crash further down."""
    from mlpipe_cli.config.names import did_you_mean

    present = set(columns)
    problems = []
    for column, steps in config.columns.items():
        where = f"transforms.columns.{column} ({steps[0].type})"
        if column not in present:
            problems.append(
                f"{where}: no column {column!r} in the training data; "
                f"{did_you_mean(column, columns)}"
            )
        reference = getattr(steps[0], "reference", None)
        if reference and reference not in present:
            problems.append(
                f"{where} reference: no column {reference!r} in the training data; "
                f"{did_you_mean(reference, columns)}"
            )
    if config.target and config.target not in present:
        problems.append(
            f"transforms.target: no column {config.target!r} in the training data; "
            f"{did_you_mean(config.target, columns)}"
        )
    if problems:
        raise ConfigError(
            first_and_more(problems),
            hint="fix the name in the config, or pass training data that has the column",
        )


def check_training_schema(config: TransformConfig, schema: pl.Schema) -> list[str]:
    """Problems that make the data unusable for the configured steps (exit 1)."""
    problems = []
    # the first step's type, or the role of a column no step names
    wanted: dict[str, str] = {
        c: s[0].type for c, s in config.columns.items() if s[0].type != "drop"
    }
    for steps in config.columns.values():
        reference = getattr(steps[0], "reference", None)
        if reference:
            wanted.setdefault(reference, "reference")
    if config.target:
        wanted[config.target] = "label"
    for column, kind in wanted.items():
        if column not in schema:
            problems.append(f"column {column!r} is missing from the training data")
            continue
        family = dtype_family(schema[column])
        if kind in NUMERIC_STEPS or kind in ("passthrough", "label"):
            ok = family in ("bool", "float", "integer")
        elif kind in ("temporal", "reference"):
            ok = family in ("date", "datetime", "datetime-tz")
        elif kind == "embedding":
            ok = family in ("integer", "string")
        else:
            ok = family in ("string", "integer", "bool")
        if not ok:
            problems.append(f"column {column!r} has dtype {schema[column]}, unusable for {kind}")
    for column, steps in config.columns.items():
        reference = getattr(steps[0], "reference", None)
        if steps[0].type != "temporal" or not reference:
            continue
        if column not in schema or reference not in schema:
            continue
        # pairs Polars cannot subtract after converting to the column's zone (days_since)
        own, family = dtype_family(schema[column]), dtype_family(schema[reference])
        if own == "datetime-tz" and family == "date":
            problems.append(
                f"column {column!r} has a time zone but its days_since reference {reference!r} "
                f"is a {schema[reference]}: cast the reference to a Datetime"
            )
        elif own == "datetime" and family == "datetime-tz":
            problems.append(
                f"column {column!r} has no time zone but its days_since reference {reference!r} "
                f"has one ({schema[reference]}): give {column!r} a time zone too"
            )
    return problems


def fit_frame(config: TransformConfig, frame: pl.LazyFrame | pl.DataFrame) -> FitOutcome:
    """Fit every configured column on ``frame``; raise DataCheckFailed if unusable, and
    ConfigError when the config names a column the data does not have."""
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    check_column_names(config, schema.names())
    problems = check_training_schema(config, schema)
    if problems:
        raise DataCheckFailed(
            f"training data fails the transform contract: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            report={"problems": problems},
        )
    inputs = _required_columns(config)
    target = config.target
    training = lazy.select([*inputs, *([target] if target else [])]).collect()
    if training.height == 0:
        raise DataCheckFailed("training data has no rows")
    y = None
    if target:
        nulls = training[target].null_count()
        if nulls:
            raise DataCheckFailed(f"target column {target!r} has {nulls} null values")
        y = _target_values(training, target)

    columns: list[dict[str, Any]] = []
    tables: dict[str, pl.DataFrame] = {}
    input_schema: dict[str, str] = {}
    input_families: dict[str, list[str]] = {}
    from mlpipe_cli.progress import track as progress_track

    for column, steps in progress_track(config.columns.items(), "fitting", unit="columns"):
        step_dicts = [_step_dict(s) for s in steps]
        for step in step_dicts:
            if step["type"] == "embedding":
                step.pop("table")
        transformer = build(column, [s.model_dump() for s in steps])
        state = transformer.fit(training, y)
        for key in [k for k in state if k.startswith("_")]:
            tables[state["file"]] = state.pop(key)
        columns.append(
            {
                "column": column,
                "steps": step_dicts,
                "state": state,
                "outputs": transformer.outputs(state),
            }
        )
        if steps[0].type == "drop":
            continue
        kind = getattr(transformer, "kind", "numeric")
        input_schema[column] = str(schema[column])
        input_families[column] = accepted_families(kind, dtype_family(schema[column]))
        reference = getattr(steps[0], "reference", None)
        if reference:
            input_schema.setdefault(reference, str(schema[reference]))
            input_families.setdefault(
                reference, accepted_families("temporal", dtype_family(schema[reference]))
            )
    outputs = [name for c in columns for name in c["outputs"]]
    duplicated = sorted(n for n, k in Counter(outputs).items() if k > 1)
    if duplicated:
        raise InputError(
            f"transform output names collide: {', '.join(duplicated)}",
            hint="rename an input column or drop one of the encoders",
        )
    state_doc = {
        "format_version": TransformState.FORMAT_VERSION,
        "artifact_format_version": ArtifactManifest.FORMAT_VERSION,
        "mlpipe_version": __version__,
        "target": target,
        "input_schema": input_schema,
        "input_families": input_families,
        "output_columns": outputs,
        "columns": columns,
        "conventions": {
            "weekday": "ISO: Monday=1 .. Sunday=7 (Polars dt.weekday)",
            "missing": "numeric columns: null/NaN/±inf inputs as each column's `policy` says "
            "(fill, keep as null, clip, or refuse)",
        },
    }
    # round-trip through JSON now, so what we use is exactly what we store
    state_doc = json.loads(json.dumps(state_doc))
    transform = FittedTransform(state_doc, tables)
    golden = golden_records(
        training.select(list(input_schema)), state_doc, tables, config.golden_rows
    )
    expected = [transform.transform_one(r) for r in golden.iter_rows(named=True)]
    transform.check_golden(golden, expected)
    return FitOutcome(
        transform, state_doc, tables, training, effective_params(config), golden, expected
    )


def golden_records(
    frame: pl.DataFrame, state: dict[str, Any], tables: dict[str, pl.DataFrame], rows: int
) -> pl.DataFrame:
    """First ``rows`` training rows + an all-missing row + an unknown-categories row."""
    head = frame.head(rows)
    nulls = pl.DataFrame([pl.Series(c, [None], dtype=frame.schema[c]) for c in frame.columns])
    # a column that refuses missing values keeps its first training value in the missing row
    refuses = [
        c["column"]
        for c in state["columns"]
        if c["state"].get("policy", {}).get("null") == "error" and c["column"] in nulls.columns
    ]
    if refuses and head.height:
        nulls = nulls.with_columns(head.head(1).select(refuses))
    unknown = head.head(1).clone() if head.height else nulls
    for column in state["columns"]:
        name, kind = column["column"], column["steps"][0]["type"]
        if name not in unknown.columns:
            continue
        dtype = frame.schema[name]
        if kind in ("onehot", "ordinal", "frequency", "target") and dtype_family(dtype) == "string":
            unknown = unknown.with_columns(pl.lit(UNKNOWN_CATEGORY).cast(dtype).alias(name))
        elif kind == "embedding":
            keys = tables[column["state"]["file"]]["key"]
            if keys.dtype.is_integer():
                unseen = int(keys.max() or 0) + 1  # type: ignore[arg-type]
                unknown = unknown.with_columns(pl.lit(unseen).cast(dtype).alias(name))
            else:
                unknown = unknown.with_columns(pl.lit(UNKNOWN_CATEGORY).cast(dtype).alias(name))
    return pl.concat([head, nulls, unknown], how="vertical_relaxed")


def write_artifact(outcome: FitOutcome, staging: Path, *, profile: bool = True) -> None:
    """Write state, schema, golden example, embedding tables and profile into ``staging``."""
    state = outcome.state
    _write_json(staging / STATE_FILE, state)
    _write_json(
        staging / SCHEMA_FILE,
        {
            "format_version": TransformState.FORMAT_VERSION,
            "mlpipe_version": __version__,
            "input": state["input_schema"],
            "output": [{"name": name, "dtype": "Float64"} for name in state["output_columns"]],
        },
    )
    _write_json(
        staging / GOLDEN_FILE,
        {
            "format_version": TransformState.FORMAT_VERSION,
            "mlpipe_version": __version__,
            "rows": outcome.golden.height,
            "expected": outcome.golden_expected,
        },
    )
    outcome.golden.write_parquet(staging / GOLDEN_DATA, compression="zstd", statistics=False)
    for name, table in sorted(outcome.tables.items()):
        table.write_parquet(staging / name, compression="zstd", statistics=False)
    if profile:
        _write_profile(outcome, staging / PROFILE_FILE)


def _write_profile(outcome: FitOutcome, path: Path) -> None:
    """Reference profile of inputs (``raw.<col>``) and outputs (``vec.<col>``).

    Column names match the serving log, so drift checks compare like with like. Outputs come
    from the artifact's own batch path — what `transform` and `serve` emit — not from the
    cross-fitted training rows: out-of-fold target encodings take many values where serving
    takes one per category, so a profile of them would flag drift on unchanged data.
    """
    from mlpipe_cli.drift.profile import build_profile, dumps_profile

    inputs = outcome.training.select(
        [pl.col(c).alias(f"raw.{c}") for c in outcome.state["input_schema"]]
    )
    outputs = (
        outcome.transform.transform_batch(outcome.training.lazy())
        .collect()
        .select([pl.col(c).alias(f"vec.{c}") for c in outcome.state["output_columns"]])
    )
    frame = pl.concat([inputs, outputs], how="horizontal")
    # a plain write, like the other files of the staging directory: the store syncs them all
    # and publishes the directory by one rename (write_profile's own fsync + rename was a
    # second, serial sync of this file, #19)
    path.write_bytes(dumps_profile(build_profile(frame)).encode("utf-8"))


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def publish(
    store: ArtifactStore,
    config: TransformConfig,
    data: Path | str,
    *,
    frame: pl.LazyFrame | None = None,
) -> tuple[PublishResult, FitOutcome]:
    """Fit on ``data`` and publish a `transform` artifact version (idempotent)."""
    from mlpipe_cli.config.loader import config_section_hash
    from mlpipe_cli.io import fingerprint, scan_parquet

    inputs = fingerprint([data])  # hashed before fitting
    outcome = fit_frame(config, frame if frame is not None else scan_parquet(data))
    result = store.publish(
        KIND,
        lambda staging: write_artifact(outcome, staging),
        config_hash=config_section_hash(outcome.params),
        inputs=inputs,
        params=outcome.params,
        extra={
            "training_rows": outcome.training.height,
            "output_columns": len(outcome.state["output_columns"]),
        },
    )
    return result, outcome


def load_transform(store: ArtifactStore, ref: str = "latest") -> FittedTransform:
    """Load a verified version; re-run its golden example (ArtifactError, exit 3, if not
    reproduced)."""
    artifact = store.get(KIND, ref, verify=True)
    try:
        state = json.loads(artifact.file(STATE_FILE).read_text())
        golden_doc = json.loads(artifact.file(GOLDEN_FILE).read_text())
        tables = {}
        for column in state["columns"]:
            if column["steps"][0]["type"] == "embedding":
                name = column["state"]["file"]
                tables[name] = pl.read_parquet(artifact.file(name))
        golden = pl.read_parquet(artifact.file(GOLDEN_DATA))
        transform = FittedTransform(state, tables, version=artifact.version)
        expected = golden_doc["expected"]
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as exc:
        raise ArtifactError(
            f"transform artifact {artifact.version} is unreadable: {type(exc).__name__}: {exc}",
            hint="re-fit with `mlpipe fit`",
        ) from None
    transform.check_golden(golden, expected)
    return transform


def contract_columns(
    config: TransformConfig, sources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The training data's column contract: named source columns, then ``contract``."""
    columns: dict[str, Any] = {}
    for source_name, names in config.source_contracts.items():
        source = (sources or {}).get(source_name)
        if source is None:
            known = ", ".join(sorted(sources or {})) or "none"
            raise ConfigError(
                f"transforms.source_contracts: unknown source {source_name!r} (known: {known})"
            )
        for name in names:
            if name not in source.columns:
                raise ConfigError(
                    f"transforms.source_contracts: source {source_name!r} has no "
                    f"contract for column {name!r}"
                )
            columns[name] = source.columns[name]
    columns.update(config.contract)
    return columns


def check_contract(
    config: TransformConfig, data: Path | str, sources: Mapping[str, Any] | None = None
) -> None:
    """Run the training data's column contract (``contract`` + ``source_contracts``) with the
    validation engine; DataCheckFailed (exit 1) listing every failing check."""
    columns = contract_columns(config, sources)
    if not columns:
        return
    from mlpipe_cli.config.sources import SourceConfig
    from mlpipe_cli.validation.engine import check_source
    from mlpipe_cli.validation.report import ERROR, FAIL

    source = SourceConfig(path=Path(data), columns=columns)
    report, _ = check_source("transforms.contract", source, data)
    errors = [c for c in report.checks if c.status == ERROR]
    if errors:
        raise InputError(
            f"training data contract check {errors[0].id} could not run: {errors[0].message}"
        )
    failed = [c for c in report.checks if c.status == FAIL]
    if failed:
        problems = [f"{c.column or ''}: {c.message}".lstrip(": ") for c in failed]
        raise DataCheckFailed(
            f"training data fails the transforms contract: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            report={"problems": problems},
        )
