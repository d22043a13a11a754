"""Benchmark the serving feature log (`FeatureLogger`): request-path cost and writer GIL stalls.

Measured, for each --segment-rows value (default 200,000 and 20,000; each run lasts at least
long enough to fill one segment, so a segment write happens while measuring):

- the request-path ``log()`` cost per row: p50/p99 of individually timed calls made during
  the load run (the writer running), and the mean of a tight loop of calls with no writer;
- how long the writer thread keeps the main thread from running: the main thread logs
  realistic rows at a fixed rate (default 15,000 rows/s: 8 raw values mixing int, float, str
  and None, a 17-float vector, a prediction) and, between rows, sleeps 0.2 ms
  (``time.sleep`` releases the GIL, so waking up needs the GIL back) and records how late it
  woke up. A writer holding the GIL for X ms shows as a wake-up X ms late. Reported: p50,
  p99, p99.9 and max lateness, the number of wake-ups more than 1 ms and 5 ms late, and the
  full (generation 2) garbage collections of the run — those stall every thread whichever
  thread runs them, and take ~20-40 ms in a process with Polars loaded.

A baseline without any logger runs in turn with the implementations (a VM shared with other
work is noisy: compare numbers from the same invocation). ``sys.setswitchinterval(0.0005)`` is
set as `mlpipe serve` does; the logger otherwise runs with the server's defaults (queue_rows
100,000, flush_interval 60 s, default poll interval). At the end of each run ``close()``
drains everything and the counters are checked (written + dropped == logged, failed == 0,
the segment files hold ``written`` rows).

--impl selects the implementation of mlpipe_cli/serving/featurelog.py; repeat it to compare:
``--impl git:REV`` (the file at that revision, e.g. before a change), ``--impl FILE`` or
``--impl tree`` (the working tree, the default). --trace wraps the writer's methods and records garbage
collections, then prints what the writer was doing during the longest stalls.

Usage: .venv/bin/python benchmarks/bench_featurelog.py [--seconds S] [--rate R]
       [--segment-rows N ...] [--runs K] [--impl git:REV|FILE|tree ...] [--trace] [--no-baseline]
Run full-size benchmarks under `flock /tmp/mlpipe-bench.lock`.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RAW_COLUMNS = [
    "total_orders", "lifetime_value", "orders_30d", "revenue_30d", "days_since_last_order",
    "age", "country", "plan",
]  # fmt: skip
RAW_DTYPES = {
    "total_orders": "Int64", "lifetime_value": "Float64", "orders_30d": "Int64",
    "revenue_30d": "Float64", "days_since_last_order": "Int64", "age": "Int64",
    "country": "String", "plan": "String",
}  # fmt: skip
VEC_COLUMNS = [
    "total_orders", "lifetime_value", "orders_30d", "revenue_30d", "days_since_last_order",
    "age", *(f"country__{c}" for c in ("US", "DE", "GB", "FR", "IN", "BR", "JP", "CA")),
    *(f"plan__{p}" for p in ("free", "pro", "enterprise")),
]  # fmt: skip
assert len(VEC_COLUMNS) == 17
SLEEP = 0.0002
TRACED = [  # writer methods of the old and the new implementation
    "_drain", "frame", "_write_frames", "_write", "_take", "_convert_into", "_write_parts",
]  # fmt: skip


def load_impl(spec: str | None) -> ModuleType:
    if spec in (None, "", "tree"):
        from mlpipe_cli.serving import featurelog

        return featurelog
    if spec.startswith("git:"):
        text = subprocess.run(
            ["git", "show", f"{spec[4:]}:mlpipe_cli/serving/featurelog.py"],
            cwd=REPO, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        path = Path(tempfile.mkdtemp(prefix="featurelog-impl-")) / "featurelog_impl.py"
        path.write_text(text)
    else:
        path = Path(spec)
    module_spec = importlib.util.spec_from_file_location(f"featurelog_{len(spec)}", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class RowPool:
    """Realistic served rows; each call builds fresh tuple/list objects as the server does."""

    def __init__(self, size: int = 4096, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.raws: list[tuple[Any, ...]] = []
        self.vectors: list[list[float]] = []
        self.entities: list[str] = []
        self.predictions: list[float] = []
        for i in range(size):
            self.raws.append((
                rng.randint(0, 500), round(rng.uniform(0, 5000), 2),
                None if i % 9 == 0 else rng.randint(0, 40), rng.uniform(0, 800),
                rng.randint(0, 365), None if i % 13 == 0 else rng.randint(18, 90),
                rng.choice(["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA"]),
                None if i % 17 == 0 else rng.choice(["free", "pro", "enterprise"]),
            ))  # fmt: skip
            vector = [rng.gauss(0, 1) for _ in range(6)] + [0.0] * 11
            vector[6 + rng.randrange(8)] = 1.0
            vector[14 + rng.randrange(3)] = 1.0
            self.vectors.append(vector)
            self.entities.append(f"[{rng.randint(0, 10**6)}]")
            self.predictions.append(rng.random())
        self.size = size

    def args(self, i: int) -> tuple[Any, ...]:
        k = i % self.size
        return (
            "/features/{entity_id}", self.entities[k], "0003-7f3a", i % 50 == 0,
            tuple(self.raws[k]), list(self.vectors[k]), self.predictions[k],
        )  # fmt: skip


def make_logger(impl: ModuleType, log_dir: Path, segment_rows: int, **kwargs: Any) -> Any:
    return impl.FeatureLogger(
        log_dir,
        transform_version="0003-0123456789ab",
        raw_columns=RAW_COLUMNS,
        raw_dtypes=RAW_DTYPES,
        vec_columns=VEC_COLUMNS,
        segment_rows=segment_rows,
        **kwargs,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Tracer:
    """Intervals (thread-local clock) of the writer's methods and of garbage collections."""

    def __init__(self, logger: Any) -> None:
        self.events: list[tuple[float, float, str]] = []
        self._gc_start: float | None = None
        for name in TRACED:
            method = getattr(logger, name, None)
            if callable(method):
                setattr(logger, name, self._wrap(name, method))
        gc.callbacks.append(self._gc)

    def _wrap(self, name: str, method: Any) -> Any:
        def traced(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.events.append((t0, time.perf_counter(), name))

        return traced

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        elif self._gc_start is not None:
            where = "writer" if threading.current_thread().name != "MainThread" else "main"
            self.events.append((self._gc_start, now, f"gc{info['generation']}@{where}"))
            self._gc_start = None

    def close(self) -> None:
        gc.callbacks.remove(self._gc)

    def report(self, wakeups: list[tuple[float, float]], top: int = 8) -> None:
        worst = sorted(wakeups, key=lambda w: w[1], reverse=True)[:top]
        for woke, late in worst:
            start = woke - late - SLEEP
            overlap = sorted(
                {name for (a, b, name) in self.events if a < woke and b > start - 0.0005}
            )
            print(f"      stall {late * 1000:7.2f} ms during: {', '.join(overlap) or '-'}")


class FullGcs:
    """Durations of full (generation 2) garbage collections, in any thread."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._start = time.perf_counter()
            else:
                self.durations.append(time.perf_counter() - self._start)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def measure(
    impl: ModuleType | None, segment_rows: int, seconds: float, rate: float, trace: bool
) -> dict[str, Any]:
    """One load run; impl None is the baseline without any logger."""
    pool = RowPool()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-featurelog-"))
    logger = make_logger(impl, log_dir, segment_rows) if impl is not None else None
    tracer = Tracer(logger) if trace and logger is not None else None
    gc.collect()
    full_gcs = FullGcs()
    load1, cpu0 = os.getloadavg()[0], os.times()
    if logger is not None:
        logger.start()
    log = logger.log if logger is not None else None
    clock = time.perf_counter
    clock_ns = time.perf_counter_ns
    wakeups: list[tuple[float, float]] = []
    costs: list[int] = []
    logged = 0
    start = clock()
    end = start + seconds
    now = start
    while now < end:
        before = clock()
        time.sleep(SLEEP)
        now = clock()
        wakeups.append((now, now - before - SLEEP))
        due = int((now - start) * rate)
        while logged < due:
            args = pool.args(logged)
            if log is not None:
                t0 = clock_ns()
                log(*args, 1_782_864_000_000_000 + logged)
                costs.append(clock_ns() - t0)
            logged += 1
    cpu1 = os.times()  # the main thread and the writer thread, during the load run
    result: dict[str, Any] = {
        "logged": logged,
        "wakeups": len(wakeups),
        "load1": load1,
        "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
    }
    lateness = [late for _, late in wakeups]
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        result[name] = pct(lateness, q) * 1000
    result["max"] = max(lateness) * 1000
    result["over1"] = sum(late > 0.001 for late in lateness)
    result["over5"] = sum(late > 0.005 for late in lateness)
    if logger is not None:
        t0 = clock()
        logger.close()
        result["close_ms"] = (clock() - t0) * 1000
        result["log_p50_ns"] = pct(costs, 0.5)
        result["log_p99_ns"] = pct(costs, 0.99)
        ok = logger.written + logger.dropped == logged and logger.failed == 0
        result["counters"] = (
            f"written {logger.written} dropped {logger.dropped} failed {logger.failed} "
            f"segments {logger.segments} depth {logger.depth}" + ("" if ok else "  MISMATCH")
        )
        files = sorted(log_dir.glob("segment-*.parquet"))
        if files:
            import polars as pl

            rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
            if rows != logger.written:
                result["counters"] += f"  FILES HOLD {rows} ROWS"
    full_gcs.close()
    result["gc2"] = len(full_gcs.durations)
    result["gc2_max"] = max(full_gcs.durations, default=0.0) * 1000
    if tracer is not None:
        tracer.close()
        tracer.report(wakeups)
    for f in log_dir.glob("*"):
        f.unlink()
    log_dir.rmdir()
    return result


def tight_log_cost(impl: ModuleType, calls: int = 200_000) -> float:
    """Mean ns per log() with no writer running (queue large enough to accept every row)."""
    pool = RowPool()
    args = [pool.args(i) for i in range(calls)]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-featurelog-"))
    logger = make_logger(impl, log_dir, 1_000_000, queue_rows=calls + 1)
    log = logger.log
    t0 = time.perf_counter_ns()
    for i, a in enumerate(args):
        log(*a, i)
    elapsed = time.perf_counter_ns() - t0
    assert logger.enqueued == calls
    del logger, args
    log_dir.rmdir()
    return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=15_000.0, help="rows logged per second")
    parser.add_argument("--segment-rows", type=int, nargs="+", default=[200_000, 20_000])
    parser.add_argument("--runs", type=int, default=3, help="runs per setting; medians shown")
    parser.add_argument(
        "--impl", action="append", default=None,
        help="git:REV or a file; repeat to compare (default: this tree)",
    )  # fmt: skip
    parser.add_argument("--trace", action="store_true", help="attribute the longest stalls")
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-logger runs")
    args = parser.parse_args()

    sys.setswitchinterval(0.0005)  # as `mlpipe serve` does
    import polars  # noqa: F401  (imported up front, as in the server)

    impls: list[tuple[str, ModuleType | None]] = [] if args.no_baseline else [("no logger", None)]
    for spec in args.impl or [None]:
        impls.append((spec if spec not in (None, "", "tree") else "working tree", load_impl(spec)))
    print(f"rate {args.rate:,.0f} rows/s, >= {args.seconds:g} s per run, {args.runs} run(s);"
          " implementations run in turn, so machine noise hits them alike; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    for label, impl in impls:
        if impl is not None:
            tight = statistics.median(tight_log_cost(impl) for _ in range(3))
            print(f"log() tight loop, no writer, {label}: {tight:.0f} ns/row (median of 3)")
    for setting in args.segment_rows:
        # long enough for at least one full segment
        seconds = max(args.seconds, setting / args.rate + 2.0)
        print(f"\nsegment_rows={setting:,}, {seconds:g} s per run")
        print(
            f"{'implementation':>24} {'late p50':>8} {'p99':>6} {'p99.9':>6} {'max':>6} (ms)"
            f" {'>1ms':>5} {'>5ms':>4} {'gc2':>3} {'gc2 max':>7}   {'log p50':>7} {'p99':>5} (ns)"
            f" {'close':>6} {'cpu s':>6} {'load':>5}"
        )
        results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in impls}
        for run in range(args.runs):
            for label, impl in impls:
                res = measure(impl, setting, seconds, args.rate, args.trace)
                results[label].append(res)
                print(row(f"{label[-19:]} #{run + 1}", res), flush=True)
        for label, impl in impls:
            keys = ["p50", "p99", "p999", "max", "over1", "over5", "gc2", "gc2_max", "cpu", "load1"]
            if impl is not None:
                keys += ["log_p50_ns", "log_p99_ns", "close_ms"]
            med = {k: statistics.median(r[k] for r in results[label]) for k in keys}
            print(row(f"{label[-17:]} median", med), flush=True)
    print("load average at end " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def row(label: str, res: dict[str, Any]) -> str:
    line = (
        f"{label:>24} {res['p50']:8.3f} {res['p99']:6.3f} {res['p999']:6.3f} {res['max']:6.2f}"
        f"      {res['over1']:5.0f} {res['over5']:4.0f} {res['gc2']:3.0f} {res['gc2_max']:7.2f}"
    )
    if "log_p50_ns" in res:
        line += (
            f"   {res['log_p50_ns']:7.0f} {res['log_p99_ns']:5.0f}      {res['close_ms']:5.0f}ms"
        )
    else:
        line += " " * 29
    line += f" {res['cpu']:6.2f} {res['load1']:5.1f}"
    if "counters" in res:
        line += f"  {res['counters']}"
    return line


if __name__ == "__main__":
    main()
