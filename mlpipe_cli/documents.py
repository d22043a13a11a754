"""Typed documents: one pydantic model per JSON document mlpipe writes and reads back.

Every document carries ``format_version``. Writers build plain dicts (their bytes, and so
the version ids hashed from them, must not change when a model gains a default or an alias);
readers pass what they read through :func:`check`, which refuses a version this mlpipe does
not read with ONE line naming the file and both versions (``ArtifactError``, exit 3) and
checks the fields every readable version has. Fields are checked, not re-serialised: the
reader keeps using the dict it parsed.

    document                    written by                      model
    artifact manifest           every published artifact        ArtifactManifest
    drift profile               fit, validate --save-profile    DriftProfile
    source contract             schema snapshot                 SourceContract
    validation report           validate                        ValidationReportDocument
    model binding               model register                  ModelBindingDocument
    online store metadata       materialize (in the store)      StoreMetadataDocument
    materialization record      materialize (artifact)          MaterializationRecord
    serving log header          serve (Parquet key-value)       ServingLogHeader
    transform state             fit (state.json)                TransformState
    run-ledger record           every command run               LedgerRecord
    training-set manifest       training-set                    TrainingSetManifest
    serving pointer             promote (artifact)              ServingPointerDocument

What breaks a format (bump ``FORMAT_VERSION``) and what does not: docs/architecture.md,
"Document formats". Models allow extra fields, so adding an optional field is not a break.
Golden copies of every kind live in tests/golden/documents/ (scripts/make_golden_documents.py).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mlpipe_cli import __version__
from mlpipe_cli.errors import ArtifactError, MlpipeError

FORMAT_VERSION_FIELD = "format_version"


class Document(BaseModel):
    """Base of every document model: the fields all of them share."""

    # extra="allow": a field added in a later (compatible) release does not stop an older
    # reader, and a writer's dict is never reduced to what the model names. defer_build: a
    # command checks two or three of the dozen kinds; building every validator at import
    # was ~6 ms of each command's start-up (#19)
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    LABEL: ClassVar[str] = "document"
    FORMAT_VERSION: ClassVar[int] = 1  # what this mlpipe writes
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1,)  # what this mlpipe reads

    format_version: int


D = TypeVar("D", bound=Document)


# -- the document kinds -------------------------------------------------------------------


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)
    sha256: str
    size: int


class ArtifactManifest(Document):
    """``manifest.json`` of a published artifact version (artifacts/store.py).

    Its format_version is hashed into every content hash, so bumping it changes every new
    version id: bump only for a real break.
    """

    LABEL: ClassVar[str] = "artifact manifest"
    mlpipe_version: str
    pipeline: str
    kind: str
    version: str
    content_hash: str
    files: dict[str, FileEntry]
    config_hash: str | None = None
    inputs: Any = None
    params: Any = None
    created_at: str | None = None
    signature: str | None = None


class DriftProfile(Document):
    """A reference/current profile (drift/profile.py): per-column sketches, bins, counts."""

    LABEL: ClassVar[str] = "profile"
    # 2: numeric entries carry ``binning`` ("values" | "quantiles"); atoms get their own bin.
    # Version 1 profiles (decile edges only) are still read: their edges mean what they meant.
    FORMAT_VERSION: ClassVar[int] = 2
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)
    KIND: ClassVar[str] = "mlpipe.profile"

    kind: Literal["mlpipe.profile"]
    rows: int
    columns: dict[str, dict[str, Any]]


class SourceContract(Document):
    """``contract.json`` of a ``schema`` artifact (schema/contract.py)."""

    LABEL: ClassVar[str] = "contract"
    KIND: ClassVar[str] = "mlpipe.contract"

    kind: Literal["mlpipe.contract"]
    pipeline: str
    sources: dict[str, dict[str, Any]]


class ValidationReportDocument(Document):
    """``report.json`` of a ``validation`` artifact (validation/report.py)."""

    LABEL: ClassVar[str] = "validation report"

    mlpipe_version: str
    pipeline: str
    status: Literal["passed", "failed", "error"]
    exit_code: int
    counts: dict[str, int]
    sources: list[dict[str, Any]]


class ModelBindingDocument(Document):
    """``binding.json`` of a ``model`` artifact (serving/model.py)."""

    LABEL: ClassVar[str] = "model binding"
    # 2: "format" and "trusted_types"; 1 (pickle only) still loads
    FORMAT_VERSION: ClassVar[int] = 2
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)

    transform_version: str
    transform_content_hash: str
    output_columns: list[str] = []
    model_sha256: str
    format: Literal["skops", "pickle"] = "pickle"
    trusted_types: list[str] = []


class StoreMetadataDocument(Document):
    """The metadata of one materialized version, stored beside its rows (online/)."""

    LABEL: ClassVar[str] = "online store metadata"

    version: str
    as_of: str
    finished_at: str | None = None
    entity_count: int
    features: list[str]
    feature_hash: str
    entity_keys: list[str]
    key_types: list[str] | None = None
    defaults: dict[str, Any] | None = None
    ttls: dict[str, float] | None = None
    event_times: bool = False
    # "dropping": a run has started removing the version (Redis; online/redis_store.py)
    status: Literal["building", "complete", "dropping"] = "complete"


class MaterializationRecord(Document):
    """``materialization.json`` of a ``materialization`` artifact (ops/materialize.py)."""

    LABEL: ClassVar[str] = "materialization record"

    pipeline: str
    as_of: str
    entity_count: int
    entity_keys: list[str]
    features: list[str]
    feature_hash: str
    ttls: dict[str, float]
    store_type: str


class ServingLogHeader(Document):
    """Key-value metadata ``mlpipe`` of every serving-log segment (servinglog.py).

    Segments written before the header existed carry none and read as version 1.
    """

    LABEL: ClassVar[str] = "serving log"
    KIND: ClassVar[str] = "mlpipe.serving_log"
    PARQUET_KEY: ClassVar[str] = "mlpipe"

    kind: Literal["mlpipe.serving_log"]


class TransformState(Document):
    """``state.json`` of a ``transform`` artifact (transforms/fit.py); ``schema.json`` and
    ``golden.json`` of the same version carry the same format_version."""

    LABEL: ClassVar[str] = "transform state"
    # 2: numeric columns carry a value policy (null / NaN / ±inf: numeric.py); a format-1
    # state reads as the policy it had implicitly (LEGACY_POLICY) and keeps loading
    FORMAT_VERSION: ClassVar[int] = 2
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)

    artifact_format_version: int | None = None
    mlpipe_version: str | None = None
    target: str | None = None
    input_schema: dict[str, str]
    input_families: dict[str, list[str]]
    output_columns: list[str]
    columns: list[dict[str, Any]]


class LedgerRecord(Document):
    """One run of the run ledger, ``<artifact_dir>/<pipeline>/runs/*.json`` (ledger.py)."""

    LABEL: ClassVar[str] = "run record"

    run_id: str
    command: str
    pipeline: str | None = None
    pid: int | None = None
    host: str | None = None
    started_at: str
    ended_at: str | None = None
    triggered_at: str | None = None
    exit_code: int | None = None
    status: str | None = None


class TrainingSetManifest(Document):
    """``<out>.manifest.json`` and the ``training-set`` artifact (ops/training_set.py)."""

    LABEL: ClassVar[str] = "training-set manifest"

    mlpipe_version: str
    kind: Literal["training-set"]
    pipeline: str
    config_hash: str
    entity_keys: list[str]
    timestamp: str
    features: list[str]
    inputs: dict[str, Any]
    rows: dict[str, int]
    output: dict[str, Any]


class ServingPointerDocument(Document):
    """``serving.json`` of a ``serving`` artifact: the live transform/model (serving/pointer.py)."""

    LABEL: ClassVar[str] = "serving pointer"

    transform_version: str
    transform_content_hash: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    previous: str | None = None


DOCUMENT_MODELS: tuple[type[Document], ...] = (
    ArtifactManifest,
    DriftProfile,
    SourceContract,
    ValidationReportDocument,
    ModelBindingDocument,
    StoreMetadataDocument,
    MaterializationRecord,
    ServingLogHeader,
    TransformState,
    LedgerRecord,
    TrainingSetManifest,
    ServingPointerDocument,
)


# -- reading ------------------------------------------------------------------------------


def version_problem(model: type[Document], document: dict[str, Any]) -> str | None:
    """Why ``document``'s format_version is not one this mlpipe reads as ``model`` (or None)."""
    found = document.get(FORMAT_VERSION_FIELD)
    # bool is an int in Python (True == 1): a version is a plain integer, nothing else
    if type(found) is int and found in model.READABLE_VERSIONS:
        return None
    readable = ", ".join(map(str, model.READABLE_VERSIONS))
    if FORMAT_VERSION_FIELD not in document:
        return f"{model.LABEL} has no format_version (this mlpipe {__version__} reads {readable})"
    return (
        f"{model.LABEL} format_version {found!r} is not one this mlpipe reads "
        f"({readable}; mlpipe {__version__})"
    )


def check(
    model: type[D],
    document: Any,
    origin: str,
    *,
    invalid: type[MlpipeError] = ArtifactError,
) -> D:
    """Validate a parsed document as ``model``; ``origin`` names the file it came from.

    A format_version this mlpipe does not read -> ArtifactError (exit 3), whatever the rest
    holds. A document of a readable version whose fields do not fit -> ``invalid`` (the
    reader's choice: ArtifactError for a published artifact, InputError for a file the user
    passed).
    """
    if not isinstance(document, dict):
        raise invalid(f"{origin} is not an mlpipe {model.LABEL} (not a JSON object)")
    problem = version_problem(model, document)
    if problem is not None:
        found = document.get(FORMAT_VERSION_FIELD)
        newer = type(found) is int and found > max(model.READABLE_VERSIONS)
        raise ArtifactError(
            f"{origin}: {problem}",
            hint="it was written by a newer mlpipe: upgrade mlpipe to read it"
            if newer
            else "re-create it with this mlpipe",
        )
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise invalid(f"{origin} is not a valid {model.LABEL}: {first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """The first validation error on one line: ``field.path: message``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"
