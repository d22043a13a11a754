"""Typed documents (mlpipe_cli/documents.py): golden copies keep loading, newer formats are refused.

tests/golden/documents/<kind>.v<N>.json were written once by scripts/make_golden_documents.py
from the sample pipeline. Every one must still read, through its model and through the real
reader where mlpipe has one; every model must have a golden of the version it writes now; and
each reader must refuse a format_version it does not read with one line (exit 3) naming the
file and both versions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mlpipe_cli import ARTIFACT_FORMAT_VERSION
from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.artifacts.store import ArtifactVersion
from mlpipe_cli.documents import (
    DOCUMENT_MODELS,
    ArtifactManifest,
    Document,
    DriftProfile,
    LedgerRecord,
    MaterializationRecord,
    ModelBindingDocument,
    ServingLogHeader,
    ServingPointerDocument,
    SourceContract,
    StoreMetadataDocument,
    TrainingSetManifest,
    TransformState,
    ValidationReportDocument,
    check,
)
from mlpipe_cli.errors import ArtifactError, ExitCode, InputError, exit_code_for

GOLDEN = Path(__file__).resolve().parent / "golden"
DOCUMENTS = GOLDEN / "documents"
GOLDEN_NAMES: dict[type[Document], str] = {
    ArtifactManifest: "artifact_manifest",
    DriftProfile: "drift_profile",
    SourceContract: "source_contract",
    ValidationReportDocument: "validation_report",
    ModelBindingDocument: "model_binding",
    StoreMetadataDocument: "store_metadata",
    MaterializationRecord: "materialization_record",
    ServingLogHeader: "serving_log_header",
    TransformState: "transform_state",
    LedgerRecord: "ledger_record",
    TrainingSetManifest: "training_set_manifest",
    ServingPointerDocument: "serving_pointer",
}
MODEL_OF = {stem: model for model, stem in GOLDEN_NAMES.items()}
# the JSON documents inside published artifact versions, by file name
ARTIFACT_DOCUMENTS: dict[str, type[Document]] = {
    "state.json": TransformState,
    "profile.json": DriftProfile,
    "contract.json": SourceContract,
    "report.json": ValidationReportDocument,
    "binding.json": ModelBindingDocument,
    "materialization.json": MaterializationRecord,
    "training-set.json": TrainingSetManifest,
    "serving.json": ServingPointerDocument,
}
GOLDEN_FILES = sorted(DOCUMENTS.glob("*.json"))


def golden(model: type[Document], version: int | None = None) -> Path:
    return DOCUMENTS / f"{GOLDEN_NAMES[model]}.v{version or model.FORMAT_VERSION}.json"


def golden_doc(model: type[Document]) -> dict[str, Any]:
    return json.loads(golden(model).read_bytes())


def model_of(path: Path) -> type[Document]:
    stem, _, version = path.stem.rpartition(".v")
    assert version.isdigit(), path.name
    return MODEL_OF[stem]


# -- the goldens ----------------------------------------------------------------------------


def test_every_document_kind_is_covered() -> None:
    assert set(GOLDEN_NAMES) == set(DOCUMENT_MODELS)


@pytest.mark.parametrize("model", DOCUMENT_MODELS, ids=lambda m: m.__name__)
def test_every_model_has_a_golden_of_the_version_it_writes(model: type[Document]) -> None:
    # bumping FORMAT_VERSION without adding a golden (scripts/make_golden_documents.py) fails
    assert golden(model).is_file(), f"run scripts/make_golden_documents.py for {model.__name__}"
    assert model.FORMAT_VERSION in model.READABLE_VERSIONS


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_golden_document_reads_as_its_model(path: Path) -> None:
    model = model_of(path)
    document = json.loads(path.read_bytes())
    assert f".v{document['format_version']}." in path.name  # the name says the version
    parsed = check(model, document, str(path))
    assert parsed.format_version == document["format_version"]
    # extra="allow": nothing a writer put in is lost by reading it through the model
    assert parsed.model_dump(exclude_unset=True).keys() == document.keys()


def test_golden_artifact_manifest_matches_the_artifact_format() -> None:
    assert golden_doc(ArtifactManifest)["format_version"] == ARTIFACT_FORMAT_VERSION == 1


def test_golden_documents_read_through_the_real_readers(tmp_path: Path) -> None:
    from mlpipe_cli.drift.profile import read_profile
    from mlpipe_cli.ledger import read_runs
    from mlpipe_cli.online.base import StoreMetadata
    from mlpipe_cli.schema.contract import check_document
    from mlpipe_cli.serving.model import BINDING_FILE, read_binding
    from mlpipe_cli.servinglog import check_segment_metadata

    profile = read_profile(golden(DriftProfile))
    assert profile["rows"] == 400

    contract = check_document(golden_doc(SourceContract), "golden contract")
    assert {"orders", "users", "labels"} <= set(contract["sources"])

    meta = StoreMetadata.from_json(golden(StoreMetadataDocument).read_bytes())
    assert (meta.entity_count, meta.entity_keys, meta.status) == (50, ["user_id"], "complete")

    version_dir = tmp_path / "0001-000000000000"
    version_dir.mkdir()
    shutil.copy(golden(ModelBindingDocument), version_dir / BINDING_FILE)
    artifact = ArtifactVersion("model", version_dir.name, version_dir,
                               {"files": {BINDING_FILE: {}}})  # fmt: skip
    binding = read_binding(artifact)
    assert binding.format == "skops"
    assert binding.output_columns == golden_doc(ModelBindingDocument)["output_columns"]

    runs = tmp_path / "artifacts" / "churn" / "runs"
    runs.mkdir(parents=True)
    shutil.copy(golden(LedgerRecord), runs / "20261205T132806-1-fit.json")
    (run,) = read_runs(tmp_path / "artifacts", "churn")
    assert (run.command, run.status) == ("fit", "ok")

    header = golden(ServingLogHeader).read_text().strip()
    check_segment_metadata({ServingLogHeader.PARQUET_KEY: header}, "golden segment")

    from mlpipe_cli.serving.pointer import POINTER_FILE, SERVING_KIND, read_pointer

    store = ArtifactStore(tmp_path / "store", "churn")
    pointer_bytes = golden(ServingPointerDocument).read_bytes()
    store.publish(SERVING_KIND, lambda d: (d / POINTER_FILE).write_bytes(pointer_bytes))
    pointer = read_pointer(store)
    assert pointer is not None
    assert pointer.transform_version == golden_doc(ServingPointerDocument)["transform_version"]


def test_golden_transform_state_builds_a_transform() -> None:
    """The state loads into a working FittedTransform (its embedding table is Parquet, not a
    document: a table of the recorded shape stands in for it)."""
    from mlpipe_cli.transforms.fitted import FittedTransform

    state = golden_doc(TransformState)
    tables = {c["state"]["file"]: _embedding_table(c["state"]) for c in state["columns"]
              if c["steps"][0]["type"] == "embedding"}  # fmt: skip
    transform = FittedTransform(state, tables, version="golden")
    assert transform.output_columns == state["output_columns"]


def _embedding_table(column_state: dict[str, Any]) -> pl.DataFrame:
    # the recorded shape; the values do not matter to loading
    rows, width = column_state["rows"], column_state["dim"]
    return pl.DataFrame(
        {"key": list(range(1, rows + 1)), "vector": [[0.0] * width] * rows},
        schema={"key": pl.Int64, "vector": pl.Array(pl.Float32, width)},
    )


def test_older_readable_versions_in_the_golden_artifacts_still_read() -> None:
    """tests/golden/artifacts holds a format-1 transform state and format-1 profiles."""
    seen = set()
    for path in sorted((GOLDEN / "artifacts").rglob("*.json")):
        model = ARTIFACT_DOCUMENTS.get(path.name) or (
            ArtifactManifest if path.name == "manifest.json" else None
        )
        if model is None:
            continue
        document = json.loads(path.read_bytes())
        check(model, document, str(path))
        seen.add((model.__name__, document["format_version"]))
    assert {("TransformState", 1), ("TransformState", 2), ("DriftProfile", 1),
            ("ArtifactManifest", 1)} <= seen  # fmt: skip


def test_artifact_document_names_are_the_writers_names() -> None:
    from mlpipe_cli.ops.materialize import ARTIFACT_FILE
    from mlpipe_cli.ops.profiles import PROFILE_FILE
    from mlpipe_cli.schema.contract import CONTRACT_FILE
    from mlpipe_cli.serving.model import BINDING_FILE
    from mlpipe_cli.serving.pointer import POINTER_FILE
    from mlpipe_cli.transforms.fit import PROFILE_FILE as TRANSFORM_PROFILE_FILE
    from mlpipe_cli.transforms.fit import STATE_FILE

    assert ARTIFACT_DOCUMENTS[STATE_FILE] is TransformState
    assert ARTIFACT_DOCUMENTS[PROFILE_FILE] is ARTIFACT_DOCUMENTS[TRANSFORM_PROFILE_FILE]
    assert ARTIFACT_DOCUMENTS[CONTRACT_FILE] is SourceContract
    assert ARTIFACT_DOCUMENTS[BINDING_FILE] is ModelBindingDocument
    assert ARTIFACT_DOCUMENTS[ARTIFACT_FILE] is MaterializationRecord
    assert ARTIFACT_DOCUMENTS[POINTER_FILE] is ServingPointerDocument
    # report.json and training-set.json are literals at their one writer each
    ops = Path(__file__).resolve().parents[1] / "mlpipe_cli" / "ops"
    assert '"report.json"' in (ops / "validate.py").read_text()
    assert '"training-set.json"' in (ops / "training_set.py").read_text()


# -- refusing what this mlpipe does not read ----------------------------------------------


@pytest.mark.parametrize("model", DOCUMENT_MODELS, ids=lambda m: m.__name__)
def test_a_newer_format_version_is_refused_in_one_line(model: type[Document]) -> None:
    newer = max(model.READABLE_VERSIONS) + 1
    document = {**golden_doc(model), "format_version": newer}
    with pytest.raises(ArtifactError) as info:
        check(model, document, "some/dir/file.json")
    message = str(info.value)
    assert "\n" not in message
    assert "some/dir/file.json" in message
    assert f"format_version {newer} " in message
    assert f"({', '.join(map(str, model.READABLE_VERSIONS))};" in message
    assert "upgrade mlpipe" in message
    assert exit_code_for(info.value) == ExitCode.ARTIFACT == 3


@pytest.mark.parametrize("bad", [0, True, "1", 1.0, None])
def test_a_version_that_is_not_a_readable_integer_is_refused(bad: object) -> None:
    # True == 1 and 1.0 == 1 in Python: neither is a format_version
    document = {**golden_doc(ValidationReportDocument), "format_version": bad}
    with pytest.raises(ArtifactError, match=f"format_version {bad!r} is not one"):
        check(ValidationReportDocument, document, "report.json")


def test_a_missing_version_is_refused() -> None:
    document = golden_doc(ModelBindingDocument)
    del document["format_version"]
    with pytest.raises(ArtifactError, match=r"binding.json: model binding has no format_version"):
        check(ModelBindingDocument, document, "binding.json")


def test_fields_that_do_not_fit_raise_the_readers_error() -> None:
    document = {**golden_doc(StoreMetadataDocument), "entity_count": "many"}
    with pytest.raises(
        ArtifactError, match=r"^meta is not a valid online store metadata: entity_count: "
    ):
        check(StoreMetadataDocument, document, "meta")
    with pytest.raises(InputError, match=r"not a JSON object"):
        check(DriftProfile, [1, 2], "p.json", invalid=InputError)


def test_store_metadata_of_a_newer_format_is_refused_on_read() -> None:
    from mlpipe_cli.online.base import StoreMetadata

    data = {**golden_doc(StoreMetadataDocument), "format_version": 2}
    with pytest.raises(
        ArtifactError,
        match=r"online store metadata of version 0001-\w+: "
        r"online store metadata format_version 2 is not one",
    ):
        StoreMetadata.from_json(json.dumps(data))


def test_artifact_manifest_of_a_newer_format_is_refused_naming_the_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "p")
    published = store.publish("thing", lambda d: (d / "a.txt").write_text("a"))
    manifest_path = published.version.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.chmod(0o644)
    manifest_path.write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(ArtifactError) as info:
        store.get("thing")
    assert str(manifest_path) in str(info.value)
    assert "format_version 2 is not one this mlpipe reads (1;" in str(info.value)
    (result,) = store.verify_all()
    assert not result.ok
    assert "format_version 2" in result.problems[0]


def test_ledger_record_of_a_newer_format_is_refused_not_skipped(tmp_path: Path) -> None:
    from mlpipe_cli.ledger import read_runs

    runs = tmp_path / "churn" / "runs"
    runs.mkdir(parents=True)
    record = {**golden_doc(LedgerRecord), "format_version": 2}
    (runs / "a.json").write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match=r"a\.json: run record format_version 2 is not one"):
        read_runs(tmp_path, "churn")
    # a record that is merely damaged is still skipped with a warning, as before
    (runs / "a.json").write_text(json.dumps({**record, "format_version": 1, "run_id": 5}))
    assert read_runs(tmp_path, "churn") == []


def test_profile_of_a_newer_format_exits_3(cli, project: Path, tmp_path: Path) -> None:
    profile = {**golden_doc(DriftProfile), "format_version": 3}
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(profile))
    current = tmp_path / "current.parquet"
    pl.DataFrame({"amount": [1.0, 2.0]}).write_parquet(current)
    result = cli("psi-report", "-c", project, "--profile", path, "--current", current)
    assert result.exit_code == 3, result.stderr
    assert f"{path}: profile format_version 3 is not one this mlpipe reads (1, 2;" in result.stderr
    assert "Traceback" not in result.stderr


def test_feature_log_segments_carry_the_header_and_newer_ones_are_refused(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from mlpipe_cli.drift.report import scan_serving_log
    from mlpipe_cli.serving.featurelog import FeatureLogger

    log_dir = tmp_path / "log"
    logger = FeatureLogger(log_dir, transform_version="0001-000000000000",
                           raw_columns=["amount"], vec_columns=["amount"])  # fmt: skip
    logger.start()
    assert logger.log("features", "[1]", None, False, [1.5], [0.25], None)
    logger.close()
    (segment,) = log_dir.glob("segment-*.parquet")
    header = pl.read_parquet_metadata(segment)[ServingLogHeader.PARQUET_KEY]
    assert json.loads(header) == golden_doc(ServingLogHeader)
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    assert scan_serving_log(log_dir, start, end).collect().height == 1

    # a segment without a header (written before headers existed) still reads as version 1
    pl.read_parquet(segment).write_parquet(log_dir / "segment-20260101T000000-1-000001.parquet")
    assert scan_serving_log(log_dir, start, end).collect().height == 2

    newer = json.dumps({"format_version": 2, "kind": ServingLogHeader.KIND})
    late = log_dir / "segment-20270101T000000-1-000001.parquet"
    pl.read_parquet(segment).write_parquet(late, metadata={ServingLogHeader.PARQUET_KEY: newer})
    with pytest.raises(ArtifactError, match=rf"{late}: serving log format_version 2 is not one"):
        scan_serving_log(log_dir, start, end)
