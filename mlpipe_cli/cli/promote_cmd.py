"""`mlpipe promote`: publish the serving pointer (which transform and model are live)."""

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


def promote(
    transform_version: Annotated[
        str | None,
        typer.Argument(
            help="Transform version to make live (id, number, hash prefix, latest).",
            metavar="TRANSFORM_VERSION",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model version to serve with it, 'latest' or 'none' "
            "(default: the newest model registered for this transform, if any).",
        ),
    ] = None,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="Return to the pointer that was live before the "
            "current one (its versions are verified again).",
        ),
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Verify a transform (and model) version and make it the live one for `mlpipe serve`.

    Checks before publishing anything: the transform's sha256 files and golden example, the
    model's sha256 and its binding to this transform, and that the transform reads the online
    store's live features. Then a `serving` pointer artifact is published; every server
    started without --artifact loads and verifies the new versions in the background and
    switches between requests (a server whose check fails keeps the old version and says why
    on stderr). Exit 3 when a check fails, 4 when the online store is unreachable, 2 when
    there is nothing to roll back to.

    Example: mlpipe promote 0002-ab12cd34ef56 --model 0003-9c1d2e3f4a5b -c configs/example.yaml

    Example: mlpipe promote --rollback -c configs/example.yaml
    """
    from mlpipe_cli.ops.promote import promote as run

    out = Output.create(json_mode=json_output, quiet=quiet)
    result = run(
        run_context(config, artifact_dir),
        transform=transform_version,
        model=model,
        rollback=rollback,
    )
    what = f"transform {result.transform_version}, model {result.model_version or 'none'}"
    if result.rollback:
        line = f"rolled back to serving pointer {result.pointer_version}: {what}"
    elif result.already_live:
        line = f"already live (serving pointer {result.pointer_version}): {what}"
    else:
        line = f"promoted serving pointer {result.pointer_version}: {what}"
    out.result(result.to_dict(), line)
