"""The reference profile on Spark equals the Polars engine's, byte for byte
(engines/spark/profile.py), and `validate --reference` on Spark gives the Polars checks.

Oracles: ``drift.profile.build_profile`` on the same files (the Polars engine: one sorted
numpy array per column) and ``np.sum`` itself for the split pairwise sum. The profile is
exact on Spark (a distributed sort, order statistics fetched by rank, numpy's summation tree
replayed), so the documents must be equal as canonical JSON text, not close; and they must
not depend on how many partitions Spark used.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.spark, pytest.mark.slow]


# -- the split pairwise sum (no Spark) -------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 3000),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_pairwise_sum_split_at_any_cuts_equals_np_sum(n: int, cuts: list[int], seed: int) -> None:
    from mlpipe_cli.engines.spark.profile import _tree_sum, tree_parts

    rng = np.random.default_rng(seed)
    # magnitudes far apart: any change of the addition order changes the last bits
    values = np.sort(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n))
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    parts = [tree_parts(values[a:b], a, n) for a, b in itertools.pairwise(bounds)]
    assert _tree_sum(n, parts) == float(np.sum(values))


# -- profile parity ---------------------------------------------------------------------------


def _config(root: Path, partitions: int) -> Any:
    from mlpipe_cli.config import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "pipeline": "profile",
            "artifact_dir": str(root / "a"),
            "spark": {"partitions": partitions},
        }
    )


def _write_parts(frame: pl.DataFrame, root: Path, cuts: list[int], row_groups: list[int]) -> Path:
    """The frame as a directory of part files cut at ``cuts``, each with its own row-group
    size (the parts of one input need not agree)."""
    out = root / "batch"
    out.mkdir(parents=True)
    bounds = sorted({0, frame.height, *(c for c in cuts if c <= frame.height)})
    if len(bounds) == 1:  # no rows: one empty part
        bounds = [0, 0]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        frame.slice(a, b - a).write_parquet(
            out / f"part-{i:03d}.parquet", row_group_size=row_groups[i % len(row_groups)]
        )
    return out


def _both(
    spark: object, root: Path, batch: Path, partitions: int = 3, **kw: Any
) -> tuple[str, str]:
    from mlpipe_cli.drift.profile import build_profile, dumps_profile
    from mlpipe_cli.engines.spark.profile import spark_profile
    from mlpipe_cli.io import scan_parquet

    expected = dumps_profile(build_profile(scan_parquet(batch), **kw))
    got = dumps_profile(spark_profile(_config(root, partitions), batch, **kw))
    return got, expected


_NUMBERS = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 1.5, 2.0, math.nan, math.inf, -math.inf, 1e300, -1e-300, 1.7e308]),
    st.floats(-1e6, 1e6, allow_nan=False),
)
_WORDS = st.sampled_from(["web", "app", "Ünïcode", "ключ", "", "z" * 30, "Zebra", None, "日本"])


@st.composite
def _frames(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 300))
    data = {
        "amount": [draw(_NUMBERS) for _ in range(n)],
        # few distinct values: binned by value
        "code": [draw(st.one_of(st.none(), st.integers(-2, 4))) for _ in range(n)],
        # an atom (zero-inflated) in a continuous column: the atom bins and probes
        "spend": [
            draw(st.one_of(st.just(0.0), st.floats(0, 50, allow_nan=False))) for _ in range(n)
        ],
        "channel": [draw(_WORDS) for _ in range(n)],
        "flag": [draw(st.one_of(st.none(), st.booleans())) for _ in range(n)],
    }
    return {
        "data": data,
        "cuts": draw(st.lists(st.integers(0, n), max_size=3)),
        "row_groups": draw(st.lists(st.integers(1, 64), min_size=1, max_size=3)),
        "max_categories": draw(st.sampled_from([2, 1000])),
    }


_SCHEMA = {
    "amount": pl.Float64,
    "code": pl.Int16,
    "spend": pl.Float32,
    "channel": pl.String,
    "flag": pl.Boolean,
}


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_frames())
@example(  # a sum beyond 1.8e308: mean and std are inf on both engines (no warning, no error)
    case={
        "data": {
            "amount": [1.7e308, 1.7e308, -1.0, 1.0, None],
            "code": [1, 2, None, 1, 1],
            "spend": [0.0, 0.0, 0.0, 3.5, 1.0],
            "channel": ["a", "ä", None, "a", "b"],
            "flag": [True, None, False, True, True],
        },
        "cuts": [2],
        "row_groups": [1, 3],
        "max_categories": 2,
    }
)
def test_generated_profile_equals_polars(
    spark: object, tmp_path_factory: pytest.TempPathFactory, case: dict[str, Any]
) -> None:
    root = tmp_path_factory.mktemp("profile")
    frame = pl.DataFrame(case["data"], schema=_SCHEMA)
    batch = _write_parts(frame, root, case["cuts"], case["row_groups"])
    got, expected = _both(spark, root, batch, max_categories=case["max_categories"])
    assert got == expected


def test_continuous_profile_is_exact_and_independent_of_partitions(
    spark: object, tmp_path: Path
) -> None:
    """Thousands of values over several sorted partitions: the pairwise sum crosses
    partition ends, the quantiles are fetched from different tasks."""
    rng = np.random.default_rng(7)
    n = 20_000
    amount = rng.lognormal(3, 2, n) * rng.choice([1.0, -1.0], n)
    amount[::4] = 0.0  # zero-inflated: several deciles fall on 0, which gets a bin of its own
    amount[::501] = np.nan
    frame = pl.DataFrame(
        {
            "amount": amount,
            "count": rng.integers(0, 1000, n).astype(np.int64),
            "city": rng.choice(["Zürich", "Åre", "Oslo", "São Paulo", "Kraków"], n),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 13 == 0)
        .then(None)
        .otherwise(pl.col("count"))
        .alias("count")
    )
    batch = _write_parts(frame, tmp_path, [3000, 11_000], [1000, 4096, 777])
    texts = set()
    for partitions in (1, 4):
        got, expected = _both(spark, tmp_path / str(partitions), batch, partitions=partitions)
        assert got == expected
        texts.add(got)
    assert len(texts) == 1
    profile = json.loads(texts.pop())
    amount = profile["columns"]["amount"]
    assert amount["binning"] == "quantiles"
    assert 0.0 in amount["edges"]
    assert np.nextafter(0.0, 1.0) in amount["edges"]
    assert profile["columns"]["count"]["binning"] == "quantiles"
    assert profile["columns"]["count"]["null_count"] == len(range(0, n, 13))


# -- validate --save-profile / --reference on the sample project -------------------------------


def test_validate_profile_and_reference_on_sample_data_equal_polars(
    spark: object, project: Path, tmp_path: Path
) -> None:
    """The same profile artifact (bytes and version id) from both engines, and the same
    distribution checks of a drifted batch (three parts, row groups of different sizes)."""
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.validate import validate

    config = yaml.safe_load(project.read_text())
    orders = pl.read_parquet(config["sources"]["orders"]["path"])
    drifted = orders.with_columns(
        (pl.col("revenue") * 1.6).alias("revenue"),
        pl.when(pl.col("order_id") % 3 == 0)
        .then(pl.lit("store"))
        .otherwise(pl.col("channel"))
        .alias("channel"),
    )
    batch = _write_parts(drifted, tmp_path, [drifted.height // 3, drifted.height // 2], [500, 4096])
    versions, texts, reports = {}, {}, {}
    for engine in ("polars", "spark"):
        config["artifact_dir"] = str(tmp_path / engine / "artifacts")
        path = tmp_path / engine / "mlpipe.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        saved = validate(Project(path), sources=["orders"], save_profile=True, engine=engine)
        assert saved.passed
        versions[engine] = saved.report.sources[0].profile
        artifact = Project(path).store.get("profile", versions[engine])
        texts[engine] = artifact.file("profile.json").read_bytes()
        checked = validate(
            Project(path),
            sources=["orders"],
            data=batch,
            reference="latest",
            engine=engine,
            publish=False,
        ).to_dict()
        checked.pop("seconds")
        reports[engine] = checked
    assert texts["spark"] == texts["polars"]
    assert versions["spark"] == versions["polars"]
    assert reports["spark"] == reports["polars"]
    checks = {c["id"]: c for c in reports["spark"]["sources"][0]["checks"]}
    assert checks["orders.revenue.psi"]["status"] == "fail"  # revenue × 1.6
    assert checks["orders.channel.psi"]["status"] == "fail"  # a third moved to store
    assert checks["orders.product_id.psi"]["status"] == "pass"


@pytest.mark.parametrize("option", ["save_profile", "reference"])
def test_profiles_of_a_remote_input_are_refused_before_spark_runs(
    project: Path, option: str
) -> None:
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.validate import validate

    kwargs: dict[str, Any] = (
        {"save_profile": True} if option == "save_profile" else {"reference": "latest"}
    )
    with pytest.raises(UsageError, match="does not support --reference/--save-profile of a remote"):
        validate(
            Project(project),
            sources=["orders"],
            data="s3a://bucket/orders/",  # type: ignore[arg-type]
            engine="spark",
            publish=False,
            **kwargs,
        )
