"""`mlpipe artifacts`: list, show and verify published artifact versions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg, spelled
from mlpipe_cli.ops.profiles import PROFILE_KIND

if TYPE_CHECKING:
    from mlpipe_cli.artifacts.store import VerifyResult
    from mlpipe_cli.ops.project import Project


@dataclass(frozen=True)
class ListResult:
    pipeline: str
    artifact_dir: Path
    base: Path
    # kind, version, latest, created_at, files, bytes (+ source for `profile` versions)
    artifacts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "artifact_dir": str(self.artifact_dir),
            "artifacts": self.artifacts,
        }


def list_artifacts(project: Project, *, kind: str | None = None) -> ListResult:
    """Every published version (of ``kind``), oldest first; ArtifactNotFound for an absent kind.

    ``latest`` marks what ``latest`` resolves to where it is used: the kind's newest version,
    except for ``profile`` artifacts, which are saved per source and read per source
    (``validate --reference latest``, ``psi-report --source``): there each source's newest
    profile is marked, and the row names its ``source``.
    """
    store = project.store
    if kind and kind not in store.kinds():
        from mlpipe_cli.errors import ArtifactNotFound

        present = ", ".join(store.kinds()) or "none"
        raise ArtifactNotFound(
            f"no {kind!r} artifacts under {store.base} (kinds present: {present})"
        )
    kinds = [kind] if kind else store.kinds()
    rows = []
    for k in kinds:
        latest = store.latest(k)
        kind_rows = []
        for version in store.versions(k):
            manifest = store.get(k, version, verify=False).manifest
            row = {
                "kind": k,
                "version": version,
                "latest": version == latest,
                "created_at": manifest.get("created_at"),
                "files": len(manifest.get("files", {})),
                "bytes": sum(f["size"] for f in manifest.get("files", {}).values()),
            }
            if k == PROFILE_KIND:
                row["source"] = (manifest.get("params") or {}).get("source")
            kind_rows.append(row)
        if k == PROFILE_KIND:
            _mark_latest_per_source(kind_rows)
        rows.extend(kind_rows)
    return ListResult(
        pipeline=store.pipeline, artifact_dir=store.root, base=store.base, artifacts=rows
    )


def _mark_latest_per_source(rows: list[dict[str, Any]]) -> None:
    """The newest profile of each source is its `latest` (as ``ops.profiles.load_reference``
    resolves it: the last version, in store order, whose params name the source). A profile
    naming no source keeps the kind-wide mark."""
    newest: dict[str, str] = {}
    for row in rows:
        if row["source"] is not None:
            newest[row["source"]] = row["version"]
    for row in rows:
        if row["source"] is not None:
            row["latest"] = newest[row["source"]] == row["version"]


@dataclass(frozen=True)
class ShowResult:
    kind: str
    version: str
    path: Path
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.manifest


def show_artifact(project: Project, *, version: str) -> ShowResult:
    """The manifest of ``version`` (id, sequence number, hash prefix or KIND/VERSION)."""
    artifact = project.store.find(version)
    return ShowResult(
        kind=artifact.kind, version=artifact.version, path=artifact.path, manifest=artifact.manifest
    )


@dataclass(frozen=True)
class VerifyArtifactsResult:
    results: list[VerifyResult]
    base: Path  # <artifact_dir>/<pipeline>: where the versions were looked for

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "artifact_dir": str(self.base),
            "checked": len(self.results),
            "results": [
                {"kind": r.kind, "version": r.version, "ok": r.ok, "problems": r.problems}
                for r in self.results
            ],
        }

    def raise_for_status(self) -> None:
        """ArtifactError (exit 3) naming the first version that failed verification."""
        from mlpipe_cli.errors import ArtifactError

        bad = [r for r in self.results if not r.ok]
        if bad:
            first = bad[0]
            raise ArtifactError(
                f"{len(bad)} of {len(self.results)} artifact versions failed verification; "
                f"first: {first.kind}/{first.version}: {first.problems[0]}"
            )


def verify_artifacts(project: Project, *, version: str | None = None) -> VerifyArtifactsResult:
    """Re-hash one version's files (or every version's) against their manifests.

    No versions at all is a pass with nothing checked (``checked`` 0): a project before its
    first published artifact (just made by `mlpipe init`) is not corrupt, and exit 3 means a
    bad artifact. An ``--artifact-dir`` (or MLPIPE_ARTIFACT_DIR) naming no directory is an
    InputError (exit 2) instead: a mistyped path must not pass a CI gate by verifying nothing.
    """
    override = project.artifact_dir_override
    if not version and override is not None and not override.is_dir():
        from mlpipe_cli.errors import InputError

        # checked before the store is opened: opening it starts the run ledger there, which
        # would create the mistyped directory
        what = "is not a directory" if override.exists() else "does not exist"
        where = spelled(cli="--artifact-dir or MLPIPE_ARTIFACT_DIR", python=arg("artifact_dir"))
        raise InputError(
            f"artifact directory {override} ({where}) {what}; nothing was verified",
            hint="check the path",
        )
    store = project.store
    if version:
        artifact = store.find(version)
        results = [store.verify(artifact.kind, artifact.version)]
    else:
        results = store.verify_all()
    return VerifyArtifactsResult(results=results, base=store.base)
