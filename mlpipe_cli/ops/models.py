"""`mlpipe model register` / `mlpipe model list`: models bound to the transform they were
trained on (the store and checks live in ``serving.model``; this is the command's one call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_cli.ops.project import Project


@dataclass(frozen=True)
class RegisterModelResult:
    model_version: str
    created: bool  # False: the same file was already registered for this transform
    transform_version: str | None
    format: str
    trusted_types: list[str]
    model_sha256: str
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "created": self.created,
            "transform_version": self.transform_version,
            "format": self.format,
            "trusted_types": list(self.trusted_types),
            "model_sha256": self.model_sha256,
            "path": str(self.path),
        }


@dataclass(frozen=True)
class ModelInfo:
    version: str
    latest: bool
    transform_version: str | None
    source_file: str | None
    created_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "latest": self.latest,
            "transform_version": self.transform_version,
            "source_file": self.source_file,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ModelListResult:
    models: list[ModelInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models]}


def register_model(
    project: Project,
    model_file: Path,
    transform: str = "latest",
    *,
    trust: Sequence[str] = (),
    trust_pickle: bool = False,
) -> RegisterModelResult:
    """Check ``model_file`` and copy it into the artifact store bound to ``transform``.

    UsageError (exit 2): missing/unreadable path, an untrusted skops type, a pickle without
    ``trust_pickle``; ArtifactError (exit 3): not a usable model, or the transform version
    does not exist or fails verification."""
    from mlpipe_cli.serving.model import register_model as register

    version, created = register(
        project.store, model_file, transform, trust=trust, trust_pickle=trust_pickle
    )
    params = version.manifest.get("params") or {}
    model_name = next(name for name in version.manifest["files"] if name.startswith("model."))
    return RegisterModelResult(
        model_version=version.version,
        created=created,
        transform_version=params.get("transform_version"),
        format=params.get("format", "pickle"),
        trusted_types=list(params.get("trusted_types") or []),
        model_sha256=version.manifest["files"][model_name]["sha256"],
        path=version.path,
    )


def list_models(project: Project) -> ModelListResult:
    """Every registered model (oldest first) and the transform version it is bound to."""
    store = project.store
    latest = store.latest("model")
    models = []
    for version in store.versions("model"):
        manifest = store.get("model", version, verify=False).manifest
        models.append(
            ModelInfo(
                version=version,
                latest=version == latest,
                transform_version=(manifest.get("params") or {}).get("transform_version"),
                source_file=manifest.get("source_file"),
                created_at=manifest.get("created_at"),
            )
        )
    return ModelListResult(models)
