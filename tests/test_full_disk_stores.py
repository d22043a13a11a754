"""A full disk under the artifact store and the SQLite online store: exit 2 naming the path.

The fault suite's rows write `--out` files; these write where `--artifact-dir` points (a
tmpfs of 40 KB, mounted as in tests/test_fault_suite.py). Before, `fit` reported Polars'
"No space left on device" as a bug (exit 70) and `materialize` reported SQLite's "database
or disk is full" as an unreachable service (exit 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import test_fault_suite as fault
from test_fault_suite import (
    AS_OF,
    NO_SPACE,
    Workspace,
    assert_one_error_line,
    input_hashes,
    leftovers,
)

# the fault suite's project (module scope) and its per-test copy with tmpfs mounts
base = fault.base
ws = fault.ws


def _without_ledger_warning(stderr: str, artifact_dir: Path) -> str:
    """The run ledger lives in the artifact dir too: its warning comes after the error."""
    lines = stderr.strip().splitlines()
    kept = [line for line in lines if not line.startswith("warning: run ledger not written")]
    assert len(kept) >= len(lines) - 1, stderr
    return "\n".join(kept)


def _versions(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_fit_publishing_to_a_full_disk_is_exit_2_naming_the_artifact_dir(
    ws: Workspace, cli: Any
) -> None:
    # 50x the rows: the golden records Polars writes then do not fit either
    big = ws.bad / "big.parquet"
    pl.concat([pl.read_parquet(ws.ts)] * 50).write_parquet(big)
    full = ws.full_disk(size="40k")
    before = input_hashes(ws.root)
    result = cli("fit", "-c", ws.config, "--data", big, "--artifact-dir", full, "-q")
    assert result.exit_code == 2, result.stderr
    kind_dir = full / "churn" / "transform"
    assert_one_error_line(
        _without_ledger_warning(result.stderr, full),
        f"cannot publish an artifact to {kind_dir}: {NO_SPACE}",
    )
    assert _versions(kind_dir) == []  # no version, no LATEST
    assert input_hashes(ws.root) == before
    assert leftovers(ws.root) == []


def test_materialize_into_sqlite_on_a_full_disk_is_exit_2_naming_the_store(
    ws: Workspace, cli: Any
) -> None:
    full = ws.full_disk(size="40k")
    before = input_hashes(ws.root)
    result = cli("materialize", "-c", ws.config, "--as-of", AS_OF, "--artifact-dir", full, "-q")
    assert result.exit_code == 2, result.stderr
    line = _without_ledger_warning(result.stderr, full)
    assert_one_error_line(line, f"the online store {full / 'churn' / 'online.sqlite'}: {NO_SPACE}")
    assert input_hashes(ws.root) == before


def test_materialize_filling_the_disk_mid_write_is_exit_2_and_keeps_the_live_version(
    ws: Workspace, cli: Any
) -> None:
    """The store opens (room for its schema), then the disk fills while rows are written."""
    from test_fault_suite import fill

    full = ws.full_disk(size="1m")
    first = cli("materialize", "-c", ws.config, "--as-of", AS_OF, "--artifact-dir", full, "-q")
    assert first.exit_code == 0, first.stderr
    store = full / "churn" / "online.sqlite"
    live = _live(store)
    fill(full, leave=8192)
    result = cli(
        "materialize", "-c", ws.config, "--as-of", "2026-07-02T00:00:00Z",
        "--artifact-dir", full, "-q",
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert_one_error_line(
        _without_ledger_warning(result.stderr, full), f"the online store {store}: {NO_SPACE}"
    )
    (full / "filler").unlink()
    assert _live(store) == live


def _live(store: Path) -> str | None:
    import sqlite3

    with sqlite3.connect(store) as db:
        row = db.execute("SELECT version FROM mlpipe_pointer WHERE name = 'live'").fetchone()
    return None if row is None else row[0]
