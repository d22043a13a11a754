"""The artifact store: atomic publish, content-derived ids, verification, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import pytest

import mlpipe_cli.artifacts.store as artifact_store_module
from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.errors import ArtifactError, ArtifactNotFound, UsageError


def writer(files: dict[str, bytes]):  # type: ignore[no-untyped-def]
    def write(target: Path) -> None:
        for name, data in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)

    return write


def test_publish_and_load_roundtrip(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "demo")
    result = store.publish(
        "transform", writer({"state.json": b"{}", "sub/x.bin": b"abc"}), config_hash="c1"
    )
    assert result.created
    version = result.version
    assert version.version.startswith("0001-")
    assert version.version.endswith(version.content_hash[:12])
    loaded = store.get("transform")
    assert loaded.version == version.version
    assert loaded.file("sub/x.bin").read_bytes() == b"abc"
    manifest = json.loads((loaded.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"state.json", "sub/x.bin"}
    for key in (
        "kind",
        "version",
        "config_hash",
        "inputs",
        "libraries",
        "created_at",
        "mlpipe_version",
        "format_version",
    ):
        assert key in manifest


def test_same_content_gives_same_version_and_no_new_directory(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "demo")
    first = store.publish("transform", writer({"a": b"1"}), config_hash="c", inputs={"rows": 3})
    second = store.publish("transform", writer({"a": b"1"}), config_hash="c", inputs={"rows": 3})
    assert not second.created
    assert second.version.version == first.version.version
    assert store.versions("transform") == [first.version.version]


def test_content_hash_ignores_wall_clock_and_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two publications a day apart (a fake clock: the store's ``datetime.now``) in two
    places get the same version id; only ``created_at`` tells them apart."""
    clock = [datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)]

    class FakeClock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return clock[0].astimezone(tz)

    monkeypatch.setattr(artifact_store_module, "datetime", FakeClock)
    one = ArtifactStore(tmp_path / "one", "demo").publish(
        "schema", writer({"a": b"1"}), config_hash="c"
    )
    clock[0] += timedelta(days=1, seconds=1)
    two = ArtifactStore(tmp_path / "two", "demo").publish(
        "schema", writer({"a": b"1"}), config_hash="c"
    )
    assert one.version.version == two.version.version
    assert one.version.manifest["created_at"] == "2026-07-01T12:00:00+00:00"
    assert two.version.manifest["created_at"] == "2026-07-02T12:00:01+00:00"


def test_different_content_new_sequence_and_latest_moves(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "demo")
    v1 = store.publish("transform", writer({"a": b"1"})).version.version
    v2 = store.publish("transform", writer({"a": b"2"})).version.version
    assert v1.startswith("0001-")
    assert v2.startswith("0002-")
    assert store.latest("transform") == v2
    assert store.resolve("transform", "1") == v1
    assert store.resolve("transform", v2.split("-")[1][:6]) == v2
    # re-publishing old content points latest back at the old version
    store.publish("transform", writer({"a": b"1"}))
    assert store.latest("transform") == v1


def test_unknown_version_is_an_artifact_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "demo")
    with pytest.raises(ArtifactNotFound, match="no transform artifact published yet"):
        store.get("transform")
    store.publish("transform", writer({"a": b"1"}))
    with pytest.raises(ArtifactNotFound, match="unknown transform artifact version '0042'"):
        store.get("transform", "0042")
    with pytest.raises(UsageError):
        store.get("../etc", "latest")


def test_published_files_are_read_only(tmp_path: Path) -> None:
    version = ArtifactStore(tmp_path, "demo").publish("schema", writer({"a": b"1"})).version
    assert not os.access(version.path / "a", os.W_OK) or os.geteuid() == 0
    assert (version.path / "a").stat().st_mode & 0o222 == 0


def test_tampered_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "demo")
    version = store.publish("transform", writer({"state.json": b'{"mean": 1.0}'})).version
    target = version.path / "state.json"
    os.chmod(target, 0o644)
    target.write_bytes(b'{"mean": 2.0}')
    with pytest.raises(ArtifactError, match=r"file state\.json does not match its sha256"):
        store.get("transform", version.version)
    result = store.verify("transform", version.version)
    assert not result.ok
    (version.path / "extra.txt").write_text("x")
    assert any(
        "extra.txt is not listed" in p for p in store.verify("transform", version.version).problems
    )


def test_publisher_error_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "demo")

    def failing(target: Path) -> None:
        (target / "half").write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.publish("transform", failing)
    assert store.versions("transform") == []
    assert store.latest("transform") is None
    assert list((tmp_path / "demo" / "transform" / ".staging").iterdir()) == []


_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlpipe_cli.artifacts import ArtifactStore

    root, marker, payload, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    def write(target: Path) -> None:
        for i in range(20):
            (target / f"part-{i}.bin").write_bytes(payload.encode() * 1000)
        Path(marker).write_text("writing")
        time.sleep(pause)  # killed here in the atomicity test

    result = ArtifactStore(root, "demo").publish("transform", write, config_hash=payload)
    print(result.version.version)
    """
)


def _spawn_publisher(
    tmp_path: Path, payload: str, pause: float, marker: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _PUBLISHER,
            str(tmp_path / "store"),
            str(marker),
            payload,
            str(pause),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_publisher_killed_mid_write_leaves_old_state(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", "demo")
    old = store.publish("transform", writer({"a": b"old"})).version.version
    marker = tmp_path / "marker"
    proc = _spawn_publisher(tmp_path, "new", 30, marker)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.versions("transform") == [old]
    assert store.latest("transform") == old
    assert store.get("transform").version == old
    assert store.verify_all()[0].ok
    # the next publisher cleans up the dead one's staging dir and succeeds
    new = store.publish("transform", writer({"a": b"new"})).version.version
    assert store.versions("transform") == [old, new]
    assert list((tmp_path / "store" / "demo" / "transform" / ".staging").iterdir()) == []


def test_concurrent_publishers_never_corrupt_the_store(tmp_path: Path) -> None:
    procs = [_spawn_publisher(tmp_path, f"p{i % 3}", 0.05, tmp_path / f"m{i}") for i in range(6)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    store = ArtifactStore(tmp_path / "store", "demo")
    versions = store.versions("transform")
    # three distinct payloads -> exactly three versions, sequence numbers 1..3, no gaps
    assert len(versions) == 3
    assert sorted(int(v.split("-")[0]) for v in versions) == [1, 2, 3]
    assert set(outputs) == set(versions)
    assert store.latest("transform") in versions
    assert all(r.ok for r in store.verify_all())


# -- a corrupt LATEST pointer -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "binary content, not a version id"),
        (b"not-a-version\n", "holds 'not-a-version', not a version id"),
        (b"0042-0123456789ab\n", "points to 0042-0123456789ab, which does not exist"),
    ],
)
def test_corrupt_latest_pointer_is_an_artifact_error_not_nothing_published(
    tmp_path: Path, cli, content: bytes, problem: str
) -> None:
    store = ArtifactStore(tmp_path, "demo")
    store.publish("transform", writer({"a": b"1"}))
    pointer = tmp_path / "demo" / "transform" / "LATEST"
    pointer.write_bytes(content)
    with pytest.raises(ArtifactError) as err:
        store.get("transform")
    assert str(err.value) == (f"{pointer} is corrupt ({problem}); run `mlpipe artifacts verify`")
    assert not isinstance(err.value, ArtifactNotFound)
    # pinned versions still load: only the pointer is damaged
    assert store.get("transform", "1").version.startswith("0001-")
    report = store.verify_all()
    assert [(r.kind, r.version, r.ok) for r in report][-1] == ("transform", "LATEST", False)
    assert report[-1].problems == [f"LATEST is corrupt ({problem})"]
    # and through the CLI: exit 3, one line
    config = tmp_path / "mlpipe.yaml"
    config.write_text(f"pipeline: demo\nartifact_dir: {tmp_path}\n")
    verify = cli("artifacts", "verify", "--all", "-c", config)
    assert verify.exit_code == 3, verify.stderr
    assert "LATEST" in verify.stdout + verify.stderr


# -- signing ------------------------------------------------------------------------------


def forge(store: ArtifactStore, kind: str, name: str, data: bytes) -> str:
    """What someone with write access does: edit a file AND its manifest so that every sha256,
    the content hash and the version id agree again. Returns the forged version id."""
    from mlpipe_cli.artifacts.store import _content_hash, sha256_file

    version = store.latest(kind)
    assert version is not None
    path = store.base / kind / version
    for file in path.rglob("*"):
        file.chmod(0o644)
    (path / name).write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(path / name), "size": len(data)}
    manifest["content_hash"] = _content_hash(
        kind,
        {n: m["sha256"] for n, m in manifest["files"].items()},
        config_hash=manifest["config_hash"],
        inputs=manifest["inputs"],
        params=manifest["params"],
    )
    forged = f"{version.split('-')[0]}-{manifest['content_hash'][:12]}"
    manifest["version"] = forged
    (path / "manifest.json").write_text(json.dumps(manifest))
    path.rename(path.parent / forged)
    (store.base / kind / "LATEST").write_text(forged + "\n")
    return forged


def test_forged_artifact_passes_sha256_checks_but_not_the_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpipe_cli.artifacts.store import manifest_signature

    # without a key, a forgery of files + manifest together is undetectable (the motivation)
    plain = ArtifactStore(tmp_path / "plain", "demo")
    plain.publish("transform", writer({"state.json": b'{"mean": 1}'}))
    forged = forge(plain, "transform", "state.json", b'{"mean": 666}')
    assert plain.get("transform").version == forged
    assert all(r.ok for r in plain.verify_all())

    monkeypatch.setenv("MLPIPE_SIGNING_KEY", "k3y-only-the-publisher-has")
    signed = ArtifactStore(tmp_path / "signed", "demo")
    published = signed.publish("transform", writer({"state.json": b'{"mean": 1}'})).version
    manifest = json.loads((published.path / "manifest.json").read_text())
    # an independent oracle of the signature: hmac over the sorted, compact JSON
    import hashlib
    import hmac

    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    assert (
        manifest["signature"]
        == "hmac-sha256:"
        + hmac.new(b"k3y-only-the-publisher-has", canonical, hashlib.sha256).hexdigest()
    )
    assert manifest_signature(manifest, b"k3y-only-the-publisher-has") == manifest["signature"]
    assert signed.get("transform").version == published.version

    forged = forge(signed, "transform", "state.json", b'{"mean": 666}')
    with pytest.raises(ArtifactError, match="signature does not match"):
        signed.get("transform", forged)
    [result] = signed.verify_all()
    assert not result.ok
    assert "signature does not match" in result.problems[0]

    # a different key is a mismatch too; an unsigned manifest is refused unless allowed
    monkeypatch.setenv("MLPIPE_SIGNING_KEY", "another-key")
    with pytest.raises(ArtifactError, match="signature does not match"):
        signed.get("transform", forged)
    with pytest.raises(ArtifactError, match="is not signed but MLPIPE_SIGNING_KEY is set"):
        plain.get("transform")
    monkeypatch.setenv("MLPIPE_ALLOW_UNSIGNED", "1")
    assert plain.get("transform").version == plain.latest("transform")
    # stripping the signature does not help: ALLOW_UNSIGNED accepts unsigned, not mismatched
    with pytest.raises(ArtifactError, match="signature does not match"):
        signed.get("transform", forged)


def test_forged_artifact_is_refused_by_the_cli_with_exit_3(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPIPE_SIGNING_KEY", "k3y")
    store = ArtifactStore(tmp_path, "demo")
    store.publish("transform", writer({"state.json": b"{}"}))
    forge(store, "transform", "state.json", b'{"evil": true}')
    config = tmp_path / "mlpipe.yaml"
    config.write_text(f"pipeline: demo\nartifact_dir: {tmp_path}\n")
    verify = cli("artifacts", "verify", "--all", "-c", config)
    assert verify.exit_code == 3
    assert "signature does not match" in verify.stdout + verify.stderr
    transform = cli("transform", "-c", config, "--data", tmp_path / "x.parquet",
                    "--out", tmp_path / "y.parquet")  # fmt: skip
    assert transform.exit_code == 3, transform.stderr
    assert "signature does not match" in transform.stderr
    assert len(transform.stderr.strip().splitlines()) == 1


def test_signed_republish_of_identical_content_does_not_reuse_an_unsigned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path, "demo")
    first = store.publish("transform", writer({"a": b"1"}), config_hash="c").version
    monkeypatch.setenv("MLPIPE_SIGNING_KEY", "k3y")
    second = store.publish("transform", writer({"a": b"1"}), config_hash="c")
    assert second.created
    assert second.version.version != first.version
    assert second.version.content_hash == first.content_hash
    assert store.get("transform").version == second.version.version
