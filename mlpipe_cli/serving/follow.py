"""A running server follows the ``serving`` pointer (`mlpipe promote`, serving/pointer.py).

`mlpipe serve` started without an explicit ``--artifact`` (and ``serving.artifact: latest``)
serves the versions the pointer names and watches it: a thread reads ``serving/LATEST`` every
``serving.follow_interval``. When it changes, the thread loads and verifies the new versions
exactly as at start-up (sha256 of every file, golden example, model bound to the transform,
the transform can read the online store's live features), then starts their feature log and
hands a new ``FeatureService`` to the event loop, which swaps it in within one callback:
between requests. A request that was waiting for the store when the swap happened is
answered, scored and logged by the version that served it (``Served.origin``), so every
response names exactly one version. A verification that fails leaves the old version
serving; the reason goes to stderr and ``mlpipe_serve_pointer_switch_failures_total``.
The previous version's feature log gets a grace period for such in-flight rows, then is
flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import ArtifactError, MlpipeError

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.serving.model import RegisteredModel


@dataclass
class LiveVersions:
    """A transform (and model) loaded, verified and checked against the store's live version."""

    transform: Any
    model: RegisteredModel | None
    metadata: Any
    request_time_columns: list[str]
    transform_content_hash: str


def load_versions(
    config: PipelineConfig,
    artifacts: Any,
    metadata: Any,
    *,
    transform_ref: str,
    model_ref: str | None,
    expected_content_hash: str | None = None,
) -> LiveVersions:
    """Everything `serve` verifies at start, for one transform/model pair (ArtifactError)."""
    from mlpipe_cli.serving.model import load_model
    from mlpipe_cli.serving.service import check_compatibility, request_time_columns
    from mlpipe_cli.transforms import load_transform

    if metadata is None:
        raise ArtifactError(
            "the online store has no live materialized version", hint="run `mlpipe materialize`"
        )
    transform = load_transform(artifacts, transform_ref)  # sha256 + golden example
    content_hash = artifacts.get("transform", transform.version, verify=False).content_hash
    if expected_content_hash is not None and content_hash != expected_content_hash:
        raise ArtifactError(
            f"transform {transform.version} is not the content the serving pointer was "
            f"promoted with (content hash {content_hash[:12]} != {expected_content_hash[:12]})"
        )
    request_time = request_time_columns(config, metadata, transform)
    check_compatibility(transform, metadata, config.serving.cold_start, request_time)
    model = None
    if model_ref is not None:
        model = load_model(
            artifacts,
            model_ref,
            transform_version=transform.version,
            transform_content_hash=content_hash,
            output_columns=list(transform.output_columns),
        )
    return LiveVersions(transform, model, metadata, request_time, content_hash)


class PointerFollower:
    """The thread that watches the serving pointer and switches the app's live service."""

    def __init__(
        self,
        app: Any,
        config: PipelineConfig,
        artifact_dir: Path,
        *,
        current: str | None,
        interval: float,
        grace: float,
    ) -> None:
        self.app = app
        self.config = config
        self.artifact_dir = Path(artifact_dir)
        self.current = current  # pointer version being served (None: not promoted yet)
        self.interval = interval
        self.grace = grace  # the old feature log stays open this long for in-flight rows
        self.switches = 0
        self.failures = 0
        self._refused: str | None = None  # a pointer version that failed: not retried
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retiring: list[tuple[float, Any]] = []  # (close at, logger)
        metrics = app.metrics
        metrics.counters["mlpipe_serve_pointer_switches_total"] = (
            "Switches to a newly promoted serving pointer.",
            lambda: self.switches,
        )
        metrics.counters["mlpipe_serve_pointer_switch_failures_total"] = (
            "Promoted serving pointers this server refused (verification failed).",
            lambda: self.failures)  # fmt: skip

    # -- lifecycle (called on the event-loop thread) ------------------------------------

    def start(self) -> None:
        # Granian's worker processes (--workers N) call __rsgi_init__, and so this, before
        # their loop runs; the app keeps that loop. Without it a promote would swap the
        # service on the watcher thread, while requests run.
        self._loop = getattr(self.app, "loop", None)
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="mlpipe-pointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        for _, logger in self._retiring:
            logger.close()
        self._retiring.clear()

    # -- the watcher thread -------------------------------------------------------------

    def _run(self) -> None:
        from mlpipe_cli.artifacts import ArtifactStore
        from mlpipe_cli.serving.pointer import current_pointer_version

        store = ArtifactStore(self.artifact_dir, self.config.pipeline)
        problem_logged: str | None = None
        while not self._stop.wait(self.interval):
            self._close_retired()
            try:
                latest = current_pointer_version(store)
            except MlpipeError as exc:  # a corrupt LATEST: keep serving, say so once
                if str(exc) != problem_logged:
                    problem_logged = str(exc)
                    _say(
                        f"serving pointer unreadable, still serving "
                        f"{self.app.transform_version}: {exc}"
                    )
                continue
            problem_logged = None
            if latest is None or latest in (self.current, self._refused):
                continue
            try:
                self._switch(store, latest)
            except Exception as exc:
                self.failures += 1
                self._refused = latest
                reason = (
                    str(exc) if isinstance(exc, MlpipeError) else (f"{type(exc).__name__}: {exc}")
                )
                _say(
                    f"serving pointer {latest} not applied, still serving transform "
                    f"{self.app.transform_version}: {reason}"
                )

    def _switch(self, store: Any, version: str) -> None:
        from mlpipe_cli.online import open_store
        from mlpipe_cli.serving.pointer import read_pointer
        from mlpipe_cli.serving.service import new_feature_logger

        pointer = read_pointer(store, version)
        assert pointer is not None
        online = open_store(self.config, self.artifact_dir)  # this thread's own connection
        try:
            online.ping()
            metadata = online.live_metadata()
        finally:
            with contextlib.suppress(Exception):
                online.close()
        loaded = load_versions(
            self.config, store, metadata, transform_ref=pointer.transform_version,
            model_ref=pointer.model_version,
            expected_content_hash=pointer.transform_content_hash,
        )  # fmt: skip
        runtime = self.app.runtime
        logger = None
        if runtime.logger is not None:
            logger = new_feature_logger(
                self.config, runtime.logger.log_dir, loaded.transform, runtime.shadow
            )
            logger.start(self._loop)
        done = threading.Event()
        failure: list[BaseException] = []
        retired: list[Any] = []

        def apply() -> None:
            try:
                retired.append(self._apply(loaded, logger))
            except BaseException as exc:  # reported by the watcher thread
                failure.append(exc)
            finally:
                done.set()

        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(apply)  # one loop callback: between requests
            done.wait()
        else:
            apply()
        if failure:
            if logger is not None:
                logger.close()
            raise failure[0]
        if retired and retired[0] is not None:
            self._retiring.append((time.monotonic() + self.grace, retired[0]))
        self.current = version
        self.switches += 1
        model = loaded.model.binding.model_version if loaded.model else "none"
        _say(
            f"switched to serving pointer {version}: transform {loaded.transform.version}, "
            f"model {model}"
        )

    def _apply(self, loaded: LiveVersions, logger: Any) -> Any:
        """Swap the live service (on the event loop: no request runs meanwhile); returns the
        feature log it replaced."""
        from mlpipe_cli.serving.service import FeatureService

        app = self.app
        runtime = app.runtime
        old = app.service
        service = FeatureService(
            store=old.store, transform=loaded.transform, metadata=loaded.metadata,
            store_type=old.store_type, pipeline=old.pipeline,
            cold_start=old.cold_start_overrides,
            request_time_columns=loaded.request_time_columns, model=loaded.model,
            metrics=old.metrics, logger=logger,
        )  # fmt: skip
        service.health = old.health
        if logger is not None:
            service.log_columns = list(logger.raw_columns)
        app.service = service
        app.logger = logger
        app.transform_version = service.transform_version
        app._openapi = None  # it lists the output columns
        runtime.service = service
        old_logger = runtime.logger
        if old_logger is not None:
            runtime.retired_loggers.append(old_logger)
        runtime.logger = logger
        app.metrics.info.update(
            transform_version=service.transform_version,
            model_version=loaded.model.binding.model_version if loaded.model else "",
        )
        return old_logger

    def _close_retired(self) -> None:
        now = time.monotonic()
        keep = []
        for close_at, logger in self._retiring:
            if close_at <= now:
                logger.close()  # flushes its last rows into a segment
            else:
                keep.append((close_at, logger))
        self._retiring = keep


def _say(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"{stamp} mlpipe serve: {text}\n")
    with contextlib.suppress(Exception):
        sys.stderr.flush()
