"""Versioned, hashed artifacts shared between subcommands."""

from mlpipe_cli.artifacts.store import (
    ArtifactStore,
    ArtifactVersion,
    PublishResult,
    VerifyResult,
    atomic_write_bytes,
    canonical_json,
    sha256_file,
)

__all__ = [
    "ArtifactStore",
    "ArtifactVersion",
    "PublishResult",
    "VerifyResult",
    "atomic_write_bytes",
    "canonical_json",
    "sha256_file",
]
