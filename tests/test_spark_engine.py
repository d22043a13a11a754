"""engine: spark gives the Polars engine's outputs (docs/scale.md), in Spark local mode.

One SparkSession (the `spark` fixture in tests/conftest.py) serves the whole run (starting
one costs 10-30 s); every command under test finds it as the active session. Oracles: the Polars engine's own output files on the
same inputs (bytes where the output is one file, rows where it is a directory of parts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _project(config_path: Path):  # type: ignore[no-untyped-def]
    from mlpipe_cli.ops.project import Project

    return Project(config_path)


# -- training-set ----------------------------------------------------------------------------


def test_training_set_file_is_byte_identical_to_polars(
    spark: object, project: Path, tmp_path: Path
) -> None:
    from mlpipe_cli.ops.training_set import training_set

    polars_out, spark_out = tmp_path / "a" / "train.parquet", tmp_path / "b" / "train.parquet"
    on_polars = training_set(_project(project), out=polars_out, engine="polars")
    on_spark = training_set(_project(project), out=spark_out, engine="spark")
    assert spark_out.read_bytes() == polars_out.read_bytes()
    assert on_spark.rows == on_polars.rows == pl.read_parquet(polars_out).height
    # match counts are summed over the tasks: the statistics and the whole manifest agree
    assert on_spark.feature_stats == on_polars.feature_stats
    assert on_spark.manifest["match_rates"] == on_polars.manifest["match_rates"]
    assert on_spark.manifest == on_polars.manifest


def test_training_set_directory_reads_back_in_spine_order(
    spark: object, project: Path, tmp_path: Path
) -> None:
    import yaml as _yaml

    from mlpipe_cli.ops.training_set import training_set

    config = _yaml.safe_load(project.read_text())
    config["spark"] = {"rows_per_file": 700}  # several part files, cut inside the spine file
    project.write_text(_yaml.safe_dump(config))
    expected = training_set(_project(project), out=tmp_path / "p.parquet", engine="polars")
    out = tmp_path / "train"
    result = training_set(_project(project), out=out, engine="spark", publish=False)
    parts = sorted(p.name for p in out.iterdir())
    assert len(parts) == -(-expected.rows // 700) == result.manifest["output"]["parts"]
    assert pl.read_parquet(out).equals(pl.read_parquet(tmp_path / "p.parquet"))
    # written again: the same part files, byte for byte
    again = training_set(_project(project), out=tmp_path / "again", engine="spark", publish=False)
    assert again.manifest["output"]["sha256"] == result.manifest["output"]["sha256"]


def test_training_set_on_the_cli_with_engine_flag(
    spark: object, cli, project: Path, tmp_path: Path
) -> None:
    built = cli(
        "training-set",
        "-c",
        project,
        "--out",
        tmp_path / "t.parquet",
        "--engine",
        "spark",
        "--json",
    )
    assert built.exit_code == 0, built.stderr
    reference = cli("training-set", "-c", project, "--out", tmp_path / "r.parquet", "--json")
    assert built.json()["output_sha256"] == reference.json()["output_sha256"]
    bad = cli("training-set", "-c", project, "--out", tmp_path / "x.parquet", "--engine", "dask")
    assert bad.exit_code == 2
    assert "unknown engine 'dask'" in bad.stderr


# -- generated data: messy keys, ties, several files, several sources ------------------------

_T0 = datetime(2026, 3, 1, tzinfo=UTC)
_KEYS = st.sampled_from(["a", "bb", "ccc", "Ünïcode-ключ", "", "k" * 40, "B"])


@st.composite
def _messy_inputs(draw: st.DrawFn) -> dict[str, object]:
    n_events = draw(st.integers(1, 60))
    minutes = st.integers(0, 60 * 24 * 20)
    events = {
        "user": [draw(_KEYS) for _ in range(n_events)],
        # coarse times: many ties at the same instant, which file order must break
        "ts": [_T0 + timedelta(minutes=draw(minutes) // 600 * 600) for _ in range(n_events)],
        "amount": [
            draw(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32)))
            for _ in range(n_events)
        ],
        "code": [draw(st.integers(0, 2**32 - 1)) for _ in range(n_events)],
    }
    n_spine = draw(st.integers(1, 30))
    spine = {
        "user": [draw(_KEYS) for _ in range(n_spine)],
        "at": [_T0 + timedelta(minutes=draw(minutes)) for _ in range(n_spine)],
        "label": [draw(st.booleans()) for _ in range(n_spine)],
    }
    users = sorted(set(events["user"]) | set(spine["user"]))
    attributes = {"user": users, "tier": [draw(st.sampled_from(["x", "yy", None])) for _ in users]}
    split = draw(st.integers(0, n_events))
    return {"events": events, "spine": spine, "attributes": attributes, "split": split}


def _write_messy(data: dict[str, object], root: Path) -> Path:
    events = pl.DataFrame(data["events"]).with_columns(
        pl.col("ts").dt.convert_time_zone("Europe/Berlin"),  # a zone name Spark cannot keep
        pl.col("code").cast(pl.UInt32),  # Spark has no unsigned ints
        pl.col("amount").cast(pl.Float32),
    )
    split = int(data["split"])  # type: ignore[arg-type]
    (root / "events").mkdir(parents=True)
    events.slice(0, split).write_parquet(root / "events" / "part-0.parquet")
    events.slice(split).write_parquet(root / "events" / "part-1.parquet")
    pl.DataFrame(data["spine"]).write_parquet(root / "spine.parquet")
    pl.DataFrame(data["attributes"]).write_parquet(root / "attributes.parquet")
    config = {
        "pipeline": "messy",
        "entity_keys": ["user"],
        "artifact_dir": str(root / "artifacts"),
        "sources": {
            "events": {"path": str(root / "events"), "timestamp": "ts"},
            "attributes": {"path": str(root / "attributes.parquet")},
        },
        "features": [
            {"name": "n", "source": "events", "agg": "count", "default": 0},
            {"name": "total", "source": "events", "agg": "sum", "column": "amount"},
            {
                "name": "mean_3d",
                "source": "events",
                "agg": "mean",
                "column": "amount",
                "window": "3d",
            },
            {"name": "last_code", "source": "events", "agg": "last", "column": "code"},
            {"name": "last_amount", "source": "events", "kind": "lag", "column": "amount"},
            {"name": "since", "source": "events", "kind": "time_since_last", "unit": "h"},
            {"name": "std", "source": "events", "agg": "std", "column": "amount"},
            {"name": "tier", "source": "attributes", "kind": "attribute"},
        ],
        "training_set": {"spine": str(root / "spine.parquet"), "timestamp": "at"},
    }
    path = root / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=_messy_inputs())
def test_training_set_parity_on_generated_data(
    spark: object, tmp_path_factory: pytest.TempPathFactory, data: dict[str, object]
) -> None:
    from mlpipe_cli.errors import DataCheckFailed
    from mlpipe_cli.ops.training_set import training_set

    root = tmp_path_factory.mktemp("messy")
    config = _write_messy(data, root)
    polars_failure: DataCheckFailed | None = None
    try:
        on_polars = training_set(
            _project(config), out=root / "p.parquet", engine="polars", publish=False
        )
    except DataCheckFailed as exc:
        polars_failure = exc
    if polars_failure is not None:
        # a feature matching no spine row fails both runs, before anything is written; the
        # key examples in the message may come from another part of the spine on Spark
        with pytest.raises(DataCheckFailed) as on_spark_failure:
            training_set(_project(config), out=root / "s.parquet", engine="spark", publish=False)
        first = polars_failure.message.split("; tried")[0]
        assert on_spark_failure.value.message.split("; tried")[0] == first
        assert not (root / "s.parquet").exists()
        return
    on_spark = training_set(_project(config), out=root / "s.parquet", engine="spark", publish=False)
    assert (root / "s.parquet").read_bytes() == (root / "p.parquet").read_bytes()
    assert on_spark.manifest["match_rates"] == on_polars.manifest["match_rates"]


def test_min_match_rate_fails_both_engines_alike(
    spark: object, project: Path, tmp_path: Path
) -> None:
    from mlpipe_cli.errors import DataCheckFailed
    from mlpipe_cli.ops.training_set import training_set

    config = yaml.safe_load(project.read_text())
    config["sources"]["orders"]["min_match_rate"] = 1.0  # some spine rows precede any order
    project.write_text(yaml.safe_dump(config))
    failures = []
    for engine, out in (("polars", tmp_path / "p.parquet"), ("spark", tmp_path / "s")):
        with pytest.raises(DataCheckFailed) as failure:
            training_set(_project(project), out=out, engine=engine, publish=False)
        assert not out.exists()
        failures.append(failure.value.message)
    assert "below min_match_rate 1" in failures[0]
    assert failures[1] == failures[0]


def test_task_errors_reach_the_user_as_mlpipe_errors(spark: object, tmp_path: Path) -> None:
    """A null spine time is caught before any task; a null event time only inside the task
    holding that row: both arrive as the Polars engine's error, class and message."""
    from mlpipe_cli.errors import DataCheckFailed, MlpipeError
    from mlpipe_cli.ops.training_set import build_training_set

    def error_of(engine: str, config: Path) -> MlpipeError:
        from mlpipe_cli.config import load_config

        with pytest.raises(MlpipeError) as caught:
            build_training_set(
                load_config(config), out=tmp_path / f"{engine}.parquet", engine=engine
            )
        assert not (tmp_path / f"{engine}.parquet").exists()
        return caught.value

    data = {
        "events": {"user": ["a", "b"], "ts": [_T0, _T0], "amount": [1.0, 2.0], "code": [1, 2]},
        "spine": {"user": ["a", "b"], "at": [_T0, None], "label": [True, False]},
        "attributes": {"user": ["a", "b"], "tier": ["x", "y"]},
        "split": 1,
    }
    for broken in ("spine", "events"):
        if broken == "events":
            data["spine"]["at"] = [_T0, _T0]  # type: ignore[index]
            data["events"]["ts"] = [_T0, None]  # type: ignore[index]
        root = tmp_path / broken
        root.mkdir()
        config = _write_messy(data, root)
        on_polars, on_spark = error_of("polars", config), error_of("spark", config)
        assert isinstance(on_spark, DataCheckFailed)
        assert type(on_spark) is type(on_polars)
        assert on_spark.message == on_polars.message
        assert "null timestamp" in on_spark.message


# -- transform -------------------------------------------------------------------------------


@pytest.fixture
def fitted_project(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The sample project with its training set built and a transform published."""
    from mlpipe_cli.ops.fit import fit
    from mlpipe_cli.ops.training_set import training_set

    data = tmp_path / "training_set.parquet"
    training_set(_project(project), out=data, engine="polars")
    fit(_project(project), data=data)
    return project, data


def test_transform_matches_polars(
    spark: object, fitted_project: tuple[Path, Path], tmp_path: Path
) -> None:
    from mlpipe_cli.ops.transform import transform

    project, data = fitted_project
    on_polars = transform(_project(project), data=data, out=tmp_path / "p.parquet")
    on_spark = transform(_project(project), data=data, out=tmp_path / "s.parquet", engine="spark")
    assert on_spark.rows == on_polars.rows
    # the null/NaN/inf accounting, summed over the tasks, is the Polars engine's
    assert on_spark.to_dict()["values"] == on_polars.to_dict()["values"]
    expected = pl.read_parquet(tmp_path / "p.parquet")
    assert pl.read_parquet(tmp_path / "s.parquet").equals(expected)
    into_dir = transform(_project(project), data=data, out=tmp_path / "dir", engine="spark")
    assert into_dir.rows == on_polars.rows
    assert pl.read_parquet(tmp_path / "dir").equals(expected)


# -- validate --------------------------------------------------------------------------------


def _dirty_orders(project: Path, root: Path) -> Path:
    """The sample orders as two files with failures of every kind the contract checks."""
    config = yaml.safe_load(project.read_text())
    orders = pl.read_parquet(config["sources"]["orders"]["path"]).head(3000)
    orders = orders.with_columns(
        pl.when(pl.col("order_id") % 97 == 0)
        .then(-5.0)
        .otherwise(pl.col("revenue"))
        .alias("revenue"),  # range + SQL check
        pl.when(pl.col("order_id") % 131 == 0)
        .then(pl.lit("fax"))
        .otherwise(pl.col("channel"))
        .alias("channel"),  # allowed set
        pl.when(pl.col("order_id") % 401 == 0)
        .then(None)
        .otherwise(pl.col("user_id"))
        .alias("user_id"),  # nullable
    )
    dupes = orders.slice(10, 3)  # repeats an earlier primary key and unique order_id
    root.mkdir(parents=True, exist_ok=True)
    orders.slice(0, 1700).write_parquet(root / "a.parquet")
    pl.concat([orders.slice(1700), dupes]).write_parquet(root / "b.parquet")
    return root


def test_validate_report_and_split_match_polars(
    spark: object, project: Path, tmp_path: Path
) -> None:
    from mlpipe_cli.ops.validate import validate

    data = _dirty_orders(project, tmp_path / "orders")
    reports = {}
    for engine in ("polars", "spark"):
        reports[engine] = validate(
            _project(project),
            sources=["orders"],
            data=data,
            engine=engine,
            publish=False,
            quarantine=tmp_path / engine / "bad.parquet",
            out=tmp_path / engine / "good.parquet",
        ).to_dict()
    spark_doc, polars_doc = reports["spark"], reports["polars"]
    for doc in (spark_doc, polars_doc):
        doc.pop("seconds")  # wall time of the run, not a result
        for source in doc["sources"]:
            source.pop("quarantine"), source.pop("out")
    assert spark_doc == polars_doc
    assert polars_doc["status"] == "failed"
    checks = {c["id"]: c for c in polars_doc["sources"][0]["checks"]}
    assert checks["orders.table.primary_key"]["failures"] == 3  # the oracle: 3 rows repeated
    assert checks["orders.channel.allowed"]["failures"] == len(range(131, 3001, 131))
    for name in ("bad.parquet", "good.parquet"):
        assert pl.read_parquet(tmp_path / "spark" / name).equals(
            pl.read_parquet(tmp_path / "polars" / name)
        )
    # as part-file directories: still every input row on exactly one side, in input order
    result = validate(
        _project(project),
        sources=["orders"],
        data=data,
        engine="spark",
        publish=False,
        quarantine=tmp_path / "q",
        out=tmp_path / "o",
    )
    source = result.report.sources[0]
    bad, good = pl.read_parquet(tmp_path / "q"), pl.read_parquet(tmp_path / "o")
    assert bad.height + good.height == source.rows == 3003
    assert bad.equals(pl.read_parquet(tmp_path / "polars" / "bad.parquet"))
    assert good.equals(pl.read_parquet(tmp_path / "polars" / "good.parquet"))
