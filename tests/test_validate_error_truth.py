"""`validate`'s error line says what really happened.

- A crashed check: the line names the check that could not run and why (before the fix it
  named the first check that had merely failed, `orders.revenue.min`).
- A full disk part-way through `--save-profile`: the line lists what the run had already
  written and published (before the fix it said "nothing was published" while `profile/0001-…`
  was published and LATEST pointed at it). Swept over inode budgets of a tmpfs so that every
  step of the run is the one that fails in some row.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLE_CONFIG, _repoint_paths, mount_or_skip

ROWS = 3000


@pytest.fixture(scope="module")
def bad_orders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlpipe_cli.sample_data import generate

    root = tmp_path_factory.mktemp("bad-orders")
    generate(root, rows=ROWS, seed=5, faults=("out-of-range",))  # negative revenue: fails
    return root / "orders.parquet"


def _config(tmp_path: Path, data_dir: Path, checks: list[dict[str, str]]) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["artifact_dir"] = str(tmp_path / "artifacts")
    _repoint_paths(config, data_dir)
    # the crashing checks come after the column checks that fail
    config["sources"]["orders"]["checks"] += checks
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_error_names_the_check_that_could_not_run(cli, tmp_path: Path, bad_orders) -> None:  # type: ignore[no-untyped-def]
    config = _config(tmp_path, bad_orders.parent, [{"name": "broken", "expr": "revenue >>> 0"}])
    result = cli("validate", "-c", config, "--source", "orders", "--data", bad_orders,
                 "--no-publish", "--json")  # fmt: skip
    assert result.exit_code == 2, result.stderr
    checks = {c["id"]: c for c in result.json()["sources"][0]["checks"]}
    assert checks["orders.revenue.min"]["status"] == "fail"  # failed, listed before the crash
    assert checks["orders.check.broken"]["status"] == "error"
    line = _error_line(result.stderr)
    assert line.startswith("error: a check could not run: orders.check.broken: "), line
    assert "cannot parse SQL expression 'revenue >>> 0'" in line, line
    assert "revenue.min" not in line, line


def test_several_crashed_checks_name_the_first_and_count_the_rest(
    cli, tmp_path: Path, bad_orders: Path
) -> None:
    config = _config(tmp_path, bad_orders.parent, [
        {"name": "unknown_column", "expr": "no_such_column > 0"},
        {"name": "broken", "expr": "revenue >>> 0"},
    ])  # fmt: skip
    result = cli("validate", "-c", config, "--source", "orders", "--data", bad_orders,
                 "--no-publish")  # fmt: skip
    assert result.exit_code == 2, result.stderr
    line = _error_line(result.stderr)
    assert line.startswith("error: a check could not run: orders.check.unknown_column: "), line
    assert "no_such_column" in line, line
    assert line.endswith("(and 1 more)"), line


# -- a full disk part-way through --save-profile -------------------------------------------


def _on_disk(artifacts: Path) -> dict[str, tuple[list[str], str | None]]:
    """kind -> (version directories, what LATEST names), read without mlpipe."""
    found = {}
    for kind_dir in sorted((artifacts / "churn").glob("*")):
        if kind_dir.name == "runs" or not kind_dir.is_dir():
            continue
        versions = sorted(p.name for p in kind_dir.iterdir() if re.fullmatch(r"\d{4}-\w+", p.name))
        latest = kind_dir / "LATEST"
        found[kind_dir.name] = (versions, latest.read_text().strip() if latest.exists() else None)
    return found


def test_a_full_disk_message_lists_what_was_already_published(
    cli, tmp_path: Path, sample_data_dir: Path
) -> None:
    config = _config(tmp_path, sample_data_dir, [])
    out = tmp_path / "good.parquet"  # on the normal disk: renamed into place after publishing
    outcomes = set()
    for inodes in range(4, 40):
        artifacts = tmp_path / f"artifacts-{inodes}"
        mount_or_skip(artifacts, ["-t", "tmpfs", "-o", f"size=4m,nr_inodes={inodes}", "tmpfs"])
        try:
            out.unlink(missing_ok=True)
            result = cli("validate", "-c", config, "--source", "orders", "--save-profile",
                         "--artifact-dir", artifacts, "--out", out)  # fmt: skip
            disk = _on_disk(artifacts)
        finally:
            subprocess.run(["umount", "-l", str(artifacts)], capture_output=True)
        if result.exit_code == 0:
            assert set(disk) == {"profile", "validation"}
            assert all(latest in versions for versions, latest in disk.values())
            outcomes.add("all published")
            break
        assert result.exit_code == 2, result.stderr
        line = _error_line(result.stderr)
        assert "no space left on the device" in line, line
        published = {kind: v for kind, (versions, _) in disk.items() for v in versions}
        if "nothing was published" in line:
            assert not published, (line, disk)  # the claim is true
            assert not out.exists() or f"written {out}" in line, line
        for kind, (versions, latest) in disk.items():
            for version in versions:
                # every version on disk is named, and what the line says of LATEST holds
                assert f"{kind}/{version}" in line, (line, disk)
                if latest == version:
                    assert f"{kind}/{version} (" in line, (line, disk)
                    assert "now" in line, (line, disk)
                    outcomes.add(f"{kind} published")
                else:
                    assert f"{kind}/{version} was published but LATEST not moved" in line, line
                    outcomes.add(f"{kind} LATEST not moved")
        if out.exists() and published:
            assert f"written {out} (--out, orders)" in line, line
        if not published:
            outcomes.add("nothing published")
    # the sweep reached every step: nothing, the profile alone, LATEST failing, then success
    assert {"nothing published", "profile published", "profile LATEST not moved",
            "validation LATEST not moved", "all published"} <= outcomes, outcomes  # fmt: skip
