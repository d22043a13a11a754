"""`mlpipe model`: register a trained model, bound to the transform version it was trained on."""

from __future__ import annotations

from pathlib import Path
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
    help="Register models for `mlpipe serve` /predict.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("register")
def register(
    model_file: Annotated[
        Path, typer.Argument(help="A joblib file (e.g. a fitted sklearn model).")
    ],
    artifact: Annotated[
        str,
        typer.Option(
            "--artifact", help="Transform version the model was trained on ('latest' allowed)."
        ),
    ] = "latest",
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Copy a joblib model into the artifact store (kind `model`), bound to a transform version.

    The file must be a regular, non-empty file. It is loaded once here to check it has a
    predict_proba/decision_function/predict method and, when it records n_features_in_, takes
    the transform version's output width; nothing is published unless it passes. It is copied
    byte for byte with its sha256; `mlpipe serve` checks the hash before loading it and refuses
    a model bound to another transform version. SECURITY: joblib/pickle files execute code when
    loaded: registering is your act of trust; register only files you trust like code.
    Exit 2: path missing, a directory, or unreadable. Exit 3: not a usable model, or the
    transform version does not exist or fails verification.

    Example: mlpipe model register model.joblib --artifact 0001-3f2a9c0d1e4b -c configs/example.yaml
    """
    from mlpipe_cli.serving.model import register_model

    out = Output.create(json_mode=json_output, quiet=quiet)
    store = run_context(config, artifact_dir).store
    version, created = register_model(store, model_file, artifact)
    binding = version.manifest.get("params") or {}
    doc = {
        "model_version": version.version,
        "created": created,
        "transform_version": binding.get("transform_version"),
        "model_sha256": version.manifest["files"]["model.joblib"]["sha256"],
        "path": str(version.path),
    }
    verb = "registered" if created else "already registered as"
    out.result(
        doc,
        f"{verb} model {version.version} for transform {doc['transform_version']} "
        f"(sha256 {doc['model_sha256'][:12]})",
    )


@app.command("list")
def list_models(
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """List registered models and the transform version each is bound to.

    Example: mlpipe model list -c configs/example.yaml
    """
    out = Output.create(json_mode=json_output, quiet=quiet)
    store = run_context(config, artifact_dir).store
    latest = store.latest("model")
    rows = []
    for version in store.versions("model"):
        manifest = store.get("model", version, verify=False).manifest
        rows.append(
            {
                "version": version,
                "latest": version == latest,
                "transform_version": (manifest.get("params") or {}).get("transform_version"),
                "source_file": manifest.get("source_file"),
                "created_at": manifest.get("created_at"),
            }
        )
    out.result({"models": rows})
    if not rows:
        out.line("no models registered (mlpipe model register MODEL.joblib --artifact VERSION)")
        return
    out.table(
        ["version", "latest", "transform", "file", "created_at"],
        [
            [r["version"], "*" if r["latest"] else "", r["transform_version"], r["source_file"],
             r["created_at"]]
            for r in rows
        ],
    )  # fmt: skip
