"""`mlpipe sample-data`: write the deterministic synthetic data set (reads no config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_cli.argnames import arg_name, given


@dataclass(frozen=True)
class SampleDataResult:
    out_dir: Path
    files: dict[str, Path]  # table -> Parquet file
    rows: dict[str, int]  # table -> rows
    faults: tuple[str, ...]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "files": {k: str(v) for k, v in self.files.items()},
            "rows": self.rows,
            "faults": list(self.faults),
            "seed": self.seed,
        }


DATASETS = ("churn", "rides")
# Per data set: (rows, seed) when not given. churn keeps the values it always had, so
# `mlpipe sample-data` without --dataset writes the same bytes as before.
_DEFAULTS = {"churn": (100_000, 42), "rides": (50_000, 7)}


def sample_data(
    *,
    out: Path = Path("data/sample"),
    rows: int | None = None,
    seed: int | None = None,
    faults: tuple[str, ...] | list[str] = (),
    dataset: str = "churn",
) -> SampleDataResult:
    """Write a synthetic data set under ``out``; same seed, same bytes.

    ``dataset``: ``churn`` (users, orders, products, embeddings and labels; configs/example.yaml)
    or ``rides`` (rides, drivers, zone_weather and labels keyed by rider, driver and zone;
    configs/rides.yaml). ``faults`` (churn only): renamed-column, out-of-range, drift, bad-dtype.
    """
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.sample_data import generate, generate_rides

    if dataset not in _DEFAULTS:
        raise UsageError(
            f"unknown {arg_name('dataset')} {dataset!r} (choose from {', '.join(DATASETS)})"
        )
    default_rows, default_seed = _DEFAULTS[dataset]
    rows = default_rows if rows is None else rows
    seed = default_seed if seed is None else seed
    if dataset == "rides":
        if faults:
            raise UsageError(
                f"{arg_name('faults', flag='--fault')} applies to {given('dataset', 'churn')} only"
            )
        result = generate_rides(out, rows=rows, seed=seed)
    else:
        result = generate(out, rows=rows, seed=seed, faults=tuple(faults))
    return SampleDataResult(
        out_dir=result.out_dir,
        files=dict(result.files),
        rows=dict(result.rows),
        faults=tuple(result.faults),
        seed=seed,
    )
