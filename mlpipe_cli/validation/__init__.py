"""Validation: the column contract of each source, checked in one fused pass.

Public API (used by `mlpipe validate`, training-set and fit)::

    validate_source(config, source_name, data_path=None, *, reference=None,
                    quarantine_path=None, out_path=None) -> SourceReport
    run_validation(config, store, *, sources=None, data_path=None, quarantine=None,
                   out=None, reference=None, save_profile=False, publish=True)
        -> ValidationReport

``SourceReport.passed`` / ``.status`` ("passed" | "failed" | "error") say whether the data may
be used; callers that gate on it raise ``DataCheckFailed`` (exit 1) themselves, or call
``require_passed(report)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import DataCheckFailed, MlpipeError, UsageError
from mlpipe_cli.validation.report import (
    CheckResult,
    SourceReport,
    ValidationReport,
    summary_line,
)

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig

__all__ = [
    "CheckCrashed",
    "CheckResult",
    "SourceReport",
    "ValidationReport",
    "require_passed",
    "run_validation",
    "validate_source",
]


class CheckCrashed(MlpipeError):
    """A check could not run (bad SQL, crash while evaluating): a tool error, exit 2."""

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.report = report


def validate_source(
    config: PipelineConfig,
    source_name: str,
    data_path: Path | str | None = None,
    *,
    reference: dict[str, Any] | None = None,
    reference_version: str | None = None,
    quarantine_path: Path | None = None,
    out_path: Path | None = None,
) -> SourceReport:
    """Check one source (its configured path, or ``data_path``) against its contract.

    ``reference`` is a profile dict (``mlpipe_cli.drift.profile.read_profile``); when given,
    the distribution checks of ``sources.<name>.distribution`` run against it. Raises
    InputError (exit 2) for unreadable input and ConfigError for an unusable contract; data
    problems are reported in the returned ``SourceReport``, never raised.
    """
    from mlpipe_cli.validation.engine import check_source

    source = config.source(source_name)
    report, lazy = check_source(
        source_name, source, data_path, quarantine_path=quarantine_path, out_path=out_path
    )
    if reference is not None:
        from mlpipe_cli.validation.distribution import distribution_checks

        report.reference = reference_version
        report.checks.extend(
            distribution_checks(source_name, source, lazy, reference, schema_ok=report.schema_ok)
        )
    return report


def require_passed(report: SourceReport | ValidationReport) -> None:
    """Raise DataCheckFailed (exit 1) or CheckCrashed (exit 2) unless the report passed."""
    status = report.status
    if status == "passed":
        return
    sources = report.sources if isinstance(report, ValidationReport) else [report]
    first = next(c for s in sources for c in s.failing())
    text = f"{first.id}: {summary_line(first) or first.status}"
    if status == "error":
        raise CheckCrashed(f"a check could not run: {text}", report=report)
    failed = sum(len(s.failing()) for s in sources)
    raise DataCheckFailed(
        f"validation failed: {failed} check{'s' if failed != 1 else ''} failed; first: {text}",
        hint="see the report for every failure",
        report=report,
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
) -> tuple[ValidationReport, str | None]:
    """Validate the named (default: all) sources; optionally publish the report artifact.

    Returns the report and the published ``validation`` version (None when not published).
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

    reports = []
    for name in names:
        q_path = _split_path(quarantine, name, len(names))
        o_path = _split_path(out, name, len(names))
        ref_profile, ref_version = (None, None)
        if reference is not None:
            from mlpipe_cli.validation.profiles import load_reference

            ref_profile, ref_version = load_reference(store, name, reference)  # type: ignore[arg-type]
        report = validate_source(
            config,
            name,
            data_path,
            reference=ref_profile,
            reference_version=ref_version,
            quarantine_path=q_path,
            out_path=o_path,
        )
        if save_profile and report.status == "passed":
            from mlpipe_cli.validation.profiles import save_profile as _save

            report.profile = _save(store, config, name, data_path)  # type: ignore[arg-type]
        reports.append(report)
    result = ValidationReport(config.pipeline, reports)
    version = None
    if publish and store is not None:
        version = publish_report(store, config, result, data_path)
    return result, version


def _split_path(path: Path | None, source: str, count: int) -> Path | None:
    """One source: PATH is the file. Several: PATH is a directory of <source>.parquet."""
    if path is None:
        return None
    if count == 1 and path.suffix == ".parquet":
        return path
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

    inputs = {}
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
