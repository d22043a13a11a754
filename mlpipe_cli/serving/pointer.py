"""The ``serving`` pointer: which transform (and model) version is live.

An artifact of kind ``serving`` (versioned, content-addressed, published atomically like every
artifact) holding one file, ``serving.json``::

    {"format_version": 1, "transform_version": ..., "transform_content_hash": ...,
     "model_version": ... | null, "model_sha256": ... | null, "previous": ... | null}

``previous`` is the pointer version that was live before this one (what ``mlpipe promote
--rollback`` returns to). `mlpipe promote` writes it after verifying the versions;
`mlpipe serve` without an explicit ``--artifact`` serves what ``LATEST`` names and follows it
(serving/follow.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlpipe_cli.documents import ServingPointerDocument, check
from mlpipe_cli.errors import ArtifactError

SERVING_KIND = "serving"
POINTER_FILE = "serving.json"


@dataclass(frozen=True)
class ServingPointer:
    version: str  # the pointer artifact's own version
    transform_version: str
    transform_content_hash: str | None
    model_version: str | None
    model_sha256: str | None
    previous: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pointer_version": self.version,
            "transform_version": self.transform_version,
            "model_version": self.model_version,
            "previous": self.previous,
        }


def pointer_document(
    transform_version: str,
    transform_content_hash: str | None,
    model_version: str | None,
    model_sha256: str | None,
    previous: str | None,
) -> bytes:
    """The canonical bytes of ``serving.json`` (same content => same pointer version)."""
    doc = {
        "format_version": ServingPointerDocument.FORMAT_VERSION,
        "transform_version": transform_version,
        "transform_content_hash": transform_content_hash,
        "model_version": model_version,
        "model_sha256": model_sha256,
        "previous": previous,
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def publish_pointer(store: Any, document: bytes) -> tuple[str, bool]:
    """Publish ``serving.json`` and make it ``LATEST``; (pointer version, newly created).
    Publishing the bytes of an existing pointer points ``LATEST`` back at it."""

    def write(staging: Any) -> None:
        (staging / POINTER_FILE).write_bytes(document)

    result = store.publish(SERVING_KIND, write)
    return result.version.version, result.created


def current_pointer_version(store: Any) -> str | None:
    """The version ``LATEST`` names (None before the first promote); no verification."""
    return store.latest(SERVING_KIND) if SERVING_KIND in store.kinds() else None


def read_pointer(store: Any, ref: str = "latest") -> ServingPointer | None:
    """The pointer ``ref`` names, hash-verified (ArtifactError, exit 3, when tampered);
    None when nothing was ever promoted."""
    if ref == "latest" and current_pointer_version(store) is None:
        return None
    artifact = store.get(SERVING_KIND, ref, verify=True)
    try:
        doc = json.loads(artifact.file(POINTER_FILE).read_text())
        check(ServingPointerDocument, doc, f"serving/{artifact.version}/{POINTER_FILE}")
        return ServingPointer(
            version=artifact.version,
            transform_version=str(doc["transform_version"]),
            transform_content_hash=doc.get("transform_content_hash"),
            model_version=doc.get("model_version"),
            model_sha256=doc.get("model_sha256"),
            previous=doc.get("previous"),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"serving pointer {artifact.version} is unreadable: {type(exc).__name__}: {exc}"
        ) from None


def pointer_bytes(store: Any, version: str) -> bytes:
    """The exact ``serving.json`` of a pointer version (to re-publish it on rollback)."""
    return store.get(SERVING_KIND, version, verify=True).file(POINTER_FILE).read_bytes()
