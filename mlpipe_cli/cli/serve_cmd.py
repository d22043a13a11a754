"""`mlpipe serve`: the online feature server."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    Output,
    QuietOption,
    run_context,
)
from mlpipe_cli.errors import UsageError


class Interface(StrEnum):
    rsgi = "rsgi"
    asgi = "asgi"


def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    artifact: Annotated[
        str | None,
        typer.Option(
            "--artifact", help="Transform version to serve (default: serving.artifact, 'latest')."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model version for /predict: a version, 'latest' (default, if any is "
            "registered) or 'none'.",
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Port (default 8000; 0 picks a free one)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, max=64, help="Server processes.")
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option("--log-dir", help="Feature-log directory (default under the artifacts)."),
    ] = None,
    interface: Annotated[
        Interface,
        typer.Option(
            "--interface",
            help="How Granian calls the app: rsgi (default, fastest) or asgi (the same app "
            "through its ASGI entry point).",
        ),
    ] = Interface.rsgi,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate file: serve HTTPS (with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key file for --tls-cert.")
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option(
            "--shadow",
            help="Also run this transform version on every request, off the request path, "
            "and log its vector beside the live one (shadow.vec.*); never served "
            "(default: serving.shadow.transform).",
        ),
    ] = None,
    shadow_model: Annotated[
        str | None,
        typer.Option(
            "--shadow-model",
            help="Model bound to the --shadow transform: its score is logged as "
            "shadow.prediction (a version, 'latest' or 'none'; default serving.shadow.model).",
        ),
    ] = None,
    artifact_dir: ArtifactDirOption = None,
    quiet: QuietOption = False,
) -> None:
    """Serve online features over HTTP, transformed by a pinned, verified transform artifact.

    Endpoints: GET /features/{entity_id}, POST /features, POST /predict (with a registered
    model), GET /healthz, /readyz, /info, /metrics, /openapi.json. Every served entity is
    logged to Parquet segments for `mlpipe psi-report`. Refuses to start (exit 3) when an
    artifact fails verification or does not fit the online store; exit 4 when the store is
    unreachable at start. SIGTERM/SIGINT stop gracefully and flush the log (exit 0).
    With serving.auth_token set, every route but /healthz needs "Authorization: Bearer
    <token>"; --tls-cert/--tls-key (or serving.tls_cert/tls_key) serve HTTPS.
    --shadow VERSION runs a second transform (and --shadow-model) on the same raw values in
    the feature-log writer and logs it (compare with `psi-report --compare --serving-log`).

    Example: mlpipe serve -c configs/example.yaml --port 8000

    Example: mlpipe serve -c configs/example.yaml --shadow 0002-ab12cd34ef56 --shadow-model none
    """
    from mlpipe_cli.serving.server import ServeSpec
    from mlpipe_cli.serving.server import serve as run_server

    out = Output.create(quiet=quiet)
    ctx = run_context(config, artifact_dir)
    settings = ctx.config.serving
    if shadow_model is not None and shadow is None and settings.shadow is None:
        raise UsageError("--shadow-model needs --shadow VERSION (or serving.shadow)")
    shadow_ref = shadow or (settings.shadow.transform if settings.shadow else None)
    shadow_model_ref = shadow_model or (
        settings.shadow.model if settings.shadow and not shadow else None
    )
    spec = ServeSpec(
        config_path=str(Path(config).resolve()),
        artifact_dir=str(Path(ctx.artifact_dir).resolve()),
        transform_ref=artifact or settings.artifact,
        model_ref=model or settings.model,
        host=host or settings.host,
        port=settings.port if port is None else port,
        workers=workers or settings.workers,
        log_dir=str(log_dir.resolve()) if log_dir else None,
        interface=interface.value,
        tls_cert=str(tls_cert.resolve()) if tls_cert else None,
        tls_key=str(tls_key.resolve()) if tls_key else None,
        shadow_ref=shadow_ref,
        shadow_model_ref=shadow_model_ref,
        # a transform chosen by nobody in particular follows `mlpipe promote`
        follow=artifact is None and settings.artifact == "latest",
        model_explicit=model is not None,
    )

    def announce(app: Any, bound_port: int) -> None:
        runtime = app.runtime
        info = runtime.service.info()
        pointer = getattr(app, "pointer_version", None)
        if app.follower is not None:
            out.info(
                f"mlpipe serve: following the serving pointer ({pointer or 'none promoted yet'}"
                f"; `mlpipe promote` switches this server)"
            )
        out.info(
            f"mlpipe serve: pipeline {info.pipeline}, transform {info.transform_version}, "
            f"{info.store_type} store version {info.store_version}, "
            f"model {info.model_version or 'none'}"
        )
        if runtime.log_dir is not None:
            out.info(f"mlpipe serve: feature log -> {runtime.log_dir}")
        if runtime.shadow is not None:
            out.info(
                f"mlpipe serve: shadow transform {runtime.shadow.transform_version}, model "
                f"{runtime.shadow.model_version or 'none'} (logged, not served)"
            )
        out.info(
            f"mlpipe serve: listening on {'https' if app.tls else 'http'}://{spec.host}:"
            f"{bound_port} "
            f"(workers {spec.workers}); Ctrl-C or SIGTERM stops and flushes the log"
        )
        import sys

        sys.stderr.flush()

    code = run_server(spec, announce=announce)
    if code:
        raise typer.Exit(code)
