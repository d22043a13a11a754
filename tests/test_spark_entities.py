"""engine: spark with several entities per spine row equals the Polars engine, byte for byte.

A flight row holds an aircraft (tail), two airports (origin, destination), a carrier and a
(carrier, origin) route: each is its own shuffle on Spark (one pass per set of spine columns
the features join on), and the passes' columns are put back side by side in spine order.
The oracle is the Polars engine's output file on the same inputs (its own values are checked
against a brute-force loop in tests/test_features_oracle.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.spark, pytest.mark.slow]

_T0 = datetime(2026, 3, 1, tzinfo=UTC)
# keys of different lengths, non-ASCII, empty, and differing only in case or padding
_CODES = st.sampled_from(["JFK", "ß", "Zürich-東", "", "a" * 33, "jfk", "ÖL"])
_TAILS = st.sampled_from(["N1", "N12345", "Ω-7", " N1 ", "x"])
_CARRIERS = st.sampled_from(["aa", "dl", "üa", "b6"])

FEATURES: list[dict[str, Any]] = [
    {"name": "flights_n", "source": "aircraft", "agg": "count", "default": 0},
    {"name": "hours_3d", "source": "aircraft", "agg": "sum", "column": "hours", "window": "3d"},
    {"name": "origin_delay", "source": "airports", "agg": "mean", "column": "delay",
     "join": {"origin": "code"}},
    {"name": "last_hours", "source": "aircraft", "agg": "last", "column": "hours"},
    {"name": "dest_delay", "source": "airports", "agg": "last", "column": "delay",
     "join": {"dest": "code"}},
    # the same source and spine column, another key column: a pass of its own
    {"name": "origin_by_icao", "source": "airports", "agg": "count", "default": -1,
     "entity_keys": ["icao"], "join": {"origin": "icao"}},
    {"name": "route_load", "source": "routes", "kind": "lag", "column": "load"},
    {"name": "rating", "source": "carriers", "kind": "attribute", "column": "rating"},
]  # fmt: skip


def _project(config_path: Path):  # type: ignore[no-untyped-def]
    from mlpipe_cli.ops.project import Project

    return Project(config_path)


@st.composite
def _flights(draw: st.DrawFn) -> dict[str, Any]:
    minutes = st.integers(0, 60 * 24 * 6)

    def at() -> datetime:
        return _T0 + timedelta(minutes=draw(minutes) // 240 * 240)  # coarse: ties

    def maybe(values: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(values, st.none()) if draw(st.integers(0, 5)) == 0 else values)

    # null keys only in the sources: a null spine key is refused by both engines (exit 2)
    spine = [
        {"tail": draw(_TAILS),
         "origin": draw(_CODES), "dest": draw(_CODES), "carrier": draw(_CARRIERS).upper(),
         "at": _T0 + timedelta(minutes=draw(minutes)), "label": draw(st.booleans())}
        for _ in range(draw(st.integers(1, 25)))
    ]  # fmt: skip
    aircraft = [
        {"tail": maybe(_TAILS), "ts": at(),
         "hours": draw(st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False)))}
        for _ in range(draw(st.integers(0, 30)))
    ]  # fmt: skip
    airports = [
        {"code": maybe(_CODES), "icao": maybe(_CODES), "ts": at(),
         "delay": draw(st.one_of(st.none(), st.floats(0, 500, allow_nan=False)))}
        for _ in range(draw(st.integers(0, 30)))
    ]  # fmt: skip
    routes = [
        {"carrier": draw(_CARRIERS).upper(), "origin": maybe(_CODES), "ts": at(),
         "load": draw(st.integers(0, 300))}
        for _ in range(draw(st.integers(0, 20)))
    ]  # fmt: skip
    return {
        "spine": spine,
        "aircraft": aircraft,
        "airports": airports,
        "routes": routes,
        "split": draw(st.integers(0, len(aircraft))),
        "partitions": draw(st.sampled_from([1, 3])),
    }


def _write_flights(data: dict[str, Any], root: Path) -> Path:
    """Inputs for ``data``, plus one early row per source for the first flight's entities so
    that every feature matches some spine row (a feature matching none fails both engines)."""
    spine = [dict(r, tail=r["tail"] and r["tail"].strip()) for r in data["spine"]]
    first = spine[0]
    early = _T0 - timedelta(days=1)
    for key in ("tail", "origin", "dest"):
        if first[key] is None:
            first[key] = "JFK"
    aircraft = [*data["aircraft"], {"tail": f" {first['tail']}", "ts": early, "hours": 1.5}]
    airports = [
        *data["airports"],
        {"code": first["origin"], "icao": first["origin"], "ts": early, "delay": 3.0},
        {"code": first["dest"], "icao": None, "ts": early, "delay": 4.0},
    ]
    routes = [
        *data["routes"],
        {"carrier": first["carrier"], "origin": first["origin"], "ts": early, "load": 9},
    ]
    carriers = sorted({r["carrier"] for r in spine})
    berlin = pl.Datetime("us", "Europe/Berlin")
    aircraft_frame = pl.DataFrame(
        aircraft, schema={"tail": pl.String, "ts": pl.Datetime("us", "UTC"), "hours": pl.Float64},
        orient="row",
    ).with_columns(pl.col("ts").cast(berlin))  # fmt: skip
    (root / "aircraft").mkdir(parents=True)
    split = min(int(data["split"]), aircraft_frame.height)
    aircraft_frame.slice(0, split).write_parquet(root / "aircraft" / "part-0.parquet")
    aircraft_frame.slice(split).write_parquet(root / "aircraft" / "part-1.parquet")
    pl.DataFrame(
        airports,
        schema={"code": pl.String, "icao": pl.Categorical, "ts": pl.Datetime("ms", "UTC"),
                "delay": pl.Float32},
        orient="row",
    ).write_parquet(root / "airports.parquet")  # fmt: skip
    pl.DataFrame(
        routes,
        schema={"carrier": pl.String, "origin": pl.String, "ts": pl.Datetime("us", "UTC"),
                "load": pl.UInt16},
        orient="row",
    ).write_parquet(root / "routes.parquet")  # fmt: skip
    pl.DataFrame(
        {"carrier_raw": [c.lower() for c in carriers], "rating": list(range(len(carriers)))}
    ).write_parquet(root / "carriers.parquet")
    pl.DataFrame(
        spine,
        schema={"tail": pl.String, "origin": pl.String, "dest": pl.String,
                "carrier": pl.Categorical, "at": pl.Datetime("us", "UTC"), "label": pl.Boolean},
        orient="row",
    ).with_columns(pl.col("at").dt.convert_time_zone("America/New_York")).write_parquet(
        root / "spine.parquet"
    )  # fmt: skip
    config = {
        "pipeline": "flights",
        "entity_keys": ["tail"],
        "artifact_dir": str(root / "artifacts"),
        "spark": {"partitions": int(data["partitions"])},
        "sources": {
            # a derived key replacing the stored column: the shuffle must hash the trimmed tail
            "aircraft": {"path": str(root / "aircraft"), "timestamp": "ts",
                         "derived": {"tail": "TRIM(tail)"}},
            "airports": {"path": str(root / "airports.parquet"), "timestamp": "ts",
                         "entity_keys": ["code"]},
            "routes": {"path": str(root / "routes.parquet"), "timestamp": "ts",
                       "entity_keys": ["carrier", "origin"]},
            # a derived key that is not a stored column at all
            "carriers": {"path": str(root / "carriers.parquet"), "entity_keys": ["carrier"],
                         "derived": {"carrier": "UPPER(carrier_raw)"}},
        },
        "features": FEATURES,
        "training_set": {"spine": str(root / "spine.parquet"), "timestamp": "at"},
    }  # fmt: skip
    path = root / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def _build_both(config: Path, root: Path) -> tuple[Any, Any]:
    from mlpipe_cli.ops.training_set import training_set

    on_polars = training_set(_project(config), out=root / "p.parquet", engine="polars")
    on_spark = training_set(_project(config), out=root / "s.parquet", engine="spark")
    return on_polars, on_spark


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=_flights())
def test_several_entities_per_row_equal_polars_bytes(
    spark: object, tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]
) -> None:
    root = tmp_path_factory.mktemp("flights")
    config = _write_flights(data, root)
    on_polars, on_spark = _build_both(config, root)
    assert (root / "s.parquet").read_bytes() == (root / "p.parquet").read_bytes()
    assert on_spark.manifest["match_rates"] == on_polars.manifest["match_rates"]
    assert on_spark.rows == len(data["spine"])


def _fixed_flights() -> dict[str, Any]:
    """A hand-made day: every feature has matches, non-matches and ties."""
    t = [_T0 + timedelta(hours=h) for h in range(12)]
    return {
        "spine": [
            {
                "tail": "N1",
                "origin": "Zürich-東",
                "dest": "JFK",
                "carrier": "AA",
                "at": t[5],
                "label": True,
            },
            {
                "tail": "Ω-7",
                "origin": "JFK",
                "dest": "",
                "carrier": "ÜA",
                "at": t[3],
                "label": False,
            },
            {
                "tail": "N1",
                "origin": "LAX",  # no airport or route has it (a null key would be refused)
                "dest": "Zürich-東",
                "carrier": "DL",
                "at": t[9],
                "label": True,
            },
            {
                "tail": "x",
                "origin": "a" * 33,
                "dest": "JFK",
                "carrier": "AA",
                "at": t[11],
                "label": False,
            },
        ],
        "aircraft": [
            {"tail": "N1", "ts": t[1], "hours": 2.0},
            {"tail": " Ω-7", "ts": t[2], "hours": 0.5},
            {"tail": "N1 ", "ts": t[4], "hours": None},
            {"tail": None, "ts": t[4], "hours": 9.0},
            {"tail": "x", "ts": t[10], "hours": 1e3},
        ],
        "airports": [
            {"code": "JFK", "icao": "Zürich-東", "ts": t[0], "delay": 12.5},
            {"code": "Zürich-東", "icao": "JFK", "ts": t[2], "delay": 3.0},
            {"code": "", "icao": None, "ts": t[1], "delay": None},
            {"code": "JFK", "icao": "JFK", "ts": t[6], "delay": 40.0},
        ],
        "routes": [
            {"carrier": "AA", "origin": "Zürich-東", "ts": t[4], "load": 120},
            {"carrier": "AA", "origin": "a" * 33, "ts": t[7], "load": 80},
            {"carrier": "ÜA", "origin": "JFK", "ts": t[3], "load": 5},
        ],
        "split": 2,
        "partitions": 1,
    }


def test_several_entities_same_bytes_for_any_partition_count_and_as_directory(
    spark: object, tmp_path: Path
) -> None:
    from mlpipe_cli.ops.training_set import training_set

    data = _fixed_flights()
    one = _write_flights(data, tmp_path / "one")
    on_polars, _ = _build_both(one, tmp_path / "one")
    expected = pl.read_parquet(tmp_path / "one" / "p.parquet")
    # the hand-checked values (the Polars engine's, which the oracle tests cover)
    assert expected.columns == ["tail", "origin", "dest", "carrier", "at", "label"] + [
        f["name"] for f in FEATURES
    ]
    assert expected.get_column("flights_n").to_list() == [3, 1, 3, 1]
    assert expected.get_column("origin_by_icao").to_list() == [2, 1, -1, -1]
    assert expected.get_column("route_load").to_list() == [120, None, None, 80]
    assert (tmp_path / "one" / "s.parquet").read_bytes() == (
        tmp_path / "one" / "p.parquet"
    ).read_bytes()

    many = _write_flights(dict(data, partitions=4), tmp_path / "many")
    config = yaml.safe_load(many.read_text())
    config["spark"]["rows_per_file"] = 3  # parts cut inside the spine
    many.write_text(yaml.safe_dump(config, allow_unicode=True))
    training_set(_project(many), out=tmp_path / "many" / "s.parquet", engine="spark")
    assert (tmp_path / "many" / "s.parquet").read_bytes() == (
        tmp_path / "one" / "p.parquet"
    ).read_bytes()
    as_dir = training_set(_project(many), out=tmp_path / "many" / "dir", engine="spark")
    assert sorted(p.name for p in (tmp_path / "many" / "dir").iterdir()) == [
        "part-00000-0000000000000.parquet",
        "part-00000-0000000000003.parquet",
    ]
    assert pl.read_parquet(tmp_path / "many" / "dir").equals(expected)
    assert as_dir.manifest["match_rates"] == on_polars.manifest["match_rates"]


def test_derived_key_of_another_type_is_refused_in_one_line(spark: object, tmp_path: Path) -> None:
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.ops.training_set import training_set

    config_path = _write_flights(_fixed_flights(), tmp_path)
    config = yaml.safe_load(config_path.read_text())
    pl.DataFrame({"day_raw": [_T0 + timedelta(hours=3)], "holiday": [True]}).write_parquet(
        tmp_path / "days.parquet"
    )
    pl.DataFrame({"tail": ["N1"], "day": [_T0.date()], "at": [_T0]}).write_parquet(
        tmp_path / "spine.parquet"
    )
    config["sources"]["days"] = {
        "path": str(tmp_path / "days.parquet"),
        "entity_keys": ["day"],
        "derived": {"day": "CAST(day_raw AS DATE)"},
    }
    config["features"] = [{"name": "holiday", "source": "days", "kind": "attribute"}]
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    done = training_set(_project(config_path), out=tmp_path / "p.parquet", engine="polars")
    assert done.rows == 1
    with pytest.raises(UsageError, match=r"a join key computed by `derived` as Date \(days\.day"):
        training_set(_project(config_path), out=tmp_path / "s.parquet", engine="spark")
    assert not (tmp_path / "s.parquet").exists()
