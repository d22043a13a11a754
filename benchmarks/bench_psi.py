"""Benchmark: PSI of N current rows × 20 features against a stored reference profile.

Compares `mlpipe_cli.drift.compare_to_profile` over row slices of the Parquet files, read one
at a time — what `psi-report --current` does (computes PSI + KS + null/mean/std per feature) with the same PSI computed the obvious way:
`pandas.read_parquet` then `numpy.histogram` per column on the profile's edges.

Each method runs in its own child process (so peak memory is that process's ru_maxrss); the
reported figures are medians of --runs runs. Both methods must agree on every PSI value.

    .venv/bin/python benchmarks/bench_psi.py                 # 10,000,000 rows (full size)
    .venv/bin/python benchmarks/bench_psi.py --rows 1000000  # quicker
Run the full size under `flock /tmp/mlpipe-bench.lock ...` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES = 20
FILE_ROWS = 1_000_000


def _columns(rng, n: int, shift: float):  # type: ignore[no-untyped-def]
    import numpy as np

    cols = {}
    for j in range(FEATURES):
        kind = j % 5
        if kind == 0:
            v = rng.normal(shift * 0.1, 1.0, n)
        elif kind == 1:
            v = rng.lognormal(3.0 + shift * 0.05, 1.0, n)
        elif kind == 2:
            v = rng.uniform(0, 1 + shift * 0.2, n)
        elif kind == 3:
            v = rng.integers(0, 50, n).astype(np.float64)  # atoms (integer-valued)
        else:
            v = rng.exponential(1.0, n)
            v[rng.random(n) < 0.05] = np.nan  # 5% missing
        cols[f"f{j:02d}"] = v
    return cols


def make_data(data_dir: Path, rows: int, seed: int, shift: float) -> None:
    """Write ``rows`` rows as Parquet files of ≤1M rows (generated chunk by chunk)."""
    import numpy as np
    import polars as pl

    marker = data_dir.with_name(data_dir.name + ".done")
    if marker.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        df = pl.DataFrame(_columns(rng, n, shift)).fill_nan(None)
        df.write_parquet(data_dir / f"part-{i:04d}.parquet", compression="zstd")
    marker.write_text(str(rows))


def _child(method: str, data_dir: str, profile_path: str) -> None:
    from mlpipe_cli.drift import read_profile

    profile = read_profile(Path(profile_path))
    # import the libraries each method uses before the clock starts (both sides alike)
    if method == "mlpipe":
        import polars  # noqa: F401
        import scipy.stats  # noqa: F401
    else:
        import pandas  # noqa: F401
    t0 = time.perf_counter()
    if method == "mlpipe":
        # what `psi-report --current DIR` does: row slices of the files, read one at a time
        from mlpipe_cli.drift import compare_to_profile
        from mlpipe_cli.drift.report import scan_parts
        from mlpipe_cli.io import resolve_parquet_files

        drifts = compare_to_profile(profile, scan_parts(resolve_parquet_files(data_dir)))
        psis = {d.column: d.psi for d in drifts}
        rows = drifts[0].rows
    else:
        import numpy as np
        import pandas as pd

        from mlpipe_cli.drift import psi

        df = pd.read_parquet(data_dir)
        rows = len(df)
        psis = {}
        for col, entry in profile["columns"].items():
            values = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
            valid = values[~np.isnan(values)]
            edges = np.array([float(e) for e in entry["edges"]])
            counts, _ = np.histogram(valid, bins=np.concatenate([[-np.inf], edges, [np.inf]]))
            cur = [*(counts / rows), (rows - len(valid)) / rows]
            ref = [*entry["proportions"], entry["missing_proportion"]]
            psis[col] = psi(ref, cur)
    seconds = time.perf_counter() - t0
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "maxrss_mb": maxrss_kb / 1024, "rows": rows,
                      "psi": psis}))


def _run(method: str, data_dir: Path, profile: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, str(data_dir), str(profile)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{method} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="current rows")
    parser.add_argument("--ref-rows", type=int, default=1_000_000, help="reference rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mlpipe-bench-psi"))
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "DATA", "PROFILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    from mlpipe_cli.drift import build_profile, write_profile
    from mlpipe_cli.io import scan_parquet

    ref_dir = args.dir / f"ref-{args.ref_rows}"
    cur_dir = args.dir / f"cur-{args.rows}"
    t0 = time.perf_counter()
    make_data(ref_dir, args.ref_rows, seed=1, shift=0.0)
    make_data(cur_dir, args.rows, seed=2, shift=1.0)
    print(f"data ready in {time.perf_counter() - t0:.1f}s: {args.rows:,} current rows x "
          f"{FEATURES} features; reference {args.ref_rows:,} rows", flush=True)

    profile_path = args.dir / f"profile-{args.ref_rows}.json"
    t0 = time.perf_counter()
    profile = build_profile(scan_parquet(ref_dir))
    build_s = time.perf_counter() - t0
    write_profile(profile, profile_path)
    print(f"build_profile on {args.ref_rows:,} x {FEATURES}: {build_s:.2f}s "
          f"({args.ref_rows / build_s:,.0f} rows/s)", flush=True)

    results: dict[str, list[dict]] = {"mlpipe": [], "numpy": []}
    for run in range(args.runs):
        for method in ("mlpipe", "numpy"):
            res = _run(method, cur_dir, profile_path)
            results[method].append(res)
            print(f"  run {run + 1} {method:6s}: {res['seconds']:.2f}s, "
                  f"peak {res['maxrss_mb']:.0f} MB", flush=True)

    ours, theirs = results["mlpipe"][0]["psi"], results["numpy"][0]["psi"]
    worst = max(abs(ours[c] - theirs[c]) for c in theirs)
    assert all(math.isclose(ours[c], theirs[c], rel_tol=1e-9, abs_tol=1e-12) for c in theirs), \
        f"PSI disagrees: max abs diff {worst}"

    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
    mem = {m: statistics.median(r["maxrss_mb"] for r in rs) for m, rs in results.items()}
    in_memory_mb = args.rows * FEATURES * 8 / 2**20
    print(f"\nmedians of {args.runs} runs, {args.rows:,} rows x {FEATURES} features "
          f"(in-memory float64 size {in_memory_mb:,.0f} MB), cpus={os.cpu_count()}")
    for m, label in (("mlpipe", "mlpipe compare_to_profile (PSI+KS+stats, bounded)"),
                     ("numpy", "pandas.read_parquet + numpy.histogram (PSI only)")):
        print(f"  {label:55s} {med[m]:7.2f}s  {args.rows / med[m]:>12,.0f} rows/s  "
              f"peak {mem[m]:,.0f} MB")
    print(f"  speed ratio numpy/mlpipe: {med['numpy'] / med['mlpipe']:.2f}x; "
          f"memory ratio: {mem['numpy'] / mem['mlpipe']:.2f}x; PSI max abs diff {worst:.1e}")


if __name__ == "__main__":
    main()
