"""Registered models: a joblib file bound to the transform version it was trained with.

Security: a joblib (pickle) file runs arbitrary code when it is loaded. ``mlpipe model
register`` loads the file once, to check it is a usable model before publishing it:
registering is the user's explicit act of trust in their own file. After that, mlpipe only
ever unpickles a model file that was registered into the artifact store and whose sha256
still matches the manifest; the hash is checked BEFORE ``joblib.load`` is called. Register
only model files you produced yourself or trust like code.

Artifact kind ``model``; each version holds::

    model.joblib     the model, byte-for-byte as registered
    binding.json     {"transform_version", "transform_content_hash", "output_columns",
                      "model_sha256", "format_version"}
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import ArtifactError, ArtifactNotFound, InputError

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore, ArtifactVersion

MODEL_KIND = "model"
MODEL_FILE = "model.joblib"
BINDING_FILE = "binding.json"
BINDING_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelBinding:
    """What a registered model is bound to."""

    model_version: str
    transform_version: str
    transform_content_hash: str
    output_columns: list[str]
    model_sha256: str


@dataclass
class RegisteredModel:
    """A hash-verified, loaded model and how to score with it."""

    binding: ModelBinding
    model: Any
    method: str  # predict_proba | decision_function | predict

    def score_matrix(self, matrix: Any) -> list[float]:
        """One float per row: P(class 1) for classifiers, else the model's output."""
        fn = getattr(self.model, self.method)
        out = fn(matrix)
        if self.method == "predict_proba":
            return [float(v) for v in out[:, -1]]
        return [float(v) for v in out.reshape(len(out), -1)[:, 0]]


def register_model(
    store: ArtifactStore, model_path: Path, transform_ref: str = "latest"
) -> tuple[ArtifactVersion, bool]:
    """Check ``model_path`` is a usable model, then copy it into the artifact store bound to
    a transform version.

    Registration is the user's explicit act of trust in their own file: the file is loaded
    here (``joblib.load``) to check it has a predict_proba, decision_function or predict
    method and, when it records ``n_features_in_``, that it takes as many features as the
    transform version produces. Nothing is published unless every check passes. The copy is
    byte for byte; ``mlpipe serve`` verifies its sha256 before ever loading it.

    Returns the model artifact version and whether it was newly created (identical
    re-registration is a no-op). InputError (exit 2) for a path that is missing, a
    directory, not a regular file or unreadable; ArtifactError (exit 3) for a file that is
    empty or is not a usable model.
    """
    from mlpipe_cli.artifacts import sha256_file

    model_path = Path(model_path)
    model_sha = _check_model_file(model_path)
    from mlpipe_cli.transforms import load_transform

    fitted = load_transform(store, transform_ref)  # sha256 + golden example (exit 3)
    transform = store.get("transform", fitted.version, verify=False)
    output_columns = list(fitted.output_columns)
    model = _load_model_file(model_path, f"model file {model_path}")
    _check_model(model, f"model file {model_path}", transform.version, output_columns)
    binding = {
        "format_version": BINDING_FORMAT_VERSION,
        "transform_version": transform.version,
        "transform_content_hash": transform.content_hash,
        "output_columns": output_columns,
        "model_sha256": model_sha,
    }

    def write(staging: Path) -> None:
        shutil.copyfile(model_path, staging / MODEL_FILE)
        if sha256_file(staging / MODEL_FILE) != model_sha:
            raise InputError(f"model file {model_path} changed while it was being registered")
        (staging / BINDING_FILE).write_text(json.dumps(binding, indent=2, sort_keys=True) + "\n")

    result = store.publish(
        MODEL_KIND,
        write,
        inputs={"model_sha256": model_sha},
        params={"transform_version": transform.version},
        extra={"source_file": model_path.name},
    )
    return result.version, result.created


def _check_model_file(model_path: Path) -> str:
    """The sha256 of a regular, non-empty, readable file; else InputError/ArtifactError."""
    import stat

    from mlpipe_cli.artifacts import sha256_file

    try:
        st = model_path.stat()
    except FileNotFoundError:
        raise InputError(f"model file {model_path} not found") from None
    except OSError as exc:
        raise InputError(f"model file {model_path} cannot be read: {describe_exc(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(
            f"model path {model_path} is a directory, not a model file",
            hint="pass the joblib file itself, e.g. model.joblib",
        )
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"model path {model_path} is not a regular file")
    if st.st_size == 0:
        raise ArtifactError(f"model file {model_path} is empty (0 bytes): not a model")
    try:
        return sha256_file(model_path)
    except OSError as exc:
        raise InputError(f"model file {model_path} cannot be read: {describe_exc(exc)}") from None


def describe_exc(exc: BaseException) -> str:
    """``Type: message`` on one line, never empty after the colon (repr when str() is)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text or repr(exc)}"


def _load_model_file(path: Path, label: str) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # a corrupt, truncated, non-joblib or incompatible pickle
        raise ArtifactError(f"{label} cannot be loaded: {describe_exc(exc)}") from None


def _check_model(
    model: Any, label: str, transform_version: str, output_columns: list[str] | None
) -> str:
    """The scoring method to use; ArtifactError when the model cannot score these features."""
    method = next(
        (m for m in ("predict_proba", "decision_function", "predict")
         if callable(getattr(model, m, None))),
        None,
    )  # fmt: skip
    if method is None:
        raise ArtifactError(
            f"{label} ({type(model).__name__}) has no predict_proba, "
            "decision_function or predict method"
        )
    expected = getattr(model, "n_features_in_", None)
    if output_columns is not None and expected is not None and expected != len(output_columns):
        raise ArtifactError(
            f"{label} expects {expected} features but transform "
            f"{transform_version} produces {len(output_columns)}"
        )
    return method


def read_binding(artifact: ArtifactVersion) -> ModelBinding:
    try:
        doc = json.loads(artifact.file(BINDING_FILE).read_text())
        return ModelBinding(
            model_version=artifact.version,
            transform_version=doc["transform_version"],
            transform_content_hash=doc["transform_content_hash"],
            output_columns=list(doc.get("output_columns") or []),
            model_sha256=doc["model_sha256"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"model artifact {artifact.version}: unreadable {BINDING_FILE}: {exc}"
        ) from None


def resolve_model(store: ArtifactStore, ref: str | None) -> str | None:
    """The model version to serve: None when ``ref`` is 'none' or no model is registered."""
    if ref is None or ref.lower() == "none":
        return None
    if ref == "latest" and not store.versions(MODEL_KIND):
        return None
    try:
        return store.resolve(MODEL_KIND, ref)
    except ArtifactNotFound:
        if ref == "latest":
            return None
        raise


def load_model(
    store: ArtifactStore,
    ref: str,
    *,
    transform_version: str,
    transform_content_hash: str | None = None,
    output_columns: list[str] | None = None,
) -> RegisteredModel:
    """Verify the model's sha256 and its binding, THEN unpickle it (ArtifactError = exit 3)."""
    artifact = store.get(MODEL_KIND, ref, verify=True)  # sha256 of every file, before loading
    binding = read_binding(artifact)
    model_file = artifact.file(MODEL_FILE)
    if artifact.manifest["files"][MODEL_FILE]["sha256"] != binding.model_sha256:
        raise ArtifactError(
            f"model artifact {artifact.version}: {MODEL_FILE} hash differs from its binding"
        )
    if binding.transform_version != transform_version or (
        transform_content_hash is not None
        and binding.transform_content_hash != transform_content_hash
    ):
        raise ArtifactError(
            f"model {artifact.version} was registered for transform "
            f"{binding.transform_version}, but this server uses transform {transform_version}",
            hint="serve with --artifact " + binding.transform_version + ", pass --model none, or "
            "register a model trained on this transform version",
        )
    if (
        output_columns is not None
        and binding.output_columns
        and (binding.output_columns != list(output_columns))
    ):
        raise ArtifactError(
            f"model {artifact.version}: its feature columns differ from transform "
            f"{transform_version}'s outputs"
        )
    model = _load_model_file(model_file, f"model {artifact.version}")
    method = _check_model(model, f"model {artifact.version}", transform_version, output_columns)
    return RegisteredModel(binding=binding, model=model, method=method)
