"""Run the feature server on Granian: verify everything first, then bind and serve.

Start-up order: load + verify the transform artifact (sha256 and golden example), reach the
online store, check the transform can read its live version, verify and load the model. Any
failure raises before a socket is bound (ArtifactError → exit 3, ServiceUnavailable → exit 4).

The stack is Granian (HTTP handled in Rust) calling the app through RSGI, chosen by
measurement: on this 2-core machine it serves a constant response at ~2x the requests/s of
uvicorn + httptools + a bare ASGI app, and the feature endpoint at ~1.8x (docs/serve.md).
``--interface asgi`` runs the same app through its ASGI entry point instead.

With one worker (the default) Granian runs embedded on this process's uvloop event loop:
SIGTERM or SIGINT stop accepting connections and close idle ones; in-flight requests get
``serving.shutdown_timeout`` to finish (then they are cut, and the summary says how many);
then the feature-log queue is drained into a final segment, a one-line summary (requests,
entities served, log rows written / dropped / failed) goes to stderr, and the process exits 0.
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
import threading
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
    tls_cert: str | None = None  # CLI overrides of serving.tls_cert / tls_key
    tls_key: str | None = None
    shadow_ref: str | None = None  # serve --shadow / serving.shadow.transform
    shadow_model_ref: str | None = None
    # no explicit --artifact: serve what the serving pointer (`mlpipe promote`) names, follow it
    follow: bool = False
    model_explicit: bool = False  # --model given on the command line


def build_app(spec: ServeSpec) -> Any:
    """Load config + artifacts for ``spec`` and return the ASGI app (raises on failure)."""
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.app import ServingApp
    from mlpipe_cli.serving.service import build_runtime

    config = load_config(spec.config_path)
    transform_ref, model_ref, pointer = spec.transform_ref, spec.model_ref, None
    if spec.follow:
        from mlpipe_cli.artifacts import ArtifactStore
        from mlpipe_cli.serving.pointer import read_pointer

        pointer = read_pointer(ArtifactStore(spec.artifact_dir, config.pipeline))
        if pointer is not None:
            if spec.model_explicit:
                raise UsageError(
                    f"serving pointer {pointer.version} names the live model; --model applies "
                    "only with --artifact",
                    hint="promote the model (mlpipe promote VERSION --model M), or pin both "
                    "with --artifact and --model",
                )
            transform_ref = pointer.transform_version
            model_ref = pointer.model_version or "none"
    runtime = build_runtime(
        config,
        Path(spec.artifact_dir),
        transform_ref=transform_ref,
        model_ref=model_ref,
        log_dir=Path(spec.log_dir) if spec.log_dir else None,
        shadow_ref=spec.shadow_ref,
        shadow_model_ref=spec.shadow_model_ref,
    )
    serving = config.serving
    token = serving.auth_token.get_secret_value() if serving.auth_token else None
    app = ServingApp(
        runtime.service,
        runtime.metrics,
        runtime.logger,
        max_batch=serving.max_batch,
        max_body_bytes=serving.max_body_bytes,
        coalesce=serving.coalesce,
        auth_token=token,
        read_timeout=serving.read_timeout.total_seconds(),
        store_timeout=config.online_store.timeout.total_seconds(),
    )
    app.runtime = runtime  # type: ignore[attr-defined]
    app.settings = serving  # type: ignore[attr-defined]
    app.follower = None  # type: ignore[attr-defined]
    if spec.follow:
        _follow_pointer(app, config, Path(spec.artifact_dir), pointer)
    _record_latency(app, config, Path(spec.artifact_dir))
    return app


class LatencyLedger:
    """Writes the feature endpoints' latency histogram to the run ledger every ``interval``
    seconds and once more, final, at shutdown (``mlpipe slo`` reads it; no Prometheus needed).
    A ledger that cannot be written never stops the server: one warning on stderr."""

    def __init__(self, metrics: Any, artifact_dir: Path, pipeline: str, interval: float) -> None:
        from datetime import UTC, datetime

        self.metrics = metrics
        self.artifact_dir = artifact_dir
        self.pipeline = pipeline
        self.interval = interval
        self.started_at = datetime.now(UTC)
        self.written = 0
        self._warned = False
        self._final = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.write(final=False)  # the ledger knows this server runs from its first second
        self._thread = threading.Thread(target=self._run, name="mlpipe-ledger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write(final=False)

    def stop(self) -> None:
        """The final snapshot (idempotent; after in-flight requests were answered)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if not self._final and self._thread is not None:
            self._final = True
            self.write(final=True)

    def write(self, *, final: bool) -> None:
        from mlpipe_cli.ledger import write_serving_snapshot

        try:
            write_serving_snapshot(
                self.artifact_dir,
                self.pipeline,
                started_at=self.started_at,
                snapshot=self.metrics.latency_snapshot(),
                final=final,
            )
            self.written += 1
        except Exception as exc:
            if not self._warned:
                self._warned = True
                sys.stderr.write(
                    f"mlpipe serve: warning: latency not written to the run "
                    f"ledger: {type(exc).__name__}: {exc}\n"
                )


def _record_latency(app: Any, config: Any, artifact_dir: Path) -> None:
    recorder = LatencyLedger(
        app.metrics, artifact_dir, config.pipeline, config.serving.ledger_interval.total_seconds()
    )
    app.latency_ledger = recorder
    started, stopped = app.on_startup, app.on_shutdown

    def on_startup() -> None:
        started()
        recorder.start()

    def on_shutdown() -> None:
        stopped()
        recorder.stop()

    app.on_startup = on_startup
    app.on_shutdown = on_shutdown


def _follow_pointer(app: Any, config: Any, artifact_dir: Path, pointer: Any) -> None:
    """Watch the serving pointer from start-up to shutdown (serving/follow.py)."""
    from mlpipe_cli.serving.follow import PointerFollower

    follower = PointerFollower(
        app, config, artifact_dir, current=pointer.version if pointer else None,
        interval=config.serving.follow_interval.total_seconds(),
        grace=max(5.0, 2 * config.online_store.timeout.total_seconds()),
    )  # fmt: skip
    app.follower = follower
    app.pointer_version = pointer.version if pointer else None
    started, stopped = app.on_startup, app.on_shutdown

    def on_startup() -> None:
        started()
        follower.start()

    def on_shutdown() -> None:
        follower.stop()
        stopped()

    app.on_startup = on_startup
    app.on_shutdown = on_shutdown


def resolve_tls(spec: ServeSpec, serving: Any) -> tuple[Path, Path, str | None] | None:
    """(cert, key, key password) to serve HTTPS with, checked now; None for plain HTTP.

    Granian would report a bad certificate from a worker with a Rust backtrace; loading the
    pair with Python's ssl module first turns it into one line (exit 2).
    """
    import ssl

    cert = spec.tls_cert or (str(serving.tls_cert) if serving.tls_cert else None)
    key = spec.tls_key or (str(serving.tls_key) if serving.tls_key else None)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError(
            "TLS needs both a certificate and a key (--tls-cert and --tls-key, or "
            "serving.tls_cert and serving.tls_key)"
        )
    password = serving.tls_key_password.get_secret_value() if serving.tls_key_password else None
    for label, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise UsageError(f"TLS {label} {path} is not a readable file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise UsageError(
            f"TLS certificate {cert} and key {key} cannot be used: {reason}",
            hint="give a PEM certificate and its matching PEM private key",
        ) from None
    return Path(cert), Path(key), password


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable


def exposure_warnings(host: str, *, token: bool, tls: bool) -> list[str]:
    """Warnings for a server others can reach without protection (printed at start)."""
    if is_loopback(host):
        return []
    if not token:
        return [
            f"warning: listening on {host} (not loopback) without serving.auth_token: anyone "
            "who can reach this port can read features and scores (set serving.auth_token: "
            "${MLPIPE_SERVE_TOKEN}, or bind 127.0.0.1 behind a proxy)"
        ]
    if not tls:
        return [
            f"warning: listening on {host} without TLS: the bearer token crosses the network "
            "in clear text (set serving.tls_cert and serving.tls_key, or terminate TLS in a "
            "proxy)"
        ]
    return []


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
    close = app.on_shutdown

    def on_shutdown() -> None:
        close()
        sys.stderr.write(f"mlpipe serve: worker {os.getpid()}: {shutdown_summary(app)}\n")
        sys.stderr.flush()

    app.on_shutdown = on_shutdown
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


def _granian_options(spec: ServeSpec, serving: Any) -> dict[str, Any]:
    from granian.constants import Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    options: dict[str, Any] = {
        "address": spec.host,
        "port": spec.port,
        "interface": Interfaces.RSGI if spec.interface == "rsgi" else Interfaces.ASGI,
        "backlog": 2048,
        # Granian's own log would say "embedded server is experimental" on every start; our
        # start-up lines say what matters, and errors still reach stderr.
        "log_level": LogLevels.error,
        "log_access": False,
        "websockets": False,
        # a client that sends its headers slowly (slowloris) is dropped after read_timeout;
        # the app bounds the body read the same way (408)
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, int(serving.read_timeout.total_seconds() * 1000))
        ),
    }
    tls = resolve_tls(spec, serving)
    if tls is not None:
        options.update(
            ssl_cert=tls[0], ssl_key=tls[1], ssl_key_password=tls[2],
            ssl_protocol_min=SSLProtocols.tls12,
        )  # fmt: skip
    return options


def serve(spec: ServeSpec, *, announce: Any = None) -> int:
    """Verify, bind, serve until SIGTERM/SIGINT; return the exit code (0 after a clean stop)."""
    if spec.interface not in ("rsgi", "asgi"):
        raise UsageError(f"--interface must be rsgi or asgi, got {spec.interface!r}")
    app = build_app(spec)  # verification happens here, before binding
    options = _granian_options(spec, app.settings)  # TLS files checked here (exit 2)
    app.tls = "ssl_cert" in options
    try:
        spec.port = check_port(spec.host, spec.port)
        options["port"] = spec.port
        for line in exposure_warnings(
            spec.host, token=app.settings.auth_token is not None, tls="ssl_cert" in options
        ):
            sys.stderr.write(f"mlpipe serve: {line}\n")
        if spec.workers > 1:
            return _serve_processes(spec, app, announce, options)
        return _serve_embedded(spec, app, announce, options)
    finally:
        app.latency_ledger.stop()  # no-op when on_shutdown already wrote the final one
        if app.follower is not None:
            app.follower.stop()
        if app.runtime.logger is not None:
            app.runtime.logger.close()
        if spec.workers == 1 and app.started:
            sys.stderr.write(f"mlpipe serve: {shutdown_summary(app)}\n")
        sys.stderr.flush()


def shutdown_summary(app: Any) -> str:
    """One line: what this process served and what became of its feature-log rows."""
    metrics = app.metrics
    text = f"stopped: {app.requests_total} requests, {metrics.entities_served} entities served"
    runtime = app.runtime
    if runtime.logger is None:
        return text + "; feature log off"
    written, dropped, failed, sampled_out = (
        runtime.log_total(k) for k in ("written", "dropped", "failed", "sampled_out")
    )
    accounted = written + dropped + failed + sampled_out
    text += (
        f"; feature log: {written} rows written, {dropped} dropped (queue full), {failed} failed"
    )
    if runtime.logger.sample_rate < 1.0:
        text += f", {sampled_out} sampled out (sample_rate {runtime.logger.sample_rate:g})"
    if runtime.shadow is not None:
        text += (
            f"; shadow {runtime.shadow.transform_version}: "
            f"{runtime.log_total('shadow.rows')} rows, "
            f"{runtime.log_total('shadow.transform_failures')} transform and "
            f"{runtime.log_total('shadow.model_failures')} model failures"
        )
    lost = metrics.entities_served - accounted
    if lost:
        text += f", {lost} unaccounted"
    return text


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


def _serve_embedded(spec: ServeSpec, app: Any, announce: Any, options: dict[str, Any]) -> int:
    import asyncio

    import uvloop
    from granian.server.embed import Server

    tune_serving_process()
    server = Server(app, **options)
    # Granian stops accepting at once, closes idle keep-alive connections and waits for
    # in-flight requests; past shutdown_timeout it cancels them (they are counted below).
    drain = app.settings.shutdown_timeout.total_seconds()
    server.workers_kill_timeout = drain
    if announce is not None:
        server.on_startup(lambda: _announce_when_listening(spec, app, announce))

    def stop() -> None:
        if not app.stopping:
            app.stopping = True
            sys.stderr.write(
                f"mlpipe serve: stopping: {app.in_flight} requests in flight get up to "
                f"{drain:g} s to finish (serving.shutdown_timeout)\n"
            )
            sys.stderr.flush()
        server.stop()

    def loop_error(loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if app.stopping and isinstance(exc, asyncio.InvalidStateError):
            # Granian's shutdown callback resolving the future of a worker task it had just
            # cancelled at the drain deadline: harmless, the server is stopping anyway
            return
        text = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        sys.stderr.write(f"mlpipe serve: event loop: {context.get('message', '')} {text}\n")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(loop_error)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await server.serve()
        except TimeoutError:
            if not app.stopping:
                raise
            # the drain deadline passed (Granian's join of its worker timed out)
            app.cut = app.in_flight
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "os error 98" in first or "in use" in first:  # lost the race after check_port
                raise UsageError(f"cannot listen on {spec.host}:{spec.port}: {first}") from None
            raise ServiceUnavailable(
                f"the server stopped: {type(exc).__name__}: {first}",
                hint="see the messages above; start `mlpipe serve` again once fixed",
            ) from None

    uvloop.run(main())
    if app.cut:
        sys.stderr.write(
            f"mlpipe serve: {app.cut} requests were still in flight after {drain:g} s "
            "(serving.shutdown_timeout) and were cut\n"
        )
    if not app.started:
        raise UsageError("the server failed to start (see the messages above)")
    if server.interrupt_children:  # the worker stopped without being asked to
        raise ServiceUnavailable(
            "the server stopped unexpectedly (see the messages above)",
            hint="start `mlpipe serve` again once fixed",
        )
    return 0


def _serve_processes(spec: ServeSpec, app: Any, announce: Any, options: dict[str, Any]) -> int:
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
        workers_kill_timeout=max(1, int(app.settings.shutdown_timeout.total_seconds())),
        **options,
    )
    if announce is not None:
        server.on_startup(lambda: _announce_when_listening(spec, app, announce))
    with contextlib.suppress(SystemExit):  # Granian exits 1 after a worker died
        server.serve()
    if server.interrupt_children:
        raise ServiceUnavailable(
            "a worker process stopped unexpectedly (see the message above); the server shut down",
            hint="fix the cause and start `mlpipe serve` again",
        )
    return 0
