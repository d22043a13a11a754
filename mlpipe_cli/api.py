"""The public Python API: ``mlpipe_cli.Pipeline``, one method per command.

    import mlpipe_cli as mlpipe
    p = mlpipe.Pipeline.from_yaml("mlpipe.yaml")
    p.validate()                      # raises mlpipe.DataCheckFailed when a check fails
    p.training_set("data/train.parquet")
    p.fit(data="data/train.parquet")

Each method calls the same ``mlpipe_cli.ops`` function the CLI calls and returns the same
result object the CLI renders (``result.to_dict()`` is the command's ``--json`` document).
Errors are the ``mlpipe_cli.errors`` tree; a method whose command can fail a data gate
(validate, psi_report, skew_report, shadow_report, check_freshness, schema_diff,
artifacts_verify) raises it when ``check=True`` (the default) — the exception's ``result``
attribute holds the result — and returns the result for inspection with ``check=False``.
See docs/python-api.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mlpipe_cli.errors import MlpipeError
from mlpipe_cli.ops.project import Project

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.ledger import Run
    from mlpipe_cli.ops.artifacts import (
        ListResult,
        ShowResult,
        VerifyArtifactsResult,
    )
    from mlpipe_cli.ops.export import ExportResult
    from mlpipe_cli.ops.fit import FitResult
    from mlpipe_cli.ops.materialize import FreshnessResult, MaterializeResult, RollbackResult
    from mlpipe_cli.ops.models import ModelListResult, RegisterModelResult
    from mlpipe_cli.ops.promote import PromoteResult
    from mlpipe_cli.ops.psi_report import DriftResult, SkewResult
    from mlpipe_cli.ops.push import PushResult
    from mlpipe_cli.ops.sample_data import SampleDataResult
    from mlpipe_cli.ops.schema import DiffResult, InferResult, SnapshotResult
    from mlpipe_cli.ops.schema import ExportResult as SchemaExportResult
    from mlpipe_cli.ops.stream import StreamResult
    from mlpipe_cli.ops.training_set import TrainingSetResult
    from mlpipe_cli.ops.transform import TransformResult
    from mlpipe_cli.ops.validate import ValidateResult

R = TypeVar("R")


def _checked(result: R, check: bool) -> R:
    """Raise the result's failed gate (with the result attached) when ``check`` is on."""
    if check:
        try:
            result.raise_for_status()  # type: ignore[attr-defined]
        except MlpipeError as exc:
            exc.result = result  # type: ignore[attr-defined]
            raise
    return result


class Pipeline:
    """A pipeline config and its artifact directory; one method per `mlpipe` command."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @classmethod
    def from_yaml(cls, path: str | Path, artifact_dir: str | Path | None = None) -> Pipeline:
        """Load ``path`` now (ConfigError on a bad config); artifacts go to ``artifact_dir``,
        else the config's ``artifact_dir``, else ``./artifacts``."""
        project = Project(Path(path), Path(artifact_dir) if artifact_dir is not None else None)
        project.config  # noqa: B018 - fail here, not at the first command
        return cls(project)

    def __repr__(self) -> str:
        return (
            f"Pipeline({self.config.pipeline!r}, config={str(self.project.config_path)!r}, "
            f"artifact_dir={str(self.artifact_dir)!r})"
        )

    @property
    def config(self) -> PipelineConfig:
        return self.project.config

    @property
    def artifact_dir(self) -> Path:
        return self.project.artifact_dir

    @property
    def store(self) -> ArtifactStore:
        return self.project.store

    # -- data -------------------------------------------------------------------------

    @staticmethod
    def sample_data(
        out: str | Path = "data/sample",
        *,
        rows: int = 100_000,
        seed: int = 42,
        faults: Sequence[str] = (),
    ) -> SampleDataResult:
        """`mlpipe sample-data`: the deterministic synthetic data set (needs no config)."""
        from mlpipe_cli.ops.sample_data import sample_data

        return sample_data(out=Path(out), rows=rows, seed=seed, faults=_strings(faults))

    def validate(
        self,
        *,
        sources: Sequence[str] | None = None,
        data: str | Path | None = None,
        quarantine: str | Path | None = None,
        out: str | Path | None = None,
        reference: str | None = None,
        save_profile: bool = False,
        junit: str | Path | None = None,
        publish: bool = True,
        check: bool = True,
    ) -> ValidateResult:
        """`mlpipe validate`; raises DataCheckFailed (or CheckCrashed) unless it passed."""
        from mlpipe_cli.ops.validate import validate

        result = validate(
            self.project,
            sources=_names(sources, "sources"),
            data=_path(data),
            quarantine=_path(quarantine),
            out=_path(out),
            reference=reference,
            save_profile=save_profile,
            junit=_path(junit),
            publish=publish,
        )
        return _checked(result, check)

    def training_set(
        self,
        out: str | Path,
        *,
        spine: str | Path | None = None,
        timestamp: str | None = None,
        features: Sequence[str] | None = None,
        publish: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> TrainingSetResult:
        """`mlpipe training-set`: every feature as of each spine row, written to ``out``."""
        from mlpipe_cli.ops.training_set import training_set

        return training_set(
            self.project,
            out=Path(out),
            spine=_path(spine),
            timestamp=timestamp,
            features=_names(features),
            publish=publish,
            progress=progress,
        )

    # -- transforms -------------------------------------------------------------------

    def fit(self, *, data: str | Path | None = None, out: str | Path | None = None) -> FitResult:
        """`mlpipe fit`: fit `transforms:` and publish a transform version."""
        from mlpipe_cli.ops.fit import fit

        return fit(self.project, data=_path(data), out=_path(out))

    def transform(
        self, data: str | Path, out: str | Path, *, artifact: str = "latest"
    ) -> TransformResult:
        """`mlpipe transform`: apply a published transform version to ``data``."""
        from mlpipe_cli.ops.transform import transform

        return transform(self.project, data=Path(data), out=Path(out), artifact=artifact)

    def export(
        self, out: str | Path, *, artifact: str = "latest", fmt: str = "sklearn"
    ) -> ExportResult:
        """`mlpipe export`: a transform version as a scikit-learn ColumnTransformer (joblib)."""
        from mlpipe_cli.ops.export import export

        return export(self.project, out=Path(out), artifact=artifact, fmt=fmt)

    # -- online store -----------------------------------------------------------------

    def materialize(
        self,
        *,
        as_of: str | datetime | None = None,
        features: Sequence[str] | None = None,
        resume: bool = False,
        chunk_size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        allow_older: bool = False,
    ) -> MaterializeResult:
        """`mlpipe materialize`: load every entity's values as of ``as_of`` (default now)."""
        from mlpipe_cli.ops.materialize import materialize

        return materialize(
            self.project,
            as_of=as_of,
            features=_names(features),
            resume=resume,
            chunk_size=chunk_size,
            on_progress=on_progress,
            allow_older=allow_older,
        )

    def check_freshness(self, max_age: str | timedelta, *, check: bool = True) -> FreshnessResult:
        """`mlpipe materialize --check-freshness`; raises DataCheckFailed when stale."""
        from mlpipe_cli.ops.materialize import check_freshness

        return _checked(check_freshness(self.project, max_age=max_age), check)

    def rollback(self) -> RollbackResult:
        """`mlpipe materialize --rollback`: the previous version becomes live again."""
        from mlpipe_cli.ops.materialize import rollback

        return rollback(self.project)

    # -- streaming --------------------------------------------------------------------

    def push(
        self, source: str, events: str | Path | None = None, *, check: bool = True
    ) -> PushResult:
        """`mlpipe push`: check and append events (None: JSON lines on stdin); raises
        DataCheckFailed when any event was dead-lettered."""
        from mlpipe_cli.ops.push import push

        return _checked(push(self.project, source=source, path=_path(events)), check)

    def stream(
        self,
        *,
        sources: Sequence[str] | None = None,
        consumer: str | None = None,
        once: bool = False,
        reset: bool = False,
        max_seconds: float | None = None,
    ) -> StreamResult:
        """`mlpipe stream`: bootstrap and consume until drained (``once``), a signal or
        ``max_seconds``."""
        from mlpipe_cli.ops.stream import stream

        return stream(
            self.project,
            sources=_names(sources, "sources"),
            consumer=consumer,
            once=once,
            reset=reset,
            max_seconds=max_seconds,
        )

    # -- monitoring -------------------------------------------------------------------

    def psi_report(
        self,
        *,
        current: str | Path | None = None,
        serving_log: str | Path | None = None,
        artifact: str | None = None,
        profile: str | Path | None = None,
        since: str | None = None,
        until: str | None = None,
        features: Sequence[str] | None = None,
        threshold: float | None = None,
        min_rows: int | None = None,
        html: str | Path | None = None,
        source: str | None = None,
        include_time_features: bool = False,
        check: bool = True,
    ) -> DriftResult:
        """`mlpipe psi-report`; raises DataCheckFailed when a feature drifted or errored.
        ``source``: compare a raw batch (``current``) with that source's saved validation
        profile; ``include_time_features``: compare request-time features of a serving log."""
        from mlpipe_cli.ops.psi_report import psi_report

        result = psi_report(
            self.project,
            artifact=artifact,
            profile=_path(profile),
            current=_path(current),
            serving_log=_path(serving_log),
            since=since,
            until=until,
            features=_names(features),
            threshold=threshold,
            min_rows=min_rows,
            html=_path(html),
            source=source,
            include_time_features=include_time_features,
        )
        return _checked(result, check)

    def skew_report(
        self,
        serving_log: str | Path,
        *,
        artifact: str | None = None,
        since: str | None = None,
        until: str | None = None,
        check: bool = True,
    ) -> SkewResult:
        """`mlpipe psi-report --skew`; raises DataCheckFailed on training-serving skew."""
        from mlpipe_cli.ops.psi_report import skew_report

        result = skew_report(
            self.project, serving_log=Path(serving_log), artifact=artifact, since=since, until=until
        )
        return _checked(result, check)

    def shadow_report(
        self,
        version_a: str,
        version_b: str,
        current: str | Path,
        *,
        features: Sequence[str] | None = None,
        threshold: float | None = None,
        min_rows: int | None = None,
        html: str | Path | None = None,
        check: bool = True,
    ) -> DriftResult:
        """`mlpipe psi-report --compare A B`: B's outputs against A's on ``current``."""
        from mlpipe_cli.ops.psi_report import shadow_report

        result = shadow_report(
            self.project,
            versions=(version_a, version_b),
            current=Path(current),
            features=_names(features),
            threshold=threshold,
            min_rows=min_rows,
            html=_path(html),
        )
        return _checked(result, check)

    # -- models and the serving pointer ----------------------------------------------

    def register_model(
        self,
        model_file: str | Path,
        transform: str = "latest",
        *,
        trust: Sequence[str] = (),
        trust_pickle: bool = False,
    ) -> RegisterModelResult:
        """`mlpipe model register`: the model file, checked and bound to ``transform``."""
        from mlpipe_cli.ops.models import register_model

        return register_model(
            self.project,
            Path(model_file),
            transform,
            trust=_strings(trust),
            trust_pickle=trust_pickle,
        )

    def models(self) -> ModelListResult:
        """`mlpipe model list`: every registered model and its transform version."""
        from mlpipe_cli.ops.models import list_models

        return list_models(self.project)

    def promote(self, transform: str, *, model: str | None = None) -> PromoteResult:
        """`mlpipe promote TRANSFORM`: verify, then publish the live serving pointer (every
        server started without --artifact switches to it). ``model``: a version, 'latest',
        'none', or None for the newest model registered for ``transform``."""
        from mlpipe_cli.ops.promote import promote

        return promote(self.project, transform=transform, model=model)

    def promote_rollback(self) -> PromoteResult:
        """`mlpipe promote --rollback`: the pointer live before the current one, verified
        again. UsageError (exit 2) when nothing was promoted before it."""
        from mlpipe_cli.ops.promote import promote

        return promote(self.project, rollback=True)

    def runs(
        self, *, command: str | None = None, since: str | timedelta | None = None
    ) -> list[Run]:
        """`mlpipe runs`: the recorded runs (oldest first), optionally of one command and
        started within ``since`` (e.g. "24h")."""
        from mlpipe_cli.ops.runs import list_runs

        return list_runs(self.project, command=command, since=since)

    # -- schema -----------------------------------------------------------------------

    @staticmethod
    def schema_infer(
        data: str | Path, source: str, *, max_allowed: int = 20, out: str | Path | None = None
    ) -> InferResult:
        """`mlpipe schema infer`: a proposed contract for ``data`` (needs no config)."""
        from mlpipe_cli.ops.schema import infer

        return infer(data=Path(data), source=source, max_allowed=max_allowed, out=_path(out))

    def schema_snapshot(self) -> SnapshotResult:
        """`mlpipe schema snapshot`: publish every source's contract as a `schema` artifact."""
        from mlpipe_cli.ops.schema import snapshot

        return snapshot(self.project)

    def schema_diff(
        self,
        old: str | None = None,
        new: str | None = None,
        *,
        data: str | Path | None = None,
        source: str | None = None,
        check: bool = True,
    ) -> DiffResult:
        """`mlpipe schema diff`; raises DataCheckFailed on a breaking change."""
        from mlpipe_cli.ops.schema import diff

        result = diff(self.project, old=old, new=new, data=_path(data), source=source)
        return _checked(result, check)

    def schema_export(
        self, *, fmt: str = "pandera", source: str | None = None, out: str | Path | None = None
    ) -> SchemaExportResult:
        """`mlpipe schema export`: pandera YAML or the JSON contract (``content`` or files)."""
        from mlpipe_cli.ops.schema import export

        return export(self.project, fmt=fmt, source=source, out=_path(out))

    # -- artifacts --------------------------------------------------------------------

    def artifacts_list(self, kind: str | None = None) -> ListResult:
        """`mlpipe artifacts list`."""
        from mlpipe_cli.ops.artifacts import list_artifacts

        return list_artifacts(self.project, kind=kind)

    def artifacts_show(self, version: str) -> ShowResult:
        """`mlpipe artifacts show`: a version's manifest."""
        from mlpipe_cli.ops.artifacts import show_artifact

        return show_artifact(self.project, version=version)

    def artifacts_verify(
        self, version: str | None = None, *, check: bool = True
    ) -> VerifyArtifactsResult:
        """`mlpipe artifacts verify`; raises ArtifactError when a file does not match."""
        from mlpipe_cli.ops.artifacts import verify_artifacts

        return _checked(verify_artifacts(self.project, version=version), check)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _names(values: Sequence[str] | None, what: str = "features") -> list[str] | None:
    """Names given as a list, one string, or "a,b" as on the command line (a lone string
    is one name, never its characters)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for item in values for n in item.split(",") if n.strip()]
    if not names:  # as on the command line: naming nothing is a mistake, not "all"
        from mlpipe_cli.errors import UsageError

        example = "['total_orders', 'plan']" if what == "features" else "['orders']"
        raise UsageError(
            f"{what} is empty", hint=f"give names like {example}, or None for every one"
        )
    return list(dict.fromkeys(names))


def _strings(values: Sequence[str]) -> tuple[str, ...]:
    """A sequence of strings where one string is one item (tuple("ab") would be two)."""
    return (values,) if isinstance(values, str) else tuple(values)


__all__ = ["Pipeline"]


def _as_a_run(command: str, method: Callable[..., R]) -> Callable[..., R]:
    """A Pipeline method as one run, as the CLI runs a command: inside one input scope (the
    same-path guard: no output may be one of the run's inputs) and recorded in the run ledger
    with the exit code the CLI would have returned."""
    import functools

    @functools.wraps(method)
    def run(self: Pipeline, *args: object, **kwargs: object) -> R:
        from datetime import UTC, datetime

        from mlpipe_cli import ledger
        from mlpipe_cli.errors import exit_code_for
        from mlpipe_cli.io import input_scope

        if ledger.current() is not None:  # a method called from another run: one record
            with input_scope():
                return method(self, *args, **kwargs)
        with input_scope(), ledger.recording(command, [command]) as recorder:
            if command != "artifacts verify":
                # verify first checks that a given artifact_dir exists (a typo must fail
                # it, not pass with nothing verified); its store attaches the ledger once
                # opened, as under the CLI
                recorder.attach(self.artifact_dir, self.config.pipeline)
            try:
                result = method(self, *args, **kwargs)
            except BaseException as exc:
                failed = getattr(exc, "result", None)
                if failed is not None and hasattr(failed, "to_dict"):
                    recorder.note_result(failed.to_dict())
                recorder.finish(int(exit_code_for(exc)), datetime.now(UTC))
                raise
            if hasattr(result, "to_dict"):
                recorder.note_result(result.to_dict())
            recorder.finish(0, datetime.now(UTC))
            return result

    return run


# Every command method is one run (the guard and the ledger); the read-only helpers and
# properties are not.
for _name, _command in {
    "validate": "validate", "training_set": "training-set", "fit": "fit",
    "transform": "transform", "export": "export", "materialize": "materialize",
    "check_freshness": "materialize", "rollback": "materialize", "push": "push",
    "register_model": "model register", "promote": "promote", "promote_rollback": "promote",
    "psi_report": "psi-report", "skew_report": "psi-report", "shadow_report": "psi-report",
    "schema_snapshot": "schema snapshot", "schema_diff": "schema diff",
    "schema_export": "schema export", "artifacts_verify": "artifacts verify",
}.items():  # fmt: skip
    setattr(Pipeline, _name, _as_a_run(_command, getattr(Pipeline, _name)))
