"""Validation: the column contract of each source, checked in one fused pass.

Public API (used by `mlpipe validate`, training-set and fit)::

    validate_source(config, source_name, data_path=None, *, reference=None,
                    quarantine_path=None, out_path=None) -> SourceReport

The run over several sources (reference profiles, quarantine paths, publishing the report)
is `mlpipe validate`'s orchestration and lives in ``mlpipe_cli.ops.validate``.

``SourceReport.passed`` / ``.status`` ("passed" | "failed" | "error") say whether the data may
be used; callers that gate on it raise ``DataCheckFailed`` (exit 1) themselves, or call
``require_passed(report)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import DataCheckFailed, MlpipeError
from mlpipe_cli.validation.report import (
    ERROR,
    CheckResult,
    SourceReport,
    ValidationReport,
    summary_line,
)

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig

__all__ = [
    "CheckCrashed",
    "CheckResult",
    "SourceReport",
    "ValidationReport",
    "require_passed",
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
    from mlpipe_cli.progress import note as progress_note
    from mlpipe_cli.validation.engine import check_source

    source = config.source(source_name)
    report, lazy = check_source(
        source_name, source, data_path, quarantine_path=quarantine_path, out_path=out_path
    )
    if reference is not None:
        from mlpipe_cli.validation.distribution import distribution_checks

        report.reference = reference_version
        progress_note(f"{source_name}: distribution")
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
    if status == "error":
        # name the check that could not run, not the first one that merely failed
        crashed = [c for s in sources for c in s.checks if c.status == ERROR]
        first = crashed[0]
        more = f" (and {len(crashed) - 1} more)" if len(crashed) > 1 else ""
        raise CheckCrashed(
            f"a check could not run: {first.id}: {summary_line(first) or first.status}{more}",
            report=report,
        )
    first = next(c for s in sources for c in s.failing())
    text = f"{first.id}: {summary_line(first) or first.status}"
    failed = sum(len(s.failing()) for s in sources)
    raise DataCheckFailed(
        f"validation failed: {failed} check{'s' if failed != 1 else ''} failed; first: {text}",
        hint="see the report for every failure",
        report=report,
    )
