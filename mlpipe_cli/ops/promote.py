"""`mlpipe promote`: make a transform (and model) version the live one, after verifying it.

Verification is what `mlpipe serve` checks at start-up, run before anything is published:
the transform's sha256 files and golden example, the model's sha256 and its binding to the
transform (version, content hash, output columns), and the online store's live features
(every transform input is an online feature or a request-time column; the cold-start record
transforms). Only then is a ``serving`` pointer published (serving/pointer.py); servers started
without an explicit ``--artifact`` switch to it within ``serving.follow_interval``.

``--rollback`` re-publishes the pointer that was live before the current one, after verifying
its versions again (a rollback to something that no longer verifies fails loudly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg_name, given, spelled
from mlpipe_cli.errors import UsageError

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project


@dataclass(frozen=True)
class PromoteResult:
    pointer_version: str
    transform_version: str
    model_version: str | None
    previous: str | None  # the pointer live before this command
    created: bool  # False: the same pointer was live already, or a rollback re-used one
    rollback: bool
    store_version: str | None
    checks: list[str] = field(default_factory=list)
    already_live: bool = False  # nothing published: this pair was the live one

    def to_dict(self) -> dict[str, Any]:
        return {
            "pointer_version": self.pointer_version,
            "transform_version": self.transform_version,
            "model_version": self.model_version,
            "previous": self.previous,
            "created": self.created,
            "rollback": self.rollback,
            "store_version": self.store_version,
            "already_live": self.already_live,
            "checks": list(self.checks),
        }


def promote(
    project: Project,
    *,
    transform: str | None = None,
    model: str | None = None,
    rollback: bool = False,
) -> PromoteResult:
    """Verify ``transform`` (and ``model``) and publish them as the live serving pointer.

    ``model``: a model version, 'latest' (the newest registered model, which must be bound to
    this transform), 'none', or None: the newest model registered for this transform, if any.
    ArtifactError (exit 3) when a check fails, ServiceUnavailable (exit 4) when the online
    store cannot be reached; nothing is published then.
    """
    from mlpipe_cli.serving.pointer import current_pointer_version, read_pointer

    store = project.store
    if rollback:
        if transform is not None or model is not None:
            raise UsageError(
                f"{given('rollback', True)} returns to the previous pointer; it takes no "
                f"{arg_name('transform', flag='TRANSFORM_VERSION')} or {arg_name('model')}"
            )
        current = read_pointer(store)
        if current is None:
            raise UsageError(
                "nothing to roll back: no version was promoted yet",
                hint="promote one with "
                + spelled(
                    cli="`mlpipe promote TRANSFORM_VERSION`", python="`promote(transform=VERSION)`"
                ),
            )
        if current.previous is None:
            raise UsageError(
                f"nothing to roll back to: serving pointer {current.version} (transform "
                f"{current.transform_version}) was the first one promoted"
            )
        target = read_pointer(store, current.previous)
        assert target is not None
        return _publish(
            project,
            target.transform_version,
            target.model_version,
            previous=current.version,
            rollback_to=target.version,
            expected_content_hash=target.transform_content_hash,
        )
    if transform is None:
        raise UsageError(
            f"give the {arg_name('transform', flag='TRANSFORM_VERSION')} to promote "
            f"(or {given('rollback', True)})"
        )
    version = store.resolve("transform", transform)
    model_version = _model_for(store, version, model)
    previous = current_pointer_version(store)
    return _publish(project, version, model_version, previous=previous, rollback_to=None)


def _model_for(store: Any, transform_version: str, ref: str | None) -> str | None:
    from mlpipe_cli.serving.model import MODEL_KIND, read_binding, resolve_model

    if ref is not None:
        if ref.lower() == "none":
            return None
        version = resolve_model(store, ref)
        if version is None:
            raise UsageError(f"{given('model', ref)}: no model is registered")
        return version
    # default: the newest model registered for exactly this transform version
    for candidate in reversed(store.versions(MODEL_KIND)):
        try:
            binding = read_binding(store.get(MODEL_KIND, candidate, verify=False))
        except Exception:  # an unreadable old model is not this transform's
            continue
        if binding.transform_version == transform_version:
            return candidate
    return None


def _publish(
    project: Project,
    transform_version: str,
    model_version: str | None,
    *,
    previous: str | None,
    rollback_to: str | None,
    expected_content_hash: str | None = None,
) -> PromoteResult:
    from mlpipe_cli.online import open_store
    from mlpipe_cli.serving.follow import load_versions
    from mlpipe_cli.serving.pointer import (
        pointer_bytes,
        pointer_document,
        publish_pointer,
        read_pointer,
    )

    store = project.store
    online = open_store(project.config, project.artifact_dir)
    try:
        online.ping()  # ServiceUnavailable (exit 4)
        metadata = online.live_metadata()
    finally:
        close = getattr(online, "close", None)
        if close is not None:
            close()
    loaded = load_versions(
        project.config,
        store,
        metadata,
        transform_ref=transform_version,
        model_ref=model_version,
        expected_content_hash=expected_content_hash,
    )
    assert metadata is not None  # load_versions refuses a store with no live version
    checks = [
        f"transform {transform_version}: sha256 of every file and its golden example",
        f"online store version {metadata.version}: every transform input is a live feature "
        "or a request-time column; the cold-start record transforms",
    ]
    model_sha = None
    if loaded.model is not None:
        model_sha = loaded.model.binding.model_sha256
        checks.append(
            f"model {model_version}: sha256, bound to transform {transform_version} "
            "(content hash, output columns), loads"
        )
    current = read_pointer(store)
    if (
        rollback_to is None
        and current is not None
        and (current.transform_version, current.model_version) == (transform_version, model_version)
    ):
        return PromoteResult(current.version, transform_version, model_version, current.previous,
                             created=False, rollback=False, store_version=metadata.version,
                             checks=checks, already_live=True)  # fmt: skip
    if rollback_to is not None:
        document = pointer_bytes(store, rollback_to)  # the same bytes: LATEST points back
    else:
        document = pointer_document(
            transform_version, loaded.transform_content_hash, model_version, model_sha, previous
        )
    version, created = publish_pointer(store, document)
    return PromoteResult(
        version,
        transform_version,
        model_version,
        previous,
        created=created,
        rollback=rollback_to is not None,
        store_version=metadata.version,
        checks=checks,
    )
