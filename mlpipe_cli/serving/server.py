"""Run the feature server on uvicorn: verify everything first, then bind and serve.

Start-up order: load + verify the transform artifact (sha256 and golden example), reach the
online store, check the transform can read its live version, verify and load the model. Any
failure raises before a socket is bound (ArtifactError → exit 3, ServiceUnavailable → exit 4).

Shutdown: SIGTERM or SIGINT stop accepting connections, finish in-flight requests, then the
ASGI lifespan shutdown drains the feature-log queue into a final segment. The process exits 0.
With ``--workers N`` the parent verifies once, binds the socket, and starts N worker processes
that each re-verify and serve the same pinned versions (and log to their own segments).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlpipe_cli.errors import UsageError

SPEC_ENV = "MLPIPE_SERVE_SPEC"


@dataclass
class ServeSpec:
    """Everything a (worker) process needs to build the app; versions already pinned."""

    config_path: str
    artifact_dir: str
    transform_ref: str
    model_ref: str
    host: str
    port: int
    workers: int = 1
    log_dir: str | None = None


def _stack() -> tuple[str, str]:
    """httptools + uvloop when installed (they are dependencies); h11/asyncio otherwise."""
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:  # pragma: no cover - dependency
        http = "h11"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - dependency
        loop = "asyncio"
    return http, loop


def build_app(spec: ServeSpec) -> Any:
    """Load config + artifacts for ``spec`` and return the ASGI app (raises on failure)."""
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.app import ServingApp
    from mlpipe_cli.serving.service import build_runtime

    config = load_config(spec.config_path)
    runtime = build_runtime(
        config,
        Path(spec.artifact_dir),
        transform_ref=spec.transform_ref,
        model_ref=spec.model_ref,
        log_dir=Path(spec.log_dir) if spec.log_dir else None,
    )
    app = ServingApp(
        runtime.service,
        runtime.metrics,
        runtime.logger,
        max_batch=config.serving.max_batch,
        max_body_bytes=config.serving.max_body_bytes,
        coalesce=config.serving.coalesce,
    )
    app.runtime = runtime  # type: ignore[attr-defined]
    return app


def _serving_process_tuning() -> None:
    # The feature-log writer thread competes for the GIL with the event loop; CPython makes a
    # waiting thread wait up to the switch interval (5 ms by default) before forcing a
    # hand-off, which showed up as multi-millisecond p99 spikes. 0.5 ms bounds that wait.
    sys.setswitchinterval(0.0005)


def worker_app() -> Any:
    """uvicorn factory for worker processes (``--workers N``): the spec comes from the env."""
    spec = ServeSpec(**json.loads(os.environ[SPEC_ENV]))
    app = build_app(spec)
    _serving_process_tuning()
    return app


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port, or stop the process using it",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(spec: ServeSpec, *, announce: Any = None) -> int:
    """Verify, bind, serve until SIGTERM/SIGINT; return the exit code (0 after a clean stop)."""
    import uvicorn

    app = build_app(spec)  # verification happens here, before binding
    _serving_process_tuning()
    runtime = app.runtime
    sock = bind_socket(spec.host, spec.port)
    port = sock.getsockname()[1]
    http, loop = _stack()
    if announce is not None:
        announce(app, port)
    stopped: list[int] = []

    def remember(sig: int, _frame: Any) -> None:
        stopped.append(sig)

    # uvicorn re-raises the signal it shut down on; with these handlers that is a no-op, so
    # a graceful stop exits 0 instead of dying by the signal.
    previous = {s: signal.signal(s, remember) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if spec.workers > 1:
            from uvicorn.supervisors import Multiprocess

            if runtime.logger is not None:
                runtime.logger.close()  # nothing was served by the parent
            with contextlib.suppress(Exception):
                runtime.service.store.close()
            os.environ[SPEC_ENV] = json.dumps(asdict(spec))
            config = uvicorn.Config(
                "mlpipe_cli.serving.server:worker_app",
                factory=True,
                workers=spec.workers,
                http=http,
                loop=loop,
                lifespan="on",
                log_level="warning",
                access_log=False,
                server_header=False,
            )
            Multiprocess(config, sockets=[sock]).run()
            return 0
        config = uvicorn.Config(
            app,
            http=http,
            loop=loop,
            lifespan="on",
            log_level="warning",
            access_log=False,
            server_header=False,
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            raise UsageError("the server failed to start (see the messages above)")
        return 0
    finally:
        if runtime.logger is not None:
            runtime.logger.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(OSError):
            sock.close()
        sys.stderr.flush()
