"""Run the feature server on Granian: verify everything first, then bind and serve.

Start-up order: load + verify the transform artifact (sha256 and golden example), reach the
online store, check the transform can read its live version, verify and load the model. Any
failure raises before a socket is bound (ArtifactError → exit 3, ServiceUnavailable → exit 4).

The stack is Granian (HTTP handled in Rust) calling the app through RSGI, chosen by
measurement: on this 2-core machine it serves a constant response at ~2x the requests/s of
uvicorn + httptools + a bare ASGI app, and the feature endpoint at ~1.8x (docs/serve.md).
``--interface asgi`` runs the same app through its ASGI entry point instead.

With one worker (the default) Granian runs embedded on this process's uvloop event loop:
SIGTERM or SIGINT stop accepting connections, in-flight requests finish, then the app's
shutdown hook drains the feature-log queue into a final segment and the process exits 0.
With ``--workers N`` the parent verifies once, then Granian starts N worker processes that
each re-verify and serve the same pinned versions (and log to their own segments).
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

from mlpipe_cli.errors import ServiceUnavailable, UsageError

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
    interface: str = "rsgi"


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


def tune_serving_process() -> None:
    """Process settings for low tail latency, applied once everything is loaded."""
    import gc

    # The feature-log writer thread competes for the GIL with the event loop; CPython makes a
    # waiting thread wait up to the switch interval (5 ms by default) before forcing a
    # hand-off, which showed up as multi-millisecond p99 spikes. 0.5 ms bounds that wait.
    sys.setswitchinterval(0.0005)
    # Polars, NumPy, scikit-learn and the artifacts leave ~170k GC-tracked objects; a full
    # collection walks them all (40-90 ms measured here), and feature-log rows waiting for
    # the writer are long-lived enough to trigger full collections under load: tens-of-ms
    # p99 spikes. Freezing moves everything loaded so far out of the collector's reach;
    # what requests allocate is still collected.
    gc.collect()
    gc.freeze()


def worker_app() -> Any:
    """Granian factory for worker processes (``--workers N``): the spec comes from the env.

    A worker that cannot verify (the store went away since the parent checked, say) prints
    one line and exits with the documented code; Granian then stops the whole server.
    """
    from mlpipe_cli.errors import MlpipeError

    spec = ServeSpec(**json.loads(os.environ[SPEC_ENV]))
    try:
        app = build_app(spec)
    except MlpipeError as exc:
        sys.stderr.write(f"mlpipe serve: worker {os.getpid()}: error: {exc}\n")
        sys.stderr.flush()
        os._exit(int(exc.exit_code))
    tune_serving_process()
    return app


def check_port(host: str, port: int) -> int:
    """The port to serve on (a free one for 0); UsageError (one line) when it is taken.

    Granian binds the port itself and reports a taken port as a RuntimeError carrying a Rust
    backtrace, so the check is made first with a plain socket (a port taken in the instant
    between both binds still fails, with Granian's message cut to its first line).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="pick another --port, or stop the process using it",
            ) from None
        return sock.getsockname()[1]


def _granian_options(spec: ServeSpec) -> dict[str, Any]:
    from granian.constants import Interfaces
    from granian.log import LogLevels

    return {
        "address": spec.host,
        "port": spec.port,
        "interface": Interfaces.RSGI if spec.interface == "rsgi" else Interfaces.ASGI,
        "backlog": 2048,
        # Granian's own log would say "embedded server is experimental" on every start; our
        # start-up lines say what matters, and errors still reach stderr.
        "log_level": LogLevels.error,
        "log_access": False,
        "websockets": False,
    }


def serve(spec: ServeSpec, *, announce: Any = None) -> int:
    """Verify, bind, serve until SIGTERM/SIGINT; return the exit code (0 after a clean stop)."""
    if spec.interface not in ("rsgi", "asgi"):
        raise UsageError(f"--interface must be rsgi or asgi, got {spec.interface!r}")
    app = build_app(spec)  # verification happens here, before binding
    runtime = app.runtime
    try:
        spec.port = check_port(spec.host, spec.port)
        if spec.workers > 1:
            return _serve_processes(spec, app, announce)
        return _serve_embedded(spec, app, announce)
    finally:
        if runtime.logger is not None:
            runtime.logger.close()
        sys.stderr.flush()


def _announce_when_listening(spec: ServeSpec, app: Any, announce: Any) -> None:
    """Call ``announce`` once the port accepts connections (scripts wait for that line).

    Granian's start-up hook runs before its workers listen, so the line would come too early;
    a probe thread connects until the listener answers.
    """
    import threading
    import time

    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(spec.host, spec.host)

    def wait_then_announce() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((probe, spec.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.02)
        else:
            return  # never listened: the server's own error says why
        announce(app, spec.port)

    threading.Thread(target=wait_then_announce, name="mlpipe-announce", daemon=True).start()


def _serve_embedded(spec: ServeSpec, app: Any, announce: Any) -> int:
    import asyncio

    import uvloop
    from granian.server.embed import Server

    tune_serving_process()
    server = Server(app, **_granian_options(spec))
    if announce is not None:
        server.on_startup(lambda: _announce_when_listening(spec, app, announce))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        try:
            await server.serve()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "os error 98" in first or "in use" in first:  # lost the race after check_port
                raise UsageError(f"cannot listen on {spec.host}:{spec.port}: {first}") from None
            raise ServiceUnavailable(
                f"the server stopped: {type(exc).__name__}: {first}",
                hint="see the messages above; start `mlpipe serve` again once fixed",
            ) from None

    uvloop.run(main())
    if not app.started:
        raise UsageError("the server failed to start (see the messages above)")
    if server.interrupt_children:  # the worker stopped without being asked to
        raise ServiceUnavailable(
            "the server stopped unexpectedly (see the messages above)",
            hint="start `mlpipe serve` again once fixed",
        )
    return 0


def _serve_processes(spec: ServeSpec, app: Any, announce: Any) -> int:
    from granian import Granian
    from granian.constants import Loops

    runtime = app.runtime
    if runtime.logger is not None:
        runtime.logger.close()  # nothing is served by the parent
    with contextlib.suppress(Exception):
        runtime.service.store.close()
    os.environ[SPEC_ENV] = json.dumps(asdict(spec))
    # Granian forks its workers by default on Linux; this process has started Polars' and
    # SQLite's threads while verifying, and a fork of a threaded process can deadlock (it did:
    # workers that never served). Spawned workers start clean and verify again themselves.
    import multiprocessing

    multiprocessing.set_start_method("spawn", force=True)
    server = Granian(
        "mlpipe_cli.serving.server:worker_app",
        factory=True,
        workers=spec.workers,
        loop=Loops.uvloop,
        workers_kill_timeout=120,
        **_granian_options(spec),
    )
    if announce is not None:
        server.on_startup(lambda: _announce_when_listening(spec, app, announce))
    with contextlib.suppress(SystemExit):  # Granian exits 1 after a worker died
        server.serve()
    if server.interrupt_children:
        raise ServiceUnavailable(
            "a worker process stopped unexpectedly (see the message above); the server shut "
            "down",
            hint="fix the cause and start `mlpipe serve` again",
        )
    return 0
