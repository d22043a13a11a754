"""`mlpipe sample-data`: write the deterministic synthetic data set (reads no config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def sample_data(*, out: Path = Path("data/sample"), rows: int = 100_000, seed: int = 42,
                faults: tuple[str, ...] | list[str] = ()) -> SampleDataResult:
    """Write users, orders, products, embeddings and labels under ``out``; same seed, same bytes.

    ``faults``: renamed-column, out-of-range, drift, bad-dtype.
    """
    from mlpipe_cli.sample_data import generate

    result = generate(out, rows=rows, seed=seed, faults=tuple(faults))
    return SampleDataResult(out_dir=result.out_dir, files=dict(result.files),
                            rows=dict(result.rows), faults=tuple(result.faults), seed=seed)
