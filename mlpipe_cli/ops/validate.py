"""`mlpipe validate`: check sources against their column contracts (the data gate).

``validate`` runs ``run_validation`` (every named source through
``mlpipe_cli.validation.validate_source``, reference profiles from ``ops.profiles``, the
report published as a ``validation`` artifact) and writes the JUnit file when asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import MlpipeError, OutputError, UsageError
from mlpipe_cli.progress import track as progress_track
from mlpipe_cli.validation import ValidationReport, require_passed, validate_source

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.validation.report import SourceReport


@dataclass(frozen=True)
class ValidateResult:
    """The validation report and the ``validation`` artifact version it was published as."""

    report: ValidationReport
    artifact_version: str | None
    seconds: float = 0.0  # wall time of the whole run

    @property
    def passed(self) -> bool:
        return self.report.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        document = self.report.to_dict()
        document["artifact_version"] = self.artifact_version
        document["seconds"] = round(self.seconds, 3)
        return document

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) if a check failed, CheckCrashed (exit 2) if one crashed."""
        require_passed(self.report)


def validate(
    project: Project,
    *,
    sources: list[str] | None = None,
    data: Path | None = None,
    quarantine: Path | None = None,
    out: Path | None = None,
    reference: str | None = None,
    save_profile: bool = False,
    junit: Path | None = None,
    publish: bool = True,
    engine: str | None = None,
) -> ValidateResult:
    """Validate the named (default: all) sources; see `mlpipe validate --help`."""
    started = time.perf_counter()
    report, version = run_validation(
        project.config,
        project.store,
        sources=sources,
        data_path=data,
        quarantine=quarantine,
        out=out,
        reference=reference,
        save_profile=save_profile,
        publish=publish,
        engine=engine,
        junit=junit,
    )
    return ValidateResult(
        report=report, artifact_version=version, seconds=time.perf_counter() - started
    )


def run_validation(
    config: PipelineConfig,
    store: ArtifactStore | None,
    *,
    sources: list[str] | None = None,
    data_path: Path | str | None = None,
    quarantine: Path | None = None,
    out: Path | None = None,
    reference: str | None = None,
    save_profile: bool = False,
    publish: bool = True,
    engine: str | None = None,
    junit: Path | None = None,
) -> tuple[ValidationReport, str | None]:
    """Validate the named (default: all) sources; optionally publish the report artifact
    and write it as JUnit XML to ``junit``.

    Returns the report and the published ``validation`` version (None when not published).
    Every output file is checked before any work: none may be an input or another output.
    When a write fails after others succeeded (a full disk), the error says which outputs
    this run had already written or published.
    """
    names = list(dict.fromkeys(sources)) if sources else sorted(config.sources)
    for name in names:
        config.source(name)  # unknown name -> UsageError
    if not names:
        raise UsageError("the config defines no sources to validate")
    if data_path is not None and len(names) != 1:
        raise UsageError("--data needs exactly one source: add --source NAME")
    if (reference or save_profile) and store is None:
        raise UsageError("--reference/--save-profile need an artifact store")

    from mlpipe_cli.engines import choose_engine

    on_spark = choose_engine(config, engine) == "spark"
    if on_spark and (reference is not None or save_profile):
        _refuse_remote_profiles(config, names, data_path)
    splits = {
        name: (
            _split_path(quarantine, name, len(names), on_spark),
            _split_path(out, name, len(names), on_spark),
        )
        for name in names
    }
    _check_outputs(splits, junit)
    done: list[str] = []  # what this run wrote or published so far, for a failure's message
    try:
        return _run(
            config, store, names, splits, done, data_path, reference, save_profile, publish,
            on_spark, junit,
        )  # fmt: skip
    except OutputError as exc:
        raise _saying_what_was_done(exc, done) from None


def _check_outputs(splits: dict[str, tuple[Path | None, Path | None]], junit: Path | None) -> None:
    """Every file this run writes, by flag (and source when several), in one call."""
    from mlpipe_cli.io import check_outputs

    several = len(splits) > 1
    outputs: dict[str, Path | None] = {}
    for name, (q_path, o_path) in splits.items():
        suffix = f" (source {name})" if several else ""
        outputs[f"--quarantine{suffix}"] = q_path
        outputs[f"--out{suffix}"] = o_path
    outputs["--junit"] = junit
    check_outputs(outputs)


def _saying_what_was_done(exc: OutputError, done: list[str]) -> OutputError:
    """``exc`` with a hint that is true of the whole run: the store's "nothing was published"
    speaks of the one artifact that failed, while earlier steps of this run may have
    written files or published (and made LATEST) other artifacts."""
    if not done:
        return exc
    hint = (exc.hint or "").replace("nothing was published", "").strip("; ")
    already = "this run had already " + ", ".join(done)
    return OutputError(exc.message, hint="; ".join(part for part in (hint, already) if part))


def _run(
    config: PipelineConfig,
    store: ArtifactStore | None,
    names: list[str],
    splits: dict[str, tuple[Path | None, Path | None]],
    done: list[str],
    data_path: Path | str | None,
    reference: str | None,
    save_profile: bool,
    publish: bool,
    on_spark: bool,
    junit: Path | None,
) -> tuple[ValidationReport, str | None]:
    """Every output file is staged (``atomic_outputs``) and renamed into place only after
    the JUnit file is staged and the artifacts are published: an output that cannot be
    written (``--junit /proc/x.xml``) fails the run before anything is published, and a
    failed publish leaves none of the files written."""
    from mlpipe_cli.io import atomic_outputs, atomic_write_bytes, outside_atomic_outputs

    with atomic_outputs():
        reports = [
            _check_one(config, name, splits[name], done, data_path, store, reference, on_spark)
            for name in progress_track(names, "validate", unit="sources")
        ]
        result = ValidationReport(config.pipeline, reports)
        if junit is not None:
            atomic_write_bytes(junit, result.to_junit())
        version = None
        # the store moves LATEST under its own lock: it cannot wait for the renames
        with outside_atomic_outputs():
            if save_profile:
                from mlpipe_cli.ops.profiles import save_profile as _save

                for report in reports:
                    if report.status == "passed":
                        report.profile = _save(
                            store,  # type: ignore[arg-type]
                            config,
                            report.source,
                            data_path,
                            on_spark=on_spark,
                        )
                        done.append(
                            f"published profile/{report.profile} ({report.source}, now its LATEST)"
                        )
            if publish and store is not None:
                version = publish_report(store, config, result, data_path)
                done.append(f"published validation/{version} (now LATEST)")
    return result, version


def _check_one(
    config: PipelineConfig,
    name: str,
    split: tuple[Path | None, Path | None],
    done: list[str],
    data_path: Path | str | None,
    store: ArtifactStore | None,
    reference: str | None,
    on_spark: bool,
) -> SourceReport:
    q_path, o_path = split
    ref_profile, ref_version = (None, None)
    if reference is not None:
        from mlpipe_cli.ops.profiles import load_reference

        ref_profile, ref_version = load_reference(store, name, reference)  # type: ignore[arg-type]
    if on_spark:
        from mlpipe_cli.engines.spark.validate import check_source

        report = check_source(config, name, data_path, quarantine_path=q_path, out_path=o_path)
        if ref_profile is not None:
            from mlpipe_cli.engines.spark.profile import distribution_checks_on_spark

            distribution_checks_on_spark(config, name, data_path, report, ref_profile, ref_version)
        # a directory of part files is renamed into place at once, not staged with the rest
        for label, split_report, path in (
            ("quarantine", report.quarantine, q_path),
            ("out", report.out, o_path),
        ):
            if split_report and split_report.get("path") and path and path.suffix != ".parquet":
                done.append(f"written {split_report['path']} (--{label}, {name})")
        return report
    return validate_source(
        config,
        name,
        data_path,
        reference=ref_profile,
        reference_version=ref_version,
        quarantine_path=q_path,
        out_path=o_path,
    )


def _refuse_remote_profiles(
    config: PipelineConfig, names: list[str], data_path: Path | str | None
) -> None:
    """Profiles are artifacts of local (or shared-filesystem) inputs: the artifact records
    the input's fingerprint, which needs the files. Refused before any Spark job runs."""
    from mlpipe_cli.engines import unsupported
    from mlpipe_cli.engines.spark.frames import is_remote

    for name in names:
        path = data_path if data_path is not None else config.source(name).path
        if is_remote(path):
            raise unsupported(f"--reference/--save-profile of a remote input ({path})")


def _split_path(path: Path | None, source: str, count: int, parts: bool = False) -> Path | None:
    """One source: PATH is the file. Several: PATH is a directory of <source>.parquet.

    ``parts`` (the Spark engine): a PATH without the .parquet suffix is a directory of part
    files for one source, or holds one such directory per source.
    """
    if path is None:
        return None
    if count == 1 and path.suffix == ".parquet":
        return path
    if parts and path.suffix != ".parquet":
        return path if count == 1 else path / source
    if path.suffix == ".parquet":
        raise UsageError(
            f"{path} names one file but {count} sources are validated: "
            "pass a directory, or one --source"
        )
    return path / f"{source}.parquet"


def publish_report(
    store: ArtifactStore,
    config: PipelineConfig,
    report: ValidationReport,
    data_path: Path | str | None,
) -> str:
    """Publish report.json (and report.xml) as a ``validation`` artifact; return the version."""
    from mlpipe_cli.artifacts.store import canonical_json
    from mlpipe_cli.config.loader import config_section_hash
    from mlpipe_cli.io import fingerprint

    document = report.to_dict()
    junit = report.to_junit()

    def write(staging: Path) -> None:
        (staging / "report.json").write_bytes(canonical_json(document) + b"\n")
        (staging / "report.xml").write_bytes(junit)

    inputs: dict[str, dict[str, Any] | None] = {}
    for source in report.sources:
        try:
            inputs[source.source] = fingerprint([source.path])
        except MlpipeError:
            inputs[source.source] = None
    names = [s.source for s in report.sources]
    result = store.publish(
        "validation",
        write,
        config_hash=config_section_hash({n: config.sources[n] for n in names}),
        inputs=inputs,
        params={"sources": names, "status": report.status},
    )
    return result.version.version
