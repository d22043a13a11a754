"""Several entity types per row, offline and online (issue 12): training-set match rates,
derived columns read alike by every command, materialize writing one namespace per key set,
lookups by every key (one round trip), and served values equal to training-set at the same
instant — on real Parquet files, a real SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import polars as pl
import pytest
import yaml
from conftest import run_mlpipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config import load_config
from mlpipe_cli.errors import UsageError
from mlpipe_cli.online import open_store
from mlpipe_cli.online.redis_store import RedisStore
from mlpipe_cli.online.sqlite_store import SqliteStore
from mlpipe_cli.online.store import Namespace, StoreMetadata
from mlpipe_cli.online.writer import finish_version, new_version_id, start_version
from mlpipe_cli.sample_data import END, generate_rides

REPO = Path(__file__).resolve().parent.parent
RIDES_CONFIG = REPO / "configs" / "rides.yaml"
RIDE_KEYS = ["rider_id", "driver_id", "pickup_zone", "dropoff_zone"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rides_project(
    tmp_path: Path, *, rows: int = 2000, shift: timedelta = timedelta(0), online: dict | None = None
) -> Path:
    """configs/rides.yaml over freshly generated rides data, every timestamp moved by
    ``shift`` (so the data can end just before now), artifacts under tmp_path."""
    data = tmp_path / "rides"
    generate_rides(data, rows=rows, seed=5)
    if shift:
        for name in ("rides", "drivers", "zone_weather", "labels"):
            path = data / f"{name}.parquet"
            frame = pl.read_parquet(path)
            frame = frame.with_columns(
                pl.col(c) + shift
                for c, dtype in frame.schema.items()
                if isinstance(dtype, pl.Datetime)
            )
            frame.write_parquet(path)
    doc = yaml.safe_load(RIDES_CONFIG.read_text())
    for source in doc["sources"].values():
        source["path"] = str(data / Path(source["path"]).name)
    doc["training_set"]["spine"] = str(data / "labels.parquet")
    doc["transforms"]["data"] = str(tmp_path / "train.parquet")
    doc["artifact_dir"] = str(tmp_path / "artifacts")
    doc["online_store"] = online or {"type": "sqlite", "path": str(tmp_path / "online.sqlite"),
                                     "chunk_size": 150}  # fmt: skip
    path = tmp_path / "rides.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


# -- training-set: match rates, entity keys only on sources ------------------------------------


def test_training_set_records_match_rates_and_prints_them(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Manifest and summary give each feature's matched rows, equal to a count done here in
    plain Python (a spine row matches when its key has a source row in scope at t)."""
    path = rides_project(tmp_path, rows=1500)
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", path, "--out", out, "--no-publish")
    assert result.exit_code == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("feature"))
    assert header.split() == ["feature", "dtype", "nulls", "nan", "inf", "matched"]
    manifest = json.loads((tmp_path / "train.parquet.manifest.json").read_text())
    rates = manifest["match_rates"]
    assert sorted(rates) == sorted(manifest["features"])  # (the manifest sorts its keys)

    spine = pl.read_parquet(tmp_path / "rides" / "labels.parquet").to_dicts()
    rides = pl.read_parquet(tmp_path / "rides" / "rides.parquet").to_dicts()
    drivers = {
        r["driver_id"] for r in pl.read_parquet(tmp_path / "rides" / "drivers.parquet").to_dicts()
    }
    weather = pl.read_parquet(tmp_path / "rides" / "zone_weather.parquet").to_dicts()

    def picked_up(ride: dict) -> datetime | None:
        wait = ride["wait_min"]
        return None if wait is None else ride["requested_at"] + timedelta(minutes=wait)

    def matched_rides(key: str) -> int:  # visible: requested and picked up strictly before t
        return sum(
            any(r[key] == row[key] and r["requested_at"] < row["requested_at"]
                and picked_up(r) is not None and picked_up(r) < row["requested_at"] for r in rides)
            for row in spine
        )  # fmt: skip

    def matched_weather(column: str) -> int:
        return sum(
            any(w["zone"] == row[column] and w["hour"] < row["requested_at"] for w in weather)
            for row in spine
        )

    expected = {
        "rider_rides_30d": matched_rides("rider_id"),
        "driver_rides_7d": matched_rides("driver_id"),
        "pickup_requests_1h": matched_rides("pickup_zone"),
        "driver_vehicle": sum(row["driver_id"] in drivers for row in spine),
        "pickup_rain_mm": matched_weather("pickup_zone"),
        "dropoff_rain_mm": matched_weather("dropoff_zone"),
    }
    for name, matched in expected.items():
        assert rates[name]["matched"] == matched, name
        assert rates[name]["rows"] == len(spine)
        assert rates[name]["match_rate"] == pytest.approx(matched / len(spine))
    assert rates["dropoff_rain_mm"]["keys"] == {"dropoff_zone": "zone"}
    # the printed column says the same
    line = next(row for row in result.stdout.splitlines() if row.startswith("driver_rides_7d"))
    assert f"{expected['driver_rides_7d']} (" in line


def test_a_feature_matching_no_row_fails_before_anything_is_written(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Weather joined on the carrier-like driver column: no zone is a driver id, so the
    feature would be all defaults; the run exits 1 naming it and writes nothing."""
    path = rides_project(tmp_path, rows=800)
    doc = yaml.safe_load(path.read_text())
    doc["features"].append({"name": "rain_at_driver", "source": "zone_weather", "agg": "last",
                            "column": "rain_mm", "join": {"driver_id": "zone"}, "default": 0.0})  # fmt: skip
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", path, "--out", out, "--no-publish")
    assert result.exit_code == 1, result.stderr
    assert "feature 'rain_at_driver' matched none of" in result.stderr
    assert "spine.driver_id -> zone_weather.zone" in result.stderr
    assert not out.exists()
    assert not (tmp_path / "train.parquet.manifest.json").exists()


def test_min_match_rate_fails_the_run(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = rides_project(tmp_path, rows=800)
    doc = yaml.safe_load(path.read_text())
    doc["features"][0]["min_match_rate"] = 1.0  # some riders ride for the first time
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    result = cli("training-set", "-c", path, "--out", tmp_path / "t.parquet", "--no-publish")
    assert result.exit_code == 1
    assert "below min_match_rate 1" in result.stderr


def test_no_pipeline_entity_keys_when_every_source_declares_its_own(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = rides_project(tmp_path, rows=800)
    doc = yaml.safe_load(path.read_text())
    del doc["entity_keys"]
    doc["sources"]["rides"]["entity_keys"] = ["rider_id"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    with_keys = tmp_path / "with.parquet"
    cli("training-set", "-c", rides_project(tmp_path / "b", rows=800), "--out", with_keys,
        "--no-publish")  # fmt: skip
    out = tmp_path / "without.parquet"
    result = cli("training-set", "-c", path, "--out", out, "--no-publish")
    assert result.exit_code == 0, result.stderr
    assert pl.read_parquet(out).equals(pl.read_parquet(with_keys))


# -- derived columns: one definition, read alike by validate, training-set, materialize --------


def test_derived_columns_in_validate_training_set_and_materialize(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A derived value column under a contract (validate), a derived *key* column
    (materialize lists its entities from it) and both used by training-set and materialize."""
    path = rides_project(tmp_path, rows=800)
    doc = yaml.safe_load(path.read_text())
    rides = doc["sources"]["rides"]
    rides["columns"]["fare_per_km"] = {"dtype": "float64", "gt": 0}
    # drivers keyed by a number; the string key every other source uses is derived from it
    drivers_path = Path(doc["sources"]["drivers"]["path"])
    frame = pl.read_parquet(drivers_path)
    frame.with_columns(
        pl.col("driver_id").str.strip_prefix("drv-").cast(pl.Int64).alias("driver_no")
    ).drop("driver_id").write_parquet(drivers_path)
    doc["sources"]["drivers"]["derived"] = {"driver_id": "'drv-' || CAST(driver_no AS VARCHAR)"}
    doc["features"] = [f for f in doc["features"] if f["name"] in
                       ("driver_fare_per_km_30d", "driver_vehicle", "rider_rides_30d")]  # fmt: skip
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))

    ok = cli("validate", "-c", path, "--source", "rides", "--no-publish", "--json")
    assert ok.exit_code == 0, ok.stderr
    checks = {c["id"]: c for c in ok.json()["sources"][0]["checks"]}
    assert checks["rides.fare_per_km.gt"]["status"] == "pass"

    out = tmp_path / "train.parquet"
    assert cli("training-set", "-c", path, "--out", out, "--no-publish").exit_code == 0
    train = pl.read_parquet(out)
    assert train["driver_vehicle"].is_in(["sedan", "suv", "van", "e-bike"]).all()
    as_of = "2026-06-30T12:00:00Z"
    result = cli("materialize", "-c", path, "--as-of", as_of, "--json")
    assert result.exit_code == 0, result.stderr
    config = load_config(path)
    store = open_store(config, config.artifact_dir)
    try:
        meta = store.live_metadata()
        assert meta is not None
        assert [ns.keys for ns in meta.namespaces] == [["rider_id"], ["driver_id"]]
        assert meta.namespaces[1].entity_count == frame.height  # every driver, from drivers too
        hit = store.get_many([{"driver_id": "drv-1", "rider_id": "nobody"}])[0]
        assert (
            hit.values["driver_vehicle"]
            == frame.filter(pl.col("driver_id") == "drv-1")["vehicle"][0]
        )
        assert hit.missing == ["rider_rides_30d"]
    finally:
        store.close()

    # a negative fare breaks the derived column's contract: validate names it
    bad = pl.read_parquet(rides["path"]).with_columns(
        pl.when(pl.col("ride_id") == 3).then(-1.0).otherwise(pl.col("fare")).alias("fare")
    )
    bad_path = tmp_path / "bad_rides.parquet"
    bad.write_parquet(bad_path)
    failed = cli("validate", "-c", path, "--source", "rides", "--data", bad_path, "--no-publish",
                 "--json", "--out", tmp_path / "good_rows.parquet")  # fmt: skip
    assert failed.exit_code == 1
    checks = {c["id"]: c for c in failed.json()["sources"][0]["checks"]}
    assert checks["rides.fare_per_km.gt"]["status"] == "fail"
    # rows written by --out keep the stored columns only (derived ones are recomputed on read)
    assert pl.read_parquet(tmp_path / "good_rows.parquet").columns == bad.columns


def test_feature_hash_covers_derived_join_and_null_created(tmp_path: Path) -> None:
    from mlpipe_cli.online.materialize import feature_hash, select_features

    path = rides_project(tmp_path, rows=200)
    base = load_config(path)

    def hashed(edit) -> str:  # type: ignore[no-untyped-def]
        doc = yaml.safe_load(path.read_text())
        edit(doc)
        other = tmp_path / "edited.yaml"
        other.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        config = load_config(other)
        return feature_hash(config, select_features(config, None))

    reference = feature_hash(base, select_features(base, None))
    assert hashed(lambda d: None) == reference
    assert hashed(lambda d: d["sources"]["rides"]["derived"].update(
        fare_per_km="fare / (distance_km + 1)")) != reference  # fmt: skip
    assert hashed(lambda d: d["sources"]["rides"].update(null_created="error")) != reference
    assert (
        hashed(lambda d: d["sources"]["zone_weather"].update(join={"pickup_zone": "zone"}))
        != reference
    )


# -- materialize + serve: offline == online for three entity types -----------------------------


async def _call(
    app: Any, method: str, path: str, *, query: str = "", body: Any = None
) -> tuple[int, Any]:
    payload = orjson.dumps(body) if body is not None else b""

    async def read_body() -> bytes:
        return payload

    _, status, raw, _, _ = await app.handle(path, method, read_body, None, query)
    return status, orjson.loads(raw)


def _serving_app(path: Path) -> Any:
    from mlpipe_cli.serving.app import ServingApp
    from mlpipe_cli.serving.service import build_runtime

    config = load_config(path)
    runtime = build_runtime(config, config.artifact_dir, model_ref="none", logging_enabled=False)
    return ServingApp(runtime.service, runtime.metrics, coalesce=True, max_batch=100)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_served_values_and_vectors_equal_training_set_at_the_same_instant(
    cli,
    tmp_path: Path,
    request: Any,
    backend: str,  # type: ignore[no-untyped-def]
) -> None:
    """The rides data moved to end just before now; materialize as of now, then serve every
    spine row's four keys (GET by name, coalesced, and POST batches) and compare with
    `training-set` on a spine of the same keys at the same instant: raw values exactly,
    vectors with the fitted transform's batch path. String keys of several lengths and
    scripts (riders 'ŕ_12', zones 'Køge', 'Ōsaka-Namba', 'Q')."""
    now = datetime.now(UTC).replace(microsecond=0)
    shift = (now - timedelta(minutes=10)) - END
    online = None
    if backend == "redis":
        online = {"type": "redis", "url": request.getfixturevalue("redis_server").url,
                  "key_prefix": "t:rides", "chunk_size": 150}  # fmt: skip
    path = rides_project(tmp_path, rows=2000, shift=shift, online=online)
    as_of = now - timedelta(seconds=5)
    labels = pl.read_parquet(tmp_path / "rides" / "labels.parquet")
    spine = labels.with_columns(pl.lit(as_of).dt.cast_time_unit("us").alias("requested_at"))
    spine_path = tmp_path / "spine_now.parquet"
    spine.write_parquet(spine_path)
    assert cli("training-set", "-c", path, "--spine", spine_path, "--out", tmp_path / "train.parquet",
               "--no-publish").exit_code == 0  # fmt: skip
    assert cli("fit", "-c", path).exit_code == 0
    result = cli("materialize", "-c", path, "--as-of", as_of.isoformat(), "--json")
    assert result.exit_code == 0, result.stderr
    config = load_config(path)
    names = [f.name for f in config.features]
    train = pl.read_parquet(tmp_path / "train.parquet")

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.transforms import load_transform

    transform = load_transform(ArtifactStore(config.artifact_dir, config.pipeline))
    vectors = transform.transform_batch(train.lazy()).collect().select(transform.output_columns)
    rows = train.to_dicts()
    assert len({r["rider_id"] for r in rows}) > 50
    assert any(not r["rider_id"].isascii() for r in rows)
    assert len({len(r["pickup_zone"]) for r in rows}) > 3

    app = _serving_app(path)

    async def serve_all() -> tuple[list[tuple[int, Any]], list[Any]]:
        app.on_startup()
        try:
            gets = await asyncio.gather(*[
                _call(app, "GET", "/features", query=urlencode({k: r[k] for k in RIDE_KEYS}))
                for r in rows
            ])  # fmt: skip
            posts = []
            for start in range(0, len(rows), 100):
                part = [{k: r[k] for k in RIDE_KEYS} for r in rows[start : start + 100]]
                status, doc = await _call(app, "POST", "/features", body={"entities": part})
                assert status == 200, doc
                posts.extend(doc["results"])
            return gets, posts
        finally:
            app.on_shutdown()
            app.service.store.close()

    gets, posts = asyncio.run(serve_all())
    assert app.metrics.coalesced_calls < len(rows)  # concurrent GETs shared store calls
    for i, (row, (status, got), posted) in enumerate(zip(rows, gets, posts, strict=True)):
        assert status == 200, got
        for doc in (got, posted):
            assert doc["entity"] == [row[k] for k in RIDE_KEYS]
            served = {n: doc["features"][n] for n in names}
            assert served == {n: _close(row[n], served[n]) for n in names}, i
            assert doc["expired"] == []
            assert doc["vector"] == pytest.approx(list(vectors.row(i)), rel=1e-12, abs=1e-12)
    served_cold = sum(doc["cold_start"] for doc in posts)
    assert served_cold < len(rows)  # most riders have history


def _close(expected: Any, served: Any) -> Any:
    """``expected``, or ``served`` when both are floats within 1e-12 relative.

    Only for floats, and only because of a known engine effect (reported on issue 12): a
    windowed mean as of (entity, t) can differ in the last bit with the *other* rows of the
    spine (Polars' rolling sums are incremental), and training-set's spine holds each
    driver many times while materialize's holds it once. Everything else is compared exactly.
    """
    if isinstance(expected, float) and isinstance(served, float):
        return served if served == pytest.approx(expected, rel=1e-12, abs=0) else expected
    return expected


def test_named_keys_are_parsed_strictly_and_a_bad_request_fails_alone(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = rides_project(tmp_path, rows=600)
    assert (
        cli(
            "training-set", "-c", path, "--out", tmp_path / "train.parquet", "--no-publish"
        ).exit_code
        == 0
    )
    assert cli("fit", "-c", path).exit_code == 0
    assert cli("materialize", "-c", path, "--as-of", "2026-06-30T00:00:00Z").exit_code == 0
    row = pl.read_parquet(tmp_path / "rides" / "labels.parquet").row(0, named=True)
    keys = {k: row[k] for k in RIDE_KEYS}
    good = urlencode(keys)
    bad = [
        "",  # GET /features without keys: 405 (POST or named keys)
        urlencode({k: v for k, v in keys.items() if k != "driver_id"}),  # a key missing
        good + "&driver_id=drv-1",  # a key twice
        good + "&tailnum=N1",  # unknown key
        good + "&%FF=1",  # not UTF-8
        "rider_id="
        + "x" * 600
        + "&"
        + urlencode({k: v for k, v in keys.items() if k != "rider_id"}),
        "rider_id",  # not name=value
        "rider_id=r1&dröp=1",  # not percent-encoded
    ]
    app = _serving_app(path)

    async def run() -> list[tuple[int, Any]]:
        app.on_startup()
        try:
            requests = [_call(app, "GET", "/features", query=q) for q in bad]
            requests += [_call(app, "GET", "/features", query=good) for _ in range(len(bad))]
            return await asyncio.gather(*requests)  # coalesced together
        finally:
            app.on_shutdown()
            app.service.store.close()

    answers = asyncio.run(run())
    for query, (status, doc) in zip(bad, answers[: len(bad)], strict=True):
        assert status == (405 if not query else 400), (query, doc)
        assert doc["error"] == ("method_not_allowed" if not query else "bad_entity"), doc
        assert len(doc["message"]) < 200
    first = answers[len(bad)][1]
    assert first["entity"] == list(keys.values())
    for status, doc in answers[len(bad) :]:
        assert status == 200
        assert doc == first
    # '+' is a space and %2B a plus, as in form encoding
    from mlpipe_cli.serving.keys import parse_query

    assert parse_query("zone=Ealing+Broadway&k=a%2Bb") == {"zone": "Ealing Broadway", "k": "a+b"}
    with pytest.raises(UsageError):
        parse_query("zone=%C3")  # a truncated UTF-8 sequence


# -- the store: namespaces, one round trip, atomic switch --------------------------------------


def _multi_meta(store: Any, rows: dict[int, dict[tuple, list]], namespaces: list[Namespace],
                as_of: datetime, defaults: dict[str, Any]) -> StoreMetadata:  # fmt: skip
    keys: list[str] = []
    types: list[str] = []
    for ns in namespaces:
        for k, t in zip(ns.keys, ns.key_types, strict=True):
            if k not in keys:
                keys.append(k)
                types.append(t)
    return StoreMetadata(
        version=new_version_id(store), as_of=as_of, finished_at=None,
        entity_count=sum(len(r) for r in rows.values()),
        features=[f for ns in namespaces for f in ns.features], feature_hash="h",
        entity_keys=keys, key_types=types, defaults=defaults, namespaces=namespaces,
    )  # fmt: skip


def publish_multi(store: Any, rows: dict[int, dict[tuple, list]], namespaces: list[Namespace],
                  defaults: dict[str, Any]) -> StoreMetadata:  # fmt: skip
    """Write {namespace: {key tuple: values}} as one version (chunks of 7) and switch."""
    meta = _multi_meta(store, rows, namespaces, datetime.now(UTC), defaults)
    progress = start_version(store, meta, chunk_size=7, entities_hash="e")
    for index in range(len(namespaces)):
        items = [(orjson.dumps(list(key)).decode(), orjson.dumps(values))
                 for key, values in sorted(rows.get(index, {}).items())]  # fmt: skip
        for start in range(0, len(items), 7):
            store.write_chunk(progress, items[start : start + 7], index)
    final, _ = finish_version(store, meta, progress, expected=meta.entity_count)
    return final


@pytest.fixture(params=["sqlite", "redis"])
def store(request: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        s: Any = SqliteStore(tmp_path / "online.sqlite", pointer_refresh=60.0)
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix="t:multi", pointer_refresh=60.0)
    yield s
    s.close()


NAMESPACES = [
    Namespace(["rider"], ["str"], ["r_count"], 0),
    Namespace(["zone", "driver"], ["str", "int"], ["zd_fare", "zd_name"], 0),
    Namespace(["driver"], ["int"], ["d_rating"], 0),
]
DEFAULTS = {"r_count": 0, "zd_fare": None, "zd_name": "?", "d_rating": -1.0}
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    riders=st.dictionaries(TEXT, st.integers(0, 99), max_size=12),
    pairs=st.dictionaries(
        st.tuples(TEXT, st.integers(-(2**63), 2**63 - 1)),
        st.tuples(st.floats(allow_nan=False), TEXT),
        max_size=12,
    ),
    drivers=st.dictionaries(st.integers(-(2**63), 2**63 - 1), st.floats(-5, 5), max_size=12),
    data=st.data(),
)
def test_multi_namespace_lookups_equal_a_dict_oracle(store, riders, pairs, drivers, data) -> None:  # type: ignore[no-untyped-def]
    """Random string keys (empty, non-ASCII, different lengths) and 64-bit ints across three
    entity types, one a composite: every lookup of (rider, zone, driver) gives each type's
    values or its defaults, and `found` only when all three were stored."""
    rows = {
        0: {(r,): [n] for r, n in riders.items()},
        1: {(z, d): [fare, name] for (z, d), (fare, name) in pairs.items()},
        2: {(d,): [rating] for d, rating in drivers.items()},
    }
    if not any(rows.values()):
        rows[0][("x",)] = [1]
    publish_multi(store, rows, NAMESPACES, DEFAULTS)
    rider_pool = [*riders, "never-stored", ""]
    zd_pool = [*pairs, ("Zürich", 7)]
    driver_pool = [*drivers, 12345]
    lookups = data.draw(st.lists(st.tuples(st.sampled_from(rider_pool), st.sampled_from(zd_pool),
                                           st.sampled_from(driver_pool)), min_size=1, max_size=20))  # fmt: skip
    entities = [{"rider": r, "zone": z, "driver": d} for r, (z, _), d in lookups]
    # entity_keys order: rider, zone, driver; a list works as well as a mapping
    as_lists = [[r, z, d] for r, (z, _), d in lookups]
    reader = _reopen(store)  # the fixture's reader caches the pointer of an earlier example
    try:
        results = reader.get_many(entities)
        assert [x.values for x in reader.get_many(as_lists)] == [x.values for x in results]
    finally:
        reader.close()
    for (r, (z, _), d), got in zip(lookups, results, strict=True):
        expected: dict[str, Any] = {}
        missing: list[str] = []
        for name, value in (("r_count", riders.get(r)),):
            expected[name] = DEFAULTS[name] if value is None else value
            if value is None:
                missing.append(name)
        pair = pairs.get((z, d))
        expected["zd_fare"], expected["zd_name"] = pair if pair is not None else (None, "?")
        if pair is None:
            missing += ["zd_fare", "zd_name"]
        rating = drivers.get(d)
        expected["d_rating"] = -1.0 if rating is None else rating
        if rating is None:
            missing.append("d_rating")
        assert got.values == expected
        assert list(got.values) == ["r_count", "zd_fare", "zd_name", "d_rating"]
        assert got.missing == missing
        assert got.found is (not missing)


def test_one_round_trip_per_lookup_redis(redis_server) -> None:  # type: ignore[no-untyped-def]
    """A batch of three-entity lookups is one MGET over every namespace (no GET, no other
    read), also on the event loop's connection."""
    store = RedisStore(redis_server.url, prefix="t:rt", pointer_refresh=60.0)
    rows = {0: {("ŕ_1",): [3], ("R22",): [4]}, 1: {("Køge", 7): [1.5, "a"]}, 2: {(7,): [4.5]}}
    publish_multi(store, rows, NAMESPACES, DEFAULTS)
    entities = [{"rider": "ŕ_1", "zone": "Køge", "driver": 7}, ["R22", "Køge", 7]]
    assert [r.found for r in store.get_many(entities)] == [True, True]  # warms the pointer cache
    client = redis_server.client()

    def calls() -> dict[str, int]:
        stats = client.info("commandstats")
        return {
            name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in ("get", "mget", "hget")
        }

    before = calls()
    results = store.get_many(entities)
    after = calls()
    assert {k: after[k] - before[k] for k in after} == {"get": 0, "mget": 1, "hget": 0}
    assert results[1].values == {"r_count": 4, "zd_fare": 1.5, "zd_name": "a", "d_rating": 4.5}

    async def on_loop() -> list[Any]:
        await store.get_many_async(entities)  # connects and reads the pointer
        first = calls()
        got = await store.get_many_async(entities)
        second = calls()
        assert {k: second[k] - first[k] for k in second} == {"get": 0, "mget": 1, "hget": 0}
        return got

    assert [r.values for r in asyncio.run(on_loop())] == [r.values for r in results]
    # a single entity in a single-namespace version stays one GET
    store.close()


def test_one_query_per_namespace_sqlite(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "online.sqlite", pointer_refresh=60.0)
    rows = {0: {("a",): [1], ("bb",): [2]}, 1: {("Z", 1): [0.5, "x"]}, 2: {(1,): [2.0]}}
    publish_multi(store, rows, NAMESPACES, DEFAULTS)
    entities = [["a", "Z", 1], ["bb", "Z", 1], ["a", "nope", 2]]
    store.get_many(entities)  # opens the reader and caches the pointer
    statements: list[str] = []
    store._reader().set_trace_callback(statements.append)
    got = store.get_many(entities)
    store._reader().set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # three namespaces, one query each; the miss re-reads the live pointer once
    assert len([s for s in selects if "mlpipe_pointer" not in s]) == 3, selects
    assert [r.found for r in got] == [True, True, False]
    assert got[2].missing == ["zd_fare", "zd_name", "d_rating"]
    store.close()


def test_versions_switch_and_vanish_with_every_namespace(store) -> None:  # type: ignore[no-untyped-def]
    """Three versions: the first is removed with all its namespaces; rollback swaps; a
    reader never sees one version's rider next to another's driver."""
    v1 = publish_multi(store, {0: {("r",): [1]}, 1: {("z", 1): [1.0, "v1"]}, 2: {(1,): [1.0]}},
                       NAMESPACES, DEFAULTS)  # fmt: skip
    v2 = publish_multi(store, {0: {("r",): [2]}, 1: {("z", 1): [2.0, "v2"]}, 2: {(1,): [2.0]}},
                       NAMESPACES, DEFAULTS)  # fmt: skip
    fresh = _reopen(store)
    assert fresh.get(["r", "z", 1]).values == {
        "r_count": 2,
        "zd_fare": 2.0,
        "zd_name": "v2",
        "d_rating": 2.0,
    }
    v3 = publish_multi(store, {0: {("r",): [3]}, 1: {("z", 1): [3.0, "v3"]}, 2: {(1,): [3.0]}},
                       NAMESPACES, DEFAULTS)  # fmt: skip
    assert {m.version for m, _ in store.versions()} == {v2.version, v3.version}
    assert store.count(v1.version) == 0  # every namespace of v1 is gone
    assert store.count(v3.version) == 3
    assert fresh.get(["r", "z", 1]).values["zd_name"] == "v3"
    store.rollback()
    assert fresh.get(["r", "z", 1]).values == {
        "r_count": 2,
        "zd_fare": 2.0,
        "zd_name": "v2",
        "d_rating": 2.0,
    }
    meta = fresh.live_metadata()
    assert [ns.keys for ns in meta.namespaces] == [["rider"], ["zone", "driver"], ["driver"]]
    assert meta.entity_keys == ["rider", "zone", "driver"]
    fresh.close()


def _reopen(store: Any) -> Any:
    """A second reader of the same store that re-reads the live pointer on every lookup."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path, pointer_refresh=0.0)
    return RedisStore(store.url, prefix=store.prefix, pointer_refresh=0.0)


def test_key_values_are_coerced_by_the_offline_rule(store) -> None:  # type: ignore[no-untyped-def]
    """An int for a string key is its decimal text, decimal text for an int key is the int;
    anything else is refused, never a silent miss."""
    publish_multi(store, {0: {("123",): [5]}, 1: {("z", 42): [1.0, "a"]}, 2: {(42,): [0.5]}},
                  NAMESPACES, DEFAULTS)  # fmt: skip
    assert store.get([123, "z", "42"]).values == {
        "r_count": 5,
        "zd_fare": 1.0,
        "zd_name": "a",
        "d_rating": 0.5,
    }
    assert store.get({"rider": "123", "zone": "z", "driver": 42}).found
    for bad in (["123", "z", "4x"], ["123", "z", True], [1.5, "z", 42], ["123", "z"]):
        with pytest.raises(UsageError):
            store.get(bad)


def test_materialize_killed_mid_run_resumes_across_namespaces(tmp_path: Path) -> None:
    """A run SIGKILLed while writing its rider chunks leaves the old version live (with the
    old values); --resume continues the abandoned version through the rider, driver and zone
    namespaces, and serves exactly what a clean run serves."""
    import os
    import signal
    import subprocess
    import sys

    from test_materialize import _run, _wait_for_progress

    path = rides_project(tmp_path, rows=3000)
    assert _run("materialize", "-c", path, "--as-of", "2026-05-01T00:00:00Z").returncode == 0
    config = load_config(path)
    store = open_store(config, config.artifact_dir)
    old = store.live_metadata()
    spine = pl.read_parquet(tmp_path / "rides" / "labels.parquet").select(RIDE_KEYS).to_dicts()
    old_values = [r.values for r in store.get_many(spine)]
    as_of = "2026-06-30T00:00:00Z"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(path), "--as-of", as_of,
         "--chunk-size", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        building = _wait_for_progress(store, proc, min_chunks=12)  # of ~70, riders first
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert store.live_metadata().version == old.version
        assert [r.values for r in store.get_many(spine)] == old_values
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    store.close()
    resumed = _run("materialize", "-c", path, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["version"] == building
    assert doc["resumed_chunks"] >= 12
    assert doc["chunks"] > doc["resumed_chunks"] + 4 * 2  # driver and zone chunks remained

    clean = rides_project(tmp_path / "clean", rows=3000)
    assert _run("materialize", "-c", clean, "--as-of", as_of, "--chunk-size", "5").returncode == 0
    clean_config = load_config(clean)
    a = open_store(config, config.artifact_dir)
    b = open_store(clean_config, clean_config.artifact_dir)
    try:
        resumed_values = [r.values for r in a.get_many(spine)]
        clean_values = [r.values for r in b.get_many(spine)]
        # floats within 1e-12 (see _close: a batch's other entities can move the last bit)
        assert resumed_values == [
            {n: _close(v, got[n]) for n, v in want.items()}
            for want, got in zip(clean_values, resumed_values, strict=True)
        ]
        assert a.live_metadata().namespaces == b.live_metadata().namespaces
    finally:
        a.close()
        b.close()


# -- sample-data -------------------------------------------------------------------------------


def test_sample_data_churn_default_is_unchanged_and_rides_is_available(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mlpipe_cli.sample_data import generate

    direct = tmp_path / "direct"
    generate(direct, rows=100_000, seed=42)
    via_cli = tmp_path / "cli"
    assert cli("sample-data", "--out", via_cli, "-q").exit_code == 0
    files = sorted(p.name for p in direct.glob("*.parquet"))
    assert files == sorted(p.name for p in via_cli.glob("*.parquet"))
    assert all(_sha(direct / f) == _sha(via_cli / f) for f in files)

    rides_direct = tmp_path / "rides_direct"
    generate_rides(rides_direct)
    result = cli("sample-data", "--dataset", "rides", "--out", tmp_path / "rides", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["seed"] == 7
    for name in ("rides", "drivers", "zone_weather", "labels"):
        assert _sha(rides_direct / f"{name}.parquet") == _sha(
            tmp_path / "rides" / f"{name}.parquet"
        )
    refused = cli("sample-data", "--dataset", "rides", "--fault", "drift", "--out", tmp_path / "x")
    assert refused.exit_code == 2
    assert "--dataset churn only" in refused.stderr
    unknown = cli("sample-data", "--dataset", "flights", "--out", tmp_path / "y")
    assert unknown.exit_code == 2
    assert "unknown --dataset 'flights'" in unknown.stderr


# -- determinism: the same bytes whatever the thread count ------------------------------------


def test_training_set_is_the_same_bytes_for_any_thread_count(tmp_path: Path) -> None:
    """A windowed mean over a source with a created time is a range join and a group-by
    whose means are float sums, and a float sum's last bits depend on the order its terms
    are added in. Polars' lazy join and group-by order them by thread (and by load, between
    runs: a CI run failed on it), so a run on 1 thread and one on 3 (more than this
    machine's cores) must write the same bytes."""
    path = rides_project(tmp_path, rows=800)
    outputs = []
    for threads in ("1", "3"):
        out = tmp_path / f"train_{threads}.parquet"
        env = {"POLARS_MAX_THREADS": threads}
        result = run_mlpipe("training-set", "-c", path, "--out", out, "--no-publish", env=env)
        assert result.exit_code == 0, result.stderr
        outputs.append(out.read_bytes())
    assert (
        pl.read_parquet(tmp_path / "train_1.parquet")["driver_fare_per_km_30d"].is_not_null().any()
    )
    assert outputs[0] == outputs[1]
