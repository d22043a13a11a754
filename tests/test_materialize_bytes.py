"""`materialize`'s column-wise packing and pipelined writing store the same bytes as the
row-by-row implementation they replaced: the previous `_pack_chunk` is kept verbatim below as
the oracle (it shares no code with the new one), and whole runs on messy data (string keys of
random lengths and scripts, composite integer keys, two entity types, nulls, NaN, ±inf,
Float32, booleans, a ttl with event times) are compared key by key and byte by byte, in a
real SQLite file and a real redis-server. Also: a failure on either side of the writer
thread stops the run with the original error, leaves the live version alone, and resumes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlpipe_cli.features.engine as engine
import mlpipe_cli.ops.materialize as ops
from mlpipe_cli.config import load_config
from mlpipe_cli.errors import ServiceUnavailable, UsageError
from mlpipe_cli.online import open_store
from mlpipe_cli.online.codec import PackedChunk
from mlpipe_cli.online.materialize import _pack_chunk
from mlpipe_cli.online.redis_store import RedisStore, set_command_batches
from mlpipe_cli.online.sqlite_store import SqliteStore, _version_tables

AS_OF = datetime(2026, 7, 1, tzinfo=UTC)

# -- the previous implementation (verbatim but for the imports it made), the oracle ---------


def _previous_json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} feature value")


def _previous_box_non_finite(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return {"$f": "nan"}
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return {"$f": "inf" if value > 0 else "-inf"}
    return value


def _previous_pack_chunk(
    out: pl.DataFrame, keys: list[str], names: list[str], event_cols: list[str], as_of_epoch: float
) -> list[tuple[str, bytes]]:
    events = [(pl.lit(as_of_epoch) - pl.col(c)).alias(f"__ev{i}") for i, c in enumerate(event_cols)]
    values = out.select([pl.col(n) for n in names] + events)
    key_frame = out.select(keys)
    dumps = orjson.dumps
    if len(keys) == 1 and key_frame.dtypes[0].is_integer():
        store_keys = [f"[{k}]" for k in key_frame.to_series()]
    else:
        store_keys = [dumps(list(k)).decode() for k in key_frame.iter_rows()]
    option = orjson.OPT_SERIALIZE_NUMPY
    try:
        rows = [dumps(r, option=option) for r in values.iter_rows()]
    except TypeError:
        rows = [dumps(r, default=_previous_json_default, option=option) for r in values.iter_rows()]
    floats = [c for c, t in values.schema.items() if t.is_float()]
    if floats:
        flagged = values.select(
            pl.any_horizontal(
                [pl.col(c).is_nan() | pl.col(c).is_infinite() for c in floats]
            ).fill_null(False)
        ).to_series()
        if flagged.any():
            for i in flagged.arg_true().to_list():
                boxed = [_previous_box_non_finite(v) for v in values.row(i)]
                rows[i] = b"!" + dumps(boxed, default=_previous_json_default, option=option)
    return list(zip(store_keys, rows, strict=True))


def _resp_oracle(prefix: bytes, rows: list[tuple[str, bytes]], ttl: int | None) -> bytes:
    """SET commands as RESP, argument by argument (the protocol's own definition)."""
    out = []
    for key, value in rows:
        args = [b"SET", prefix + key.encode(), value]
        if ttl:
            args += [b"EX", str(ttl).encode()]
        out.append(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    return b"".join(out)


# -- packing: property test against the oracle ----------------------------------------------

_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12
)  # any script, quotes, backslashes, control characters, emoji
_FLOATS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
_COLUMNS = {
    "f64": (pl.Float64, _FLOATS),
    "f32": (pl.Float32, st.one_of(st.none(), st.floats(width=32))),
    "i64": (pl.Int64, st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
    "u64": (pl.UInt64, st.one_of(st.none(), st.integers(0, 2**64 - 1))),
    "i8": (pl.Int8, st.one_of(st.none(), st.integers(-128, 127))),
    "b": (pl.Boolean, st.one_of(st.none(), st.booleans())),
    "s": (pl.String, st.one_of(st.none(), _TEXT)),  # forces the row-by-row path
    "nul": (pl.Null, st.none()),
}


@st.composite
def _frames(draw: Any) -> tuple[pl.DataFrame, list[str], list[str], list[str], float]:
    n = draw(st.integers(0, 12))
    kinds = draw(st.lists(st.sampled_from(sorted(_COLUMNS)), min_size=1, max_size=5))
    keying = draw(st.sampled_from(["int", "int2", "str", "int+str"]))
    data: dict[str, pl.Series] = {}
    ints = st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n, unique=True)
    texts = st.lists(_TEXT, min_size=n, max_size=n, unique=True)
    if keying == "int":
        keys = ["id"]
        data["id"] = pl.Series(draw(ints), dtype=pl.Int64)
    elif keying == "int2":
        keys = ["a", "b"]
        data["a"] = pl.Series(draw(ints), dtype=pl.Int64)
        data["b"] = pl.Series(
            draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), dtype=pl.Int32
        )
    elif keying == "str":
        keys = ["who"]
        data["who"] = pl.Series(draw(texts), dtype=pl.String)
    else:
        keys = ["a", "who"]
        data["a"] = pl.Series(
            draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=pl.Int64
        )
        data["who"] = pl.Series(draw(texts), dtype=pl.String)
    names = []
    for i, kind in enumerate(kinds):
        dtype, values = _COLUMNS[kind]
        names.append(f"{kind}_{i}")
        data[names[-1]] = pl.Series(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)
    # event-time helpers (seconds since the last event, or null), as materialize adds them
    events = []
    for j in range(draw(st.integers(0, 2))):
        events.append(f"__age{j}")
        ages = st.lists(st.one_of(st.none(), st.floats(0, 1e9)), min_size=n, max_size=n)
        data[events[-1]] = pl.Series(draw(ages), dtype=pl.Float64)
    epoch = draw(st.sampled_from([AS_OF.timestamp(), 1.5e9 + 0.25, 0.0]))
    return pl.DataFrame(data), keys, names, events, epoch


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames())
def test_packed_rows_and_resp_are_the_bytes_of_the_previous_packer(case: Any) -> None:
    frame, keys, names, events, epoch = case
    expected = _previous_pack_chunk(frame, keys, names, events, epoch)
    packed = _pack_chunk(frame, keys, names, events, epoch)
    assert isinstance(packed, PackedChunk)
    assert list(packed) == expected
    assert packed.sorted_rows() == sorted(expected)
    assert len(packed) == len(expected)
    prefix = "pré:d:0001-ab:".encode()
    for ttl in (None, 604800):
        assert b"".join(packed.set_commands(prefix, ttl)) == _resp_oracle(prefix, expected, ttl)
        assert b"".join(packed.set_commands(prefix, ttl)) == b"".join(
            set_command_batches(prefix, expected, ttl)
        )
        # payloads of at most 3 commands each (never one string for a whole chunk): the
        # same bytes, cut between commands
        parts = list(packed.set_commands(prefix, ttl, rows_per_payload=3))
        assert len(parts) == -(-len(expected) // 3)
        assert b"".join(parts) == _resp_oracle(prefix, expected, ttl)
        assert all(part.startswith(b"*") for part in parts)


def test_float_formatting_matches_orjson_on_random_bit_patterns() -> None:
    """The column-wise path writes floats with Polars; orjson is what was stored before."""
    bits = np.random.default_rng(7).integers(0, 2**64 - 1, 200_000, dtype=np.uint64)
    values = bits.view(np.float64)
    values = values[np.isfinite(values)]
    frame = pl.DataFrame({"id": np.arange(values.size), "x": values})
    packed = _pack_chunk(frame, ["id"], ["x"], [], 0.0)
    want = [b"[" + orjson.dumps(float(v)) + b"]" for v in values]
    assert [v for _, v in packed] == want


# -- whole runs: stored contents, byte for byte ------------------------------------------------


def _messy_project(tmp_path: Path, online: dict[str, Any], entities: int = 900) -> Path:
    """Two entity types: users keyed by text of random lengths in many scripts (some with
    quotes, backslashes, control characters), and zone pairs keyed by two integers."""
    rng = np.random.default_rng(11)
    alphabet = list('abcXYZ019 _-"\\/\u00e9\u00fc\u00df\u6771\u4eac\u0416\u05d0\U0001f600\x01\t')
    users = sorted(
        {"".join(rng.choice(alphabet, size=int(rng.integers(1, 24)))) for _ in range(entities)}
    )
    rows = len(users) * 3
    who = [users[i] for i in np.concatenate([np.arange(len(users)),
                                             rng.integers(0, len(users), rows - len(users))])]  # fmt: skip
    start = datetime(2026, 1, 1, tzinfo=UTC)
    amount = np.round(rng.normal(50, 30, rows), 3)
    amount[rng.random(rows) < 0.03] = np.nan
    amount[rng.random(rows) < 0.01] = np.inf
    amount[rng.random(rows) < 0.01] = -np.inf
    pl.DataFrame(
        {
            "user": who,
            "ts": [start + timedelta(minutes=int(m)) for m in rng.integers(0, 260_000, rows)],
            "amount": amount,
            "qty": pl.Series([None if rng.random() < 0.1 else int(q) for q in rng.integers(-5, 9, rows)], dtype=pl.Int64),
            "ratio": pl.Series(rng.random(rows), dtype=pl.Float32),
            "flag": pl.Series([None if rng.random() < 0.2 else bool(b) for b in rng.integers(0, 2, rows)], dtype=pl.Boolean),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 17 == 0).then(None).otherwise(pl.col("amount")).alias("amount")
    ).write_parquet(tmp_path / "events.parquet")  # fmt: skip
    zrows = 4000
    pl.DataFrame(
        {
            "zone_a": pl.Series(rng.integers(-3, 40, zrows), dtype=pl.Int32),
            "zone_b": rng.integers(10**12, 10**12 + 25, zrows),
            "ts": [start + timedelta(hours=int(h)) for h in rng.integers(0, 4300, zrows)],
            "fare": np.round(rng.gamma(2.0, 9.0, zrows), 2) / 7,
        }
    ).write_parquet(tmp_path / "zones.parquet")
    config = {
        "pipeline": "messy",
        "entity_keys": ["user"],
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {
            "events": {"path": str(tmp_path / "events.parquet"), "timestamp": "ts", "ttl": "30d"},
            "zones": {"path": str(tmp_path / "zones.parquet"), "timestamp": "ts",
                      "entity_keys": ["zone_a", "zone_b"]},
        },
        "features": [
            {"name": "spent", "source": "events", "agg": "sum", "column": "amount"},
            {"name": "top", "source": "events", "agg": "max", "column": "amount"},
            {"name": "avg", "source": "events", "agg": "mean", "column": "amount"},
            {"name": "last_qty", "source": "events", "agg": "last", "column": "qty"},
            {"name": "last_ratio", "source": "events", "agg": "last", "column": "ratio"},
            {"name": "last_flag", "source": "events", "agg": "last", "column": "flag"},
            {"name": "n", "source": "events", "agg": "count", "default": 0},
            {"name": "spent_7d", "source": "events", "agg": "sum", "column": "amount", "window": "7d"},
            {"name": "zone_fares", "source": "zones", "agg": "sum", "column": "fare"},
            {"name": "zone_last", "source": "zones", "agg": "last", "column": "fare"},
            {"name": "zone_rides", "source": "zones", "agg": "count", "default": 0},
        ],
        "online_store": online,
    }  # fmt: skip
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def _stored(config_path: Path, chunk_size: int) -> dict[str, bytes]:
    """Materialize, then read back every stored row: namespace:store key -> value bytes."""
    config = load_config(config_path)
    store = open_store(config, config.artifact_dir)
    try:
        result = ops.run_materialize(config, None, store, as_of=AS_OF, chunk_size=chunk_size)
        version = result.version
        out: dict[str, bytes] = {}
        if isinstance(store, SqliteStore):
            conn = store._write_conn()
            for table in _version_tables(conn, version):
                ns = table.rsplit("_ns", 1)[1].rstrip('"') if "_ns" in table else "0"
                for key, value in conn.execute(f"SELECT k, v FROM {table}"):
                    assert isinstance(value, bytes)  # a BLOB, as before
                    out[f"{ns}:{key}"] = value
        else:
            assert isinstance(store, RedisStore)
            prefix = f"{store.prefix}:d:{version}:".encode()
            client = store.client
            for raw in client.scan_iter(match=prefix + b"*", count=10_000):
                rest = raw[len(prefix) :].decode()
                ns, key = ("0", rest) if rest.startswith("[") else rest.split(":", 1)
                out[f"{ns}:{key}"] = client.get(raw)
                assert 0 < client.ttl(raw) <= 86400  # the online ttl rule, on every row
        assert len(out) == result.entity_count
        return out
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "redis"])
def messy(request: Any, tmp_path: Path) -> Path:
    if request.param == "sqlite":
        online: dict[str, Any] = {"type": "sqlite", "path": str(tmp_path / "online.sqlite")}
    else:
        server = request.getfixturevalue("redis_server")
        online = {"type": "redis", "url": server.url, "key_prefix": "t:messy", "ttl": "1d"}
    return _messy_project(tmp_path, online)


def test_stored_contents_are_byte_identical_to_the_previous_implementation(
    messy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference run: the previous packer (lists of pairs through each store's generic
    write path), every entity in one chunk and one compute call. The run under test: the
    column-wise packer, chunks of 7 written by the writer thread while later batches are
    computed. Same keys, same bytes, in both stores."""
    with monkeypatch.context() as patch:
        patch.setattr(ops, "_pack_chunk", _previous_pack_chunk)
        reference = _stored(messy, chunk_size=100_000)
    ours = _stored(messy, chunk_size=7)
    assert len(ours) > 900  # both entity types are there
    assert {k.split(":", 1)[0] for k in ours} == {"0", "1"}
    assert any(v.startswith(b"!") for v in ours.values())  # NaN/inf rows were boxed
    assert any(not k.isascii() for k in ours)
    assert ours == reference


def test_the_source_cache_keeps_to_its_budget_and_changes_no_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sources are kept across batches only within SOURCE_CACHE_BYTES (a project with many
    large sources once held them all for the whole run): with no budget every batch re-reads
    its sources, with a large one each is read once — the same stored bytes either way."""
    online = {"type": "sqlite", "path": str(tmp_path / "online.sqlite")}
    project = _messy_project(tmp_path, online)
    loads: list[str] = []
    real_load = engine._load_source

    def counting(ctx: Any, name: str, *args: Any) -> Any:
        loads.append(name)
        return real_load(ctx, name, *args)

    monkeypatch.setattr(engine, "_load_source", counting)
    cached = _stored(project, chunk_size=7)
    reads_cached = len(loads)
    loads.clear()
    monkeypatch.setattr(ops, "SOURCE_CACHE_BYTES", 0)
    uncached = _stored(project, chunk_size=7)
    assert uncached == cached
    assert len(loads) > reads_cached  # re-read by every batch past the budget

    cache = ops.SourceCache(max_bytes=100)
    small, big = pl.DataFrame({"x": [1]}), pl.DataFrame({"x": list(range(100))})
    cache[("small",)] = small
    cache[("big",)] = big
    assert list(cache) == [("small",)]
    assert cache.bytes == small.estimated_size()
    cache.clear()
    assert cache.bytes == 0


# -- failures on either side of the writer thread -------------------------------------------


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mlpipe-materialize-writer"]


def test_a_compute_failure_stops_the_writer_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _messy_project(tmp_path, {"type": "sqlite", "path": str(tmp_path / "o.sqlite")})
    config = load_config(path)
    reference = _stored(path, chunk_size=50)  # a live version to keep

    real, calls = engine.compute_features, []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-run
        return real(*args, **kwargs)

    store = open_store(config, config.artifact_dir)
    live = store.live_metadata()
    monkeypatch.setattr(engine, "compute_features", failing)
    with pytest.raises(KeyboardInterrupt):
        ops.run_materialize(config, None, store, as_of=AS_OF, chunk_size=50)
    assert not _writer_threads()
    assert store.live_metadata().version == live.version  # nothing switched
    abandoned = [(m, p) for m, p in store.versions() if m.status == "building"]
    assert len(abandoned) == 1
    done = abandoned[0][1].chunks_done  # the writer stops after the chunk in flight
    assert 1 <= done <= 1 + 2 + 4  # at most the three batches computed
    monkeypatch.setattr(engine, "compute_features", real)
    resumed = ops.run_materialize(config, None, store, as_of=AS_OF, resume=True)
    store.close()
    assert resumed.version == abandoned[0][0].version
    assert resumed.resumed_chunks == done
    assert _stored(path, chunk_size=50) == reference  # and a fresh run agrees


def test_a_write_failure_is_raised_unchanged_and_stops_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _messy_project(tmp_path, {"type": "sqlite", "path": str(tmp_path / "o.sqlite")})
    config = load_config(path)
    store = open_store(config, config.artifact_dir)

    real_compute, computed = engine.compute_features, []
    real_write, written = store.write_chunk, []

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed.append(1)
        return real_compute(*args, **kwargs)

    def flaky(progress: Any, items: Any, namespace: int = 0) -> None:
        if len(written) == 5:
            raise ServiceUnavailable("online store test: connection lost while writing")
        written.append(len(items))
        real_write(progress, items, namespace)

    monkeypatch.setattr(engine, "compute_features", counting)
    monkeypatch.setattr(store, "write_chunk", flaky)
    with pytest.raises(ServiceUnavailable, match="connection lost while writing"):
        ops.run_materialize(config, None, store, as_of=AS_OF, chunk_size=20)
    assert not _writer_threads()
    assert store.live_metadata() is None  # nothing was ever live
    (_, progress), *_ = [(m, p) for m, p in store.versions() if m.status == "building"]
    assert progress.chunks_done == 5
    assert progress.written == sum(written)
    failed_calls = len(computed)
    monkeypatch.setattr(store, "write_chunk", real_write)
    computed.clear()
    done = ops.run_materialize(config, None, store, as_of=AS_OF, chunk_size=20)
    assert store.live_metadata().version == done.version  # the same as-of: it continued
    assert failed_calls < done.resumed_chunks + len(computed)  # it stopped computing early
    store.close()


def test_a_write_failure_wins_over_a_compute_error_that_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread fails first (exit 4), then the next batch's compute fails too: the
    run reports the write failure, the first thing that went wrong, with the other chained."""
    from mlpipe_cli.errors import InputError

    path = _messy_project(tmp_path, {"type": "sqlite", "path": str(tmp_path / "o.sqlite")})
    config = load_config(path)
    store = open_store(config, config.artifact_dir)
    real_compute, write_failed = engine.compute_features, threading.Event()

    def failing_after_the_write(*args: Any, **kwargs: Any) -> Any:
        if write_failed.wait(timeout=0.0):
            raise InputError("compute test: a source became unreadable")
        return real_compute(*args, **kwargs)

    def failing_write(progress: Any, items: Any, namespace: int = 0) -> None:
        write_failed.set()
        raise ServiceUnavailable("online store test: connection lost while writing")

    def compute_waiting_for_the_writer(*args: Any, **kwargs: Any) -> Any:
        # The second batch is computed only once the first write has failed, so the
        # compute error comes second, whatever the scheduling.
        if calls:
            assert write_failed.wait(timeout=30)
        calls.append(1)
        return failing_after_the_write(*args, **kwargs)

    calls: list[int] = []
    monkeypatch.setattr(engine, "compute_features", compute_waiting_for_the_writer)
    monkeypatch.setattr(store, "write_chunk", failing_write)
    # Without this, the loop's check() would see the write failure before computing again.
    monkeypatch.setattr(ops._ChunkWriter, "check", lambda self: None)
    with pytest.raises(ServiceUnavailable, match="connection lost while writing") as info:
        ops.run_materialize(config, None, store, as_of=AS_OF, chunk_size=20)
    assert isinstance(info.value.__cause__, InputError)
    assert len(calls) == 2
    assert not _writer_threads()
    assert store.live_metadata() is None
    store.close()


def test_stored_bytes_are_the_same_for_any_polars_thread_count(tmp_path: Path) -> None:
    """Computing beside the writer thread changes how Polars' threads are scheduled, never
    what is stored: whole CLI runs with POLARS_MAX_THREADS=1 and 3, stored rows compared."""
    import os
    import sqlite3
    import subprocess
    import sys

    stored = []
    for threads in ("1", "3"):
        root = tmp_path / f"threads-{threads}"
        root.mkdir()
        db = root / "online.sqlite"
        path = _messy_project(root, {"type": "sqlite", "path": str(db), "chunk_size": 13})
        proc = subprocess.run(
            [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(path),
             "--as-of", AS_OF.isoformat(), "-q"],
            env={**os.environ, "POLARS_MAX_THREADS": threads},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        conn = sqlite3.connect(db)
        try:
            (live,) = conn.execute(
                "SELECT version FROM mlpipe_pointer WHERE name = 'live'"
            ).fetchone()
            rows = sorted(
                (table.split("_ns")[-1] if "_ns" in table else "0", key, value)
                for table in _version_tables(conn, live)
                for key, value in conn.execute(f"SELECT k, v FROM {table}")
            )
        finally:
            conn.close()
        stored.append(rows)
    assert len(stored[0]) > 900
    assert stored[0] == stored[1]


def test_integers_wider_than_64_bits_are_refused_in_one_line() -> None:
    """orjson cannot write an Int128 and the column-wise path must not either (it once wrote
    the digits, which read back as a float): one actionable error naming the feature."""
    frame = pl.DataFrame({"k": [1, 2], "big": pl.Series([2**100, 5], dtype=pl.Int128)})
    with pytest.raises(UsageError, match="feature 'big' is Int128: the online store holds"):
        _pack_chunk(frame, ["k"], ["big"], [], 0.0)
