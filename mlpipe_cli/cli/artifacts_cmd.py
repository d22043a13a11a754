"""`mlpipe artifacts`: list, show and verify published artifact versions."""

from __future__ import annotations

from typing import Annotated

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    JsonOption,
    Output,
    QuietOption,
    run_context,
)

app = typer.Typer(
    help="List, show and verify versioned artifacts.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list")
def list_artifacts(
    kind: Annotated[str | None, typer.Argument(help="Only this kind (e.g. transform).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """List published versions, newest last; `*` marks the one `latest` points to.

    Example: mlpipe artifacts list transform -c configs/example.yaml
    """
    out = Output.create(json_mode=json_output, quiet=quiet)
    store = run_context(config, artifact_dir).store
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
        for version in store.versions(k):
            manifest = store.get(k, version, verify=False).manifest
            rows.append(
                {
                    "kind": k,
                    "version": version,
                    "latest": version == latest,
                    "created_at": manifest.get("created_at"),
                    "files": len(manifest.get("files", {})),
                    "bytes": sum(f["size"] for f in manifest.get("files", {}).values()),
                }
            )
    out.result({"pipeline": store.pipeline, "artifact_dir": str(store.root), "artifacts": rows})
    if not rows:
        out.line(f"no artifacts under {store.base}")
        return
    out.table(
        ["kind", "version", "latest", "created_at", "files", "bytes"],
        [
            [
                r["kind"],
                r["version"],
                "*" if r["latest"] else "",
                r["created_at"],
                r["files"],
                r["bytes"],
            ]
            for r in rows
        ],
    )


@app.command("show")
def show_artifact(
    version: Annotated[
        str, typer.Argument(help="Version id, sequence number, hash prefix, or KIND/VERSION.")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Print a version's manifest (files, hashes, config hash, inputs, library versions).

    Example: mlpipe artifacts show transform/latest
    """
    out = Output.create(json_mode=json_output, quiet=quiet)
    artifact = run_context(config, artifact_dir).store.find(version)
    manifest = artifact.manifest
    out.result(manifest)
    out.line(f"{artifact.kind} {artifact.version}  ({artifact.path})")
    for key in ("content_hash", "config_hash", "created_at", "mlpipe_version"):
        out.line(f"  {key}: {manifest.get(key)}")
    inputs = manifest.get("inputs")
    if isinstance(inputs, dict) and "rows" in inputs:
        out.line(f"  input rows: {inputs['rows']}  input sha256: {inputs.get('sha256')}")
    out.table(
        ["file", "bytes", "sha256"],
        [
            [name, meta["size"], meta["sha256"][:16]]
            for name, meta in sorted(manifest["files"].items())
        ],
    )


@app.command("verify")
def verify_artifacts(
    version: Annotated[str | None, typer.Argument(help="Version to verify (default: all).")] = None,
    all_versions: Annotated[bool, typer.Option("--all", help="Verify every version.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Re-hash artifact files against their manifests; exit 3 on any mismatch.

    Example: mlpipe artifacts verify --all
    """
    from mlpipe_cli.errors import ArtifactError, UsageError

    if version and all_versions:
        raise UsageError("give a VERSION or --all, not both")
    out = Output.create(json_mode=json_output, quiet=quiet)
    store = run_context(config, artifact_dir).store
    if version:
        artifact = store.find(version)
        results = [store.verify(artifact.kind, artifact.version)]
    else:
        results = store.verify_all()
        if not results:
            from mlpipe_cli.errors import ArtifactNotFound

            # Verifying nothing must not pass a CI gate (a typo in --artifact-dir, say).
            raise ArtifactNotFound(f"no artifacts to verify under {store.base}")
    bad = [r for r in results if not r.ok]
    out.result(
        {
            "ok": not bad,
            "checked": len(results),
            "results": [
                {"kind": r.kind, "version": r.version, "ok": r.ok, "problems": r.problems}
                for r in results
            ],
        }
    )
    out.table(
        ["kind", "version", "status", "problem"],
        [[r.kind, r.version, "ok" if r.ok else "FAILED", "; ".join(r.problems)] for r in results],
    )
    if bad:
        first = bad[0]
        raise ArtifactError(
            f"{len(bad)} of {len(results)} artifact versions failed verification; "
            f"first: {first.kind}/{first.version}: {first.problems[0]}"
        )
