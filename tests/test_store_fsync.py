"""Publishing syncs every file of a version, concurrently, before the version appears.

The fsyncs of a version's files run together (artifacts/store.py::_fsync_tree, #19); what
must not change: each file and directory is synced before the rename that publishes it, and
a failed sync publishes nothing. The real ``os.fsync`` runs; the test only records what
each call synced (via /proc/self/fd) and when the version appeared.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from mlpipe_cli.artifacts import ArtifactStore


def _write_many(staging: Path) -> None:
    for i in range(9):
        (staging / f"part-{i}.json").write_text(f'{{"i": {i}}}\n' * (i + 1))
    (staging / "tables").mkdir()
    (staging / "tables" / "t.bin").write_bytes(os.urandom(4096))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_every_file_is_synced_before_the_version_is_renamed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    threads: set[int] = set()
    renamed_after: list[int] = []
    lock = threading.Lock()
    real_fsync, real_rename = os.fsync, os.rename

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        with lock:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            threads.add(threading.get_ident())

    def recording_rename(src: str | Path, dst: str | Path) -> None:
        renamed_after.append(len(synced))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "rename", recording_rename)
    result = ArtifactStore(tmp_path, "demo").publish("thing", _write_many)
    monkeypatch.undo()

    final = result.version.path
    staging_names = {Path(p).name for p in synced}
    files = {p.name for p in final.rglob("*") if p.is_file()}
    assert files == {*(f"part-{i}.json" for i in range(9)), "t.bin", "manifest.json"}
    assert files <= staging_names  # every file, the manifest included
    assert "tables" in staging_names  # and the sub-directory
    assert renamed_after
    assert renamed_after[0] >= len(files) + 2  # files and both directories: before
    assert len(threads) > 1  # the files were synced concurrently


def test_a_failed_sync_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("part-4.json"):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    store = ArtifactStore(tmp_path, "demo")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        store.publish("thing", _write_many)
    monkeypatch.undo()
    assert store.versions("thing") == []
    assert store.latest("thing") is None
    staging = tmp_path / "demo" / "thing" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []
