"""Shadow serving: a second transform (and model) computed on live traffic, never served.

`mlpipe serve --shadow VERSION [--shadow-model VERSION]` (or ``serving.shadow``) loads and
verifies a second transform version at start, exactly as the live one (sha256, golden
example, it can read the store's live features, the model is bound to it). For every served
entity, the feature-log row already carries the raw values the live transform read; the
log's writer thread (serving/featurelog.py) hands those rows to :class:`ShadowScorer`, which
runs the shadow transform and model on the same values and adds ``shadow.vec.*``,
``shadow.prediction`` and ``shadow.transform_version`` to the same row. Nothing of this runs
on the request path: the response is byte-identical with and without a shadow.

Failures never fail a request and never lose the row: a shadow transform that raises on a
row leaves that row's shadow columns null and is counted
(``mlpipe_serve_shadow_failures_total{stage="transform"}``, likewise ``model``). A shadow row
is lost only with its live row (queue full: counted as dropped, as for the live log).

Shadow inputs the live transform does not read are logged too (``raw.<col>``), so the row
holds every value either version saw; a shadow input that is the request time (the training
spine timestamp) is the row's ``served_at`` when the live transform does not carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import UsageError
from mlpipe_cli.servinglog import (
    SHADOW_PREDICTION,
    SHADOW_TRANSFORM_VERSION,
    shadow_vec_column,
)

if TYPE_CHECKING:
    from mlpipe_cli.serving.metrics import Metrics
    from mlpipe_cli.serving.model import RegisteredModel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Shadow:
    """A verified shadow transform (and model) and the request-time columns it reads."""

    transform: Any
    model: RegisteredModel | None
    request_time_columns: list[str]

    @property
    def transform_version(self) -> str:
        return str(self.transform.version)

    @property
    def model_version(self) -> str | None:
        return self.model.binding.model_version if self.model is not None else None


def load_shadow(
    artifacts: Any,
    metadata: Any,
    *,
    transform_ref: str,
    model_ref: str | None,
    cold_start: Mapping[str, Any],
    request_time_columns: Sequence[str],
) -> Shadow:
    """Load and verify the shadow like the live version (ArtifactError, exit 3, otherwise).

    ``model_ref``: a model version (bound to the shadow transform), or None / 'none'.
    """
    from mlpipe_cli.serving.model import load_model, resolve_model
    from mlpipe_cli.serving.service import check_compatibility
    from mlpipe_cli.transforms import load_transform

    transform = load_transform(artifacts, transform_ref)  # sha256 + golden example
    request_time = [c for c in request_time_columns if c in transform.input_columns]
    check_compatibility(transform, metadata, cold_start, request_time)
    model = None
    if model_ref is not None and model_ref.lower() != "none":
        version = resolve_model(artifacts, model_ref)
        if version is None:
            raise UsageError(
                f"--shadow-model {model_ref}: no model is registered",
                hint="register one for the shadow transform with `mlpipe model register "
                f"MODEL --artifact {transform.version}`",
            )
        content_hash = artifacts.get("transform", transform.version, verify=False).content_hash
        model = load_model(
            artifacts,
            version,
            transform_version=transform.version,
            transform_content_hash=content_hash,
            output_columns=list(transform.output_columns),
        )
    return Shadow(transform=transform, model=model, request_time_columns=request_time)


def log_columns(live: Any, shadow: Shadow | None) -> tuple[list[str], dict[str, str]]:
    """Raw columns the log carries (the live inputs, then shadow-only inputs) and their dtypes.

    A shadow-only request-time column is not logged as raw: it is the row's ``served_at``.
    """
    columns = list(live.input_columns)
    dtypes = dict(getattr(live, "input_schema", {}) or {})
    if shadow is not None:
        for column in shadow.transform.input_columns:
            if column not in columns and column not in shadow.request_time_columns:
                columns.append(column)
        for column, dtype in (getattr(shadow.transform, "input_schema", {}) or {}).items():
            dtypes.setdefault(column, dtype)
    return columns, dtypes


class ShadowScorer:
    """Computes the shadow columns of feature-log rows (called by the log's writer thread).

    Counters (exact; one writer: the log's writer thread): ``rows`` rows computed,
    ``transform_failures`` / ``model_failures`` rows whose shadow vector / prediction is null
    because the shadow raised. ``last_error`` says what the last failure was.
    """

    def __init__(self, shadow: Shadow, raw_columns: Sequence[str]) -> None:
        self.shadow = shadow
        self.transform_version = shadow.transform_version
        self.output_columns = list(shadow.transform.output_columns)
        self._transform_one = shadow.transform.transform_one
        self._model = shadow.model
        raw = list(raw_columns)
        # (name, position in the logged raw tuple, or -1: the row's served_at)
        self._inputs = [
            (c, raw.index(c) if c in raw else -1) for c in shadow.transform.input_columns
        ]
        missing = [c for c, i in self._inputs if i < 0 and c not in shadow.request_time_columns]
        if missing:  # log_columns() adds them: this is a wiring bug, not a user error
            raise ValueError(f"shadow inputs not in the logged raw columns: {missing}")
        self.rows = 0
        self.transform_failures = 0
        self.model_failures = 0
        self.last_error: str | None = None

    def column_names(self) -> list[str]:
        """The log columns this adds, in order: shadow.vec.*, shadow.prediction, version."""
        return [
            *(shadow_vec_column(c) for c in self.output_columns),
            SHADOW_PREDICTION,
            SHADOW_TRANSFORM_VERSION,
        ]

    def columns(self, raws: Sequence[Sequence[Any]], served_at_us: Sequence[int]) -> list[Any]:
        """One sequence per :meth:`column_names` column for these rows; never raises."""
        width = len(self.output_columns)
        vectors: list[tuple[Any, ...] | None] = []
        transform_one = self._transform_one
        inputs = self._inputs
        for raw, served in zip(raws, served_at_us, strict=True):
            try:
                record = {
                    name: raw[i] if i >= 0 else _EPOCH + timedelta(microseconds=served)
                    for name, i in inputs
                }
                vector = transform_one(record)
                if len(vector) != width:
                    raise ValueError(f"{len(vector)} values for {width} outputs")
                vectors.append(tuple(vector))
            except Exception as exc:
                self.transform_failures += 1
                self.last_error = f"shadow transform: {type(exc).__name__}: {exc}"
                vectors.append(None)
        predictions = self._score(vectors)
        self.rows += len(vectors)
        nulls = (None,) * width
        out: list[Any] = (
            list(zip(*(v or nulls for v in vectors), strict=True))
            if vectors
            else [() for _ in range(width)]
        )
        out.append(predictions)
        out.append([self.transform_version] * len(vectors))
        return out

    def _score(self, vectors: list[tuple[Any, ...] | None]) -> list[float | None]:
        model = self._model
        if model is None:
            return [None] * len(vectors)
        import numpy as np

        rows = [i for i, v in enumerate(vectors) if v is not None]
        scores: list[float | None] = [None] * len(vectors)
        # rows whose shadow vector failed have no prediction, and are not model failures
        if not rows:
            return scores
        try:
            matrix = np.asarray([vectors[i] for i in rows], dtype=np.float64)
            for i, score in zip(rows, model.score_matrix(matrix), strict=True):
                scores[i] = score
            return scores
        except Exception:
            pass
        for i in rows:  # one bad row must not null the others' predictions
            try:
                scores[i] = model.score_matrix(np.asarray([vectors[i]], dtype=np.float64))[0]
            except Exception as exc:
                self.model_failures += 1
                self.last_error = f"shadow model: {type(exc).__name__}: {exc}"
        return scores

    def reset(self) -> None:
        """Forget the counts (after the writer's start-up warm-up row)."""
        self.rows = self.transform_failures = self.model_failures = 0
        self.last_error = None


def register_metrics(metrics: Metrics, total: Callable[[str], int]) -> None:
    """Shadow counters on /metrics. ``total(attribute)`` sums a :class:`ShadowScorer` counter
    over this process's feature logs (a new log, with its scorer, starts when the live
    version switches)."""
    for name, attribute, help_text in (
        ("mlpipe_serve_shadow_rows_total", "rows",
         "Feature-log rows the shadow transform was computed for."),
        ("mlpipe_serve_shadow_transform_failures_total", "transform_failures",
         "Rows whose shadow vector is null because the shadow transform raised."),
        ("mlpipe_serve_shadow_model_failures_total", "model_failures",
         "Rows whose shadow prediction is null because the shadow model raised."),
    ):  # fmt: skip
        metrics.counters[name] = (help_text, partial(total, attribute))
