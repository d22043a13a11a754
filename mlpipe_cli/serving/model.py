"""Registered models: a skops (or, explicitly trusted, joblib) file bound to a transform version.

Security: a joblib/pickle file runs arbitrary code when it is loaded, so mlpipe never loads
one nobody vouched for:

- skops (``.skops``, the recommended format) lists the types a file would create before
  anything is loaded. ``mlpipe model register`` reads that list first and refuses any type
  skops does not trust by default unless the user names it with ``--trust TYPE``; the types
  trusted at registration are recorded in ``binding.json`` and ``mlpipe serve`` loads the file
  with exactly that list (and checks the list again on the hash-verified file).
- joblib/pickle files are refused unless ``--trust-pickle`` is given: the user's explicit
  statement that they trust the file like code. The choice is recorded in ``binding.json``.

After registration, a model file is only loaded from the artifact store once its sha256
matches the manifest (and, with ``MLPIPE_SIGNING_KEY``, the manifest's signature matches);
both are checked BEFORE the file is parsed.

Artifact kind ``model``; each version holds::

    model.skops | model.joblib   the model, byte-for-byte as registered
    binding.json     {"transform_version", "transform_content_hash", "output_columns",
                      "model_sha256", "format" ("skops" | "pickle"), "trusted_types",
                      "format_version"}
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg, arg_name, spelled
from mlpipe_cli.documents import ModelBindingDocument, check
from mlpipe_cli.errors import ArtifactError, ArtifactNotFound, InputError, UsageError
from mlpipe_cli.io import register_input

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore, ArtifactVersion

MODEL_KIND = "model"
MODEL_FILE = "model.joblib"  # pickle/joblib models (and every model of binding format 1)
SKOPS_MODEL_FILE = "model.skops"
BINDING_FILE = "binding.json"
SKOPS = "skops"
PICKLE = "pickle"


@dataclass(frozen=True)
class ModelBinding:
    """What a registered model is bound to."""

    model_version: str
    transform_version: str
    transform_content_hash: str
    output_columns: list[str]
    model_sha256: str
    format: str = PICKLE
    trusted_types: list[str] = field(default_factory=list)

    @property
    def model_file(self) -> str:
        return SKOPS_MODEL_FILE if self.format == SKOPS else MODEL_FILE


@dataclass
class RegisteredModel:
    """A hash-verified, loaded model and how to score with it."""

    binding: ModelBinding
    model: Any
    method: str  # predict_proba | decision_function | predict
    # The same arithmetic without scikit-learn's per-call input validation (linear_scorer),
    # or None; set by load_model only after it reproduced the model's own scores bit for bit.
    fast: Any = None

    def score_matrix(self, matrix: Any) -> list[float]:
        """One float per row: P(class 1) for classifiers, else the model's output."""
        fast = self.fast
        if fast is not None:
            scores = fast(matrix)
            if scores is not None:
                return scores
        return self.model_scores(matrix)

    def model_scores(self, matrix: Any) -> list[float]:
        """``score_matrix`` through the model's own method (the oracle of ``fast``)."""
        fn = getattr(self.model, self.method)
        out = fn(matrix)
        if self.method == "predict_proba":
            return [float(v) for v in out[:, -1]]
        return [float(v) for v in out.reshape(len(out), -1)[:, 0]]


def linear_scorer(model: Any, method: str) -> Any:
    """``matrix -> scores`` doing exactly what scikit-learn's binary linear models do after
    validating their input, or None for any other model.

    scikit-learn spends ~250 µs per call validating a 1-row input (check_array, dataframe
    detection, tags) around ~3 µs of arithmetic; a served row has been produced by our own
    transform, so its shape and dtype are known. The operations are scikit-learn's own
    (``X @ coef_.T + intercept_``, then ``scipy.special.expit`` for predict_proba), so the
    scores are the same floats; ``load_model`` still compares them with the model's method
    before using this. A matrix holding NaN, inf or a wrong width returns None: the model's
    own method then raises its usual error.
    """
    try:
        import numpy as np
        from sklearn.linear_model import (
            LinearRegression,
            LogisticRegression,
            Ridge,
            RidgeClassifier,
            SGDClassifier,
        )
    except ImportError:
        return None
    kind = type(model)
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype != np.float64:
        return None
    if method == "predict_proba" and kind is LogisticRegression:
        if len(model.classes_) != 2:
            return None
        from scipy.special import expit
    elif method == "decision_function" and kind in (LogisticRegression, RidgeClassifier,
                                                    SGDClassifier):  # fmt: skip
        if len(model.classes_) != 2:
            return None
        expit = None
    elif method == "predict" and kind in (LinearRegression, Ridge):
        if coef.ndim != 1:
            return None
        expit = None
    else:
        return None
    coef_t = coef.T if coef.ndim == 2 else coef
    width = coef_t.shape[0]
    isfinite = np.isfinite

    def score(matrix: Any) -> list[float] | None:
        if matrix.ndim != 2 or matrix.shape[1] != width or not isfinite(matrix).all():
            return None
        out = matrix @ coef_t + intercept
        if out.ndim > 1:
            out = out.reshape(len(out), -1)[:, 0] if out.shape[1] == 1 else None
            if out is None:
                return None
        if expit is not None:
            out = expit(out)
        return out.tolist()

    return score


def verified_fast_scorer(model: RegisteredModel, width: int) -> Any:
    """``linear_scorer`` if it gives the model's own scores on probe rows (every float
    equal), else None. Probe rows: zeros, ones, and seeded random rows of several scales."""
    scorer = linear_scorer(model.model, model.method)
    if scorer is None:
        return None
    import numpy as np

    rng = np.random.default_rng(20260701)
    probes = [np.zeros((1, width)), np.ones((1, width))]
    probes += [rng.normal(0, scale, (rows, width)) for scale in (1.0, 50.0) for rows in (1, 7)]
    try:
        for probe in probes:
            if scorer(probe) != model.model_scores(probe):
                return None
    except Exception:
        return None
    return scorer


def register_model(
    store: ArtifactStore,
    model_path: Path,
    transform_ref: str = "latest",
    *,
    trust: Sequence[str] = (),
    trust_pickle: bool = False,
) -> tuple[ArtifactVersion, bool]:
    """Check ``model_path`` is a usable model, then copy it into the artifact store bound to
    a transform version.

    A skops file's untrusted types are listed BEFORE it is loaded; any not named in ``trust``
    is refused (UsageError, exit 2) and nothing is loaded. A joblib/pickle file is refused
    unless ``trust_pickle`` (loading it runs whatever code it holds). Then the model is loaded
    to check it has a predict_proba, decision_function or predict method and, when it records
    ``n_features_in_``, that it takes as many features as the transform version produces.
    Nothing is published unless every check passes. The copy is byte for byte; ``mlpipe
    serve`` verifies its sha256 before ever loading it.

    Returns the model artifact version and whether it was newly created (identical
    re-registration is a no-op). InputError (exit 2) for a path that is missing, a
    directory, not a regular file, unreadable, or no model file at all (neither a skops
    archive nor a pickle); UsageError (exit 2) for a type or a pickle
    that was not trusted; ArtifactError (exit 3) for a file that is empty or is not a usable
    model.
    """
    from mlpipe_cli.artifacts import sha256_file

    model_path = Path(model_path)
    register_input(model_path)
    model_sha = _check_model_file(model_path)
    fmt = model_format(model_path)
    label = f"model file {model_path}"
    trusted_types: list[str] = []
    if fmt == SKOPS:
        trusted_types = _check_skops_types(model_path, trust, label)
    else:
        head = _file_start(model_path)
        if head.startswith(b"PK"):  # a zip that zipfile cannot read: a damaged skops file
            raise ArtifactError(
                f"{label} cannot be loaded: a damaged or truncated zip archive "
                "(skops files are zip archives)"
            )
        if not head.startswith(_PICKLE_STARTS):
            raise InputError(
                f"{label} is neither a skops archive nor a joblib/pickle file",
                hint="save the model with skops.io.dump(model, 'model.skops')",
            )
        if trust:
            raise UsageError(
                f"{arg_name('trust')} names skops types, but {model_path} is not a skops file",
                hint=f"save the model with skops.io.dump, or pass {arg('trust_pickle')} for a "
                "joblib/pickle file you trust like code",
            )
        if not trust_pickle:
            raise UsageError(
                f"{label} is a joblib/pickle file: loading it runs any code it contains",
                hint=f"save it with skops.io.dump (recommended), or pass {arg('trust_pickle')} if you "
                "trust the file like code",
            )
    from mlpipe_cli.transforms import load_transform

    fitted = load_transform(store, transform_ref)  # sha256 + golden example (exit 3)
    transform = store.get("transform", fitted.version, verify=False)
    output_columns = list(fitted.output_columns)
    model = _load_model_file(model_path, label, fmt, trusted_types)
    _check_model(model, label, transform.version, output_columns)
    binding = {
        "format_version": ModelBindingDocument.FORMAT_VERSION,
        "transform_version": transform.version,
        "transform_content_hash": transform.content_hash,
        "output_columns": output_columns,
        "model_sha256": model_sha,
        "format": fmt,
        "trusted_types": trusted_types,
    }
    stored_name = SKOPS_MODEL_FILE if fmt == SKOPS else MODEL_FILE

    def write(staging: Path) -> None:
        shutil.copyfile(model_path, staging / stored_name)
        if sha256_file(staging / stored_name) != model_sha:
            raise InputError(f"model file {model_path} changed while it was being registered")
        (staging / BINDING_FILE).write_text(json.dumps(binding, indent=2, sort_keys=True) + "\n")

    result = store.publish(
        MODEL_KIND,
        write,
        inputs={"model_sha256": model_sha},
        params={"transform_version": transform.version, "format": fmt,
                "trusted_types": trusted_types},
        extra={"source_file": model_path.name},
    )  # fmt: skip
    return result.version, result.created


def model_format(path: Path) -> str:
    """``skops`` for a skops archive (a zip holding schema.json), else ``pickle``.

    Decided by content, not by the file name: a pickle renamed to .skops is still a pickle.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "schema.json" in archive.namelist():
                    return SKOPS
    except (OSError, zipfile.BadZipFile):
        pass
    return PICKLE


# How a pickle (protocol 2+) or a joblib file starts: joblib writes a plain pickle, or one
# compressed with zlib, gzip, bz2, xz/lzma or lz4.
_PICKLE_STARTS = (
    b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05",
    b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"\x04\x22\x4d\x18",
)  # fmt: skip


def _file_start(path: Path) -> bytes:
    """The first bytes of a file, to tell a pickle/joblib file (``_PICKLE_STARTS``; protocol
    0/1 pickles, ASCII, are not recognised: scikit-learn has not written them for a decade)
    from a text, Parquet or zip file given by mistake."""
    try:
        with path.open("rb") as handle:
            return handle.read(8)
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {describe_exc(exc)}") from None


def _check_skops_types(path: Path, trust: Sequence[str], label: str) -> list[str]:
    """The untrusted types of a skops file, all of which must be in ``trust`` (nothing is
    loaded here: skops reads the file's schema only)."""
    import skops.io as sio

    try:
        untrusted = sorted(sio.get_untrusted_types(file=path))
    except Exception as exc:  # a corrupt archive or schema
        raise ArtifactError(f"{label} is not a readable skops file: {describe_exc(exc)}") from None
    refused = [t for t in untrusted if t not in set(trust)]
    if refused:
        flags = spelled(cli=" ".join(f"--trust {t}" for t in refused), python=f"trust={refused!r}")
        raise UsageError(
            f"{label} contains types skops does not trust: {', '.join(refused)}",
            hint=f"if you trust them, register with {flags}",
        )
    return untrusted


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
            hint="pass the model file itself, e.g. model.skops",
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


def _load_model_file(path: Path, label: str, fmt: str, trusted_types: Sequence[str]) -> Any:
    try:
        if fmt == SKOPS:
            import skops.io as sio

            return sio.load(path, trusted=list(trusted_types))
        import joblib

        return joblib.load(path)
    except Exception as exc:  # a corrupt, truncated, non-joblib or incompatible file
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
        check(ModelBindingDocument, doc, f"model artifact {artifact.version}: {BINDING_FILE}")
        return ModelBinding(
            model_version=artifact.version,
            transform_version=doc["transform_version"],
            transform_content_hash=doc["transform_content_hash"],
            output_columns=list(doc.get("output_columns") or []),
            model_sha256=doc["model_sha256"],
            format=doc.get("format", PICKLE),
            trusted_types=list(doc.get("trusted_types") or []),
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
    """Verify the model's sha256 and its binding, THEN load it (ArtifactError = exit 3).

    A skops model is loaded with the types trusted at registration, and only after checking
    the (hash-verified) file asks for no other.
    """
    artifact = store.get(MODEL_KIND, ref, verify=True)  # sha256 of every file, before loading
    binding = read_binding(artifact)
    if binding.format not in (SKOPS, PICKLE):
        raise ArtifactError(
            f"model artifact {artifact.version}: unknown model format {binding.format!r}",
            hint="register the model again with this mlpipe",
        )
    model_file = artifact.file(binding.model_file)
    if artifact.manifest["files"][binding.model_file]["sha256"] != binding.model_sha256:
        raise ArtifactError(
            f"model artifact {artifact.version}: {binding.model_file} hash differs from its binding"
        )
    if binding.format == SKOPS:
        import skops.io as sio

        try:
            wanted = set(sio.get_untrusted_types(file=model_file))
        except Exception as exc:
            raise ArtifactError(
                f"model {artifact.version} cannot be loaded: {describe_exc(exc)}"
            ) from None
        extra = sorted(wanted - set(binding.trusted_types))
        if extra:
            raise ArtifactError(
                f"model {artifact.version} asks for types not trusted at registration: "
                f"{', '.join(extra)}",
                hint="register the model again, naming the types with --trust",
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
    model = _load_model_file(
        model_file, f"model {artifact.version}", binding.format, binding.trusted_types
    )
    method = _check_model(model, f"model {artifact.version}", transform_version, output_columns)
    registered = RegisteredModel(binding=binding, model=model, method=method)
    width = len(output_columns) if output_columns else getattr(model, "n_features_in_", None)
    if width:
        registered.fast = verified_fast_scorer(registered, int(width))
    return registered
