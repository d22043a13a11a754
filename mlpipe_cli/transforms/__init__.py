"""Fitted preprocessing: fit once, store the state as a verified artifact, apply it twice.

Public API (docs/architecture.md §3)::

    load_transform(store, ref="latest") -> FittedTransform
    FittedTransform.version / input_columns / input_schema / output_columns
    FittedTransform.check_input_schema(schema)        # ArtifactError (exit 3)
    FittedTransform.transform_batch(lazy_frame)       # Polars, lazy, streaming-friendly
    FittedTransform.transform_one(record)             # pure Python, one record -> list
    transform_frame(fitted, lazy) -> TransformRun     # output + null/NaN/inf counts (lazy)
    TransformRun.report() / report_from(counts) -> TransformReport; report.check()
    apply_with_report(fitted, frame) -> (DataFrame, TransformReport)   # checked, in memory

Fitting: ``fit_frame(config.transforms, frame)`` and ``publish(store, config.transforms, path)``.
"""

from typing import TYPE_CHECKING, Any

from mlpipe_cli.transforms.fit import KIND, FitOutcome, fit_frame, load_transform, publish
from mlpipe_cli.transforms.fitted import FittedTransform

if TYPE_CHECKING:
    from mlpipe_cli.transforms.report import (
        TransformReport,
        TransformRun,
        apply_with_report,
        transform_frame,
    )

# transforms.report is imported on first use: `fit` and `psi-report` load transforms for
# load_transform alone and never report on a transform run (#19).
_FROM_REPORT = frozenset(
    {"TransformReport", "TransformRun", "apply_with_report", "transform_frame"}
)


def __getattr__(name: str) -> Any:
    if name in _FROM_REPORT:
        from mlpipe_cli.transforms import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KIND",
    "FitOutcome",
    "FittedTransform",
    "TransformReport",
    "TransformRun",
    "apply_with_report",
    "fit_frame",
    "load_transform",
    "publish",
    "transform_frame",
]
