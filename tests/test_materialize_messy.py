"""`materialize`, the online store and streaming on messy real data: keys near serve's size
limit (non-ASCII, composite), runs that finish out of as-of order, naive event times in a
repeated or skipped DST hour, and the Python API's messages naming its own parameters.

Real Parquet files, a real SQLite file and a real redis-server (tests/conftest.py); the
oracles are hand-worked byte counts (``len(text.encode())``), the zoneinfo database, and
what serve's own key parser does with the same keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlpipe_cli import Pipeline
from mlpipe_cli.config import load_config
from mlpipe_cli.errors import DataCheckFailed, InputError, UsageError
from mlpipe_cli.online import open_store
from mlpipe_cli.online.store import OlderThanLive
from mlpipe_cli.serving.keys import KeyParser

LIMIT = 512  # the documented bound (docs/serve.md), written out: not imported from the code

# Keys at the bound in one-, two-, three- and four-byte characters (hand-counted bytes).
AT_LIMIT = {
    "x" * 512: 512,
    "é" * 256: 512,  # U+00E9: 2 bytes
    "é" * 255 + "x": 511,
    "東" * 170 + "ab": 512,  # U+6771: 3 bytes
    "😀" * 128: 512,  # U+1F600: 4 bytes
    'q"\\' * 170 + "zz": 512,  # quotes and backslashes: 6 more bytes each in the JSON store key
}
OVER_LIMIT = {
    "é" * 256 + "x": 513,
    "😀" * 128 + "a": 513,
    "東" * 171: 513,
    "y" * 700: 700,
}


def _ts(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 6, day, hour, tzinfo=UTC)


def _project(tmp_path: Path, rows: list[dict[str, Any]], keys: list[str], online: dict[str, Any],
             timezone: str | None = None) -> Path:  # fmt: skip
    """A one-source project over ``rows`` (key columns, ``ts``, ``amount``)."""
    data = tmp_path / "events.parquet"
    pl.DataFrame(rows).write_parquet(data)
    config = {
        "pipeline": "messy",
        "entity_keys": keys,
        "timezone": timezone,
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {"events": {"path": str(data), "timestamp": "ts"}},
        "features": [
            {"name": "spent", "source": "events", "agg": "sum", "column": "amount", "default": 0},
            {"name": "n", "source": "events", "agg": "count", "default": 0},
        ],
        "online_store": online,
    }
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture(params=["sqlite", "redis"])
def online(request: Any, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "online.sqlite")}
    server = request.getfixturevalue("redis_server")
    return {"type": "redis", "url": server.url, "key_prefix": "t:messy"}


def _served(config_path: Path, entities: list[Any]) -> list[Any]:
    """Each entity as serve reads it: parsed by serve's KeyParser (UsageError when it
    refuses the key), then looked up with the store keys the parser made."""
    config = load_config(config_path)
    store = open_store(config, config.artifact_dir)
    try:
        meta = store.live_metadata()
        assert meta is not None
        parser = KeyParser(meta.entity_keys, meta.key_types)
        parsed = [parser.parse(entity) for entity in entities]
        return store.get_many(entities, keys=(parser.signature, [key for _, key in parsed]))
    finally:
        store.close()


def _store_state(config_path: Path) -> tuple[str | None, list[tuple[str, str, str]]]:
    """(live version, [(version, status, as-of)]) as the store holds them."""
    config = load_config(config_path)
    store = open_store(config, config.artifact_dir)
    try:
        if store.kind == "sqlite" and not Path(str(store.location).split(":", 1)[1]).exists():
            return None, []
        live = store.pointers().get("live")
        versions = [(m.version, m.status, m.as_of.isoformat()) for m, _ in store.versions()]
        return live, versions
    finally:
        store.close()


# -- 1. keys longer than serve accepts -------------------------------------------------------


def test_the_oracle_byte_counts() -> None:
    """The hand-counted sizes above are the UTF-8 sizes (so the tests below mean what they say)."""
    for key, size in {**AT_LIMIT, **OVER_LIMIT}.items():
        assert len(key.encode("utf-8")) == size


def test_keys_up_to_the_limit_are_stored_and_served_in_every_script(
    tmp_path: Path, online: dict[str, Any], cli: Any
) -> None:
    keys = list(AT_LIMIT)
    rows = [{"user": k, "ts": _ts(1 + i), "amount": float(i + 1)} for i, k in enumerate(keys)]
    rows.append({"user": "short", "ts": _ts(2), "amount": 0.5})
    config = _project(tmp_path, rows, ["user"], online)
    result = cli("materialize", "-c", config, "--as-of", "2026-07-01T00:00:00Z")
    assert result.exit_code == 0, result.stderr
    served = _served(config, [*keys, "short"])
    assert [r.found for r in served] == [True] * (len(keys) + 1)
    assert [r.values["spent"] for r in served] == [float(i + 1) for i in range(len(keys))] + [0.5]


@pytest.mark.parametrize("long_key", list(OVER_LIMIT))
def test_a_key_one_byte_over_is_refused_before_anything_is_written(
    tmp_path: Path, cli: Any, long_key: str
) -> None:
    online = {"type": "sqlite", "path": str(tmp_path / "online.sqlite")}
    rows = [
        {"user": "é" * 256, "ts": _ts(1), "amount": 1.0},
        {"user": long_key, "ts": _ts(2), "amount": 2.0},
        {"user": long_key, "ts": _ts(3), "amount": 3.0},  # one entity, two rows
        {"user": "ok", "ts": _ts(3), "amount": 3.0},
    ]
    config = _project(tmp_path, rows, ["user"], online)
    first = cli("materialize", "-c", config, "--as-of", "2026-06-02T00:00:00Z")
    assert first.exit_code == 0, first.stderr  # the long key's rows are not visible yet
    before = _store_state(config)
    records = list((tmp_path / "artifacts").rglob("materialization.json"))
    assert len(records) == 1

    result = cli("materialize", "-c", config, "--as-of", "2026-07-01T00:00:00Z")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    size = OVER_LIMIT[long_key]
    assert "'user'" in line
    assert "1 entity key(s)" in line
    assert f"longest {size} bytes" in line
    assert f"longer than {LIMIT} UTF-8 bytes" in line
    assert repr(long_key[:40]) in line
    assert long_key not in line
    assert "Traceback" not in result.stderr
    # nothing was written: the same live version, no new version, no new artifact
    assert _store_state(config) == before
    assert list((tmp_path / "artifacts").rglob("materialization.json")) == records
    # and serve refuses the same key: the two sides agree
    with pytest.raises(UsageError, match=f"longer than {LIMIT} bytes"):
        KeyParser(["user"], ["str"]).parse(long_key)


def test_composite_keys_are_measured_per_value_as_serve_measures_them(
    tmp_path: Path, online: dict[str, Any], cli: Any
) -> None:
    """Serve bounds each string key value, not the JSON store key: two values of 512 bytes
    each (a store key of over 1 KB) are a servable entity; 513 bytes in either is not."""
    zone, driver = "東" * 170 + "ab", "😀" * 128
    rows = [
        {"zone": zone, "driver": driver, "ts": _ts(1), "amount": 4.0},
        {"zone": "z1", "driver": "d1", "ts": _ts(2), "amount": 5.0},
    ]
    config = _project(tmp_path, rows, ["zone", "driver"], online)
    ok = cli("materialize", "-c", config, "--as-of", "2026-07-01T00:00:00Z")
    assert ok.exit_code == 0, ok.stderr
    served = _served(config, [[zone, driver], {"zone": "z1", "driver": "d1"}])
    assert [(r.found, r.values["spent"]) for r in served] == [(True, 4.0), (True, 5.0)]

    rows += [
        {"zone": "z2", "driver": "é" * 256 + "x", "ts": _ts(3), "amount": 1.0},
        {"zone": "z3", "driver": "y" * 600, "ts": _ts(3), "amount": 1.0},
        {"zone": "y" * 513, "driver": "d2", "ts": _ts(3), "amount": 1.0},
    ]
    config = _project(tmp_path, rows, ["zone", "driver"], online)
    refused = cli("materialize", "-c", config, "--as-of", "2026-07-01T00:00:00Z")
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert "\n" not in line
    assert "3 entity key(s)" in line
    assert "'zone', 'driver'" in line  # both columns hold one
    assert "longest 600 bytes" in line
    assert repr("y" * 40) + "…" in line
    parser = KeyParser(["zone", "driver"], ["str", "str"])
    for entity in (["z2", "é" * 256 + "x"], ["z3", "y" * 600], ["y" * 513, "d2"]):
        with pytest.raises(UsageError):
            parser.parse(entity)


# -- 2. a run finishing after a newer one never rolls serving back --------------------------


def _as_of_project(tmp_path: Path, online: dict[str, Any]) -> Path:
    rows = [
        {"user": f"u{i}-ü", "ts": datetime(2026, 6, 1, tzinfo=UTC) + timedelta(hours=7 * i),
         "amount": float(i)}
        for i in range(60)
    ]  # fmt: skip
    return _project(tmp_path, rows, ["user"], online)


def test_an_older_as_of_is_not_made_live_and_its_rows_are_removed(
    tmp_path: Path, online: dict[str, Any], cli: Any
) -> None:
    config = _as_of_project(tmp_path, online)
    newer, older = "2026-06-20T00:00:00Z", "2026-06-10T00:00:00Z"
    first = cli("materialize", "-c", config, "--as-of", newer, "--json")
    assert first.exit_code == 0, first.stderr
    live_version = first.json()["version"]
    served_before = [r.values for r in _served(config, ["u40-ü", "u1-ü"])]

    backfill = cli("materialize", "-c", config, "--as-of", older)
    assert backfill.exit_code == 1
    line = backfill.stderr.strip()
    assert "\n" not in line
    assert "Traceback" not in line
    assert f"the live version {live_version} is as of 2026-06-20T00:00:00+00:00" in line
    assert "--as-of 2026-06-10T00:00:00+00:00 --allow-older" in line
    assert "was written but not made live (and removed)" in line
    live, versions = _store_state(config)
    assert live == live_version  # serving was not rolled back
    # nothing can make the refused version live later: its rows do not stay behind
    assert versions == [(live_version, "complete", "2026-06-20T00:00:00+00:00")]
    assert [r.values for r in _served(config, ["u40-ü", "u1-ü"])] == served_before
    # the refused run published no materialization artifact
    records = list((tmp_path / "artifacts").rglob("materialization.json"))
    assert len(records) == 1

    # the same as-of again is a retry: it goes live
    retry = cli("materialize", "-c", config, "--as-of", newer, "--json")
    assert retry.exit_code == 0, retry.stderr
    live, versions = _store_state(config)
    assert live == retry.json()["version"] != live_version

    # on purpose: --allow-older makes the backfill live
    forced = cli("materialize", "-c", config, "--as-of", older, "--allow-older", "--json")
    assert forced.exit_code == 0, forced.stderr
    live, _ = _store_state(config)
    assert live == forced.json()["version"]
    at_older = _served(config, ["u40-ü"])[0]
    assert at_older.as_of == datetime(2026, 6, 10, tzinfo=UTC)
    assert at_older.found is False  # u40's first row is on 2026-06-12
    assert cli("materialize", "-c", config, "--rollback").exit_code == 0  # back to the newer
    assert _store_state(config)[0] == retry.json()["version"]


def test_the_python_api_refuses_an_older_as_of_naming_its_parameter(tmp_path: Path) -> None:
    config = _as_of_project(tmp_path, {"type": "sqlite", "path": str(tmp_path / "o.sqlite")})
    pipeline = Pipeline.from_yaml(config)
    newer = pipeline.materialize(as_of="2026-06-20T00:00:00Z")
    with pytest.raises(DataCheckFailed) as caught:
        pipeline.materialize(as_of="2026-06-10T00:00:00Z")
    assert isinstance(caught.value, OlderThanLive)
    message = str(caught.value)
    assert "as_of=2026-06-10T00:00:00+00:00, allow_older=True" in message
    assert "--" not in message
    assert caught.value.report == {
        "version": caught.value.version,
        "as_of": "2026-06-10T00:00:00+00:00",
        "live_version": newer.version,
        "live_as_of": "2026-06-20T00:00:00+00:00",
    }
    forced = pipeline.materialize(as_of="2026-06-10T00:00:00Z", allow_older=True)
    assert forced.as_of == datetime(2026, 6, 10, tzinfo=UTC)
    assert _store_state(config)[0] == forced.version
    again = pipeline.materialize(as_of="2026-06-20T00:00:00Z")  # newer again: goes live
    assert again.as_of == newer.as_of
    assert again.version != newer.version


# -- 3. streaming: naive event times in a skipped or repeated hour --------------------------

BERLIN = "Europe/Berlin"
REPEATED = datetime(2026, 10, 25, 2, 30)  # happens twice in Berlin (CEST, then CET)
SKIPPED = datetime(2026, 3, 29, 2, 30)  # never happens in Berlin


def _stream_project(tmp_path: Path, redis_url: str, rows: list[dict[str, Any]]) -> Path:
    data = tmp_path / "clicks.parquet"
    pl.DataFrame(rows, schema={"user": pl.String, "ts": pl.Datetime("us"), "amount": pl.Float64}
                 ).write_parquet(data)  # fmt: skip
    config = {
        "pipeline": "clicks",
        "entity_keys": ["user"],
        "timezone": BERLIN,
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {
            "clicks": {
                "path": str(data),
                "timestamp": "ts",
                "columns": {
                    "user": {"dtype": "string"},
                    "ts": {"dtype": "datetime"},
                    "amount": {"dtype": "float64"},
                },
                "stream": {"key": "clicks-events", "url": redis_url},
            }
        },
        "features": [
            {
                "name": "spent_7d",
                "source": "clicks",
                "agg": "sum",
                "column": "amount",
                "window": "7d",
                "default": 0,
            },
        ],
        "online_store": {"type": "redis", "url": redis_url, "key_prefix": "t:clicks"},
    }
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def _clean_clicks() -> list[dict[str, Any]]:
    return [
        {"user": u, "ts": datetime(2026, 10, 20, 9) + timedelta(hours=h), "amount": float(h)}
        for h, u in enumerate(["ä", "b", "ä", "c"])
    ]


def test_push_dead_letters_events_in_a_skipped_or_repeated_hour_and_long_keys(
    tmp_path: Path, redis_server: Any, cli: Any
) -> None:
    config = _stream_project(tmp_path, redis_server.url, _clean_clicks())
    assert cli("materialize", "-c", config, "--as-of", "2026-10-24T00:00:00Z").exit_code == 0
    events = [
        {"user": "ä", "ts": "2026-10-25T01:30:00", "amount": 1.0},  # CEST only: fine
        {"user": "ä", "ts": REPEATED.isoformat(), "amount": 2.0},
        {"user": "b", "ts": SKIPPED.isoformat(), "amount": 3.0},
        {"user": "é" * 256 + "x", "ts": "2026-10-25T04:00:00", "amount": 4.0},
        {"user": "é" * 256, "ts": "2026-10-25T04:00:00", "amount": 5.0},  # exactly the limit
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
    result = cli("push", "-c", config, "--source", "clicks", path, "--json")
    assert result.exit_code == 1, result.stderr  # any dead-lettered event fails push's gate
    doc = result.json()
    assert (doc["read"], doc["pushed"], doc["dead_lettered"]) == (5, 2, 3)
    assert doc["failed_checks"] == {"clicks.ts.local_time": 2, "clicks.user.key_length": 1}
    client = redis_server.client()
    letters = client.xrange("clicks-events:dead")
    assert [(int(f[b"row"]), f[b"reason"], json.loads(f[b"checks"])) for _, f in letters] == [
        (1, b"invalid", ["clicks.ts.local_time"]),
        (2, b"invalid", ["clicks.ts.local_time"]),
        (3, b"invalid", ["clicks.user.key_length"]),
    ]
    pushed = client.xrange("clicks-events")
    # 01:30 on 2026-10-25 is CEST (UTC+2): 23:30 UTC the day before, by zoneinfo
    want = int(datetime(2026, 10, 24, 23, 30, tzinfo=UTC).timestamp()) * 1_000_000
    assert int(pushed[0][1][b"e"]) == want
    assert json.loads(pushed[1][1][b"k"]) == ["é" * 256]


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ({"user": "b", "ts": REPEATED, "amount": 1.0},
         ["'ts'", "2026-10-25 02:30:00", BERLIN, "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]),
        ({"user": "b", "ts": SKIPPED, "amount": 1.0},
         ["'ts'", "2026-03-29 02:30:00", BERLIN, "does not exist"]),
        ({"user": "ü" * 257, "ts": datetime(2026, 10, 21, 9), "amount": 1.0},
         ["'user'", "longest 514 bytes", "the stream state was not built"]),
    ],
)  # fmt: skip
def test_the_stream_bootstrap_refuses_what_materialize_refuses(
    tmp_path: Path, redis_server: Any, cli: Any, bad_row: dict[str, Any], expected: list[str]
) -> None:
    """The batch files changed after the last materialize: the bootstrap reads them with the
    rule `materialize` applies (exit 2, one line), never an instant picked by a guess."""
    config = _stream_project(tmp_path, redis_server.url, _clean_clicks())
    assert cli("materialize", "-c", config, "--as-of", "2026-10-24T00:00:00Z").exit_code == 0
    pl.DataFrame([*_clean_clicks(), bad_row],
                 schema={"user": pl.String, "ts": pl.Datetime("us"), "amount": pl.Float64}
                 ).write_parquet(tmp_path / "clicks.parquet")  # fmt: skip
    result = cli("stream", "-c", config, "--once")
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr  # (after the "bootstrapping ..." note)
    line = errors[0]
    for part in expected:
        assert part in line
    assert redis_server.client().hget("t:clicks:s:clicks:meta", "state") is None


def test_encoding_an_ambiguous_event_time_refuses_instead_of_guessing(
    tmp_path: Path, redis_server: Any
) -> None:
    from mlpipe_cli.streaming.events import encode_events
    from mlpipe_cli.streaming.plan import build_plan

    config_path = _stream_project(tmp_path, redis_server.url, _clean_clicks())
    config = load_config(config_path)
    plan = build_plan(config, "clicks")
    frame = pl.DataFrame([{"user": "ä", "ts": REPEATED, "amount": 1.0}],
                         schema={"user": pl.String, "ts": pl.Datetime("us"), "amount": pl.Float64})  # fmt: skip
    with pytest.raises(InputError, match="ambiguous in time zone Europe/Berlin"):
        encode_events(config, plan, frame)


# -- 4. the Python API names parameters, the CLI names flags -------------------------------


def test_api_messages_name_parameters_and_cli_messages_name_flags(tmp_path: Path, cli: Any) -> None:
    rows = [{"user": "a", "ts": datetime(2026, 10, 20, 9), "amount": 1.0}]
    config = _project(tmp_path, rows, ["user"],
                      {"type": "sqlite", "path": str(tmp_path / "o.sqlite")}, timezone=BERLIN)  # fmt: skip
    pipeline = Pipeline.from_yaml(config)
    cases = [  # (API call, what its message says, CLI args, what the CLI says)
        (lambda: pipeline.materialize(as_of="yesterday"), "as_of='yesterday' is not",
         ["--as-of", "yesterday"], "--as-of 'yesterday' is not"),
        (lambda: pipeline.materialize(as_of="2026-10-25T02:30:00"), "as_of: 2026-10-25 02:30:00 is ambiguous",
         ["--as-of", "2026-10-25T02:30:00"], "--as-of: 2026-10-25 02:30:00 is ambiguous"),
        (lambda: pipeline.materialize(as_of="2999-01-01T00:00:00Z"), "as_of=2999-01-01T00:00:00+00:00 is in the future",
         ["--as-of", "2999-01-01T00:00:00Z"], "--as-of 2999-01-01T00:00:00+00:00 is in the future"),
        (lambda: pipeline.materialize(features=["nope"]), "unknown feature 'nope' in features (",
         ["--features", "nope"], "unknown feature 'nope' in --features ("),
        (lambda: pipeline.materialize(resume=True, as_of="2026-10-21T00:00:00Z"),
         "resume=True continues the newest abandoned run with its own as-of and features; drop as_of/features, or run without resume=True",
         ["--resume", "--as-of", "2026-10-21T00:00:00Z"],
         "--resume continues the newest abandoned run with its own as-of and features; drop --as-of/--features, or run without --resume"),
        (lambda: pipeline.materialize(resume=True), "no abandoned run to resume; run without resume=True",
         ["--resume"], "no abandoned run to resume; run without --resume"),
        (lambda: pipeline.check_freshness("soon"), "max_age: ",
         ["--check-freshness", "--max-age", "soon"], "--max-age: "),
    ]  # fmt: skip
    for call, api_text, args, cli_text in cases:
        with pytest.raises((UsageError, InputError)) as caught:
            call()
        assert api_text in str(caught.value)
        assert "--" not in str(caught.value)
        result = cli("materialize", "-c", config, *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert cli_text in result.stderr, (args, result.stderr)


def test_a_stream_state_hint_names_the_cli_flag_and_the_python_call(
    tmp_path: Path, redis_server: Any
) -> None:
    """Deep in the stream's state, the caller (CLI or Python) is unknown: the hint says both."""
    from mlpipe_cli.errors import ConfigError
    from mlpipe_cli.streaming.plan import build_plan
    from mlpipe_cli.streaming.state import StateMeta, StateStore

    config = load_config(_stream_project(tmp_path, redis_server.url, _clean_clicks()))
    store = StateStore(build_plan(config, "clicks"))
    try:
        old = StateMeta(None, 0, 0, 0, [], "ready", None, 0, format=1)
        with pytest.raises(ConfigError) as caught:
            store.check_compatible(old)
    finally:
        store.close()
    assert "mlpipe stream --reset" in str(caught.value)
    assert "Pipeline.stream(reset=True)" in str(caught.value)


def test_the_consumer_dead_letters_a_long_key_that_bypassed_push(
    tmp_path: Path, redis_server: Any, cli: Any
) -> None:
    """Entries XADDed by another producer skip push's checks: the apply script measures the
    key's string values too (exactly: the limit, in bytes, one byte over is malformed)."""
    config = _stream_project(tmp_path, redis_server.url, _clean_clicks())
    assert cli("materialize", "-c", config, "--as-of", "2026-10-24T00:00:00Z").exit_code == 0
    assert cli("stream", "-c", config, "--once").exit_code == 0  # bootstrapped
    client = redis_server.client()
    when = int(datetime(2026, 10, 25, 4, tzinfo=UTC).timestamp()) * 1_000_000
    for user in ("é" * 256, "é" * 256 + "x", "😀" * 128 + "a", "東" * 170 + "ab"):
        key = json.dumps([user], ensure_ascii=False, separators=(",", ":"))
        client.xadd("clicks-events", {"k": key, "e": str(when),
                                      "d": json.dumps({"user": user, "amount": 1.0})})  # fmt: skip
    result = cli("stream", "-c", config, "--once", "--json")
    assert result.exit_code == 0, result.stderr
    counts = result.json()["sources"]["clicks"]["this_consumer"]
    assert (counts["applied"], counts["malformed"]) == (2, 2)
    letters = client.xrange("clicks-events:dead")
    assert [json.loads(f[b"k"])[0] for _, f in letters] == ["é" * 256 + "x", "😀" * 128 + "a"]
    assert all(f[b"reason"] == b"malformed" for _, f in letters)
    assert b"longer than 512 UTF-8 bytes" in letters[0][1][b"detail"]
    stored = {k.decode() for k in client.scan_iter(match="t:clicks:s:clicks:r:*")}
    assert "t:clicks:s:clicks:r:" + json.dumps(["é" * 256], ensure_ascii=False) in stored
    assert not any("x" in k.rsplit(":", 1)[-1] for k in stored)


def test_concurrent_switches_never_leave_an_older_as_of_live(
    tmp_path: Path, online: dict[str, Any]
) -> None:
    """Runs finishing together, each through its own connection: whatever the interleaving,
    the newest as-of ends up live and no run newer than what it met was refused (the check
    and the flip are one transaction / one WATCHed MULTI)."""
    import random
    import threading

    from mlpipe_cli.online import entity_store_key, pack_row
    from mlpipe_cli.online.writer import write_version

    rows = [{"user": "a", "ts": _ts(1), "amount": 1.0}]
    config = load_config(_project(tmp_path, rows, ["user"], online))
    days = list(range(1, 13))
    random.Random(5).shuffle(days)
    refused: list[OlderThanLive] = []
    went_live: list[int] = []
    start = threading.Barrier(len(days))

    def run(day: int) -> None:
        store = open_store(config, config.artifact_dir)
        try:
            start.wait()
            write_version(store, features=["n"], rows=[[(entity_store_key("ü"), pack_row([day]))]],
                          as_of=datetime(2026, 6, day, tzinfo=UTC), feature_hash="h",
                          entity_keys=["user"], key_types=["str"], expected=1)  # fmt: skip
            went_live.append(day)
        except OlderThanLive as exc:
            refused.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(went_live) + len(refused) == len(days)
    assert 12 in went_live
    for exc in refused:  # each refusal met a live version that was really newer
        assert exc.as_of < exc.live_as_of
    store = open_store(config, config.artifact_dir)
    try:
        live = store.live_metadata()
        assert live is not None
        assert live.as_of == datetime(2026, 6, 12, tzinfo=UTC)
        assert store.get("ü").values == {"n": 12}
    finally:
        store.close()
