"""The SparkSession of a command, and mlpipe errors raised inside Spark tasks.

A task that raises an ``MlpipeError`` (a null spine timestamp, a bad key type) must reach the
user as the same one-line error and exit code as on the Polars engine, not as a Java stack
trace: ``task_errors`` encodes it into the task's exception text and ``translate_errors``
finds it again on the driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from mlpipe_cli import errors
from mlpipe_cli.errors import MlpipeError, UsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mlpipe_cli.config import PipelineConfig

_MARK = "MLPIPE-ERROR:"
T = TypeVar("T")

# Settings mlpipe relies on; a user's `spark.conf` may override the others but not these.
_REQUIRED_CONF = {
    # every timestamp crosses Spark as an instant in UTC; naive ones stay naive (TIMESTAMP_NTZ)
    "spark.sql.session.timeZone": "UTC",
    # nanosecond Parquet timestamps arrive as their Int64 ticks instead of failing the read
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
_DEFAULT_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # tasks pass Arrow batches to Python; bigger batches mean fewer round trips
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
}


def spark_session(config: PipelineConfig) -> SparkSession:
    """The session for ``config.spark``: an active one is reused (tests, spark-submit)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError(
            "engine spark needs pyspark, which is not installed",
            hint="pip install 'mlpipe-cli[spark]' (and Java 17+)",
        ) from None
    # pyspark 4.3 warns that pandas >= 3 is not fully supported; mlpipe passes Spark Arrow
    # batches only (mapInArrow, toArrow), never pandas frames
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    settings = config.spark
    # the Python workers must run the interpreter that has mlpipe (and its Polars) installed
    python = settings.python or os.environ.get("PYSPARK_PYTHON") or sys.executable
    os.environ["PYSPARK_PYTHON"] = python
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in _REQUIRED_CONF.items():
            active.conf.set(key, value)
        return active
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise UsageError(
            "engine spark needs Java 17 or newer, and no `java` is on PATH",
            hint="install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME",
        )
    builder = SparkSession.builder.appName(settings.app_name or f"mlpipe-{config.pipeline}")
    # under spark-submit the master comes from its --master flag
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        builder = builder.master(settings.master)
    for key, value in {**_DEFAULT_CONF, **settings.conf, **_REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    try:
        if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # (spark-submit started the JVM)
            _launch_quiet_gateway(builder)
        session = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up failures come in several types
        hint = "check spark.master and that Java 17+ runs"
        reason = _first_line(exc)
        if _driver_log is not None:
            _keep_driver_log()
            hint += f"; the Spark driver's output is in {_driver_log}"
            # a JVM that exited at once said why (a bad -Xmx, an unknown option) in its log
            reason = _jvm_reason(_driver_log) or reason
        raise UsageError(
            f"cannot start Spark (master {settings.master}): {reason}", hint=hint
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    return session


# -- the driver JVM's own output ------------------------------------------------------------
#
# The JVM that pyspark starts inherits this process's stdout and stderr and prints to them
# before any log level can be set ("Using incubator modules", "Using Spark's default log4j
# profile", the NativeCodeLoader and hostname WARNs), and its Python workers' warnings go
# there too. From cron or CI stderr must hold mlpipe's one-line errors only, so the JVM
# gets a log file instead: removed when the process ends, kept (and named in the error's
# hint) when Spark failed.

_driver_log: str | None = None
_keep = False


def _launch_quiet_gateway(builder: Any) -> None:
    """Start the JVM the way ``getOrCreate`` would (same conf, so spark-submit gets the same
    ``--conf`` flags) but with its stdout and stderr in a log file; ``getOrCreate`` then
    finds this gateway and uses it."""
    import atexit
    import tempfile

    from pyspark import SparkConf
    from pyspark.core.context import SparkContext
    from pyspark.java_gateway import launch_gateway

    global _driver_log
    with SparkContext._lock:
        if SparkContext._gateway is not None:  # a JVM runs already (a stopped session's)
            return
        conf = SparkConf()
        for key, value in builder._options.items():
            conf.set(key, value)
        handle, _driver_log = tempfile.mkstemp(prefix="mlpipe-spark-driver-", suffix=".log")
        atexit.register(_remove_driver_log)
        with os.fdopen(handle, "wb") as log:  # (a JVM that fails to start says why in it)
            gateway = launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})
        SparkContext._gateway = gateway
        SparkContext._jvm = gateway.jvm


def _jvm_reason(log: str) -> str | None:
    try:
        with open(log, encoding="utf-8", errors="replace") as text:
            lines = [line.strip() for line in text.read(20_000).splitlines()]
    except OSError:
        return None
    useful = [line for line in lines if line and not line.startswith(("WARNING:", "Using "))]
    return useful[0][:300] if useful else None


def _keep_driver_log() -> None:
    global _keep
    _keep = True


def _remove_driver_log() -> None:
    if _driver_log is not None and not _keep:
        with contextlib.suppress(OSError):
            os.unlink(_driver_log)


def task_errors(function: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    """Wrap a per-partition function so an MlpipeError crosses the JVM intact."""

    def run(*args: Any, **kwargs: Any) -> Iterator[T]:
        try:
            yield from function(*args, **kwargs)
        except MlpipeError as exc:
            payload = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
            raise RuntimeError(_MARK + json.dumps(payload) + _MARK) from None

    run.__name__ = getattr(function, "__name__", "task")
    return run


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn a failed Spark job back into the MlpipeError a task raised (or a one-line one)."""
    try:
        yield
    except MlpipeError:
        raise
    except Exception as exc:
        text = str(exc)
        start = text.find(_MARK)
        end = text.find(_MARK, start + len(_MARK)) if start >= 0 else -1
        if start >= 0 and end > start:
            payload = json.loads(text[start + len(_MARK) : end])
            cls = getattr(errors, payload["type"], None)
            if not (isinstance(cls, type) and issubclass(cls, MlpipeError)):
                cls = MlpipeError
            raise cls(payload["message"], hint=payload["hint"]) from None
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            where = "the Spark driver and executor logs hold the details"
            if _driver_log is not None:
                _keep_driver_log()
                where = f"the Spark driver's log ({_driver_log}) and executor logs hold the details"
            raise errors.InputError(
                f"Spark failed while {what}: {_spark_reason(text)}", hint=where
            ) from None
        raise


# a failure with no job of its group seen this long after it submitted none (the listener bus
# takes milliseconds to report a job's start, and the job started before the failure)
_UNSEEN_SECONDS = 2.0
# the SparkContext's thread-local properties setJobGroup sets (restored afterwards: PySpark's
# SparkContext has no clearJobGroup, and a session may be the caller's own)
_JOB_GROUP_PROPERTIES = (
    "spark.jobGroup.id",
    "spark.job.description",
    "spark.job.interruptOnCancel",
)


@contextlib.contextmanager
def settled_on_failure(spark: Any, what: str, timeout: float = 120.0) -> Iterator[None]:
    """Run the jobs started inside as one job group; if they fail, cancel the group and
    return (re-raise) only once every task of it has ended, or after ``timeout`` seconds.

    A job fails as soon as one task fails, while its other tasks run on until Spark stops
    them: a task that writes to the online store could still be writing (and hold the
    version's lease) after the driver reports the failure. The caller then gives the version
    up, so it must know nothing else writes it any more.
    """
    import time
    import uuid

    context = spark.sparkContext
    saved = {key: context.getLocalProperty(key) for key in _JOB_GROUP_PROPERTIES}
    group = f"mlpipe-{uuid.uuid4().hex}"
    context.setJobGroup(group, what)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            context.cancelJobGroup(group)  # a Ctrl-C: the jobs still run
            tracker = context.statusTracker()
            start = time.monotonic()
            while not (settled := _settled(tracker, group)):
                if settled is None and time.monotonic() - start > _UNSEEN_SECONDS:
                    break  # it failed before it submitted a job (a plan error, say)
                if time.monotonic() - start > timeout:
                    sys.stderr.write(
                        f"warning: Spark tasks of the failed job were still running after "
                        f"{timeout:g} s\n"
                    )
                    break
                time.sleep(0.05)
        raise
    finally:
        # a JVM that died with the job cannot take them back: the error that ended the job
        # is the one to report, not this
        with contextlib.suppress(Exception):
            for key, value in saved.items():
                context.setLocalProperty(key, value)  # None removes it


def _settled(tracker: Any, group: str) -> bool | None:
    """Has every job of ``group`` ended, and every task of its stages? None: no job of it
    seen. The status tracker learns of jobs and tasks asynchronously (Spark's listener bus,
    stage figures refreshed every ~100 ms): a job it has not seen end is still running."""
    jobs = tracker.getJobIdsForGroup(group)
    if not jobs:
        return None
    for job in jobs:
        info = tracker.getJobInfo(job)
        if info is None or info.status not in ("SUCCEEDED", "FAILED"):
            return False
        for stage in info.stageIds:
            stage_info = tracker.getStageInfo(stage)  # None: long gone from the store
            if stage_info is not None and stage_info.numActiveTasks > 0:
                return False
    return True


def _spark_reason(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "File ", "Traceback", "JVM stacktrace")):
            return line[:300]
    return "unknown error"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
