"""mlpipe: a command-line toolchain and Python API for ML data pipelines.

    import mlpipe_cli as mlpipe
    p = mlpipe.Pipeline.from_yaml("mlpipe.yaml")

``Pipeline`` (``mlpipe_cli.api``) and the exception tree (``mlpipe_cli.errors``) are loaded on
first access, so importing this package — which `mlpipe --help` does — stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

_ERRORS = (
    "MlpipeError",
    "UsageError",
    "ConfigError",
    "InputError",
    "DataCheckFailed",
    "ArtifactError",
    "ArtifactNotFound",
    "ServiceUnavailable",
    "ExitCode",
    "exit_code_for",
)

__all__ = ["ARTIFACT_FORMAT_VERSION", "CheckCrashed", "Pipeline", "__version__", *_ERRORS]


def __getattr__(name: str) -> object:  # no `typing` import: it costs ~2 ms
    if name == "ARTIFACT_FORMAT_VERSION":  # the manifest's format (mlpipe_cli.documents)
        from mlpipe_cli.documents import ArtifactManifest

        return ArtifactManifest.FORMAT_VERSION
    if name == "Pipeline":
        from mlpipe_cli.api import Pipeline

        return Pipeline
    if name in _ERRORS:
        from mlpipe_cli import errors

        return getattr(errors, name)
    if name == "CheckCrashed":  # a check could not run (exit 2); raised by validate
        from mlpipe_cli.validation import CheckCrashed

        return CheckCrashed
    raise AttributeError(f"module 'mlpipe_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
