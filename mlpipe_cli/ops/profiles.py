"""Reference profiles saved by `validate --save-profile` and read by `--reference`.

Each profile is a ``profile`` artifact holding ``profile.json`` (the shared format of
``mlpipe_cli.drift.profile``) for ONE source; the manifest's ``params.source`` names it, so
``--reference latest`` means "the newest profile of this source".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg, spelled
from mlpipe_cli.errors import ArtifactNotFound, UsageError

if TYPE_CHECKING:
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig

PROFILE_KIND = "profile"
PROFILE_FILE = "profile.json"


def save_profile(
    store: ArtifactStore,
    config: PipelineConfig,
    source_name: str,
    data_path: Path | str | None = None,
    *,
    on_spark: bool = False,
) -> str:
    """Profile the source's contract columns and publish it; return the version id.

    ``on_spark``: computed by the Spark engine (``engines/spark/profile.py``), which gives the
    same profile bytes, so the same version id for the same input."""
    from mlpipe_cli.config.loader import config_section_hash
    from mlpipe_cli.config.sources import scan_source
    from mlpipe_cli.drift.profile import build_profile, write_profile
    from mlpipe_cli.io import fingerprint

    source = config.source(source_name)
    path = Path(data_path) if data_path is not None else source.path
    lazy = scan_source(source.model_copy(update={"path": path}), source_name)
    present = set(lazy.collect_schema().names())
    columns = [c for c in source.columns if c in present] or None
    if on_spark:
        from mlpipe_cli.engines.spark.profile import spark_profile

        profile = spark_profile(config, path, columns)
    else:
        profile = build_profile(lazy, columns)

    def write(staging: Path) -> None:
        write_profile(profile, staging / PROFILE_FILE)

    result = store.publish(
        PROFILE_KIND,
        write,
        config_hash=config_section_hash(source),
        inputs=fingerprint([path]),
        params={"source": source_name, "columns": columns},
    )
    return result.version.version


def load_reference(store: ArtifactStore, source_name: str, ref: str) -> tuple[dict[str, Any], str]:
    """The reference profile for a source: 'latest' = newest profile saved for it."""
    from mlpipe_cli.drift.profile import read_profile

    if ref == "latest":
        for version in reversed(store.versions(PROFILE_KIND)):
            artifact = store.get(PROFILE_KIND, version, verify=False)
            if (artifact.manifest.get("params") or {}).get("source") == source_name:
                break
        else:
            raise ArtifactNotFound(
                f"no reference profile saved for source {source_name!r}",
                hint=spelled(
                    cli=f"run `mlpipe validate --source {source_name} --save-profile`",
                    python=f"run `validate(sources=[{source_name!r}], save_profile=True)`",
                )
                + " on an accepted batch first",
            )
        ref = version
    artifact = store.get(PROFILE_KIND, ref)  # verifies sha256
    saved_for = (artifact.manifest.get("params") or {}).get("source")
    if saved_for is not None and saved_for != source_name:
        raise UsageError(
            f"profile {artifact.version} was saved for source {saved_for!r}, not {source_name!r}",
            hint=f"pass {arg('sources', flag='--source')} to compare one source, or "
            + spelled(cli="--reference latest", python="reference='latest'"),
        )
    return read_profile(artifact.file(PROFILE_FILE)), artifact.version


def source_reference(
    config: PipelineConfig, store: ArtifactStore, source: str, version: str = "latest"
) -> tuple[dict, dict[str, Any], list[str], dict[str, str]]:
    """The reference for a raw batch of ``source``: the validation profile saved for it.

    Returns (profile, profile_info, features, exclude). ``version`` is a profile artifact
    version or ``latest`` (the newest profile saved for this source, as ``validate
    --reference latest``). Features: ``sources.<source>.distribution.columns`` when set (what
    validate checks), else every profiled column; entity keys and the primary key are
    excluded (an id is not a distribution: new orders always have higher ids).
    ArtifactNotFound (exit 3) when no profile was saved for the source.
    """
    from mlpipe_cli.drift.report import IDENTIFIER_REASON

    spec = config.source(source)  # UsageError for an unknown source
    profile, resolved = load_reference(store, source, version)
    order = list(profile.get("column_order") or sorted(profile["columns"]))
    configured = spec.distribution.columns
    features = [c for c in order if c in configured] if configured else order
    keys = set(spec.entity_keys or config.entity_keys) | set(spec.primary_key or [])
    exclude = {c: IDENTIFIER_REASON for c in features if c in keys}
    info = {
        "source": "artifact",
        "kind": PROFILE_KIND,
        "data_source": source,
        "version": resolved,
        "path": f"{PROFILE_KIND}/{resolved}/{PROFILE_FILE}",
    }
    return profile, info, features, exclude
