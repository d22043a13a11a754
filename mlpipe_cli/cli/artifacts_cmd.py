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

    Reference profiles are saved per source, so `latest` is per source too: each source's
    newest `profile` is marked (what `validate --reference latest` and `psi-report --source`
    read), and its source is shown.

    Example: mlpipe artifacts list transform -c configs/example.yaml
    """
    from mlpipe_cli.ops.artifacts import list_artifacts as run

    out = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir), kind=kind)
    rows = result.artifacts
    out.result(result.to_dict())
    if not rows:
        out.line(f"no artifacts under {result.base}")
        return
    sources = any("source" in r for r in rows)  # profile rows name the source they are for
    out.table(
        [
            "kind",
            "version",
            *(["source"] if sources else []),
            "latest",
            "created_at",
            "files",
            "bytes",
        ],
        [
            [
                r["kind"],
                r["version"],
                *([r.get("source") or ""] if sources else []),
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
    from mlpipe_cli.ops.artifacts import show_artifact as run

    out = Output.create(json_mode=json_output, quiet=quiet)
    artifact = run(run_context(config, artifact_dir), version=version)
    manifest = artifact.manifest
    out.result(artifact.to_dict())
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

    With no artifacts published yet (a new project) there is nothing to verify: it says so and
    exits 0. An --artifact-dir that does not exist is an error (exit 2), not a pass.

    Example: mlpipe artifacts verify --all
    """
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.ops.artifacts import verify_artifacts as run

    if version and all_versions:
        raise UsageError("give a VERSION or --all, not both")
    out = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir), version=version)
    out.result(result.to_dict())
    if not result.results:
        out.line(f"nothing to verify: no artifacts published under {result.base} yet")
        return
    out.table(
        ["kind", "version", "status", "problem"],
        [
            [r.kind, r.version, "ok" if r.ok else "FAILED", "; ".join(r.problems)]
            for r in result.results
        ],
    )
    result.raise_for_status()
