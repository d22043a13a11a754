"""The fault suite: every command × every kind of bad input a user or a machine produces.

Each row runs one command (in-process, through the same ``run()`` the console script uses)
against a fresh copy of a small project and asserts what a cron job relies on:

- the documented exit code;
- exactly one line on stderr, starting with ``error:``, naming the problem; no traceback;
- every input file (data, config, profile, model, published artifacts) byte-identical;
- no partial output visible: the outputs the row names are absent (or untouched), and no
  temp file, rename backup or staging directory is left anywhere in the project.

Full disk and read-only rows mount a small tmpfs (we run as root in CI); they are skipped only
when ``mount`` itself is refused, with its reason. kill -9 needs a real process, so it has its
own tests below the table. ``test_every_command_leaves_its_inputs_unchanged`` runs every leaf
command of the CLI (found by walking the Typer app, so a new command without a row fails it)
on success and failure paths and compares the sha256 of every input file.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from conftest import EXAMPLE_CONFIG, _repoint_paths, free_port, mount_or_skip

import mlpipe_cli
from mlpipe_cli.errors import MlpipeError

ROWS = 2000
AS_OF = "2026-07-01T00:00:00Z"


# -- the project every row starts from ------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample data, a training set, a fitted transform, a profile and a skops model."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.cli.main import run
    from mlpipe_cli.transforms import load_transform

    root = tmp_path_factory.mktemp("fault-base")
    assert run(["sample-data", "--rows", str(ROWS), "--out", str(root / "data"), "-q"]) == 0
    config = write_config(root)
    assert run(["training-set", "-c", str(config), "--out", str(root / "ts.parquet"), "-q"]) == 0
    (root / "ts.parquet.manifest.json").unlink()
    assert run(["fit", "-c", str(config), "--data", str(root / "ts.parquet"), "-q"]) == 0
    store = ArtifactStore(root / "artifacts", "churn")
    transform = load_transform(store)
    shutil.copyfile(store.get("transform").file("profile.json"), root / "profile.json")
    frame = transform.transform_batch(pl.scan_parquet(root / "ts.parquet")).collect()
    x = np.nan_to_num(frame.select(transform.output_columns).to_numpy().astype(np.float64))
    model = LogisticRegression(max_iter=500).fit(x, frame["churned"].to_numpy())
    sio.dump(model, root / "model.skops")
    return root


def write_config(root: Path) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["artifact_dir"] = str(root / "artifacts")
    _repoint_paths(config, root / "data")
    config["transforms"]["data"] = str(root / "ts.parquet")
    path = root / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Workspace:
    """One row's private copy of the project."""

    root: Path
    mounts: list[Path] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "mlpipe.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def orders(self) -> Path:
        return self.data / "orders.parquet"

    @property
    def ts(self) -> Path:
        return self.root / "ts.parquet"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def bad(self) -> Path:
        return self.root / "bad"

    @property
    def latest(self) -> Path:
        return self.artifacts / "churn" / "transform" / "LATEST"

    def full_disk(self, name: str = "full", size: str = "16k") -> Path:
        """A directory on a tiny tmpfs: the first few KB fit, then ENOSPC."""
        return self._mount(self.root / name, ["-t", "tmpfs", "-o", f"size={size}", "tmpfs"])

    def read_only_dir(self, name: str = "ro") -> Path:
        return self._mount(self.root / name, ["-t", "tmpfs", "-o", "ro,size=16k", "tmpfs"])

    def read_only_artifacts(self) -> Path:
        self._mount(self.artifacts, ["--bind", str(self.artifacts)])
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(self.artifacts)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"read-only remount refused: {remount.stderr.strip()}")
        return self.artifacts

    def _mount(self, where: Path, args: list[str]) -> Path:
        self.mounts.append(mount_or_skip(where, args))
        return where

    def unmount_all(self) -> None:
        for where in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        self.mounts.clear()


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    shutil.copytree(base, root, symlinks=True)
    write_config(root)
    (root / "out").mkdir()
    (root / "bad").mkdir()
    workspace = Workspace(root)
    try:
        yield workspace
    finally:
        workspace.unmount_all()


# -- what "unchanged" and "nothing partial" mean --------------------------------------------

# files that a run may legitimately change: the LATEST pointers (publishing moves them), the
# publishers' lock, the online store; and below, the serving log and the run ledger
_MUTABLE = ("LATEST", ".lock", "online.sqlite", "online.sqlite-wal", "online.sqlite-shm")


def input_hashes(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    hashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.name in _MUTABLE:
            continue
        relative = path.relative_to(root)
        if relative.parts[0] in ("out", "full", "ro") or {"serving-logs", "runs"} & set(
            relative.parts
        ):  # the serving log and the run ledger (one new record per run) are not inputs
            continue
        if any(path == s or s in path.parents for s in skip):
            continue
        hashes[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def leftovers(root: Path) -> list[str]:
    """Temp files, rename backups and staging directories: never visible after a run."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith((".tmp", ".bak")):
                found.append(os.path.join(dirpath, name))
        if os.path.basename(dirpath) == ".staging" and (dirnames or filenames):
            found.append(dirpath)
    return found


def assert_one_error_line(stderr: str, fragment: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert fragment in lines[0], (fragment, stderr)
    assert "please report" not in lines[0], stderr


# -- bad inputs ------------------------------------------------------------------------------


def empty(ws: Workspace) -> Path:
    path = ws.bad / "empty.parquet"
    path.write_bytes(b"")
    return path


def truncated(ws: Workspace, source: Path | None = None) -> Path:
    data = (source or ws.ts).read_bytes()
    path = ws.bad / "truncated.parquet"
    path.write_bytes(data[: len(data) // 2])
    return path


def csv_named_parquet(ws: Workspace) -> Path:
    path = ws.bad / "actually.parquet"
    pl.read_parquet(ws.ts).head(50).drop("label_ts").write_csv(path)
    return path


def with_column(ws: Workspace, source: Path, name: str, expr: pl.Expr) -> Path:
    path = ws.bad / f"{source.stem}-{name}.parquet"
    pl.read_parquet(source).with_columns(expr.alias(name)).write_parquet(path)
    return path


def nan_inf_revenue(ws: Workspace) -> Path:
    revenue = (
        pl.when(pl.col("order_id") % 7 == 0).then(float("nan"))
        .when(pl.col("order_id") % 11 == 0).then(float("inf"))
        .when(pl.col("order_id") % 13 == 0).then(float("-inf"))
        .otherwise(pl.col("revenue"))
    )  # fmt: skip
    return with_column(ws, ws.orders, "revenue", revenue)


def symlink_to(target: Path, link: Path) -> Path:
    link.symlink_to(target)
    return link


def hardlink_to(target: Path, link: Path) -> Path:
    os.link(target, link)
    return link


def parts_dir(ws: Workspace, source: Path | None = None) -> Path:
    """A directory source of two Parquet parts."""
    parts = ws.root / "parts"
    parts.mkdir()
    frame = pl.read_parquet(source or ws.ts)
    frame.head(ROWS // 2).write_parquet(parts / "part-0.parquet")
    frame.tail(frame.height - ROWS // 2).write_parquet(parts / "part-1.parquet")
    return parts


def corrupt_latest(ws: Workspace) -> None:
    ws.latest.write_text("0007-notaversion\n")


def fill(directory: Path, leave: int = 4096) -> None:
    """Fill a tmpfs so that only about ``leave`` bytes remain."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    if free > leave:
        (directory / "filler").write_bytes(b"\0" * (free - leave))


# -- the table -------------------------------------------------------------------------------


@dataclass
class Row:
    id: str
    args: Callable[[Workspace], list[Any]]
    code: int
    message: str | Callable[[Workspace], str]
    # outputs that must not be visible afterwards (computed before the run)
    outputs: Callable[[Workspace], list[Path]] = lambda ws: []
    # the run ledger lives in the artifact dir: when that is read-only, the run also says (once,
    # as a warning before the error) that its record could not be written
    ledger_warning: bool = False


def R(  # a table row
    id: str,
    args: Callable[[Workspace], list[Any]],
    code: int,
    message: str | Callable[[Workspace], str],
    outputs: Callable[[Workspace], list[Path]] = lambda ws: [],
    ledger_warning: bool = False,
) -> Any:
    return pytest.param(Row(id, args, code, message, outputs, ledger_warning), id=id)


def same(ws: Workspace, path: Path, how: str) -> str:
    return f"output {path} is also an input ({how})"


def validate(ws: Workspace, data: Path, *extra: Any) -> list[Any]:
    return ["validate", "-c", ws.config, "-s", "orders", "--data", data, "--no-publish", *extra]


def transform(ws: Workspace, data: Path, out: Path) -> list[Any]:
    return ["transform", "-c", ws.config, "--data", data, "--out", out]


def training_set(ws: Workspace, out: Path, *extra: Any) -> list[Any]:
    return ["training-set", "-c", ws.config, "--out", out, "--no-publish", *extra]


def fit(ws: Workspace, data: Path, *extra: Any) -> list[Any]:
    return ["fit", "-c", ws.config, "--data", data, *extra]


def psi(ws: Workspace, current: Path, *extra: Any) -> list[Any]:
    return ["psi-report", "-c", ws.config, "--current", current, *extra]


NOT_PARQUET = "is not a valid Parquet file"
NO_SPACE = "no space left on the device"
READ_ONLY = "the file system is read-only"

TABLE = [
    # -- validate ------------------------------------------------------------------------
    R("validate-missing", lambda ws: validate(ws, ws.bad / "nope.parquet"), 2, "not found"),
    R("validate-empty", lambda ws: validate(ws, empty(ws)), 2, NOT_PARQUET),
    R("validate-truncated", lambda ws: validate(ws, truncated(ws, ws.orders)), 2, NOT_PARQUET),
    R("validate-wrong-format", lambda ws: validate(ws, csv_named_parquet(ws)), 2, NOT_PARQUET),
    R("validate-wrong-dtype",
      lambda ws: validate(ws, with_column(ws, ws.orders, "revenue",
                                          pl.col("revenue").cast(pl.String))),
      1, "column 'revenue' has dtype string; contract requires float64"),
    R("validate-nan-inf", lambda ws: validate(ws, nan_inf_revenue(ws)), 1,
      "have 'revenue' < 0 (or NaN/inf)"),
    R("validate-quarantine-same-path",
      lambda ws: validate(ws, ws.orders, "--quarantine", ws.orders), 2,
      lambda ws: same(ws, ws.orders, "same path")),
    R("validate-out-symlink",
      lambda ws: validate(ws, ws.orders, "--out", symlink_to(ws.orders, ws.out / "link.parquet")),
      2, lambda ws: same(ws, ws.out / "link.parquet", f"via symlink to {ws.orders}")),
    R("validate-out-hardlink",
      lambda ws: validate(ws, ws.orders, "--out", hardlink_to(ws.orders, ws.out / "hard.parquet")),
      2, lambda ws: same(ws, ws.out / "hard.parquet", f"via hard link to {ws.orders}")),
    R("validate-out-inside-input-dir",
      lambda ws: validate(ws, parts_dir(ws, ws.orders), "--out", ws.root / "parts" / "p.parquet"),
      2, lambda ws: same(ws, ws.root / "parts" / "p.parquet",
                         f"inside the input directory {ws.root / 'parts'}"),
      outputs=lambda ws: [ws.root / "parts" / "p.parquet"]),
    R("validate-quarantine-matches-input-glob",
      lambda ws: validate(ws, ws.data / "ord*.parquet", "--quarantine",
                          ws.data / "orders_bad.parquet"), 2,
      lambda ws: same(ws, ws.data / "orders_bad.parquet",
                      f"matches the input glob {ws.data / 'ord*.parquet'}"),
      outputs=lambda ws: [ws.data / "orders_bad.parquet"]),
    R("validate-junit-over-config",
      lambda ws: validate(ws, ws.orders, "--junit", ws.config), 2,
      lambda ws: same(ws, ws.config, "same path")),
    R("validate-full-disk-publishes-neither",
      lambda ws: validate(ws, ws.orders, "--quarantine", ws.out / "q.parquet",
                          "--out", ws.full_disk() / "passed.parquet"), 2, NO_SPACE,
      outputs=lambda ws: [ws.out / "q.parquet", ws.root / "full" / "passed.parquet"]),
    R("validate-read-only",
      lambda ws: validate(ws, ws.orders, "--quarantine", ws.read_only_dir() / "q.parquet"), 2,
      READ_ONLY),
    # -- training-set --------------------------------------------------------------------
    R("training-set-missing-spine",
      lambda ws: training_set(ws, ws.out / "t.parquet", "--spine", ws.bad / "nope.parquet"),
      2, "not found", outputs=lambda ws: [ws.out / "t.parquet"]),
    R("training-set-empty-spine",
      lambda ws: training_set(ws, ws.out / "t.parquet", "--spine", empty(ws)), 2, NOT_PARQUET,
      outputs=lambda ws: [ws.out / "t.parquet"]),
    R("training-set-truncated-spine",
      lambda ws: training_set(ws, ws.out / "t.parquet", "--spine",
                              truncated(ws, ws.data / "labels.parquet")), 2, NOT_PARQUET,
      outputs=lambda ws: [ws.out / "t.parquet"]),
    R("training-set-wrong-dtype",
      lambda ws: training_set(ws, ws.out / "t.parquet", "--spine", with_column(
          ws, ws.data / "labels.parquet", "label_ts", pl.col("label_ts").cast(pl.String))),
      2, "spine column 'label_ts' must be a datetime or date, got String",
      outputs=lambda ws: [ws.out / "t.parquet"]),
    R("training-set-out-is-spine",
      lambda ws: training_set(ws, ws.data / "labels.parquet"), 2,
      lambda ws: same(ws, ws.data / "labels.parquet", "same path")),
    R("training-set-out-hardlink-to-source",
      lambda ws: training_set(ws, hardlink_to(ws.orders, ws.out / "t.parquet")), 2,
      lambda ws: same(ws, ws.out / "t.parquet", f"via hard link to {ws.orders}")),
    R("training-set-manifest-symlink-to-config",
      lambda ws: training_set(ws, manifest_linked_to_config(ws)), 2, lambda ws: same(ws, ws.out / "t.parquet.manifest.json", f"via symlink to {ws.config}"),
      outputs=lambda ws: [ws.out / "t.parquet"]),
    R("training-set-full-disk",
      lambda ws: training_set(ws, ws.full_disk() / "t.parquet"), 2, NO_SPACE,
      outputs=lambda ws: [ws.root / "full" / "t.parquet",
                          ws.root / "full" / "t.parquet.manifest.json"]),
    R("training-set-read-only",
      lambda ws: training_set(ws, ws.read_only_dir() / "t.parquet"), 2, READ_ONLY),
    # -- fit -----------------------------------------------------------------------------
    R("fit-missing", lambda ws: fit(ws, ws.bad / "nope.parquet"), 2, "not found"),
    R("fit-empty", lambda ws: fit(ws, empty(ws)), 2, NOT_PARQUET),
    R("fit-truncated", lambda ws: fit(ws, truncated(ws)), 2, NOT_PARQUET),
    R("fit-wrong-format", lambda ws: fit(ws, csv_named_parquet(ws)), 2, NOT_PARQUET),
    R("fit-wrong-dtype",
      lambda ws: fit(ws, with_column(ws, ws.ts, "churned", pl.col("churned").cast(pl.String))),
      1, "column 'churned' has dtype string; contract requires bool"),
    # new training data: a fit that got as far as publishing would add an artifact version,
    # which the unchanged-files check catches; the output is refused when the data is read
    R("fit-out-same-path-refused-before-fitting",
      lambda ws: fit(ws, truncate_rows(ws), "--out", ws.bad / "fewer.parquet"), 2,
      lambda ws: same(ws, ws.bad / "fewer.parquet", "same path")),
    R("fit-out-symlink",
      lambda ws: fit(ws, ws.ts, "--out", symlink_to(ws.ts, ws.out / "link.parquet")), 2,
      lambda ws: same(ws, ws.out / "link.parquet", f"via symlink to {ws.ts}")),
    R("fit-read-only-artifacts", lambda ws: fit(ws, truncate_rows(ws), *ro(ws)), 2,
      lambda ws: f"cannot publish an artifact to {ws.artifacts / 'churn' / 'transform'}: "
      f"{READ_ONLY}", ledger_warning=True),
    R("fit-full-disk-out",
      lambda ws: fit(ws, ws.ts, "--out", ws.full_disk() / "rows.parquet"), 2, NO_SPACE,
      outputs=lambda ws: [ws.root / "full" / "rows.parquet"]),
    # -- transform -----------------------------------------------------------------------
    R("transform-missing", lambda ws: transform(ws, ws.bad / "nope.parquet", ws.out / "f.parquet"),
      2, "not found", outputs=lambda ws: [ws.out / "f.parquet"]),
    R("transform-empty", lambda ws: transform(ws, empty(ws), ws.out / "f.parquet"), 2,
      NOT_PARQUET, outputs=lambda ws: [ws.out / "f.parquet"]),
    R("transform-truncated", lambda ws: transform(ws, truncated(ws), ws.out / "f.parquet"), 2,
      NOT_PARQUET, outputs=lambda ws: [ws.out / "f.parquet"]),
    R("transform-wrong-format",
      lambda ws: transform(ws, csv_named_parquet(ws), ws.out / "f.parquet"), 2, NOT_PARQUET,
      outputs=lambda ws: [ws.out / "f.parquet"]),
    R("transform-wrong-dtype",
      lambda ws: transform(ws, with_column(ws, ws.ts, "total_orders",
                                           pl.col("total_orders").cast(pl.String)),
                           ws.out / "f.parquet"),
      3, "column 'total_orders' has dtype String but transform",
      outputs=lambda ws: [ws.out / "f.parquet"]),
    R("transform-same-path", lambda ws: transform(ws, ws.ts, ws.ts), 2,
      lambda ws: same(ws, ws.ts, "same path")),
    R("transform-out-symlink",
      lambda ws: transform(ws, ws.ts, symlink_to(ws.ts, ws.out / "link.parquet")), 2,
      lambda ws: same(ws, ws.out / "link.parquet", f"via symlink to {ws.ts}")),
    R("transform-input-is-symlink-to-out",
      lambda ws: transform(ws, symlink_to(ws.ts, ws.out / "in.parquet"), ws.ts), 2,
      lambda ws: same(ws, ws.ts, f"the input {ws.out / 'in.parquet'} is a symlink to it")),
    R("transform-out-hardlink",
      lambda ws: transform(ws, ws.ts, hardlink_to(ws.ts, ws.out / "hard.parquet")), 2,
      lambda ws: same(ws, ws.out / "hard.parquet", f"via hard link to {ws.ts}")),
    R("transform-out-inside-input-dir",
      lambda ws: transform(ws, parts_dir(ws), ws.root / "parts" / "features.parquet"), 2,
      lambda ws: same(ws, ws.root / "parts" / "features.parquet",
                      f"inside the input directory {ws.root / 'parts'}"),
      outputs=lambda ws: [ws.root / "parts" / "features.parquet"]),
    R("transform-out-matches-input-glob-not-yet-existing",
      lambda ws: transform(ws, ws.root / "*.parquet", ws.root / "features.parquet"), 2,
      lambda ws: same(ws, ws.root / "features.parquet",
                      f"matches the input glob {ws.root / '*.parquet'}"),
      outputs=lambda ws: [ws.root / "features.parquet"]),
    R("transform-out-in-symlinked-dir-matching-glob",
      lambda ws: transform(ws, ws.root / "ts*.parquet",
                           symlink_to(ws.root, ws.out / "alias") / "ts_new.parquet"), 2,
      lambda ws: same(ws, ws.out / "alias" / "ts_new.parquet",
                      f"matches the input glob {ws.root / 'ts*.parquet'}"),
      outputs=lambda ws: [ws.root / "ts_new.parquet"]),
    R("transform-full-disk", lambda ws: transform(ws, ws.ts, ws.full_disk() / "f.parquet"), 2,
      NO_SPACE, outputs=lambda ws: [ws.root / "full" / "f.parquet"]),
    R("transform-dev-full", lambda ws: transform(ws, ws.ts, Path("/dev/full")), 2,
      "output path /dev/full is not a regular file"),
    R("transform-read-only", lambda ws: transform(ws, ws.ts, ws.read_only_dir() / "f.parquet"),
      2, READ_ONLY),
    R("transform-corrupt-latest",
      lambda ws: [corrupt_latest(ws), *transform(ws, ws.ts, ws.out / "f.parquet")][1:], 3,
      lambda ws: f"{ws.latest} is corrupt (holds '0007-notaversion', not a version id); "
      "run `mlpipe artifacts verify`", outputs=lambda ws: [ws.out / "f.parquet"]),
    # -- psi-report ----------------------------------------------------------------------
    R("psi-missing", lambda ws: psi(ws, ws.bad / "nope.parquet"), 2, "not found"),
    R("psi-empty", lambda ws: psi(ws, empty(ws)), 2, NOT_PARQUET),
    R("psi-truncated", lambda ws: psi(ws, truncated(ws)), 2, NOT_PARQUET),
    R("psi-profile-wrong-format",
      lambda ws: psi(ws, ws.ts, "--profile", write(ws.bad / "p.json", b"{not json")), 2,
      "cannot read profile"),
    R("psi-html-same-path", lambda ws: psi(ws, ws.ts, "--html", ws.ts), 2,
      lambda ws: same(ws, ws.ts, "same path")),
    R("psi-html-over-profile",
      lambda ws: psi(ws, ws.ts, "--profile", ws.root / "profile.json",
                     "--html", ws.root / "profile.json"), 2,
      lambda ws: same(ws, ws.root / "profile.json", "same path")),
    R("psi-html-full-disk", lambda ws: psi(ws, ws.ts, "--html", ws.full_disk() / "r.html"), 2,
      NO_SPACE, outputs=lambda ws: [ws.root / "full" / "r.html"]),
    # -- materialize ---------------------------------------------------------------------
    R("materialize-truncated-source",
      lambda ws: ["materialize", "-c", replace_source(ws, "orders", truncated(ws, ws.orders)),
                  "--as-of", AS_OF], 2, NOT_PARQUET),
    R("materialize-read-only-artifacts",
      lambda ws: ["materialize", "-c", ws.config, "--as-of", AS_OF, *ro(ws)], 2,
      lambda ws: f"online store sqlite:{ws.artifacts / 'churn' / 'online.sqlite'} cannot be "
      f"opened: {ws.artifacts / 'churn'} is on a read-only file system", ledger_warning=True),
    # -- sample-data ---------------------------------------------------------------------
    R("sample-data-full-disk-writes-no-table",
      lambda ws: ["sample-data", "--rows", "2000", "--out", ws.full_disk(size="16k")], 2,
      NO_SPACE,
      outputs=lambda ws: [ws.root / "full" / f"{t}.parquet" for t in
                          ("users", "orders", "products", "product_embeddings", "labels")]),
    R("sample-data-read-only",
      lambda ws: ["sample-data", "--rows", "200", "--out", ws.read_only_dir() / "s"], 2,
      READ_ONLY),
    R("sample-data-out-is-a-file",
      lambda ws: ["sample-data", "--rows", "200", "--out", ws.config], 2, "a file is in the way"),
    # -- export / schema / model / serve --------------------------------------------------
    R("export-symlink-to-config",
      lambda ws: ["export", "-c", ws.config, "--out",
                  symlink_to(ws.config, ws.out / "e.joblib")], 2,
      lambda ws: same(ws, ws.out / "e.joblib", f"via symlink to {ws.config}")),
    R("export-corrupt-latest",
      lambda ws: [corrupt_latest(ws), "export", "-c", ws.config, "--out",
                  ws.out / "e.joblib"][1:], 3, "is corrupt",
      outputs=lambda ws: [ws.out / "e.joblib"]),
    R("schema-infer-over-data",
      lambda ws: ["schema", "infer", "--data", ws.orders, "--out", ws.orders], 2,
      lambda ws: same(ws, ws.orders, "same path")),
    R("schema-infer-missing",
      lambda ws: ["schema", "infer", "--data", ws.bad / "nope.parquet"], 2, "not found"),
    R("model-register-missing",
      lambda ws: ["model", "register", ws.bad / "nope.skops", "-c", ws.config], 2, "not found"),
    R("model-register-empty",
      lambda ws: ["model", "register", write(ws.bad / "m.skops", b""), "-c", ws.config], 3,
      "is empty (0 bytes)"),
    R("model-register-pickle-untrusted",
      lambda ws: ["model", "register", write(ws.bad / "m.joblib", b"\x80\x04K\x01."), "-c",
                  ws.config], 2, "is a joblib/pickle file: loading it runs any code"),
    R("model-register-truncated-skops",
      lambda ws: ["model", "register", truncated(ws, ws.root / "model.skops"), "-c", ws.config,
                  "--trust-pickle"], 3, "cannot be loaded"),
    R("serve-corrupt-latest",
      lambda ws: [corrupt_latest(ws), "serve", "-c", ws.config, "--port", "1"][1:], 3,
      "is corrupt"),
]  # fmt: skip


def manifest_linked_to_config(ws: Workspace) -> Path:
    """An --out whose manifest path (OUT.manifest.json) is a symlink to the config."""
    symlink_to(ws.config, ws.out / "t.parquet.manifest.json")
    return ws.out / "t.parquet"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def ro(ws: Workspace) -> list[str]:
    ws.read_only_artifacts()
    return []


def truncate_rows(ws: Workspace) -> Path:
    """Training data that fits a transform not yet published (so fit must publish)."""
    path = ws.bad / "fewer.parquet"
    pl.read_parquet(ws.ts).head(ROWS // 2).write_parquet(path)
    return path


def replace_source(ws: Workspace, name: str, path: Path) -> Path:
    config = yaml.safe_load(ws.config.read_text())
    config["sources"][name]["path"] = str(path)
    edited = ws.bad / "edited.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    return edited


@pytest.mark.parametrize("row", TABLE)
def test_fault(row: Row, ws: Workspace, cli: Any) -> None:
    args = row.args(ws)  # prepares bad inputs, links and mounts
    outputs = row.outputs(ws)
    before_outputs = {p: _state(p) for p in outputs}
    before = input_hashes(ws.root)
    result = cli(*args, "-q")
    assert result.exit_code == row.code, result.stderr
    message = row.message(ws) if callable(row.message) else row.message
    stderr = result.stderr
    if row.ledger_warning:
        warning, _, stderr = stderr.partition("\n")
        assert warning.startswith(
            f"warning: run ledger not written ({ws.artifacts / 'churn' / 'runs'}): "
        ), result.stderr
    assert_one_error_line(stderr, message)
    assert input_hashes(ws.root) == before
    for path in outputs:
        assert _state(path) == before_outputs[path], f"{path} changed or appeared"
    assert leftovers(ws.root) == []


def _state(path: Path) -> Any:
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_file():
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return "absent" if not path.exists() else "other"


def test_the_table_covers_every_writing_command_and_every_class() -> None:
    ids = [param.id for param in TABLE]
    assert len(ids) == len(set(ids))
    for command in ("validate", "training-set", "fit", "transform", "psi", "materialize",
                    "sample-data", "export", "schema-infer", "model-register", "serve"):  # fmt: skip
        assert any(i.startswith(command) for i in ids), command
    for kind in ("missing", "empty", "truncated", "wrong-format", "wrong-dtype", "nan-inf",
                 "same-path", "symlink", "hardlink", "inside-input-dir", "glob", "full-disk",
                 "read-only", "dev-full", "corrupt-latest"):  # fmt: skip
        assert any(kind in i for i in ids), kind


# -- kill -9 mid-write ----------------------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def _hidden_temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_kill_9_mid_write_leaves_no_visible_output_and_the_next_run_cleans_up(
    tmp_path: Path, cli: Any
) -> None:
    """sample-data publishes five tables all or none: killed while writing, none is visible;
    the temps the dead writer left are removed by the next write to the same place."""
    out = tmp_path / "sample"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "sample-data", "--rows", "400000", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        seen = _wait_for(lambda: out.is_dir() and bool(_hidden_temps(out)), timeout=60)
        assert seen, "no temp file appeared: the writer never got to writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = _hidden_temps(out)
    assert left, "the kill came after the writer finished"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    assert all(f".{proc.pid}." in p.name for p in left)

    result = cli("sample-data", "--rows", "200", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{t}.parquet" for t in ("users", "orders", "products", "product_embeddings", "labels")
    )


def test_temps_of_live_writers_and_other_files_are_left_alone(tmp_path: Path) -> None:
    from mlpipe_cli.io import _HOST, atomic_write_bytes

    target = tmp_path / "x.bin"
    live = tmp_path / f".x.bin.{_HOST}.{os.getpid()}.abcd1234.tmp"  # this process: alive
    other_host = tmp_path / ".x.bin.00000000.999999.abcd1234.tmp"  # maybe alive elsewhere
    dead_pid = _dead_pid()
    dead = tmp_path / f".x.bin.{_HOST}.{dead_pid}.abcd1234.tmp"
    dead_backup = tmp_path / f".x.bin.{_HOST}.{dead_pid}.abcd1234.bak"
    unrelated = tmp_path / f".y.bin.{_HOST}.{dead_pid}.abcd1234.tmp"
    for path in (live, other_host, dead, dead_backup, unrelated):
        path.write_bytes(b"partial")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert not dead.exists()
    assert not dead_backup.exists()
    assert live.exists()
    assert other_host.exists()
    assert unrelated.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- all or none ------------------------------------------------------------------------------


def test_atomic_outputs_publish_all_or_none_and_restore_on_a_failed_rename(
    tmp_path: Path,
) -> None:
    from mlpipe_cli.errors import OutputError
    from mlpipe_cli.io import atomic_outputs, atomic_write_bytes, staged_path

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"old a")
    seen_inside = []

    def fail_after_the_first_output() -> None:
        with atomic_outputs():
            atomic_write_bytes(a, b"new a")
            seen_inside.extend([a.read_bytes(), staged_path(a).read_bytes()])
            raise RuntimeError("the second output failed")

    with pytest.raises(RuntimeError):
        fail_after_the_first_output()
    assert seen_inside == [b"old a", b"new a"]  # nothing visible until the group ends
    assert a.read_bytes() == b"old a"
    assert not b.exists()
    assert leftovers(tmp_path) == []

    # a rename that fails half way: b's target is a non-empty directory, so os.replace fails
    # after a was already replaced; a gets its old content back
    b.mkdir()
    (b / "keep").write_bytes(b"x")

    def second_rename_fails() -> None:
        with atomic_outputs():
            atomic_write_bytes(a, b"new a")
            with atomic_target_bypassing_checks(b) as tmp:
                tmp.write_bytes(b"new b")

    with pytest.raises(OutputError, match=f"cannot publish {b}"):
        second_rename_fails()
    assert a.read_bytes() == b"old a"
    assert leftovers(tmp_path) == []

    with atomic_outputs():
        atomic_write_bytes(a, b"new a")
        atomic_write_bytes(tmp_path / "c.txt", b"new c")
    assert a.read_bytes() == b"new a"
    assert (tmp_path / "c.txt").read_bytes() == b"new c"


def atomic_target_bypassing_checks(path: Path) -> Any:
    """atomic_target for a path prepare_output_path would refuse (a directory): stages a temp
    into the current group so that the group's rename step is what fails."""
    import contextlib

    from mlpipe_cli import io

    @contextlib.contextmanager
    def staged() -> Iterator[Path]:
        tmp = io._temp_sibling(path)
        yield tmp
        batch = io._BATCH.get()
        assert batch is not None
        batch.staged.append(io._Staged(tmp, path))

    return staged()


# -- the same-path guard, directly -----------------------------------------------------------


def test_an_output_declared_early_refuses_an_input_read_later(tmp_path: Path) -> None:
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.io import check_outputs, input_scope, register_input

    data = tmp_path / "d.parquet"
    data.write_bytes(b"x")
    with input_scope():
        check_outputs([tmp_path / "sub" / ".." / "d.parquet"])
        with pytest.raises(UsageError, match="is also an input"):
            register_input(data)
    with input_scope():  # a new run: nothing registered
        check_outputs([data])


def test_glob_matching_follows_glob_rules(tmp_path: Path) -> None:
    from mlpipe_cli.io import _glob_matches

    cases = {
        ("/d/*.parquet", "/d/a.parquet"): True,
        ("/d/*.parquet", "/d/sub/a.parquet"): False,  # * does not cross directories
        ("/d/**/*.parquet", "/d/a.parquet"): True,  # ** matches zero directories
        ("/d/**/*.parquet", "/d/x/y/a.parquet"): True,
        ("/d/*.parquet", "/d/.hidden.parquet"): False,  # glob skips hidden names
        ("/d/part-[0-9].parquet", "/d/part-7.parquet"): True,
        ("/d/part-?.parquet", "/d/part-10.parquet"): False,
    }
    for (pattern, path), expected in cases.items():
        assert _glob_matches(pattern, path) is expected, (pattern, path)
    # oracle: glob.glob itself on files that exist
    import glob

    for rel in ("a.parquet", "sub/a.parquet", "x/y/a.parquet", ".h.parquet", "part-7.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for pattern in ("*.parquet", "**/*.parquet", "*/a.parquet", "part-[0-9].parquet", "**"):
        full = str(tmp_path / pattern)
        matched = set(glob.glob(full, recursive=True))
        for rel in ("a.parquet", "sub/a.parquet", "x/y/a.parquet", ".h.parquet", "part-7.parquet"):
            path = str(tmp_path / rel)
            assert _glob_matches(full, path) is (path in matched), (pattern, rel)


# -- the errors tree ---------------------------------------------------------------------------


def test_every_exception_class_of_mlpipe_sits_on_the_one_tree() -> None:
    import importlib
    import pkgutil

    stragglers = []
    for module_info in pkgutil.walk_packages(mlpipe_cli.__path__, "mlpipe_cli."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, BaseException):
                continue
            if not issubclass(cls, MlpipeError):
                stragglers.append(f"{cls.__module__}.{cls.__qualname__}")
    assert stragglers == []


def test_internal_errors_exit_70_and_environment_errors_are_not_bugs(cli: Any) -> None:
    from mlpipe_cli.errors import ExitCode, InternalError, exit_code_for
    from mlpipe_cli.features.engine import PointInTimeInvariantError

    assert issubclass(PointInTimeInvariantError, InternalError)
    assert exit_code_for(PointInTimeInvariantError("x")) == ExitCode.INTERNAL == 70
    assert exit_code_for(ValueError("a bug")) == 70
    assert exit_code_for(OSError(28, "No space left on device")) == 2


# -- every command, inputs unchanged ------------------------------------------------------------


def _leaf_commands() -> set[tuple[str, ...]]:
    import typer

    from mlpipe_cli.cli.main import app

    command = typer.main.get_command(app)
    leaves: set[tuple[str, ...]] = set()

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        subcommands = getattr(cmd, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        else:
            leaves.add(path)

    walk(command, ())
    return leaves


def every_command_runs(ws: Workspace) -> dict[tuple[str, ...], list[tuple[list[Any], int]]]:
    """Per leaf command: runs (args, expected exit code), successes and failures."""
    c = ws.config
    out = ws.out
    return {
        ("sample-data",): [(["sample-data", "--rows", "200", "--out", out / "s"], 0),
                           (["sample-data", "--rows", "5", "--out", out / "s2"], 2)],
        ("validate",): [(["validate", "-c", c, "--save-profile", "--quarantine", out / "q",
                          "--out", out / "p", "--junit", out / "j.xml"], 0),
                        (validate(ws, nan_inf_revenue(ws), "--quarantine", out / "q.parquet"), 1),
                        (validate(ws, ws.orders, "--out", ws.orders), 2)],
        ("schema", "infer"): [(["schema", "infer", "--data", ws.orders, "--out",
                                out / "s.yaml"], 0),
                              (["schema", "infer", "--data", ws.orders, "--out", ws.orders], 2)],
        ("schema", "snapshot"): [(["schema", "snapshot", "-c", c], 0)],
        ("schema", "diff"): [(["schema", "diff", "-c", c], 0),
                             (["schema", "diff", "-c", c, "--data", nan_inf_revenue(ws),
                               "--source", "orders"], 1)],
        ("schema", "export"): [(["schema", "export", "-c", c, "--out", out / "schemas"], 0),
                               (["schema", "export", "-c", c, "--source", "orders",
                                 "--out", c], 2)],
        ("training-set",): [(training_set(ws, out / "t.parquet"), 0),
                            (training_set(ws, ws.data / "labels.parquet"), 2)],
        ("fit",): [(fit(ws, ws.ts, "--out", out / "rows.parquet"), 0),
                   (fit(ws, ws.ts, "--out", ws.ts), 2)],
        ("transform",): [(transform(ws, ws.ts, out / "f.parquet"), 0),
                         (transform(ws, ws.ts, ws.ts), 2)],
        ("export",): [(["export", "-c", c, "--out", out / "e.joblib"], 0),
                      (["export", "-c", c, "--out", symlink_to(c, out / "c.joblib")], 2)],
        ("materialize",): [(["materialize", "-c", c, "--as-of", AS_OF], 0),
                           (["materialize", "-c", c, "--check-freshness", "--max-age", "1s"], 1)],
        ("serve",): [(["serve", "-c", c, "--artifact", "0099", "--port", "1"], 3)],
        # no source of this config streams (the streaming tests run them against Redis)
        ("push",): [(["push", "-c", c, "--source", "orders", ws.orders], 2)],
        ("stream",): [(["stream", "-c", c, "--once"], 2)],
        ("model", "register"): [(["model", "register", ws.root / "model.skops", "-c", c], 0),
                                (["model", "register", ws.config, "-c", c], 2)],
        ("model", "list"): [(["model", "list", "-c", c], 0)],
        ("promote",): [(["promote", "latest", "--model", "none", "-c", c], 0),
                       (["promote", "--rollback", "-c", c], 2)],
        ("psi-report",): [(psi(ws, ws.ts, "--html", out / "r.html"), 0),
                          (psi(ws, ws.ts, "--html", ws.ts), 2)],
        ("artifacts", "list"): [(["artifacts", "list", "-c", c], 0)],
        ("artifacts", "show"): [(["artifacts", "show", "transform/latest", "-c", c], 0),
                                (["artifacts", "show", "transform/0099", "-c", c], 3)],
        ("artifacts", "verify"): [(["artifacts", "verify", "--all", "-c", c], 0)],
        ("runs",): [(["runs", "-c", c], 0), (["runs", "-c", c, "--since", "bogus"], 2)],
        # the failing runs above breach the availability objective: exit 1, textfile written
        ("slo",): [(["slo", "-c", c, "--prometheus", out / "m.prom"], 1),
                   (["slo", "-c", c, "--prometheus", c], 2)],
        # a non-empty directory is refused; --force adds files but keeps mlpipe.yaml as it is
        ("init",): [(["init", out / "proj", "--rows", "200"], 0),
                    (["init", ws.root], 2),
                    (["init", ws.root, "--force", "--no-data"], 0)],
    }  # fmt: skip


def test_every_command_leaves_its_inputs_unchanged(ws: Workspace, cli: Any) -> None:
    runs = every_command_runs(ws)
    assert set(runs) == _leaf_commands(), "a command has no runs here: add them"
    inputs = input_hashes(ws.root)
    expected = {"mlpipe.yaml", "ts.parquet", "profile.json", "model.skops",
                *(f"data/{t}.parquet" for t in ("users", "orders", "products",
                                                "product_embeddings", "labels"))}  # fmt: skip
    assert expected <= set(inputs)
    assert any(p.startswith("artifacts/churn/transform/") for p in inputs)
    for command, cases in runs.items():
        for args, code in cases:
            result = cli(*args, "-q")
            assert result.exit_code == code, (command, args, result.stderr)
            assert "Traceback" not in result.stderr
            now = input_hashes(ws.root)
            changed = [p for p, h in inputs.items() if now.get(p) != h]
            assert changed == [], (command, args, changed)
            # what this run published is an input of the next
            inputs = now
    assert leftovers(ws.root) == []


def test_serve_leaves_its_inputs_unchanged(ws: Workspace, cli: Any) -> None:
    """The one command that runs until stopped: a real server process, SIGTERM."""
    import httpx

    assert cli("materialize", "-c", ws.config, "--as-of", AS_OF, "-q").exit_code == 0
    before = input_hashes(ws.root)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(ws.config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        assert _wait_for(up, timeout=60)
        user = pl.read_parquet(ws.data / "users.parquet")["user_id"][0]
        assert httpx.get(f"http://127.0.0.1:{port}/features/{user}", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert input_hashes(ws.root) == before
    assert leftovers(ws.root) == []
