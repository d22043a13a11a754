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
        Path,
        typer.Argument(
            help="A skops file (skops.io.dump; recommended) or, with --trust-pickle, "
            "a joblib/pickle file."
        ),
    ],
    artifact: Annotated[
        str,
        typer.Option(
            "--artifact", help="Transform version the model was trained on ('latest' allowed)."
        ),
    ] = "latest",
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            metavar="TYPE",
            help="Trust this type in a skops file (repeatable), e.g. "
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor. The error for "
            "an untrusted type names each one.",
        ),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Accept a joblib/pickle file. Loading a pickle runs any code it contains, "
            "here and in `mlpipe serve`: pass this only for files you trust like code.",
        ),
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Copy a model into the artifact store (kind `model`), bound to a transform version.

    skops files (recommended): the types the file would create are listed BEFORE anything is
    loaded, and any type skops does not trust by default is refused unless named with
    --trust TYPE; the trusted list is recorded and `mlpipe serve` loads the file with exactly
    that list. joblib/pickle files need --trust-pickle: unpickling runs whatever code the
    file holds, so nothing is loaded until you say you trust it like code.
    The file is then loaded once to check it has a predict_proba/decision_function/predict
    method and, when it records n_features_in_, takes the transform version's output width;
    nothing is published unless it passes. It is copied byte for byte with its sha256;
    `mlpipe serve` checks the hash (and the signature, with MLPIPE_SIGNING_KEY) before loading
    it and refuses a model bound to another transform version.
    Exit 2: path missing, a directory, unreadable, an untrusted skops type, or a pickle
    without --trust-pickle. Exit 3: not a usable model, or the transform version does not
    exist or fails verification.

    Example: mlpipe model register model.skops --artifact 0001-3f2a9c0d1e4b -c configs/example.yaml
    """
    from mlpipe_cli.ops.models import register_model

    out = Output.create(json_mode=json_output, quiet=quiet)
    result = register_model(
        run_context(config, artifact_dir),
        model_file,
        artifact,
        trust=trust or (),
        trust_pickle=trust_pickle,
    )
    doc = result.to_dict()
    verb = "registered" if result.created else "already registered as"
    out.result(
        doc,
        f"{verb} model {result.model_version} ({doc['format']}) for transform "
        f"{doc['transform_version']} (sha256 {doc['model_sha256'][:12]})",
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
    from mlpipe_cli.ops.models import list_models as registered_models

    out = Output.create(json_mode=json_output, quiet=quiet)
    result = registered_models(run_context(config, artifact_dir))
    rows = result.to_dict()["models"]
    out.result({"models": rows})
    if not rows:
        out.line("no models registered (mlpipe model register MODEL.skops --artifact VERSION)")
        return
    out.table(
        ["version", "latest", "transform", "file", "created_at"],
        [
            [r["version"], "*" if r["latest"] else "", r["transform_version"], r["source_file"],
             r["created_at"]]
            for r in rows
        ],
    )  # fmt: skip
