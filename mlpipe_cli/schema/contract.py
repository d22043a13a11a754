"""Contract documents: the versioned API contract of a pipeline's sources.

``mlpipe schema snapshot`` publishes a ``schema`` artifact holding ``contract.json``::

    {"format_version": 1, "kind": "mlpipe.contract", "pipeline": "churn",
     "sources": {"orders": {"columns": {...}, "checks": [...], "strict": true, ...}}}

plus ``<source>.pandera.yaml`` for each source. Only the contract keys are kept (no paths,
timestamps or ttl), so moving data does not change the contract version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.documents import SourceContract, check
from mlpipe_cli.errors import ArtifactError, InputError, UsageError
from mlpipe_cli.io import register_input

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.sources import SourceConfig

CONTRACT_FILE = "contract.json"
SCHEMA_KIND = "schema"
_NOT_CONTRACT = {
    "path", "timestamp", "created_timestamp", "valid_from", "valid_to", "entity_keys", "ttl",
    "distribution",
}  # fmt: skip


def source_contract(source: SourceConfig) -> dict[str, Any]:
    return source.model_dump(mode="json", exclude=_NOT_CONTRACT)


def contract_document(config: PipelineConfig) -> dict[str, Any]:
    return {
        "format_version": SourceContract.FORMAT_VERSION,
        "kind": SourceContract.KIND,
        "pipeline": config.pipeline,
        "sources": {name: source_contract(config.sources[name]) for name in sorted(config.sources)},
    }


def snapshot(store: ArtifactStore, config: PipelineConfig) -> tuple[str, bool]:
    """Publish the contract of every source; return (version, created)."""
    from mlpipe_cli.artifacts.store import canonical_json
    from mlpipe_cli.schema.pandera_io import export_yaml

    if not config.sources:
        raise UsageError("the config defines no sources: nothing to snapshot")
    document = contract_document(config)

    def write(staging: Path) -> None:
        (staging / CONTRACT_FILE).write_bytes(canonical_json(document) + b"\n")
        for name in sorted(config.sources):
            (staging / f"{name}.pandera.yaml").write_text(
                export_yaml(name, config.sources[name]), encoding="utf-8"
            )

    result = store.publish(SCHEMA_KIND, write, params={"sources": sorted(config.sources)})
    return result.version.version, result.created


def check_document(document: Any, origin: str) -> dict[str, Any]:
    if not isinstance(document, dict) or document.get("kind") != SourceContract.KIND:
        raise InputError(f"{origin} is not an mlpipe contract (kind {SourceContract.KIND!r})")
    check(SourceContract, document, origin, invalid=InputError)
    return document


def load_contract(
    ref: str, store: ArtifactStore | Callable[[], ArtifactStore] | None
) -> tuple[dict[str, Any], str]:
    """A contract from a file (contract.json or a pipeline YAML) or a schema artifact version.

    ``store`` may be a callable, called only when ``ref`` is not a file. Returns the document
    and a label naming where it came from.
    """
    path = Path(ref)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"contract file {path} not found")
        if path.suffix == ".json":
            register_input(path)  # the same-path guard: no output may be this contract
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {path} as JSON: {exc}") from None
            return check_document(document, str(path)), str(path)
        from mlpipe_cli.config import load_config

        return contract_document(load_config(path)), str(path)
    if store is None:
        raise UsageError(f"{ref!r} is not a file, and no artifact store is configured")
    if callable(store):
        store = store()
    artifact = store.get(SCHEMA_KIND, ref)
    try:
        document = json.loads(artifact.file(CONTRACT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"schema artifact {artifact.version}: unreadable contract: {exc}"
        ) from None
    label = f"schema/{artifact.version}"
    return check_document(document, f"{label}/{CONTRACT_FILE}"), label
