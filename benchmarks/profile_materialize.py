"""Where the time of `materialize` goes, end to end, into Redis and into SQLite.

    flock /tmp/mlpipe-bench.lock .venv/bin/python benchmarks/profile_materialize.py \
        --entities 1000000 --features 5 --repeat 2

Runs the real ``ops.materialize.run_materialize`` (the code the CLI runs after parsing) on
the data and features of bench_materialize.py, with a timer around each step it calls, so
the code under test is unchanged:

    list      online.materialize.key_set_entities (list_entities before key sets): scan,
              filter, distinct, sort
    hash      _entities_hash                      (hash_rows of the entity list)
    begin     writer.start_version                (metadata, progress record)
    compute   features.engine.compute_features    (one call per batch of chunks)
    pack      _pack_chunk                         (keys + one JSON value per entity, column-wise)
    write     store.write_chunk                   (pipelined SETs / executemany + commit)
    finish    writer.finish_version: verify (count) + switch (pointer) + remove_stale
    publish   the materialization artifact

Each step gets wall and CPU seconds (this process, all threads; redis-server's own CPU from
INFO for the Redis runs); `other` is the rest of the run (setup, Python glue). Runs are
interleaved redis, sqlite, redis, sqlite... and every line carries the load average.

Two modes (``--modes``, interleaved too): ``overlap`` is the code as it runs (pack and write
on the writer thread while the next batch is computed: the steps' wall times add up to more
than the run, and each step's CPU also holds the other thread's); ``serial`` makes every
batch wait until it is written before the next is computed (``_ChunkWriter.submit`` patched
to join the writer's queue), so the steps do not overlap and each one's CPU is its own: the
per-phase breakdown.
``--cprofile`` adds a cProfile of one run per store (top functions by own time), which
shows what inside `pack` and `compute` costs. ``--compute-schedules`` times
``compute_features`` alone for every entity in one call, in materialize's batch schedule
(1, 2, 4 … chunks, capped at COMPUTE_BATCH_ENTITIES) and in 10 equal calls, interleaved.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from bench_materialize import AS_OF, TTL, Server, load, make_project  # benchmarks/ on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = ("list", "hash", "begin", "compute", "pack", "write", "verify", "switch", "remove",
         "finish", "publish")  # fmt: skip


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timers:
    """Accumulates wall and CPU seconds per step; nested steps are subtracted from `finish`."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, step: str, fn):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            c0, t0 = cpu_s(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[step] += time.perf_counter() - t0
                self.cpu[step] += cpu_s() - c0
                self.calls[step] += 1

        return timed


def instrumented_run(config, artifact_dir: Path, store, timers: Timers, serial: bool) -> dict:  # type: ignore[no-untyped-def]
    """run_materialize with its collaborators wrapped (module attributes patched, restored)."""
    import mlpipe_cli.features.engine as engine
    import mlpipe_cli.ops.materialize as ops
    from mlpipe_cli.artifacts import ArtifactStore

    lister = "key_set_entities" if hasattr(ops, "key_set_entities") else "list_entities"
    patches = {
        (ops, lister): "list",
        (ops, "_entities_hash"): "hash",
        (ops, "start_version"): "begin",
        (engine, "compute_features"): "compute",
        (ops, "_pack_chunk"): "pack",
        (ops, "finish_version"): "finish",
        (ops, "_publish"): "publish",
    }
    saved = {target: getattr(*target) for target in patches}
    for (module, name), step in patches.items():
        setattr(module, name, timers.wrap(step, getattr(module, name)))
    writer_cls = getattr(ops, "_ChunkWriter", None)
    submit = writer_cls.submit if writer_cls is not None else None
    if serial and writer_cls is not None:

        def submit_and_wait(self, batch):  # type: ignore[no-untyped-def]
            submit(self, batch)
            if batch is not None:
                self._jobs.join()  # written before the next batch is computed

        writer_cls.submit = submit_and_wait
    for method, step in (("write_chunk", "write"), ("verify", "verify"), ("switch", "switch"),
                         ("remove_stale", "remove")):  # fmt: skip
        setattr(store, method, timers.wrap(step, getattr(store, method)))
    try:
        c0, t0 = cpu_s(), time.perf_counter()
        result = ops.run_materialize(
            config, ArtifactStore(artifact_dir, config.pipeline), store, as_of=AS_OF
        )
        return {"wall": time.perf_counter() - t0, "cpu": cpu_s() - c0,
                "entities": result.entity_count}  # fmt: skip
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)
        if writer_cls is not None:
            writer_cls.submit = submit


def one_run(
    kind: str, cfg, root: Path, server: Server, run: int, profile: bool, serial: bool
) -> dict:  # type: ignore[no-untyped-def]
    from mlpipe_cli.online.redis_store import RedisStore
    from mlpipe_cli.online.sqlite_store import SqliteStore

    if kind == "redis":
        server.client().flushdb()
        store = RedisStore(server.url, prefix="mlpipe:bench", ttl_seconds=TTL)
    else:
        store = SqliteStore(root / f"online-{run}.sqlite")
    timers = Timers()
    load1 = os.getloadavg()[0]
    r0 = server.cpu_s()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    try:
        c0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        total = instrumented_run(cfg, root / f"artifacts-{kind}", store, timers, serial)
        total["maxrss_kib"] = max(c0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    finally:
        if profiler:
            profiler.disable()
        store.close()
    redis_cpu = server.cpu_s() - r0 if kind == "redis" else 0.0
    if kind == "sqlite":
        (root / f"online-{run}.sqlite").unlink()
    return {"kind": kind, "load1": load1, "redis_cpu": redis_cpu, **total,
            "wall_steps": dict(timers.wall), "cpu_steps": dict(timers.cpu),
            "calls": dict(timers.calls), "profiler": profiler}  # fmt: skip


def report(kind: str, runs: list[dict]) -> None:
    n = runs[0]["entities"]
    overlapped = runs[0]["mode"] == "overlap"
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu", "redis_cpu", "load1")}
    print(
        f"\n{kind} ({runs[0]['mode']}): {n:,} entities, median of {len(runs)}: "
        f"{n / med['wall']:,.0f} entities/s, "
        f"wall {med['wall']:.2f}s, cpu {med['cpu']:.2f}s"
        + (f" + redis-server {med['redis_cpu']:.2f}s" if kind == "redis" else "")
        + " (load at start "
        + ", ".join(f"{r['load1']:.1f}" for r in runs)
        + f"; peak RSS of the process so far {max(r['maxrss_kib'] for r in runs) / 2**20:.2f} GiB)"
    )
    if overlapped:
        print("  (overlap: pack and write run on the writer thread during compute; step times")
        print("   add up to more than the run and each step's CPU holds the other thread's)")
    print(
        f"  {'step':8s} {'wall s':>7s} {'cpu s':>7s} {'share':>6s} {'calls':>6s}  "
        "entities/s if this were the only cost"
    )
    raw = {
        step: (statistics.median(r["wall_steps"].get(step, 0.0) for r in runs),
               statistics.median(r["cpu_steps"].get(step, 0.0) for r in runs))
        for step in STEPS
    }  # fmt: skip
    # finish_version calls verify and switch; switch calls remove_stale: each listed alone
    nested = {"finish": ("verify", "switch"), "switch": ("remove",)}
    steps = {
        step: (wall - sum(raw[n][0] for n in nested.get(step, ())),
               cpu - sum(raw[n][1] for n in nested.get(step, ())))
        for step, (wall, cpu) in raw.items()
    }  # fmt: skip
    other_wall = med["wall"] - sum(w for w, _ in steps.values())
    other_cpu = med["cpu"] - sum(c for _, c in steps.values())
    for step, (wall, cpu) in [*steps.items(), ("other", (other_wall, other_cpu))]:
        calls = runs[0]["calls"].get(step, "")
        rate = f"{n / wall:12,.0f}" if wall > 0.001 else ""
        print(f"  {step:8s} {wall:7.2f} {cpu:7.2f} {wall / med['wall']:6.1%} {calls!s:>6s}  {rate}")
    if overlapped:
        return
    fixed = sum(steps[s][0] for s in ("list", "hash", "begin", "verify", "switch", "remove",
                                       "finish", "publish")) + other_wall  # fmt: skip
    compute, pack, write = steps["compute"][0], steps["pack"][0], steps["write"][0]
    print(
        f"  serial (today): fixed {fixed:.2f}s + compute {compute:.2f}s + pack {pack:.2f}s + "
        f"write {write:.2f}s"
    )
    overlap = fixed + max(compute + pack, write)
    print(
        f"  if writing overlapped compute+pack (needs a free core): {n / overlap:,.0f}/s; "
        f"if compute were also free: {n / (fixed + max(pack, write)):,.0f}/s; the "
        f"write step alone: {n / write:,.0f}/s"
    )


def compute_schedules(config, n: int, chunk: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    from mlpipe_cli.features.engine import compute_features
    from mlpipe_cli.online.materialize import (
        AS_OF_COLUMN,
        _spine_time,
        list_entities,
        select_features,
    )
    from mlpipe_cli.ops.materialize import compute_batches

    selected = select_features(config, None)
    names = [f.name for f in selected]
    entities = list_entities(config, selected, AS_OF)
    spine_time = _spine_time(config, selected, AS_OF)
    chunks = (n + chunk - 1) // chunk
    schedule = compute_batches(0, [0] * chunks, chunk)  # as run_materialize builds it
    tenth = max(1, chunks // 10)
    equal = [(i, min(chunks, i + tenth)) for i in range(0, chunks, tenth)]
    plans = {
        "one call": [(0, chunks)],
        f"schedule, {len(schedule)} calls": schedule,
        f"{len(equal)} equal calls": equal,
    }
    print(f"\ncompute_features alone, {n:,} entities x {len(names)} features:")
    for r in range(rounds):
        for label, plan in plans.items():
            load1, c0, t0 = os.getloadavg()[0], cpu_s(), time.perf_counter()
            sources: dict = {}  # one read of each source per plan, as run_materialize does
            for a, b in plan:
                spine = entities.slice(a * chunk, (b - a) * chunk)
                compute_features(config, spine.with_columns(spine_time.alias(AS_OF_COLUMN)),
                                 entity_keys=list(config.entity_keys), timestamp=AS_OF_COLUMN,
                                 features=names, source_cache=sources)  # fmt: skip
            print(
                f"  round {r + 1} {label:22s} wall {time.perf_counter() - t0:6.2f}s "
                f"cpu {cpu_s() - c0:6.2f}s (load {load1:.1f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--stores", default="redis,sqlite")
    parser.add_argument("--modes", default="overlap,serial", help="overlap (as it runs), serial")
    parser.add_argument("--cprofile", action="store_true", help="cProfile one run per store")
    parser.add_argument(
        "--compute-schedules",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also time compute_features alone in three batchings",
    )
    args = parser.parse_args()
    import polars as pl

    root = Path(tempfile.mkdtemp(prefix="profile-materialize-"))
    server = Server(root)
    try:
        print(f"# profile_materialize: {args.entities:,} entities x {args.features} features, "
              f"chunk {args.chunk_size:,}, polars {pl.__version__} ({pl.thread_pool_size()} "
              f"threads), {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
        path = make_project(root, args.entities, n_features=args.features)
        configs = {
            "redis": load(
                path,
                type="redis",
                url=server.url,
                ttl=timedelta(seconds=TTL),
                chunk_size=args.chunk_size,
            ),
            "sqlite": load(path, chunk_size=args.chunk_size),
        }
        kinds = args.stores.split(",")
        modes = args.modes.split(",")
        runs: dict[tuple[str, str], list[dict]] = {(k, m): [] for m in modes for k in kinds}
        for run in range(args.repeat):
            for mode in modes:
                for kind in kinds:
                    r = one_run(kind, configs[kind], root, server, run, False, mode == "serial")
                    r["mode"] = mode
                    runs[kind, mode].append(r)
                    print(
                        f"  run {run + 1} {kind:6s} {mode:7s}: {r['entities'] / r['wall']:,.0f}/s "
                        f"wall {r['wall']:.2f}s cpu {r['cpu']:.2f}s"
                        + (f" + redis-server {r['redis_cpu']:.2f}s" if kind == "redis" else "")
                        + f" (load {r['load1']:.1f})",
                        flush=True,
                    )
        for (kind, _mode), done in runs.items():
            report(kind, done)
        if args.cprofile:
            for kind in kinds:
                r = one_run(kind, configs[kind], root, server, 99, True, "serial" in modes)
                print(
                    f"\ncProfile, {kind} (wall {r['wall']:.2f}s under the profiler, load "
                    f"{r['load1']:.1f}), top 20 by own time:"
                )
                pstats.Stats(r["profiler"], stream=sys.stdout).sort_stats("tottime").print_stats(20)
        if args.compute_schedules:
            compute_schedules(configs["sqlite"], args.entities, args.chunk_size,
                              args.compute_schedules)  # fmt: skip
        print(f"load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
