"""`mlpipe validate`: faults in the sample data, exit codes, reports, bad inputs, tolerance."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import polars as pl
import pytest
import yaml

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.errors import ConfigError, InputError
from mlpipe_cli.sample_data import FAULTS, generate
from mlpipe_cli.validation import validate_source
from tests.conftest import EXAMPLE_CONFIG, _repoint_paths

ROWS = 2000


@pytest.fixture(scope="module")
def fault_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for fault in ("clean", *FAULTS):
        out = tmp_path_factory.mktemp(fault)
        generate(out, rows=ROWS, seed=11, faults=() if fault == "clean" else (fault,))
        dirs[fault] = out
    return dirs


def example_config(tmp_path: Path, data_dir: Path, **overrides) -> Path:  # type: ignore[no-untyped-def]
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    # keep only our section and what it needs, so other areas' sections cannot break us
    config = {k: config[k] for k in ("pipeline", "entity_keys", "sources")}
    config["artifact_dir"] = str(tmp_path / "artifacts")
    _repoint_paths(config, data_dir)
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def config_from(tmp_path: Path, sources: dict) -> object:
    text = yaml.safe_dump({"pipeline": "t", "sources": sources})
    return load_config_text(text, source_name="t.yaml", base_dir=tmp_path)


def checks_by_id(report) -> dict:  # type: ignore[no-untyped-def]
    return {c.id: c for c in report.checks}


# -- the sample data and its faults ------------------------------------------------------


def test_clean_sample_data_passes_every_source(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["clean"])
    result = cli("validate", "-c", config, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = result.json()
    assert doc["status"] == "passed"
    assert [s["source"] for s in doc["sources"]] == ["labels", "orders", "users"]
    assert doc["counts"]["fail"] == 0
    assert doc["counts"]["error"] == 0
    assert doc["artifact_version"].startswith("0001-")


def test_renamed_column_names_the_candidate(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["renamed-column"])
    result = cli("validate", "-c", config, "--source", "users", "--source", "orders")
    assert result.exit_code == 1
    assert "column 'user_id' missing; found 'userId' — renamed upstream?" in result.stdout
    assert "orders.user_id.present" in result.stdout
    assert "users.user_id.present" in result.stdout
    # value checks of the missing column are skipped, not passed
    doc = cli("validate", "-c", config, "--source", "users", "--json").json()
    checks = {c["id"]: c for c in doc["sources"][0]["checks"]}
    assert checks["users.user_id.unique"]["status"] == "skipped"
    assert checks["users.table.strict"]["status"] == "fail"
    assert checks["users.table.strict"]["message"] == "unexpected column 'userId' (strict: true)"


def test_out_of_range_counts_rate_and_examples(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["out-of-range"])
    result = cli("validate", "-c", config, "--source", "orders", "--json")
    assert result.exit_code == 1
    orders = result.json()["sources"][0]
    checks = {c["id"]: c for c in orders["checks"]}
    rev = checks["orders.revenue.min"]
    frame = pl.read_parquet(fault_dirs["out-of-range"] / "orders.parquet").with_row_index()
    bad = frame.filter(pl.col("revenue") < 0)
    assert rev["status"] == "fail"
    assert rev["failures"] == bad.height > 0
    assert rev["rate"] == pytest.approx(bad.height / frame.height)
    assert len(rev["examples"]) == 5
    for example in rev["examples"]:  # row numbers point at the offending value
        assert frame["revenue"][example["row"]] == example["value"] < 0
    assert [e["row"] for e in rev["examples"]] == bad["index"].head(5).to_list()
    assert rev["message"].startswith(f"{bad.height} of {frame.height} rows")
    assert checks["orders.table.row_failure_rate"]["status"] == "fail"
    users = cli("validate", "-c", config, "--source", "users", "--json").json()["sources"][0]
    age = {c["id"]: c for c in users["checks"]}["users.age.max"]
    assert age["status"] == "fail"
    assert {e["value"] for e in age["examples"]} == {200}


def test_bad_dtype_fails_the_schema_check(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["bad-dtype"])
    result = cli("validate", "-c", config, "--source", "orders", "--json")
    assert result.exit_code == 1
    checks = {c["id"]: c for c in result.json()["sources"][0]["checks"]}
    assert checks["orders.revenue.dtype"]["status"] == "fail"
    assert checks["orders.revenue.dtype"]["message"] == (
        "column 'revenue' has dtype string; contract requires float64"
    )
    assert checks["orders.revenue.min"]["status"] == "skipped"
    assert result.json()["sources"][0]["schema_ok"] is False


def _batch(src: Path, dest: Path, last_days: bool) -> Path:
    """Split orders at 2026-06-10 (the drift fault's start): early = reference, late = batch."""
    cutoff = datetime(2026, 6, 10, tzinfo=UTC)
    frame = pl.read_parquet(src / "orders.parquet")
    keep = pl.col("order_ts") >= cutoff if last_days else pl.col("order_ts") < cutoff
    frame.filter(keep).write_parquet(dest)
    return dest


def test_drift_fails_psi_against_saved_profile(cli, tmp_path, fault_dirs) -> None:
    config = example_config(
        tmp_path,
        fault_dirs["clean"],
        **{
            "sources.orders.distribution": {"columns": ["revenue", "channel"], "ks_pvalue": 0.001},
            "sources.orders.columns.revenue.max": 1e9,
        },
    )
    reference = _batch(fault_dirs["clean"], tmp_path / "ref.parquet", last_days=False)
    saved = cli(
        "validate", "-c", config, "--source", "orders", "--data", reference, "--save-profile"
    )
    assert saved.exit_code == 0, saved.stdout + saved.stderr
    assert "saved reference profile 0001-" in saved.stdout

    clean = _batch(fault_dirs["clean"], tmp_path / "clean.parquet", last_days=True)
    ok = cli(
        "validate",
        "-c",
        config,
        "--source",
        "orders",
        "--data",
        clean,
        "--reference",
        "latest",
        "--json",
    )
    assert ok.exit_code == 0, ok.stdout
    drifted = _batch(fault_dirs["drift"], tmp_path / "drift.parquet", last_days=True)
    bad = cli(
        "validate",
        "-c",
        config,
        "--source",
        "orders",
        "--data",
        drifted,
        "--reference",
        "latest",
        "--json",
    )
    assert bad.exit_code == 1
    source = bad.json()["sources"][0]
    checks = {c["id"]: c for c in source["checks"]}
    assert source["reference_profile"].startswith("0001-")
    psi = checks["orders.revenue.psi"]
    assert psi["status"] == "fail"
    assert psi["statistic"] >= 0.2
    assert psi["threshold"] == 0.2
    assert psi["message"].startswith("PSI of 'revenue' is")
    assert checks["orders.revenue.ks"]["status"] == "fail"
    assert checks["orders.channel.psi"]["status"] == "pass"
    # a profile saved for orders is not a reference for users
    version = source["reference_profile"]
    wrong = cli("validate", "-c", config, "--source", "users", "--reference", version)
    assert wrong.exit_code == 2
    assert f"profile {version} was saved for source 'orders', not 'users'" in wrong.stderr
    # the reference's PSI of its own batch against the clean late batch stays below the gate
    assert {c["id"]: c for c in ok.json()["sources"][0]["checks"]}["orders.revenue.psi"][
        "statistic"
    ] < 0.2


def test_reference_latest_without_profile_is_an_artifact_error(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["clean"])
    result = cli("validate", "-c", config, "--source", "orders", "--reference", "latest")
    assert result.exit_code == 3
    assert "no reference profile saved for source 'orders'" in result.stderr


# -- report formats ----------------------------------------------------------------------


def test_junit_and_published_report_are_deterministic(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["out-of-range"])
    junit = tmp_path / "report.xml"
    first = cli("validate", "-c", config, "--json", "--junit", junit)
    assert first.exit_code == 1
    root = ET.parse(junit).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"labels", "orders", "users"}
    failures = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert "orders.revenue.min" in failures
    assert "users.age.max" in failures
    assert int(suites["orders"].get("tests")) == len(first.json()["sources"][1]["checks"])
    second = cli("validate", "-c", config, "--json")
    # same config + same data = same content = same artifact version
    assert second.json()["artifact_version"] == first.json()["artifact_version"]
    store_dir = tmp_path / "artifacts" / "churn" / "validation" / first.json()["artifact_version"]
    report = json.loads((store_dir / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["exit_code"] == 1
    assert "created_at" not in json.dumps(report)


def test_human_output_lists_only_non_passing_checks(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["out-of-range"])
    result = cli("validate", "-c", config, "--source", "orders", "--no-publish")
    assert result.exit_code == 1
    assert result.stdout.startswith("orders: FAILED  rows=2000")
    assert "orders.revenue.min" in result.stdout
    assert "orders.order_id.unique" not in result.stdout
    assert "error: validation failed" in result.stderr


# -- contract features on hand-made data ---------------------------------------------------


def _write(tmp_path: Path, frame: pl.DataFrame, name: str = "data.parquet") -> Path:
    path = tmp_path / name
    frame.write_parquet(path)
    return path


def test_nan_and_inf_fail_range_checks(tmp_path) -> None:
    path = _write(tmp_path, pl.DataFrame({"x": [1.0, math.nan, math.inf, -math.inf, None, 5.0]}))
    config = config_from(tmp_path, {"s": {"path": str(path), "columns": {
        "x": {"dtype": "float64", "nullable": True, "min": 0}}}})  # fmt: skip
    report = validate_source(config, "s")
    check = checks_by_id(report)["s.x.min"]
    assert check.status == "fail"
    assert check.failures == 3  # NaN, +inf, -inf; null is the nullable check's business
    assert [e["row"] for e in check.examples] == [1, 2, 3]


def test_regex_is_a_full_match(tmp_path) -> None:
    path = _write(tmp_path, pl.DataFrame({"code": ["AB12", "AB12x", "xAB12", "AB1"]}))
    config = config_from(tmp_path, {"s": {"path": str(path), "columns": {
        "code": {"dtype": "string", "regex": "[A-Z]{2}[0-9]{2}"}}}})  # fmt: skip
    check = checks_by_id(validate_source(config, "s"))["s.code.regex"]
    # pandera's str_matches would accept 'AB12x' (anchored only at the start)
    assert [e["value"] for e in check.examples] == ["AB12x", "xAB12", "AB1"]


def test_every_column_check_kind(tmp_path) -> None:
    frame = pl.DataFrame(
        {
            "id": [1, 2, 2, 3, 4],
            "k2": ["a", "b", "b", "a", "a"],
            "v": [0, 5, 10, 11, -1],
            "s": ["ok", "toolong", "", "ok", None],
            "c": ["x", "y", "z", "x", "x"],
        }
    )
    path = _write(tmp_path, frame)
    config = config_from(tmp_path, {"s": {
        "path": str(path), "primary_key": ["id", "k2"], "max_rows": 4, "min_rows": 1,
        "columns": {
            "id": {"dtype": "int64", "unique": True},
            "k2": {"dtype": "string"},
            "v": {"dtype": "int64", "gt": 0, "lt": 10},
            "s": {"dtype": "string", "min_length": 1, "max_length": 3},
            "c": {"dtype": "string", "allowed": ["x", "y"]},
        },
        "checks": [{"name": "v_small_for_a", "expr": "v < 5 OR k2 <> 'a'"}],
    }})  # fmt: skip
    report = validate_source(config, "s")
    checks = checks_by_id(report)
    expected = {
        "s.id.unique": 1,  # second 2
        "s.table.primary_key": 1,  # (2, b) repeated
        "s.v.gt": 2,  # 0 and -1
        "s.v.lt": 2,  # 10 and 11
        "s.s.nullable": 1,
        "s.s.min_length": 1,
        "s.s.max_length": 1,
        "s.c.allowed": 1,
        "s.check.v_small_for_a": 1,  # v=11, k2=a
    }
    for check_id, failures in expected.items():
        assert checks[check_id].failures == failures, check_id
        assert checks[check_id].status == "fail", check_id
    assert checks["s.table.max_rows"].status == "fail"
    assert checks["s.table.min_rows"].status == "pass"
    assert checks["s.check.v_small_for_a"].examples == [{"row": 3, "value": {"k2": "a", "v": 11}}]
    # rows failing any error check: 1 (k2 b dup, id dup), 2 (v=10), 3 (v=11), 4 (v=-1, s null), 0 (v=0)
    assert report.failed_rows == 5


def test_severity_warn_and_tolerances(tmp_path) -> None:
    frame = pl.DataFrame({"a": list(range(100)), "b": ["x"] * 97 + ["y"] * 3})
    path = _write(tmp_path, frame)
    sources = {"s": {"path": str(path), "columns": {
        "a": {"dtype": "int64", "max": 94, "max_failure_rate": 0.05},  # 5 fail: within 5%
        "b": {"dtype": "string", "allowed": ["x"], "severity": "warn"},
    }}}  # fmt: skip
    report = validate_source(config_from(tmp_path, sources), "s")
    checks = checks_by_id(report)
    assert checks["s.a.max"].status == "pass"
    assert checks["s.a.max"].failures == 5
    assert "within max_failure_rate 5%" in checks["s.a.max"].message
    assert checks["s.b.allowed"].status == "warn"
    assert report.status == "passed"
    sources["s"]["columns"]["a"] = {"dtype": "int64", "max": 94, "max_failures": 4}
    report = validate_source(config_from(tmp_path, sources), "s")
    assert checks_by_id(report)["s.a.max"].status == "fail"
    assert report.status == "failed"


def test_source_failure_rate_slo(tmp_path) -> None:
    frame = pl.DataFrame({"a": list(range(100))})
    path = _write(tmp_path, frame)
    sources = {"s": {"path": str(path), "max_failure_rate": 0.1,
                     "columns": {"a": {"dtype": "int64", "max": 89}}}}  # fmt: skip
    report = validate_source(config_from(tmp_path, sources), "s")
    slo = checks_by_id(report)["s.table.row_failure_rate"]
    assert (slo.failures, slo.status, report.status) == (10, "pass", "passed")
    sources["s"]["columns"]["a"]["max"] = 88
    report = validate_source(config_from(tmp_path, sources), "s")
    slo = checks_by_id(report)["s.table.row_failure_rate"]
    assert (slo.failures, slo.status, report.status) == (11, "fail", "failed")
    assert slo.message == "11 of 100 rows (11%) fail row checks; max_failure_rate is 10%"


def test_required_and_forbidden_columns(tmp_path) -> None:
    path = _write(tmp_path, pl.DataFrame({"a": [1], "secret": ["x"]}))
    sources = {"s": {"path": str(path), "required_columns": ["b"], "forbidden_columns": ["secret"],
                     "columns": {"a": {"dtype": "int64"}}}}  # fmt: skip
    checks = checks_by_id(validate_source(config_from(tmp_path, sources), "s"))
    assert checks["s.b.required"].message == "required column 'b' missing"
    assert checks["s.secret.forbidden"].status == "fail"


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "empty-dir", "corrupt", "truncated"])
def test_unreadable_input_exits_2(cli, tmp_path, fault_dirs, case) -> None:
    config = example_config(tmp_path, fault_dirs["clean"])
    if case == "missing":
        data = tmp_path / "nope.parquet"
    elif case == "empty-dir":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "corrupt":
        data = tmp_path / "corrupt.parquet"
        data.write_bytes(b"this is not parquet at all, just text" * 10)
    else:
        data = tmp_path / "truncated.parquet"
        whole = (fault_dirs["clean"] / "orders.parquet").read_bytes()
        data.write_bytes(whole[: len(whole) // 2])
    result = cli("validate", "-c", config, "--source", "orders", "--data", data)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert str(data.name) in result.stderr


def test_corrupt_page_inside_a_valid_footer_exits_2(cli, tmp_path, fault_dirs) -> None:
    whole = bytearray((fault_dirs["clean"] / "orders.parquet").read_bytes())
    for i in range(100, len(whole) // 2):  # scribble over data pages, keep the footer intact
        whole[i] = 0xFF
    data = tmp_path / "scribbled.parquet"
    data.write_bytes(bytes(whole))
    config = example_config(tmp_path, fault_dirs["clean"])
    result = cli("validate", "-c", config, "--source", "orders", "--data", data)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_zero_rows_warns_unless_min_rows(cli, tmp_path, fault_dirs) -> None:
    empty = pl.read_parquet(fault_dirs["clean"] / "orders.parquet").head(0)
    data = _write(tmp_path, empty, "empty.parquet")
    config = example_config(tmp_path, fault_dirs["clean"])
    result = cli("validate", "-c", config, "--source", "orders", "--data", data, "--json")
    assert result.exit_code == 1  # the example sets min_rows: 1
    checks = {c["id"]: c for c in result.json()["sources"][0]["checks"]}
    assert checks["orders.table.min_rows"]["message"] == "0 rows; min_rows is 1"
    config = example_config(tmp_path, fault_dirs["clean"], **{"sources.orders.min_rows": None})
    result = cli("validate", "-c", config, "--source", "orders", "--data", data, "--json")
    assert result.exit_code == 0
    checks = {c["id"]: c for c in result.json()["sources"][0]["checks"]}
    assert checks["orders.table.empty"]["status"] == "warn"


def test_all_null_columns(tmp_path) -> None:
    frame = pl.DataFrame({"a": pl.Series([None, None], dtype=pl.Float64),
                          "b": pl.Series([None, None], dtype=pl.String)})  # fmt: skip
    path = _write(tmp_path, frame)
    sources = {"s": {"path": str(path), "columns": {
        "a": {"dtype": "float64", "nullable": True, "min": 0},
        "b": {"dtype": "string", "regex": "x+"}}}}  # fmt: skip
    report = validate_source(config_from(tmp_path, sources), "s")
    checks = checks_by_id(report)
    assert checks["s.a.all_null"].status == "warn"
    assert checks["s.a.min"].status == "pass"
    assert checks["s.a.min"].failures == 0
    assert checks["s.b.nullable"].failures == 2
    assert checks["s.b.nullable"].status == "fail"


def test_non_utf8_bytes_are_not_a_string_column(tmp_path) -> None:
    path = _write(
        tmp_path, pl.DataFrame({"name": pl.Series([b"ok", b"\xff\xfe"], dtype=pl.Binary)})
    )
    sources = {"s": {"path": str(path), "columns": {"name": {"dtype": "string"}}}}
    check = checks_by_id(validate_source(config_from(tmp_path, sources), "s"))["s.name.dtype"]
    assert check.status == "fail"
    assert check.message == (
        "column 'name' has dtype binary (bytes, not UTF-8 text); contract requires string"
    )


def test_invalid_utf8_in_a_string_column_is_an_input_error(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = pa.array([b"ok", b"\xff\xfe"], type=pa.binary())
    table = pa.table({"name": raw.view(pa.string())})
    path = tmp_path / "bad-utf8.parquet"
    pq.write_table(table, path)
    sources = {"s": {"path": str(path), "columns": {"name": {"dtype": "string", "regex": "o."}}}}
    with pytest.raises(InputError):
        validate_source(config_from(tmp_path, sources), "s")


@pytest.mark.parametrize(
    ("zone", "contract_zone", "message"),
    [
        (None, "UTC", "column 'ts' has timezone-naive timestamps; contract requires UTC"),
        ("UTC", None, "column 'ts' has timezone-aware timestamps (UTC); contract requires naive"),
        ("Europe/Berlin", "UTC", "column 'ts' has time zone Europe/Berlin; contract requires UTC"),
    ],
)
def test_naive_vs_aware_timestamps(tmp_path, zone, contract_zone, message) -> None:
    ts = pl.Series([datetime(2026, 1, 1)]).dt.cast_time_unit("ns")
    if zone:
        ts = ts.dt.replace_time_zone(zone)
    path = _write(tmp_path, pl.DataFrame({"ts": ts}))
    sources = {
        "s": {
            "path": str(path),
            "columns": {"ts": {"dtype": "datetime", "timezone": contract_zone}},
        }
    }
    check = checks_by_id(validate_source(config_from(tmp_path, sources), "s"))["s.ts.dtype"]
    assert check.status == "fail"
    assert check.message.startswith(message)


def test_datetime_any_unit_with_matching_zone_passes(tmp_path) -> None:
    ts = pl.Series([datetime(2026, 1, 1, tzinfo=UTC)]).dt.cast_time_unit("ms")
    path = _write(tmp_path, pl.DataFrame({"ts": ts}))
    sources = {
        "s": {"path": str(path), "columns": {"ts": {"dtype": "datetime", "timezone": "UTC"}}}
    }
    assert validate_source(config_from(tmp_path, sources), "s").status == "passed"


# The dtype verdict is read from the Polars schema; pandera's schema-only validation (which
# mlpipe used before #19) is the oracle: same verdict for every contract dtype x observed dtype.
_OBSERVED_DTYPES = [
    pl.Int8(), pl.Int16(), pl.Int32(), pl.Int64(), pl.UInt8(), pl.UInt16(), pl.UInt32(),
    pl.UInt64(), pl.Float32(), pl.Float64(), pl.Boolean(), pl.String(), pl.Binary(), pl.Date(),
    pl.Time(), pl.Null(), pl.Decimal(10, 2), pl.Categorical(), pl.Enum(["a", "b"]),
    pl.Datetime("ns"), pl.Datetime("us", "UTC"), pl.Datetime("ms", "Europe/Berlin"),
    pl.Duration("us"), pl.Duration("ms"), pl.List(pl.Float32), pl.List(pl.Float64),
    pl.List(pl.Int64), pl.Array(pl.Float32, 3), pl.Array(pl.Float64, 2),
    pl.Struct({"a": pl.Int64}),
]  # fmt: skip


def _contract_cases() -> list[tuple[str, str | None]]:
    from mlpipe_cli.config.sources import DTYPES

    cases: list[tuple[str, str | None]] = []
    for dtype in DTYPES:
        zones = [None, "UTC", "Europe/Berlin"] if dtype == "datetime" else [None]
        cases += [(dtype, zone) for zone in zones]
    return cases


@pytest.mark.parametrize(("dtype", "zone"), _contract_cases())
def test_dtype_verdict_equals_pandera_schema_validation(tmp_path, dtype, zone) -> None:
    import pandera.polars as pa
    from pandera.config import ValidationDepth, config_context

    from mlpipe_cli.schema.pandera_io import to_pandera
    from mlpipe_cli.validation.engine import _dtype_failures

    for observed in _OBSERVED_DTYPES:
        schema = pl.Schema({"c": observed})
        source = config_from(tmp_path, {"s": {"path": "x.parquet", "columns": {
            "c": {"dtype": dtype, "timezone": zone}}}}).sources["s"]  # fmt: skip
        with config_context(validation_depth=ValidationDepth.SCHEMA_ONLY):
            try:
                to_pandera(source, observed=schema, checks=False).validate(
                    pl.DataFrame(schema=schema).lazy(), lazy=True
                )
                pandera_rejects = False
            except pa.errors.SchemaErrors:
                pandera_rejects = True
        ours_rejects = "c" in _dtype_failures(source, schema, missing=[])
        assert ours_rejects == pandera_rejects, (dtype, zone, observed)


def test_validate_does_not_import_pandera(tmp_path, fault_dirs) -> None:
    """pandera (with pandas and hypothesis) cost 0.65 s per process: only export needs it."""
    config = example_config(tmp_path, fault_dirs["clean"])
    code = (
        "import sys\n"
        "from mlpipe_cli.cli.main import run\n"
        f"assert run(['validate', '-c', {str(config)!r}, '-q']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandera', 'pandas')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- crashing checks and bad contracts -----------------------------------------------------


def test_check_that_cannot_run_is_a_tool_error(cli, tmp_path, fault_dirs) -> None:
    config = example_config(
        tmp_path,
        fault_dirs["clean"],
        **{"sources.orders.checks": [
            {"name": "nonsense", "expr": "revenue >= 'abc' +"},
            {"name": "unknown_col", "expr": "no_such_column > 0"},
            {"name": "fine", "expr": "revenue >= 0 OR channel = 'refund'"},
        ]},
    )  # fmt: skip
    result = cli("validate", "-c", config, "--source", "orders", "--json")
    assert result.exit_code == 2
    checks = {c["id"]: c for c in result.json()["sources"][0]["checks"]}
    assert checks["orders.check.nonsense"]["status"] == "error"
    assert checks["orders.check.unknown_col"]["status"] == "error"
    assert "no_such_column" in checks["orders.check.unknown_col"]["message"]
    assert checks["orders.check.fine"]["status"] == "pass"
    assert "a check could not run" in result.stderr


def test_check_crashing_at_run_time_is_a_tool_error(tmp_path) -> None:
    path = _write(tmp_path, pl.DataFrame({"s": ["1", "2", "x"]}))
    sources = {"s": {"path": str(path), "columns": {"s": {"dtype": "string"}},
                     "checks": [{"name": "as_int", "expr": "CAST(s AS INTEGER) > 0"}]}}  # fmt: skip
    report = validate_source(config_from(tmp_path, sources), "s")
    check = checks_by_id(report)["s.check.as_int"]
    assert check.status == "error"
    assert check.message.startswith("check crashed:")
    assert report.status == "error"
    assert checks_by_id(report)["s.s.nullable"].status == "pass"  # the others still ran


def test_range_on_a_string_column_is_a_config_error(tmp_path) -> None:
    path = _write(tmp_path, pl.DataFrame({"s": ["a"]}))
    sources = {"s": {"path": str(path), "columns": {"s": {"dtype": "string", "min": 1}}}}
    with pytest.raises(ConfigError, match=r"min: 1\.0 needs a numeric column"):
        validate_source(config_from(tmp_path, sources), "s")


def test_data_with_several_sources_is_a_usage_error(cli, tmp_path, fault_dirs) -> None:
    config = example_config(tmp_path, fault_dirs["clean"])
    result = cli("validate", "-c", config, "--data", fault_dirs["clean"] / "orders.parquet")
    assert result.exit_code == 2
    assert "--data needs exactly one source" in result.stderr


def test_uniqueness_in_hash_buckets_equals_one_pass(tmp_path, monkeypatch) -> None:
    """Bounded-memory uniqueness (one hash bucket per pass) finds exactly the repeats."""
    import random

    from mlpipe_cli.validation import engine

    rng = random.Random(5)
    ids = [rng.randrange(40) if rng.random() > 0.1 else None for _ in range(300)]
    pairs = [(rng.randrange(5), rng.choice("ab")) for _ in range(300)]
    frame = pl.DataFrame({"id": ids, "k1": [p[0] for p in pairs], "k2": [p[1] for p in pairs]})
    path = _write(tmp_path, frame)
    sources = {"s": {"path": str(path), "primary_key": ["k1", "k2"], "columns": {
        "id": {"dtype": "int64", "nullable": True, "unique": True},
        "k1": {"dtype": "int64"}, "k2": {"dtype": "string"}}}}  # fmt: skip
    seen, seen_pk, repeats, repeats_pk = set(), set(), [], []
    for row, (value, pair) in enumerate(zip(ids, pairs, strict=True)):
        if value is not None:
            if value in seen:
                repeats.append(row)
            seen.add(value)
        if pair in seen_pk:
            repeats_pk.append(row)
        seen_pk.add(pair)
    for bucket_rows in (1_000_000, 50, 7):  # 1, 6 and 43 buckets
        monkeypatch.setattr(engine, "BUCKET_ROWS", bucket_rows)
        report = validate_source(
            config_from(tmp_path, sources), "s",
            quarantine_path=tmp_path / "q.parquet", out_path=tmp_path / "o.parquet",
        )  # fmt: skip
        checks = checks_by_id(report)
        assert checks["s.id.unique"].failures == len(repeats)
        assert [e["row"] for e in checks["s.id.unique"].examples] == repeats[:5]
        assert checks["s.table.primary_key"].failures == len(repeats_pk)
        assert [e["row"] for e in checks["s.table.primary_key"].examples] == repeats_pk[:5]
        quarantined = pl.read_parquet(tmp_path / "q.parquet")["_row"].to_list()
        assert quarantined == sorted(set(repeats) | set(repeats_pk))


def test_invalid_regex_is_a_check_error_not_a_pass(tmp_path) -> None:
    path = _write(tmp_path, pl.DataFrame({"s": ["a", "b"], "n": [1, 2]}))
    sources = {"s": {"path": str(path), "columns": {
        "s": {"dtype": "string", "regex": "(unclosed"}, "n": {"dtype": "int64", "max": 1}}}}  # fmt: skip
    report = validate_source(config_from(tmp_path, sources), "s")
    checks = checks_by_id(report)
    assert checks["s.s.regex"].status == "error"
    assert "regex" in checks["s.s.regex"].message
    assert checks["s.n.max"].failures == 1  # the other checks still ran
    assert report.status == "error"
