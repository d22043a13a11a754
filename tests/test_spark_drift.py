"""`psi-report --engine spark` gives the Polars engine's report (engines/spark/drift.py).

Oracle: the Polars engine's report on the same files (the whole JSON document less its wall
time). The Spark pass merges per-task accumulators: bin counts and null/NaN counts are
integer sums, the KS statistic comes from the same exact counts, and mean/std from the same
per-block sums, so the documents must be equal, not close. Blocks are shrunk to 16 rows so a
few hundred rows make many blocks spread over several tasks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    import mlpipe_cli.drift.compare as compare

    monkeypatch.setattr(compare, "SORT_BLOCK", 16)
    return 16


def _write(root: Path, reference: dict[str, list[Any]], current: dict[str, list[Any]],
           split: int) -> tuple[Path, Path, Path]:  # fmt: skip
    """The reference profile, the current batch as two files (a directory), a config."""
    import yaml

    from mlpipe_cli.drift.profile import build_profile, write_profile

    root.mkdir(parents=True, exist_ok=True)
    schema = {"amount": pl.Float64, "count": pl.Int32, "channel": pl.String}
    ref = pl.DataFrame(reference, schema=schema)
    cur = pl.DataFrame(current, schema=schema)
    profile = root / "profile.json"
    write_profile(build_profile(ref, bins=10), profile)
    batch = root / "current"
    batch.mkdir()
    cur.slice(0, split).write_parquet(batch / "part-0.parquet")
    cur.slice(split).write_parquet(batch / "part-1.parquet")
    config = root / "mlpipe.yaml"
    config.write_text(
        yaml.safe_dump(
            {"pipeline": "drift", "artifact_dir": str(root / "a"), "spark": {"partitions": 3}}
        )
    )
    return profile, batch, config


def _report(config: Path, profile: Path, batch: Path, engine: str) -> dict[str, Any]:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.psi_report import psi_report

    result = psi_report(Project(config), profile=profile, current=batch, engine=engine)
    doc = result.to_dict()
    doc.pop("seconds")
    doc.pop("generated_at")
    return doc


_VALUES = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf]),  # atoms, NaN, ±inf
    st.floats(-1e3, 1e3, allow_nan=False),
)
_CHANNELS = st.sampled_from(["web", "app", "Ünïcode", "", None, "new-1", "new-22"])


@st.composite
def _batches(draw: st.DrawFn) -> dict[str, Any]:
    def rows(n: int) -> dict[str, list[Any]]:
        return {
            "amount": [draw(_VALUES) for _ in range(n)],
            "count": [draw(st.one_of(st.none(), st.integers(0, 5))) for _ in range(n)],
            "channel": [draw(_CHANNELS) for _ in range(n)],
        }

    n_cur = draw(st.integers(1, 150))
    return {
        "reference": rows(draw(st.integers(20, 150))),
        "current": rows(n_cur),
        "split": draw(st.integers(0, n_cur)),
    }


def test_sample_sized_report_equals_polars(
    spark: object, small_blocks: int, tmp_path: Path
) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    n = 400
    reference = {
        "amount": rng.normal(10, 2, n).tolist(),
        "count": rng.integers(0, 4, n).tolist(),
        "channel": rng.choice(["web", "app", "store"], n).tolist(),
    }
    amounts = rng.normal(11, 2.5, n)
    amounts[::17] = np.nan
    current = {
        "amount": [None if i % 23 == 0 else float(v) for i, v in enumerate(amounts)],
        "count": rng.integers(0, 6, n).tolist(),
        "channel": rng.choice(["web", "app", "kiosk", "Ünïcode"], n).tolist(),
    }
    profile, batch, config = _write(tmp_path, reference, current, split=137)
    on_polars = _report(config, profile, batch, "polars")
    on_spark = _report(config, profile, batch, "spark")
    assert on_spark == on_polars
    amount = next(f for f in on_spark["features"] if f["column"] == "amount")
    assert amount["psi"] > 0
    assert amount["ks_statistic"] is not None


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=_batches())
def test_generated_report_equals_polars(
    spark: object, small_blocks: int, tmp_path_factory: pytest.TempPathFactory, data: dict
) -> None:
    root = tmp_path_factory.mktemp("drift")
    profile, batch, config = _write(root, data["reference"], data["current"], data["split"])
    assert _report(config, profile, batch, "spark") == _report(config, profile, batch, "polars")


def test_serving_log_and_missing_transform_outputs_are_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "mlpipe.yaml"
    config.write_text("pipeline: drift\n")
    log = cli("psi-report", "-c", config, "--serving-log", tmp_path, "--engine", "spark")
    assert log.exit_code == 2
    assert "engine spark does not support psi-report --serving-log" in log.stderr
