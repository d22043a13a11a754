"""`mlpipe training-set`: validate inputs, compute features as of each spine row, write, record.

``training_set`` (over a Project) and ``build_training_set`` (over a loaded config) are what
`mlpipe training-set` calls; the point-in-time computation is
``mlpipe_cli.features.engine.compute_features``. The output Parquet file is
written atomically and is byte-identical for the same inputs and config; beside it goes
``<out>.manifest.json`` and, when a store is given, the same manifest is published as a
``training-set`` artifact (so `mlpipe artifacts list training-set` finds it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg
from mlpipe_cli.documents import TrainingSetManifest
from mlpipe_cli.errors import DataCheckFailed, InputError, UsageError
from mlpipe_cli.io import within_input_scope
from mlpipe_cli.progress import task as progress_task
from mlpipe_cli.progress import track as progress_track

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.engines.spark.training_set import WrittenOutput
    from mlpipe_cli.ops.project import Project

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class TrainingSetResult:
    out: Path
    manifest_path: Path
    manifest: dict[str, Any]
    rows: int
    features: list[str]
    feature_stats: list[dict[str, Any]] = field(default_factory=list)
    artifact_version: str | None = None
    validated: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole build

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "manifest": str(self.manifest_path),
            "artifact_version": self.artifact_version,
            "rows": self.rows,
            "features": self.feature_stats,
            "config_hash": self.manifest["config_hash"],
            "output_sha256": self.manifest["output"]["sha256"],
            "validated_sources": self.validated,
            "seconds": round(self.seconds, 3),
        }


def manifest_path_for(out: Path) -> Path:
    return out.with_name(out.name + MANIFEST_SUFFIX)


def training_set(
    project: Project,
    *,
    out: Path,
    spine: Path | None = None,
    timestamp: str | None = None,
    features: Sequence[str] | None = None,
    publish: bool = True,
    progress: Callable[[str], None] | None = None,
    engine: str | None = None,
) -> TrainingSetResult:
    """Build the training set of ``project``; see `mlpipe training-set --help`.

    ``publish=False`` writes only ``<out>.manifest.json``, no ``training-set`` artifact.
    ``progress`` is called with a short description before each step.
    """
    return build_training_set(
        project.config,
        out=out,
        spine=spine,
        timestamp=timestamp,
        features=features,
        store=project.store if publish else None,
        progress=progress,
        engine=engine,
    )


@within_input_scope
def build_training_set(
    config: PipelineConfig,
    *,
    out: Path,
    spine: Path | None = None,
    timestamp: str | None = None,
    features: Sequence[str] | None = None,
    store: ArtifactStore | None = None,
    validate: bool = True,
    progress: Callable[[str], None] | None = None,
    engine: str | None = None,
) -> TrainingSetResult:
    """Validate the inputs, compute every feature as of each spine row, write ``out``.

    ``engine`` (default: the config's ``engine:``) is ``polars`` or ``spark``.
    """
    started = time.perf_counter()
    from mlpipe_cli.engines import choose_engine

    engine = choose_engine(config, engine)
    from mlpipe_cli.config.loader import config_section_hash
    from mlpipe_cli.features.engine import _select, check_match_rates, compute_features
    from mlpipe_cli.io import (
        atomic_outputs,
        atomic_write_bytes,
        check_outputs,
        fingerprint,
        resolve_parquet_files,
        scan_parquet,
        staged_path,
        write_parquet_atomic,
    )

    settings = config.training_set
    spine_path = spine or (settings.spine if settings else None)
    if spine_path is None:
        raise UsageError(
            "no spine given", hint=f"pass {arg('spine', 'PATH')} or set training_set.spine"
        )
    ts_col = timestamp or (settings.timestamp if settings else None)
    if ts_col is None:
        raise UsageError(
            "no spine timestamp column",
            hint=f"set training_set.timestamp or pass {arg('timestamp')}",
        )
    # The spine columns holding the pipeline's entity keys; empty when every source declares
    # its own keys (each feature then joins on the spine columns named like them).
    keys = list((settings.entity_keys if settings else None) or config.entity_keys)
    names = features if features is not None else (settings.features if settings else None)
    selected = _select(config, names)
    if not selected:
        raise UsageError("no features to compute", hint="define `features:` in the config")
    used_sources = sorted({f.source for f in selected})

    out = Path(out)
    check_outputs([out, manifest_path_for(out)])  # before any heavy work; readers check too
    spine_files = {p.resolve() for p in resolve_parquet_files(spine_path)}
    for name in used_sources:
        resolve_parquet_files(config.sources[name].path)

    validated: list[str] = []
    if validate:
        validated = _validate_inputs(config, used_sources, spine_files, progress)

    frame = None
    match_rates: dict[str, dict[str, Any]] = {}  # Spark's come with its written output
    if engine == "spark":
        # the Polars engine checks the spine it has read; Spark's tasks would fail one by one
        from mlpipe_cli.features.engine import check_spine_keys, spine_key_columns

        check_spine_keys(
            scan_parquet(spine_path),
            spine_key_columns(config, keys or None, [f.name for f in selected]),
        )
    else:
        if progress:
            progress("computing features")
        computed = compute_features(
            config,
            scan_parquet(spine_path),
            entity_keys=keys or None,
            timestamp=ts_col,
            features=[f.name for f in selected],
            progress=progress,
            stats=True,
        )
        # A feature that matched no spine row (or fewer than its min_match_rate) fails the
        # run before anything is written: a column of defaults is never a silent success.
        check_match_rates(computed.stats)
        frame = computed.frame
        match_rates = {s.feature: s.to_json() for s in computed.stats}
    from mlpipe_cli import __version__

    section = {
        "entity_keys": keys,
        "timezone": config.timezone,
        "timestamp": ts_col,
        "features": [f for f in config.features if f.name in {s.name for s in selected}],
        "sources": {name: config.sources[name] for name in used_sources},
    }
    # paths are left out of the hash: the same data and definitions from any checkout agree
    hashed_section = _without_paths(section)
    inputs = {
        "spine": fingerprint([spine_path]),
        "sources": {name: fingerprint([config.sources[name].path]) for name in used_sources},
    }
    if progress:
        progress("writing")
    manifest_path = manifest_path_for(out)
    # the Parquet file and its manifest: both published or neither
    with atomic_outputs(), progress_task(f"writing {out.name}"):
        summary: _Written | WrittenOutput
        if frame is None:  # engine spark: a file joins this batch; a directory is renamed
            from mlpipe_cli.engines.spark.training_set import build as build_on_spark

            summary = build_on_spark(
                config,
                spine=spine_path,
                out=out,
                keys=keys,
                timestamp=ts_col,
                selected=selected,
                progress=progress,
            )
            match_rates = summary.match_rates  # checked by the engine before publishing
        else:
            write_parquet_atomic(frame, out)
            summary = _Written.of(frame)
        written = staged_path(out)
        feature_names = [f.name for f in selected]
        if frame is not None:
            values = value_counts(frame.lazy(), feature_names)
        else:  # Spark counted nulls only: count the rest in the written part files
            import polars as pl

            parts = resolve_parquet_files(out) if summary.parts else [written]
            values = value_counts(pl.scan_parquet([str(p) for p in parts]), feature_names)
        manifest: dict[str, Any] = {
            "format_version": TrainingSetManifest.FORMAT_VERSION,
            "mlpipe_version": __version__,
            "kind": "training-set",
            "pipeline": config.pipeline,
            "config_hash": config_section_hash(hashed_section),
            "entity_keys": keys,
            "timestamp": ts_col,
            "features": feature_names,
            "inputs": inputs,
            "rows": {"spine": summary.rows, "output": summary.rows},
            "output": _output_entry(out, written, summary),
            "validated_sources": validated,
        }
        # per feature: nulls, NaN, ±inf and valid values (a NaN is not null in Parquet, and a
        # column of NaN must not read as complete)
        manifest["values"] = values
        if match_rates:  # per feature: rows, matched, match_rate, keys
            manifest["match_rates"] = {
                name: {k: v for k, v in stats.items() if k != "feature"}
                for name, stats in match_rates.items()
            }
        atomic_write_bytes(manifest_path, _dump(manifest))

    version = None
    if store is not None:

        def write(staging: Path) -> None:
            (staging / "training-set.json").write_bytes(_dump(manifest))

        published = store.publish(
            "training-set",
            write,
            config_hash=manifest["config_hash"],
            inputs=inputs,
            params={
                "features": manifest["features"],
                "output_sha256": manifest["output"]["sha256"],
            },
        )
        version = published.version.version
    stats = [
        {
            "feature": name,
            "dtype": summary.dtypes[name],
            "nulls": summary.nulls[name],
            "nans": values[name]["nans"],
            "infs": values[name]["infs"],
            "valid": values[name]["valid"],
            "matched": match_rates[name]["matched"] if match_rates else None,
            "match_rate": match_rates[name]["match_rate"] if match_rates else None,
        }
        for name in manifest["features"]
    ]
    return TrainingSetResult(
        out=out,
        manifest_path=manifest_path,
        manifest=manifest,
        rows=summary.rows,
        features=manifest["features"],
        feature_stats=stats,
        artifact_version=version,
        validated=validated,
        seconds=time.perf_counter() - started,
    )


def value_counts(frame: pl.LazyFrame, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per column of ``names``: ``nulls``, ``nans``, ``infs`` (+inf and -inf) and ``valid``
    (none of those: a usable value), in one pass. A NaN or an infinity is a value to
    Parquet and to ``null_count``, but not a usable feature value, so each is counted apart;
    columns that are not floating point have none."""
    import polars as pl

    schema = frame.collect_schema()
    exprs: list[pl.Expr] = [pl.len().alias("__rows")]
    for i, name in enumerate(names):
        column = pl.col(name)
        exprs.append(column.null_count().cast(pl.Int64).alias(f"n{i}"))
        if schema[name].is_float():
            exprs.append(column.is_nan().sum().cast(pl.Int64).alias(f"nan{i}"))
            exprs.append(column.is_infinite().sum().cast(pl.Int64).alias(f"inf{i}"))
    row = frame.select(exprs).collect().row(0, named=True)
    counts = {}
    for i, name in enumerate(names):
        nulls, nans, infs = row[f"n{i}"], row.get(f"nan{i}", 0), row.get(f"inf{i}", 0)
        counts[name] = {
            "nulls": nulls,
            "nans": nans,
            "infs": infs,
            "valid": row["__rows"] - nulls - nans - infs,
        }
    return counts


@dataclass(frozen=True)
class _Written:
    """What the manifest records about the written output (either engine)."""

    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    nulls: dict[str, int]
    parts: int = 0  # part files of a directory output (Spark engine); 0 = one file

    @classmethod
    def of(cls, frame: Any) -> _Written:
        return cls(
            rows=frame.height,
            columns=frame.columns,
            dtypes={name: str(dtype) for name, dtype in frame.schema.items()},
            nulls={name: frame.get_column(name).null_count() for name in frame.columns},
        )


def _output_entry(out: Path, written: Path, summary: Any) -> dict[str, Any]:
    """The manifest's ``output``: one file (``written``: its staged copy), or the part files
    of a directory (Spark engine; the sha256 combines the parts' as ``io.fingerprint`` does)."""
    from mlpipe_cli.io import file_sha256, fingerprint

    if not summary.parts:
        return {
            "file": out.name,
            "sha256": file_sha256(written),
            "size": written.stat().st_size,
            "columns": summary.columns,
        }
    combined = fingerprint([out])
    return {
        "file": out.name,
        "sha256": combined["sha256"],
        "size": sum(f["size"] for f in combined["files"]),
        "parts": summary.parts,
        "columns": summary.columns,
    }


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, default=str).encode() + b"\n"


def _without_paths(section: dict[str, Any]) -> Any:
    from mlpipe_cli.config.loader import _plain

    plain = _plain(section)
    for source in plain["sources"].values():
        source.pop("path", None)
    return plain


def _validate_inputs(
    config: PipelineConfig,
    used_sources: list[str],
    spine_files: set[Path],
    progress: Callable[[str], None] | None,
) -> list[str]:
    """Run each used source's column contract (and the spine's, when the spine is a
    configured source) through `validate`'s checks; raise DataCheckFailed on failure."""
    from mlpipe_cli.io import resolve_parquet_files
    from mlpipe_cli.validation import require_passed, validate_source

    names = list(used_sources)
    for name, source in sorted(config.sources.items()):
        files = (
            {p.resolve() for p in resolve_parquet_files(source.path)}
            if _exists(source.path)
            else set()
        )
        if files and files == spine_files and name not in names:
            names.append(name)
    checked = []
    for name in progress_track(names, "validate inputs", unit="sources"):
        source = config.sources[name]
        if not (source.columns or source.checks or source.required_columns):
            continue  # no contract to check; the engine's own key/timestamp checks still run
        if progress:
            progress(f"validating {name}")
        report = validate_source(config, name)
        try:
            require_passed(report)
        except DataCheckFailed as exc:
            raise DataCheckFailed(
                f"input {name!r} failed validation: {exc.message}",
                hint="run `mlpipe validate` for the full report",
                report=report,
            ) from None
        checked.append(name)
    return checked


def _exists(path: Path) -> bool:
    try:
        from mlpipe_cli.io import resolve_parquet_files

        resolve_parquet_files(path)
    except InputError:
        return False
    return True
